"""The controller without gRPC: the view, incremental placement, failures, re-optimization."""

from __future__ import annotations

import pytest

from lumen.planner.builders import PlacementOptions, placement_problem, recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.decisions import (
    PairingDecision,
    PlacementDecision,
    RecoveryDecision,
    Status,
    placement_decision,
    recovery_decision,
)
from lumen.planner.domain import Request, WorkerState
from lumen.planner.result import Limit, SolveSettings, Termination
from lumen.planner.service.broadcast import PlanBroadcaster
from lumen.planner.service.controller import Controller, ControllerConfig
from lumen.planner.service.errors import AlreadyExists, InvalidField, NotFound, NotReady
from lumen.planner.solve import solve

from .conftest import GB, small_state

SETTINGS = SolveSettings(time_limit_s=5.0)


@pytest.fixture
def controller(config: ControllerConfig) -> Controller:
    c = Controller(config)
    c.report_state(small_state())
    return c


def test_calls_that_need_the_view_fail_before_the_first_report(config: ControllerConfig) -> None:
    c = Controller(config)
    assert not c.ready and c.snapshot() is None
    with pytest.raises(NotReady, match="ReportClusterState"):
        c.plan_recovery(None, [1], "", SETTINGS)
    with pytest.raises(NotReady):
        c.place_request(Request(9, 0, 10, 0, 10))
    with pytest.raises(NotReady):
        c.report_failure([0])
    # A call that carries its own snapshot works without any report.
    assert c.plan_recovery(small_state(), [1], "greedy", SETTINGS).plan is not None


def test_place_request_picks_the_idle_holder_on_the_other_node(controller: Controller) -> None:
    # Home 0 is on node 0, so only workers 2 (5 s queue) and 3 (idle) may hold: 3 wins.
    version = controller.version
    placed = controller.place_request(Request(10, 0, 200, 0, 200))
    assert placed.holder == 3
    assert placed.status.termination is Termination.FEASIBLE
    assert controller.version == version + 1
    view = controller.snapshot()
    assert view is not None and view.request(10).checkpoint_holder == 3


def test_place_request_follows_the_settings(controller: Controller) -> None:
    # Same node allowed: workers 1 and 3 tie (idle, no load from home 0); the lowest index wins.
    same_node = PlacementOptions(require_other_node=False)
    assert controller.place_request(Request(10, 0, 200, 0, 200), same_node).holder == 1


def test_place_request_applies_the_chosen_rule(controller: Controller) -> None:
    # Fixed-Checkpointing walks the ring from the home: worker 1 shares node 0, so 2 holds,
    # although the greedy rule would avoid its 5 s queue.
    placed = controller.place_request(Request(10, 0, 200, 0, 200), rule="fixed-ring")
    assert placed.holder == 2 and placed.status.method == "incremental:fixed-ring"
    with pytest.raises(InvalidField, match=r"options\.method: unknown incremental"):
        controller.place_request(Request(11, 0, 200, 0, 200), rule="cpsat")


def test_place_request_errors_name_the_field(controller: Controller) -> None:
    with pytest.raises(AlreadyExists, match=r"request\.id"):
        controller.place_request(Request(0, 0, 10, 0, 10))
    with pytest.raises(NotFound, match=r"request\.home_worker: unknown worker 9"):
        controller.place_request(Request(10, 9, 10, 0, 10))
    controller.report_failure([2])
    with pytest.raises(NotReady, match="worker 2 is failed"):
        controller.place_request(Request(11, 2, 10, 0, 10))


def test_place_request_reports_when_nothing_fits(config: ControllerConfig) -> None:
    c = Controller(config)
    state = small_state()
    for w in state.workers:  # no host budget anywhere
        state = state.with_load(w.id, type(state.load(w.id))(host_budget_bytes=0))
    c.report_state(state)
    placed = c.place_request(Request(10, 0, 200, 0, 200))
    assert placed.holder is None
    assert placed.status.termination is Termination.INFEASIBLE
    view = c.snapshot()
    assert view is not None and view.request(10).checkpoint_holder is None


def test_place_request_full_of_earlier_placements_proves_nothing(config: ControllerConfig) -> None:
    # 4 GB per worker holds one 20,000-token checkpoint: the two other-node workers take the
    # first two, the third fits alone but not beside them; that is no proof of infeasibility.
    c = Controller(config)
    state = small_state()
    for w in state.workers:
        state = state.with_load(w.id, type(state.load(w.id))(host_budget_bytes=4 * GB))
    c.report_state(state)
    placed = [c.place_request(Request(10 + k, 0, 20_000, 0, 200)) for k in range(3)]
    assert [p.holder for p in placed[:2]] == [2, 3]
    assert placed[2].holder is None
    assert placed[2].status.termination is Termination.NO_SOLUTION
    assert placed[2].status.limit is Limit.HEURISTIC and placed[2].status.message


