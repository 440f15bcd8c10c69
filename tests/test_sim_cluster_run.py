"""The cluster run's event handlers called one at a time, outside a full run
(:class:`lumen.simulator.run_state.ClusterRun`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sim_traces import make_trace, random_trace

from lumen.planner.costmodel import RooflineCostModel
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.cluster import ClusterOptions, simulate
from lumen.simulator.run_state import ClusterRun
from lumen.workload.trace import Trace

GB = 1e9


@pytest.fixture(scope="module")
def cost_model() -> RooflineCostModel:
    return load_scenario("paper-sim-10w-llama3-70b").cost_model


def _four_requests() -> Trace:
    return make_trace([0.0, 0.0, 0.0, 0.0], [100, 200, 300, 400], [500, 500, 500, 500])


def _running(
    cost_model: RooflineCostModel,
    workers: int,
    policy: str = "stop-and-restart",
    until: float = 1.0,
    options: ClusterOptions | None = None,
) -> ClusterRun:
    """Four requests on ``workers`` workers, run up to ``until``."""
    run = ClusterRun(_four_requests(), cost_model, workers, policy=policy, options=options)
    run.start()
    run.sim.run(until=until)
    return run


def test_construction_schedules_nothing(cost_model: RooflineCostModel) -> None:
    run = ClusterRun(_four_requests(), cost_model, 2, failures=[(1.0, [1, 1, 0])])
    assert run.sim.pending == 0 and len(run.pool) == 2 and run.placer is None
    assert run.failure_events == [(1.0, [0, 1])]
    run.start()
    assert run.sim.pending == 2  # the first arrival and the failure
    with pytest.raises(RuntimeError):
        run.start()


def test_arrival_dispatches_and_schedules_the_next(cost_model: RooflineCostModel) -> None:
    run = ClusterRun(make_trace([0.0, 0.5, 1.0], [50, 50, 50], [5, 5, 5]), cost_model, 2)
    run.on_arrival(run.sim, 0)
    assert sum(run.gateway.dispatched) == 1
    assert run.pool[0].active_requests + run.pool[1].active_requests == 1
    run.sim.run()  # the arrivals chain on from request 1
    assert sum(run.gateway.dispatched) == 3
    assert np.all(np.isfinite(run.table.finish_s))


def test_failure_interrupts_and_reroutes_to_the_survivor(cost_model: RooflineCostModel) -> None:
    run = _running(cost_model, 2)
    on_zero = [rid for rid in range(4) if run.table.worker[rid] == 0]
    assert on_zero
    run.on_failure(run.sim, [0])
    assert run.interrupted == [rid in on_zero for rid in range(4)]
    assert run.pool[0].down and not run.pool[1].down
    assert run.pool[1].active_requests == 4  # stop-and-restart recomputes on the survivor
    assert run.modes == {"recompute": len(on_zero)} and run.waiting_for == {}
    (reload,) = run.back[0]
    assert reload.time == pytest.approx(1.0 + cost_model.reload_timeline().total_s)
    assert run.drafts_loaded == 0


def test_failure_without_survivor_waits_and_reload_serves_again(
    cost_model: RooflineCostModel,
) -> None:
    run = _running(cost_model, 1)
    run.on_failure(run.sim, [0])
    assert run.interrupted == [True] * 4
    assert [rid for rid, _, _ in run.waiting_for[0]] == [0, 1, 2, 3]
    assert run.pool[0].active_requests == 0
    # Bring the worker back by hand now instead of at its scheduled reload.
    for handle in run.back[0]:
        run.sim.cancel(handle)
    run.on_reloaded(run.sim, 0)
    assert not run.pool[0].down and run.back == {} and run.waiting_for == {}
    assert run.pool[0].active_requests == 4
    run.sim.run()
    assert np.all(np.isfinite(run.table.finish_s))
    assert max(run.table.finish_s) < cost_model.reload_timeline().total_s
    result = run.build_result(0.0)
    assert result.interrupted_requests == 4
    assert result.summary.decode_tokens == 2000


def test_failure_while_reloading_restarts_the_reload(cost_model: RooflineCostModel) -> None:
    run = _running(cost_model, 1)
    run.on_failure(run.sim, [0])
    run.sim.run(until=2.0)
    run.on_failure(run.sim, [0])
    total = cost_model.reload_timeline().total_s
    (reload,) = run.back[0]
    assert reload.time == pytest.approx(2.0 + total)
    assert [rid for rid, _, _ in run.waiting_for[0]] == [0, 1, 2, 3]  # interrupted again
    assert run.modes == {"recompute": 8}
    run.sim.run()
    assert np.all(np.isfinite(run.table.finish_s))
    assert min(run.table.finish_s) > 2.0 + total


def test_drafts_pair_with_a_survivor_until_in_host(cost_model: RooflineCostModel) -> None:
    run = _running(cost_model, 2, policy="lumen-progressive")
    run.on_failure(run.sim, [1])
    assert run.drafts_loaded == 1 and len(run.back[1]) == 2  # reload, in host
    assert run.drafts_due[1][1] == [1]
    run.on_drafts_ready(run.sim, [1])
    assert run.assisting == {1: 0} and run.pool[0].assist is run.assist
    run.on_in_host(run.sim, 1)
    assert run.assisting == {} and run.pool[0].assist is None


def test_an_assisted_survivor_that_fails_loses_its_draft(cost_model: RooflineCostModel) -> None:
    run = _running(cost_model, 2, policy="lumen-progressive")
    run.on_failure(run.sim, [1])
    run.on_drafts_ready(run.sim, [1])
    run.on_failure(run.sim, [0])
    assert run.assisting == {} and run.pool[0].down and run.pool[1].down
    run.sim.run()
    assert np.all(np.isfinite(run.table.finish_s))


def test_failure_releases_the_checkpoints_held_and_owned(cost_model: RooflineCostModel) -> None:
    opts = ClusterOptions(checkpoint_budget_bytes=50 * GB)
    run = _running(cost_model, 3, policy="fixed-checkpointing", options=opts)
    placer = run.placer
    assert placer is not None
    held = {rid: h for rid in range(4) if (h := run.table.holder[rid]) >= 0}
    assert held
    victim = next(iter(held.values()))
    assert placer.held_by[victim]
    run.on_failure(run.sim, [victim])
    # The failed holder keeps nothing, and the interrupted requests hold no reservation.
    assert not placer.held_by[victim]
    lost = [rid for rid in range(4) if run.interrupted[rid]]
    assert lost
    assert all(rid not in held_by for held_by in placer.held_by for rid in lost)
    run.sim.run()
    assert np.all(np.isfinite(run.table.finish_s))


def test_simulate_is_a_cluster_run(cost_model: RooflineCostModel) -> None:
    trace = random_trace(200, 30.0, seed=3)
    failures = [(2.0, [1]), (3.0, [0])]
    opts = ClusterOptions(workers_per_node=2, checkpoint_budget_bytes=3 * GB)
    a = simulate(trace, cost_model, 4, failures=failures, policy="lumen", options=opts)
    b = ClusterRun(trace, cost_model, 4, failures=failures, policy="lumen", options=opts).run()
    for name in ("ttft_s", "e2e_s", "worker", "interrupted"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.summary.events == b.summary.events and a.recovery_modes == b.recovery_modes


@pytest.mark.parametrize(
    ("workers", "failures", "policy"),
    [
        (0, [], "stop-and-restart"),
        (2, [(math.nan, [0])], "stop-and-restart"),
        (2, [(1.0, [2])], "stop-and-restart"),
        (2, [], "no-such-policy"),
    ],
)
def test_bad_arguments_are_refused(
    cost_model: RooflineCostModel,
    workers: int,
    failures: list[tuple[float, list[int]]],
    policy: str,
) -> None:
    with pytest.raises(ValueError):
        ClusterRun(_four_requests(), cost_model, workers, failures=failures, policy=policy)


def test_a_worker_failing_again_keeps_its_group_drafts(cost_model: RooflineCostModel) -> None:
    # Workers 1 and 2 fail together and share one drafts-ready event; 1 fails again while its
    # draft loads. Only 1's pairing moves to its new draft: 2 is still paired when its own
    # draft is ready, and 1 once its new one is.
    run = _running(cost_model, 4, policy="lumen")
    run.on_failure(run.sim, [1, 2])
    first_ready = 1.0 + run.draft_s
    run.sim.run(until=1.0 + run.draft_s / 2)
    refail = run.sim.now
    run.on_failure(run.sim, [1])
    run.sim.run(until=first_ready)
    assert list(run.assisting) == [2] and run.pool[run.assisting[2]].assist is run.assist
    run.sim.run(until=refail + run.draft_s)
    assert sorted(run.assisting) == [1, 2]
    assert len(set(run.assisting.values())) == 2  # two different survivors
    assert run.drafts_loaded == 3
    run.sim.run()
    assert run.assisting == {} and np.all(np.isfinite(run.table.finish_s))
