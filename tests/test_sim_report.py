"""Simulation reports: Markdown tables with the paper beside ours, and the files written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from lumen.analysis.sim_plots import zoom_range
from lumen.analysis.sim_report import REQUEST_COLUMNS, write_experiment
from lumen.analysis.sim_tables import fmt_change, fmt_estimate, markdown_report, sweep_markdown
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.confidence import estimate
from lumen.simulator.experiment import (
    METRICS,
    Experiment,
    ExperimentSummary,
    RunMetrics,
    run_experiment,
)
from lumen.simulator.golden import shrink

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_formatting() -> None:
    assert fmt_estimate(estimate([1.0, 2.0, 3.0]), unit="s") == "2.000 ± 2.484 s"
    assert fmt_estimate(estimate([0.1234]), 1e3, 1, "ms") == "123.4 ms"
    assert fmt_estimate(estimate([math.nan])) == "-"
    assert fmt_change(estimate([-50.0, -40.0])) == "-45.0 ± 63.5 %"
    assert fmt_change(None) == "-"


def test_zoom_range_frames_the_failures_inside_the_run() -> None:
    # Failure at 300 s, windows closing at 400 and 500 s: span 200 s, half of it either side.
    assert zoom_range(1000.0, [300.0], [400.0, 500.0]) == (200.0, 600.0)
    assert zoom_range(1000.0, [], []) == (0.0, 1000.0)
    assert zoom_range(75.0, [1677.0], []) == (0.0, 75.0)  # beyond the run: all of it
    assert zoom_range(1000.0, [10.0], [900.0]) == (0.0, 1000.0)  # clipped to the run


def _runs() -> list[RunMetrics]:
    out = []
    for policy, ttft in (("stop-and-restart", 2.0), ("fixed-checkpointing", 1.6), ("lumen", 1.0)):
        for seed in (0, 1):
            values = dict.fromkeys(METRICS, 1.0)
            values |= {"window_ttft_mean_s": ttft + 0.1 * seed, "recovery_s": 100.0 * ttft}
            out.append(RunMetrics("paper-4w-qwen3-32b", policy, seed, values, None))
    return out


def test_markdown_puts_the_paper_numbers_beside_ours() -> None:
    loaded = load_scenario("paper-4w-qwen3-32b")
    summary = ExperimentSummary.of(loaded, _runs())
    text = markdown_report(summary, loaded.scenario.metrics, skipped=["lumen-optimal"])
    assert text.startswith("# Simulation: paper-4w-qwen3-32b")
    body = text.split("## Reproduction")[0]
    rows = [line for line in body.splitlines() if line.startswith("| lumen | stop-and-restart")]
    # Window TTFT -50 % (seed 0) and -47.6 % (seed 1), the paper's -44.4 % beside it;
    # recovery -50 % both times, the paper's -50.0 %.
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2].startswith("-48.8 ±") and cells[3] == "-44.4 %"
    assert cells[5] == "-15.9 %"
    assert cells[6] == "-50.0 ± 0.0 %" and cells[7] == "-50.0 %"
    assert "| lumen | fixed-checkpointing |" in text and "-34.9 %" in text
    assert "Not run (not implemented in the simulator yet): lumen-optimal." in text
    assert "LUMEN paper, testbed results, 4 workers" in text


def test_sweep_markdown_lists_every_scenario_and_policy() -> None:
    loaded = load_scenario("paper-4w-qwen3-32b")
    text = sweep_markdown([ExperimentSummary.of(loaded, _runs())])
    assert text.count("| paper-4w-qwen3-32b |") == 3 + 3  # 3 policies, 3 comparisons
    assert "-44.4 %" in text


@pytest.fixture(scope="module")
def experiment() -> Experiment:
    loaded, _ = shrink(load_scenario("paper-4w-qwen3-32b"), 300, 50)
    return run_experiment(loaded, ["stop-and-restart"], [0, 1])


def test_write_experiment_writes_every_output(experiment: Experiment, tmp_path: Path) -> None:
    files = write_experiment(experiment, tmp_path / "out", skipped=["lumen"])
    names = {p.name for p in files.values()}
    assert names == {
        "config.yaml",
        "requests.csv",
        "summary.json",
        "report.md",
        "ttft_over_time.png",
        "ttft_cdf.png",
        "tpot_cdf.png",
    }
    for name in ("ttft_over_time.png", "ttft_cdf.png", "tpot_cdf.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC

    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["scenario"]["cluster"]["prefill_chunk_tokens"] == 1024  # defaults filled in
    run = config["run"]
    assert run["seeds"] == [0, 1] and run["workload_seeds"] == [0, 1]
    assert run["skipped_policies"] == ["lumen"]
    assert run["failures"][0] == [
        {"at_s": pytest.approx(experiment.failures[0][0].at_s), "workers": [1]}
    ]

    with (tmp_path / "out" / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == REQUEST_COLUMNS
    assert len(rows) == 2 * 2 * 300  # seeds x (failure, reference) x requests
    pair = experiment.pairs[0]
    first = [r for r in rows if r["seed"] == "0" and r["run"] == "failure"]
    assert [float(r["ttft_s"]) for r in first] == pair.result.ttft_s.tolist()
    assert sum(int(r["interrupted"]) for r in first) == pair.result.interrupted_requests
    window = pair.metrics.window
    in_window = sum(int(r["in_window"]) for r in first)
    assert in_window == (0 if window is None else window.requests)

    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    ttft = doc["policy_metrics"]["stop-and-restart"]["ttft_mean_s"]
    assert ttft["n"] == 2 and ttft["mean"] == pytest.approx(
        experiment.summary.estimates["stop-and-restart"]["ttft_mean_s"].mean
    )
    assert len(doc["runs"]) == 2 and doc["seeds"] == [0, 1]

    report = (tmp_path / "out" / "report.md").read_text()
    assert "![ttft_over_time](ttft_over_time.png)" in report
    assert "| stop-and-restart |" in report