def test_failure_publishes_recovery_then_pairing_as_a_direct_solve_would(
    controller: Controller, cost: CostModel
) -> None:
    sub = controller.subscribe()
    version = controller.report_failure([1])
    recovery = sub.get(5.0)
    pairing = sub.get(5.0)
    controller.stop()
    assert recovery is not None and isinstance(recovery.plan, RecoveryDecision)
    assert pairing is not None and isinstance(pairing.plan, PairingDecision)
    assert (recovery.sequence, pairing.sequence) == (1, 2)
    assert recovery.state_version == version
    # The same plan as posing and solving the problem directly on the failed view.
    failed_view = small_state().with_worker_state(1, WorkerState.FAILED)
    problem = recovery_problem(failed_view, cost, [1])
    direct = solve(problem, "greedy", SETTINGS)
    assert direct.plan is not None
    assert recovery.plan == recovery_decision(problem, direct.plan)
    assert {a.request_id for a in recovery.plan.assignments} == {0, 1, 2}
    assert [p.recovering_worker for p in pairing.plan.pairs] == [1]


def test_failure_marks_workers_failed_and_drops_their_checkpoints(controller: Controller) -> None:
    controller.report_failure([1])
    view = controller.snapshot()
    assert view is not None
    assert view.worker(1).state is WorkerState.FAILED
    assert view.request(4).checkpoint_holder is None  # worker 1 held it
    assert view.request(0).checkpoint_holder == 2  # untouched
    controller.stop()


def test_failure_ids_are_checked(controller: Controller) -> None:
    with pytest.raises(NotFound, match=r"failed_workers\[1\]: unknown worker 7"):
        controller.report_failure([1, 7])
    with pytest.raises(InvalidField, match=r"failed_workers\[1\]: duplicate"):
        controller.report_failure([1, 1])
    with pytest.raises(InvalidField, match="at least one"):
        controller.report_failure([])


def test_queries_leave_the_view_alone(controller: Controller) -> None:
    version = controller.version
    outcome = controller.plan_placement(None, [0, 3], None, "cpsat", SETTINGS)
    assert outcome.status.termination is Termination.OPTIMAL
    assert outcome.plan is not None and set(outcome.plan.holder_by_request) == {0, 3}
    controller.plan_recovery(None, [3], "", SETTINGS)
    assert controller.version == version
    with pytest.raises(NotFound, match=r"request_ids\[1\]: unknown request 42"):
        controller.plan_placement(None, [0, 42], None, "", SETTINGS)
    with pytest.raises(InvalidField, match=r"options\.method: unknown placement method"):
        controller.plan_placement(None, [], None, "simplex", SETTINGS)


def test_reoptimize_moves_checkpoints_once(controller: Controller, cost: CostModel) -> None:
    state = controller.snapshot()
    assert state is not None
    problem = placement_problem(state, cost, list(state.requests.values()))
    direct = solve(problem, "greedy", SolveSettings(time_limit_s=1.0))  # as the controller
    assert direct.plan is not None
    expected = placement_decision(direct.plan, list(state.requests), [0, 1, 2, 3])
    update = controller.reoptimize()
    assert update is not None and isinstance(update.plan, PlacementDecision)
    assert update.plan == expected
    view = controller.snapshot()
    assert view is not None
    for rid, holder in expected.holder_by_request.items():
        assert view.request(rid).checkpoint_holder == holder
        if holder != state.request(rid).checkpoint_holder:
            assert view.request(rid).checkpointed_tokens == 0  # a moved checkpoint restarts
    assert controller.reoptimize() is None  # nothing changed since


def test_config_rejects_unknown_methods(cost: CostModel) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        ControllerConfig(cost=cost, methods={"recovery": "simplex"})


def _status() -> Status:
    return Status("greedy", Termination.FEASIBLE)


def test_broadcaster_replays_buffered_updates_and_drops_slow_subscribers() -> None:
    hub = PlanBroadcaster(history=3, queue_size=2)
    for k in range(5):
        hub.publish(PlacementDecision({k: 0}), _status(), k)
    replay = hub.subscribe(after_sequence=3)  # buffer holds 3, 4, 5
    got = [replay.get(0.1), replay.get(0.1)]
    assert [u.sequence for u in got if u is not None] == [4, 5]
    slow = hub.subscribe()
    for k in range(2):
        hub.publish(PlacementDecision({k: 0}), _status(), k)
    assert [replay.get(0.1) is not None for _ in range(2)] == [True, True]  # keeps up
    hub.publish(PlacementDecision({9: 0}), _status(), 9)
    assert slow.overflowed and slow.closed  # three behind with room for two
    assert not replay.overflowed and hub.subscribers == 1
    hub.close()
    assert replay.closed


def test_a_restarted_controller_rebuilds_its_placement_state_from_one_report(
    config: ControllerConfig,
) -> None:
    before = Controller(config)
    before.report_state(small_state())
    for k, home in enumerate((0, 1, 2, 3, 0, 2)):
        before.place_request(Request(100 + k, home, 300 * (k + 1), 0, 400))
    inventory = before.snapshot()  # what the executors report after the restart
    assert inventory is not None
    after = Controller(config)
    after.report_state(inventory)
    for k, home in enumerate((0, 3, 1, 2)):
        request = Request(200 + k, home, 700, 0, 300)
        old, new = before.place_request(request), after.place_request(request)
        assert new.holder == old.holder
        assert new.status.objective == pytest.approx(old.status.objective, rel=1e-12)


def test_periodic_reoptimization_publishes_a_placement(cost: CostModel) -> None:
    c = Controller(ControllerConfig(cost=cost, reoptimize_interval_s=0.05))
    c.report_state(small_state())
    sub = c.subscribe()
    c.start()
    update = sub.get(5.0)
    c.stop()
    assert update is not None and isinstance(update.plan, PlacementDecision)
    assert set(update.plan.holder_by_request) == set(range(6))
