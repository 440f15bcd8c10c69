"""Experiments: per-run metrics against the reference, estimates over seeds, comparisons,
policy selection and the seeds of replayed traces."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
import yaml
from sim_traces import make_trace

from lumen.analysis.sim_report import write_experiment
from lumen.planner.policies import POLICIES
from lumen.scenarios.resolve import LoadedScenario, build_trace, load_scenario
from lumen.scenarios.schema import MetricsConfig, PaperReference
from lumen.simulator.cluster import SimulationResult, simulate
from lumen.simulator.confidence import estimate, student_t_quantile
from lumen.simulator.experiment import (
    METRICS,
    RunMetrics,
    compare,
    implemented_policies,
    model_counters,
    run_experiment,
    run_metrics,
    run_pair,
    select_policies,
)
from lumen.simulator.golden import shrink
from lumen.simulator.metrics import summarize
from lumen.simulator.run import scenario_trace

# --------------------------------------------------------------------------------------------
# Student t and estimates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "df", "expected"),
    [
        # Two-sided critical values from any t table.
        (0.95, 1, 12.706),
        (0.95, 2, 4.303),
        (0.95, 4, 2.776),
        (0.95, 10, 2.228),
        (0.95, 30, 2.042),
        (0.99, 1, 63.657),
        (0.99, 5, 4.032),
        (0.90, 3, 2.353),
    ],
)
def test_student_t_quantile_matches_the_table(confidence: float, df: int, expected: float) -> None:
    assert student_t_quantile(confidence, df) == pytest.approx(expected, abs=1e-3)


def test_student_t_quantile_tends_to_the_normal() -> None:
    assert student_t_quantile(0.95, 1000) == pytest.approx(1.962, abs=1e-3)
    with pytest.raises(ValueError, match="confidence"):
        student_t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        student_t_quantile(0.95, 0)


def test_estimate_mean_and_half_width() -> None:
    e = estimate([1.0, 2.0, 3.0])
    # s = 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3).
    assert (e.mean, e.n) == (2.0, 3)
    assert e.half_width == pytest.approx(4.30265 / math.sqrt(3), rel=1e-5)
    assert (e.low, e.high) == pytest.approx((2.0 - e.half_width, 2.0 + e.half_width))


def test_estimate_leaves_out_nan_and_needs_two_values_for_an_interval() -> None:
    e = estimate([4.0, math.nan])
    assert (e.mean, e.n) == (4.0, 1) and math.isnan(e.half_width)
    assert e.values[0] == 4.0 and math.isnan(e.values[1])
    empty = estimate([math.nan])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert estimate([5.0, 5.0]).half_width == 0.0


# --------------------------------------------------------------------------------------------
# Metrics of one run against its reference
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_result() -> SimulationResult:
    loaded = load_scenario("paper-sim-10w-llama3-70b")
    return simulate(make_trace([0.0, 0.5], [100, 100], [3, 3]), loaded.cost_model, workers=1)


def _fake(base: SimulationResult, ttft: np.ndarray, tpot: np.ndarray) -> SimulationResult:
    """A result with hand-made per-request latencies (arrivals every 0.5 s)."""
    n = ttft.size
    arrival = np.arange(n, dtype=np.float64) * 0.5
    e2e = ttft + 10.0 * tpot
    summary = replace(
        base.summary, ttft_s=summarize(ttft), tpot_s=summarize(tpot), e2e_s=summarize(e2e)
    )
    return replace(base, arrival_s=arrival, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, summary=summary)


def _bins(means: list[float], size: int = 200) -> np.ndarray:
    return np.repeat(np.asarray(means, dtype=np.float64), size)


def test_run_metrics_measure_the_window_against_the_reference(
    base_result: SimulationResult,
) -> None:
    ref = _fake(base_result, _bins([1.0] * 10), _bins([0.1] * 10))
    #                             0    1     2    3    4    5    6    7     8    9
    ttft = _bins([1.0, 1.04, 1.5, 1.2, 1.0, 1.3, 1.0, 1.03, 1.0, 1.0])
    run = _fake(base_result, ttft, _bins([0.1, 0.1, 0.2, 0.2, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1]))
    m = run_metrics("s", "stop-and-restart", 0, run, ref, MetricsConfig())
    assert list(m.values) == list(METRICS)
    # The window is bins 2..5 (requests 400..1199); see test_sim_metrics for the rule.
    assert m.window is not None and (m.window.start_request, m.window.end_request) == (400, 1200)
    v = m.values
    assert v["window_ttft_mean_s"] == pytest.approx((1.5 + 1.2 + 1.0 + 1.3) / 4)
    assert v["window_tpot_mean_s"] == pytest.approx((0.2 + 0.2 + 0.1 + 0.3) / 4)
    assert v["window_ttft_p99_s"] == pytest.approx(1.5)
    assert v["recovery_s"] == pytest.approx(0.5 * 799)  # arrivals 200 s .. 599.5 s
    assert (v["recovery_bins"], v["recovery_requests"], v["window_closed"]) == (4, 800, 1.0)
    assert v["ttft_mean_s"] == pytest.approx(float(ttft.mean()))
    assert v["reference_ttft_mean_s"] == pytest.approx(1.0)
    # No SLO in the default metrics configuration.
    assert math.isnan(v["slo_attainment"]) and math.isnan(v["slo_ttft_attainment"])


def test_run_without_window_has_no_recovery_time(base_result: SimulationResult) -> None:
    ref = _fake(base_result, _bins([1.0] * 4), _bins([0.1] * 4))
    run = _fake(base_result, _bins([1.0, 1.02, 1.0, 1.0]), _bins([0.1] * 4))
    m = run_metrics("s", "stop-and-restart", 0, run, ref, MetricsConfig())
    assert m.window is None
    assert (m.values["recovery_s"], m.values["recovery_bins"]) == (0.0, 0.0)
    assert math.isnan(m.values["window_ttft_mean_s"]) and math.isnan(m.values["window_closed"])


def test_slo_attainment(base_result: SimulationResult) -> None:
    ttft = np.asarray([0.5, 1.0, 3.0, 0.2])
    tpot = np.asarray([0.05, 0.3, 0.05, math.nan])  # NaN: a one-token output meets any TPOT SLO
    run = _fake(base_result, ttft, tpot)
    config = MetricsConfig(slo_ttft_s=1.0, slo_tpot_s=0.1)
    v = run_metrics("s", "stop-and-restart", 0, run, run, config).values
    assert v["slo_ttft_attainment"] == pytest.approx(3 / 4)
    assert v["slo_tpot_attainment"] == pytest.approx(3 / 4)
    assert v["slo_attainment"] == pytest.approx(2 / 4)  # requests 0 and 3 meet both


def test_model_counters_read_the_result(base_result: SimulationResult) -> None:
    counters = model_counters(base_result)
    # No failure, and Stop-and-Restart checkpoints nothing and loads no draft.
    assert set(counters) == {
        "restored_tokens",
        "restored_bytes",
        "checkpoint_bytes_sent",
        "checkpoint_bytes_dropped",
        "restore_requests",
        "transfer_requests",
        "recompute_requests",
        "wait_requests",
        "drafts_loaded",
        "verify_steps",
    }
    assert all(v == 0 for v in counters.values())
    given = SimpleNamespace(
        restored_tokens=7,
        restored_bytes=700,
        checkpoint_bytes_sent=9000,
        checkpoint_bytes_dropped=5,
        recovery_modes={"restore": 2, "wait": 1},
        drafts_loaded=1,
        verify_steps=40,
    )
    assert model_counters(cast(SimulationResult, given)) == {
        "restored_tokens": 7,
        "restored_bytes": 700,
        "checkpoint_bytes_sent": 9000,
        "checkpoint_bytes_dropped": 5,
        "restore_requests": 2,
        "transfer_requests": 0,
        "recompute_requests": 0,
        "wait_requests": 1,
        "drafts_loaded": 1,
        "verify_steps": 40,
    }


# --------------------------------------------------------------------------------------------
# Comparisons against the baselines
# --------------------------------------------------------------------------------------------


def _metrics(policy: str, seed: int, ttft: float, tpot: float, recovery: float) -> RunMetrics:
    values = dict.fromkeys(METRICS, 1.0)
    values |= {"window_ttft_mean_s": ttft, "window_tpot_mean_s": tpot, "recovery_s": recovery}
    return RunMetrics("s", policy, seed, values, None)


def test_compare_pairs_seeds_and_puts_the_paper_beside_ours() -> None:
    runs = [
        _metrics("stop-and-restart", 0, 2.0, 0.2, 100.0),
        _metrics("stop-and-restart", 1, 4.0, 0.2, 100.0),
        _metrics("fixed-checkpointing", 0, 1.5, 0.2, 80.0),
        _metrics("fixed-checkpointing", 1, 3.0, 0.2, 80.0),
        _metrics("lumen", 0, 1.0, 0.1, 50.0),
        _metrics("lumen", 1, 3.0, 0.1, 0.0),
    ]
    paper = PaperReference.model_validate(
        {"citation": "c", "against": {"stop-and-restart": {"ttft_pct": -44.4}}}
    )
    out = {(c.policy, c.baseline): c for c in compare(runs, 0.95, paper)}
    # A baseline is compared with the baselines before it only.
    assert set(out) == {
        ("fixed-checkpointing", "stop-and-restart"),
        ("lumen", "stop-and-restart"),
        ("lumen", "fixed-checkpointing"),
    }
    c = out[("lumen", "stop-and-restart")]
    # Per seed: TTFT -50 % and -25 %; recovery -50 % and -100 % (no window at all).
    assert c.changes["ttft"].values == pytest.approx((-50.0, -25.0))
    assert c.changes["ttft"].mean == pytest.approx(-37.5)
    assert c.changes["recovery"].mean == pytest.approx(-75.0)
    assert c.changes["tpot"].mean == pytest.approx(-50.0)
    assert c.paper == {"ttft": -44.4}
    assert out[("lumen", "fixed-checkpointing")].paper == {}


def test_change_against_a_zero_baseline_is_undefined() -> None:
    runs = [_metrics("stop-and-restart", 0, 1.0, 0.1, 0.0), _metrics("lumen", 0, 1.0, 0.1, 0.0)]
    (c,) = compare(runs)
    assert c.changes["recovery"].n == 0 and math.isnan(c.changes["recovery"].mean)


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------


def test_select_policies() -> None:
    implemented = implemented_policies()
    assert set(implemented) == set(POLICIES)
    scenario = ["stop-and-restart", "lumen"]
    chosen, skipped = select_policies(scenario)
    assert chosen == [p for p in scenario if p in implemented]
    assert skipped == [p for p in scenario if p not in implemented]
    assert select_policies(scenario, ["stop-and-restart"]) == (["stop-and-restart"], [])
    with pytest.raises(ValueError, match="unknown policy 'greedy'; policies are"):
        select_policies(scenario, ["greedy"])
    with pytest.raises(ValueError, match="twice"):
        select_policies(scenario, ["stop-and-restart", "stop-and-restart"])


# --------------------------------------------------------------------------------------------
# Simulated experiments
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> LoadedScenario:
    """The paper's 4-worker testbed cut to 400 requests, the failure compressed into them."""
    loaded, _ = shrink(load_scenario("paper-4w-qwen3-32b"), 400, 50)
    return loaded


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_runs_beside_its_failure_free_reference(
    small: LoadedScenario, policy: str
) -> None:
    pair = run_pair(small, policy, seed=0)
    trace = scenario_trace(small, 0)
    assert pair.policy == policy and pair.seed == 0
    assert pair.reference.interrupted_requests == 0
    assert pair.result.interrupted_requests > 0
    for r in (pair.result, pair.reference):
        assert r.summary.decode_tokens == int(trace.output_tokens.sum())
        np.testing.assert_array_equal(r.arrival_s, trace.arrival_s)
    v = pair.metrics.values
    assert v["interrupted_requests"] == pair.result.interrupted_requests
    assert v["ttft_mean_s"] >= v["reference_ttft_mean_s"] * 0.5
    if pair.metrics.window is not None:
        assert v["recovery_s"] > 0 and v["window_ttft_mean_s"] > 0


