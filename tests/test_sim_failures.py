"""Worker failures in the cluster simulation, Stop-and-Restart recovery through the planner."""

from __future__ import annotations

import numpy as np
import pytest
from sim_traces import make_trace, random_trace

from lumen.planner.costmodel import RooflineCostModel
from lumen.planner.domain import WorkerState
from lumen.planner.policies import check_policy
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.cluster import SimulationResult, simulate
from lumen.simulator.recovery import Interrupted, snapshot
from lumen.simulator.worker import RequestTable
from lumen.workload.trace import Trace


@pytest.fixture(scope="module")
def cost_model() -> RooflineCostModel:
    return load_scenario("paper-sim-10w-llama3-70b").cost_model


@pytest.fixture(scope="module")
def reload_s(cost_model: RooflineCostModel) -> float:
    return cost_model.reload_timeline().total_s


def _check_conservation(r: SimulationResult, trace: Trace) -> None:
    """Every request finished once, after its first token, with its whole output."""
    assert np.all(np.isfinite(r.ttft_s)) and np.all(np.isfinite(r.e2e_s))
    assert np.all(r.ttft_s > 0) and np.all(r.e2e_s >= r.ttft_s)
    assert r.summary.decode_tokens == int(trace.output_tokens.sum())
    assert int(r.worker_decode_tokens.sum()) == r.summary.decode_tokens
    # Every prompt is computed once, plus (at least) the KV lost to failures.
    extra = r.summary.prefill_tokens - int(trace.prompt_tokens.sum())
    assert extra >= r.recomputed_tokens >= 0
    assert np.all(r.worker >= 0)
    assert r.interrupted_requests == int(r.interrupted.sum())


def test_decode_interrupted_request_recomputes_its_context(cost_model: RooflineCostModel) -> None:
    prefill = (
        cost_model.prefill_time(1024, 0)
        + cost_model.prefill_time(1024, 1024)
        + cost_model.prefill_time(452, 2048)
    )
    steps = [cost_model.decode_step_time(1, 2500 + k) for k in range(49)]
    # Worker 0 fails halfway through its 11th decode step: 1 + 10 tokens are out.
    at = prefill + sum(steps[:10]) + steps[10] / 2
    trace = make_trace([0.0], [2500], [50])
    r = simulate(trace, cost_model, workers=2, failures=[(at, [0])])
    assert r.ttft_s[0] == pytest.approx(prefill, rel=1e-12)  # the first token was out already
    assert r.worker[0] == 1
    assert r.interrupted.tolist() == [True] and r.interrupted_requests == 1
    assert r.recomputed_tokens == 2500 + 11 - 1  # the 11th token's KV was never written
    redo = (
        cost_model.prefill_time(1024, 0)
        + cost_model.prefill_time(1024, 1024)
        + cost_model.prefill_time(463, 2048)
    )
    rest = sum(cost_model.decode_step_time(1, 2511 + k) for k in range(38))
    assert r.e2e_s[0] == pytest.approx(at + redo + rest, rel=1e-12)
    assert r.summary.decode_tokens == 50
    assert r.summary.prefill_tokens == 2500 + 2511
    assert r.worker_decode_tokens.tolist() == [11, 39]


def test_prefill_interrupted_request_gets_its_first_token_elsewhere(
    cost_model: RooflineCostModel,
) -> None:
    at = cost_model.prefill_time(1024, 0) * 1.5  # the first chunk is done, the second is not
    r = simulate(make_trace([0.0], [3000], [5]), cost_model, workers=2, failures=[(at, [0])])
    redo = (
        cost_model.prefill_time(1024, 0)
        + cost_model.prefill_time(1024, 1024)
        + cost_model.prefill_time(952, 2048)
    )
    assert r.ttft_s[0] == pytest.approx(at + redo, rel=1e-12)
    assert r.recomputed_tokens == 1024
    assert r.summary.prefill_tokens == 1024 + 3000
    assert r.worker[0] == 1


def test_conservation_with_one_and_several_failures(cost_model: RooflineCostModel) -> None:
    trace = random_trace(3000, rate=20.0, seed=1)
    one = simulate(trace, cost_model, workers=4, failures=[(40.0, [2])])
    _check_conservation(one, trace)
    assert one.interrupted_requests > 0 and one.recomputed_tokens > 0
    several = simulate(trace, cost_model, workers=4, failures=[(40.0, [0, 1, 3]), (60.0, [2])])
    _check_conservation(several, trace)
    assert several.interrupted_requests > one.interrupted_requests
    # Separate events at one time: requests the first one re-dispatched are interrupted again
    # before the worker they went to could start them.
    chained = simulate(trace, cost_model, workers=4, failures=[(40.0, [2]), (40.0, [0, 1, 3])])
    _check_conservation(chained, trace)


def test_all_workers_failing_holds_requests_until_a_reload_ends(
    cost_model: RooflineCostModel, reload_s: float
) -> None:
    trace = random_trace(400, rate=20.0, seed=4)
    r = simulate(trace, cost_model, workers=2, failures=[(5.0, [0, 1])])
    _check_conservation(r, trace)
    # Interrupted requests wait for their own worker; later arrivals for the first one back.
    first = r.arrival_s + r.ttft_s
    dispatched_during = (r.arrival_s > 5.0) & (r.arrival_s < 5.0 + reload_s)
    assert dispatched_during.any()
    assert np.all(first[dispatched_during] > 5.0 + reload_s)
    assert np.all(first[r.interrupted & (first > 5.0)] > 5.0 + reload_s)


