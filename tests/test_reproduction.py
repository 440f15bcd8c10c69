"""The report's reproduction verdicts and the diagnostics that explain a miss."""

from __future__ import annotations

import math

import pytest

from lumen.analysis.reproduction import Verdict, diagnose, reproduction_lines, verdicts
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.experiment import ExperimentSummary, run_experiment


@pytest.mark.parametrize(
    ("ours", "paper", "direction", "within"),
    [
        (-40.0, -44.4, True, True),
        (-22.3, -44.4, True, True),  # exactly half
        (-22.1, -44.4, True, False),
        (-90.0, -44.4, True, False),
        (5.0, -44.4, False, False),
        (-30.0, (-51.0, -47.0), True, True),
        (-20.0, (-51.0, -47.0), True, False),
        (math.nan, -10.0, False, False),
    ],
)
def test_verdict_target(
    ours: float, paper: float | tuple[float, float], direction: bool, within: bool
) -> None:
    v = Verdict("lumen", "stop-and-restart", "ttft", ours, paper)
    assert v.same_direction is direction
    assert v.reproduced is within


@pytest.fixture(scope="module")
def summary() -> ExperimentSummary:
    # 4,000 requests at 12 QPS: the failure at 300 s falls inside the run.
    loaded = load_scenario("paper-4w-qwen3-32b")
    policies = ["stop-and-restart", "fixed-checkpointing", "lumen"]
    return run_experiment(loaded, policies, [0], num_requests=4000).summary


def test_verdicts_cover_every_published_number(summary: ExperimentSummary) -> None:
    found = verdicts(summary)
    published = {(c.policy, c.baseline, k) for c in summary.comparisons for k in c.paper}
    assert {(v.policy, v.baseline, v.quantity) for v in found} == published
    assert len(found) == 6  # TTFT, TPOT, recovery against both baselines
    lines = reproduction_lines(summary)
    assert lines[0] == "## Reproduction"
    assert sum(line.startswith("| lumen |") for line in lines) == 6


def test_diagnostics_read_the_counters(summary: ExperimentSummary) -> None:
    notes = diagnose(summary)
    est = summary.estimates
    # In this run the paper's rule loads a draft and recomputes more than the fixed ring.
    assert est["lumen"]["drafts_loaded"].mean == 1
    assert (
        est["lumen"]["recompute_requests"].mean
        > est["fixed-checkpointing"]["recompute_requests"].mean
    )
    assert any("draft model" in n for n in notes)
    assert any("rebalancing" in n and "recomputed" in n for n in notes)
    assert diagnose(summary, "no-such-policy") == [
        n for n in notes if "opens no recovery window" in n
    ]