def test_experiment_over_two_seeds_has_intervals(small: LoadedScenario) -> None:
    calls: list[tuple[str, int, str]] = []
    exp = run_experiment(
        small, ["stop-and-restart"], [0, 1], on_run=lambda *a: calls.append((a[0], a[1], a[2]))
    )
    assert len(calls) == 4 and {c[2] for c in calls} == {"failure", "reference"}
    est = exp.summary.estimates["stop-and-restart"]
    assert est["ttft_mean_s"].n == 2 and math.isfinite(est["ttft_mean_s"].half_width)
    assert est["ttft_mean_s"].values[0] != est["ttft_mean_s"].values[1]  # the seeds differ
    assert exp.summary.seeds == (0, 1) and set(exp.failures) == {0, 1}
    assert exp.prompt_tokens[1].size == 400


def test_experiment_seeds_are_offsets_to_the_scenarios_seed(tmp_path: Path) -> None:
    loaded, _ = shrink(load_scenario("node-failure-mooncake"), 200, 50)
    assert loaded.scenario.workload.seed == 7
    exp = run_experiment(loaded, ["stop-and-restart"], [0, 1])
    assert exp.summary.seeds == (0, 1)
    assert [p.metrics.seed for p in exp.pairs] == [0, 1]
    files = write_experiment(exp, tmp_path)
    config = yaml.safe_load(files["config"].read_text())
    assert config["run"]["seeds"] == [0, 1] and config["run"]["workload_seeds"] == [7, 8]