def test_failed_worker_gets_nothing_while_reloading_then_serves_again(
    cost_model: RooflineCostModel, reload_s: float
) -> None:
    trace = random_trace(3000, rate=20.0, seed=5)
    at = 30.0
    r = simulate(trace, cost_model, workers=3, failures=[(at, [1])])
    _check_conservation(r, trace)
    during = (r.arrival_s > at) & (r.arrival_s < at + reload_s)
    assert during.sum() > 100
    assert not np.any(r.worker[during] == 1)
    # Stop-and-Restart recomputes on survivors only.
    assert not np.any(r.worker[r.interrupted] == 1)
    after = r.arrival_s > at + reload_s
    assert np.any(r.worker[after] == 1)
    assert r.worker_decode_tokens[1] > 0


def test_failure_raises_mean_ttft_and_is_deterministic(cost_model: RooflineCostModel) -> None:
    trace = random_trace(2500, rate=25.0, seed=6)
    base = simulate(trace, cost_model, workers=3)
    a = simulate(trace, cost_model, workers=3, failures=[(20.0, [0])], seed=3)
    b = simulate(trace, cost_model, workers=3, failures=[(20.0, [0])], seed=3)
    assert a.summary.ttft_s.mean >= base.summary.ttft_s.mean
    for name in ("ttft_s", "tpot_s", "e2e_s", "worker", "interrupted"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.recomputed_tokens == b.recomputed_tokens
    assert a.summary.events == b.summary.events


def test_failure_before_any_arrival(cost_model: RooflineCostModel, reload_s: float) -> None:
    # A failure at the first arrival's time comes first: worker 0 is already down for it.
    trace = make_trace([0.0, 1.0, reload_s + 5.0], [100, 100, 100], [10, 10, 10])
    r = simulate(trace, cost_model, workers=2, failures=[(0.0, [0])])
    assert r.interrupted_requests == 0 and r.recomputed_tokens == 0
    assert r.worker.tolist() == [1, 1, 0]  # worker 0 is back (and idle) for the last one
    _check_conservation(r, trace)


def test_failure_of_an_idle_worker_changes_nothing(cost_model: RooflineCostModel) -> None:
    trace = make_trace([0.0, 0.5], [500, 400], [30, 20])
    base = simulate(trace, cost_model, workers=3)
    r = simulate(trace, cost_model, workers=3, failures=[(0.2, [2]), (100.0, [0, 1])])
    assert r.interrupted_requests == 0 and r.recomputed_tokens == 0
    np.testing.assert_array_equal(r.ttft_s, base.ttft_s)
    np.testing.assert_array_equal(r.e2e_s, base.e2e_s)


def test_failing_again_while_reloading_restarts_the_reload(
    cost_model: RooflineCostModel, reload_s: float
) -> None:
    trace = random_trace(1500, rate=20.0, seed=7)
    r = simulate(trace, cost_model, workers=1, failures=[(10.0, [0]), (10.0 + reload_s / 2, [0])])
    _check_conservation(r, trace)
    first = r.arrival_s + r.ttft_s
    assert np.all((first < 10.0) | (first > 10.0 + 1.5 * reload_s))


def test_unsupported_policy_and_bad_failures_are_rejected(cost_model: RooflineCostModel) -> None:
    trace = make_trace([0.0], [10], [2])
    with pytest.raises(ValueError, match="supported: fixed-checkpointing, lumen"):
        simulate(trace, cost_model, workers=2, policy="lumen-greedy")
    with pytest.raises(ValueError, match="unsupported failure policy"):
        check_policy("dejavu")
    with pytest.raises(ValueError, match="no worker"):
        simulate(trace, cost_model, workers=2, failures=[(1.0, [2])])
    with pytest.raises(ValueError, match="failure time"):
        simulate(trace, cost_model, workers=2, failures=[(-1.0, [0])])


def test_snapshot_describes_the_failure_moment(cost_model: RooflineCostModel) -> None:
    from lumen.simulator.kernel import Simulation
    from lumen.simulator.worker import SimWorker

    sim = Simulation()
    table = RequestTable.create([0.0, 0.0, 0.0], [100, 200, 300], [10, 20, 30])
    pool = [SimWorker(i, sim, cost_model, table) for i in range(3)]
    pool[1].enqueue(1)
    pool[1].enqueue(2)
    sim.run(until=0.0)
    pool[2].fail(0.0)
    lost = [Interrupted(0, 0, 4)]
    state = snapshot(pool, table, cost_model, [0], lost, 0.0)
    assert [w.state for w in state.workers] == [
        WorkerState.FAILED,
        WorkerState.SERVING,
        WorkerState.RELOADING,
    ]
    r0 = state.request(0)
    assert (r0.home, r0.prompt_tokens, r0.generated_tokens, r0.max_tokens) == (0, 100, 4, 10)
    assert r0.checkpoint_holder is None
    assert {r.id for r in state.requests_on(1)} == {1, 2}  # admitted in its first iteration
    load = state.load(1)
    assert load.gpu_kv_used_tokens == 220 + 330
    assert load.gpu_kv_capacity_tokens == pool[1].kv_capacity_tokens