# --------------------------------------------------------------------------------------------
# Seeds of replayed traces
# --------------------------------------------------------------------------------------------


def test_replayed_trace_seeds_redraw_poisson_arrivals_at_the_same_rate() -> None:
    loaded = load_scenario("paper-sim-10w-llama3-70b")  # the Azure trace at 14 QPS
    seed0 = scenario_trace(loaded, 0)
    np.testing.assert_array_equal(seed0.arrival_s, build_trace(loaded).arrival_s)
    seed1 = scenario_trace(loaded, 1)
    assert not np.array_equal(seed1.arrival_s, seed0.arrival_s)
    np.testing.assert_array_equal(seed1.prompt_tokens, seed0.prompt_tokens)
    np.testing.assert_array_equal(seed1.output_tokens, seed0.output_tokens)
    assert seed1.mean_rate_qps == pytest.approx(14.0, rel=0.05)
    gaps = np.diff(seed1.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps
    # Same seed, same arrivals; a cut run is a prefix of the full one.
    np.testing.assert_array_equal(scenario_trace(loaded, 1, 100).arrival_s, seed1.arrival_s[:100])
    assert not np.array_equal(scenario_trace(loaded, 2).arrival_s, seed1.arrival_s)


def test_scenario_trace_rejects_bad_arguments() -> None:
    loaded = load_scenario("paper-sim-10w-llama3-70b")
    with pytest.raises(ValueError, match="seed"):
        scenario_trace(loaded, -1)
    with pytest.raises(ValueError, match="num_requests"):
        scenario_trace(loaded, 0, 0)


def test_shrink_keeps_the_failures_inside_the_cut_run() -> None:
    loaded = load_scenario("paper-8w-qwen3-14b")
    cut, factor = shrink(loaded, 500, 50)
    full, short = scenario_trace(loaded, 0), scenario_trace(cut, 0)
    assert len(short) == 500 and cut.scenario.metrics.bin_size == 50
    assert factor == pytest.approx(short.duration_s / full.duration_s)
    (event,) = cut.scenario.failures.events
    assert event.at_s == pytest.approx(300.0 * factor)
    assert event.at_s / short.duration_s == pytest.approx(300.0 / full.duration_s)
