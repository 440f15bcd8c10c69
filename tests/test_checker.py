"""The independent plan checker on hand-made plans, with objectives worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lumen.planner.checker import check_placement, check_recovery
from lumen.planner.plans import PlacementPlan, RecoveryPlan
from lumen.planner.problems import PlacementProblem, RecoveryProblem

INF = math.inf


def _placement() -> PlacementProblem:
    # Workers 0, 1 on node 0; worker 2 on node 1; worker 3 on node 2.
    return PlacementProblem.build(
        node=[0, 0, 1, 2],
        wait_s=[1.0, 2.0, 3.0, 4.0],
        budget_bytes=[10.0, 10.0, 10.0, 4.0],
        home=[0, 0, 1],
        reserve_bytes=[3.0, 3.0, 5.0],
        work_s=[0.5, 0.25, 1.0],
        fail_weight=[0.5, 0.5, 0.0, 0.0],
        stream_cap_bytes_s=[INF, INF, INF, 1.0],
        stream_bytes_s=[0.5, 0.6, 0.0],
        alpha=2.0,
    )


def test_placement_objective_by_hand() -> None:
    p = _placement()
    report = check_placement(p, PlacementPlan.of([2, 3, 2]))
    assert report.feasible, report.violations
    # f = 0: loads {2: 0.5, 3: 0.25}, worst 0.5; waits 3 + 4 over 2 requests = 3.5
    #   -> 0.5 * (2 * 0.5 + 3.5) = 2.25
    # f = 1: load {2: 1.0}; wait 3 -> 0.5 * (2 * 1.0 + 3) = 2.5
    assert report.objective == pytest.approx(4.75)


@pytest.mark.parametrize(
    ("holder", "fragment"),
    [
        ([0, 2, 2], "is its home"),
        ([1, 2, 2], "shares node"),
        ([2, 2, 2], "over its budget"),  # 3 + 3 + 5 > 10
        ([3, 3, 2], "over its cap"),  # stream 0.5 + 0.6 > 1.0
        ([2, 9, 2], "not a worker index"),
    ],
)
def test_placement_violations(holder: list[int], fragment: str) -> None:
    report = check_placement(_placement(), PlacementPlan.of(holder))
    assert not report.feasible
    assert any(fragment in v for v in report.violations), report.violations


def test_move_costs_count_only_moves() -> None:
    p = PlacementProblem.build(
        node=[0, 1, 2],
        wait_s=[0.0, 0.0, 0.0],
        budget_bytes=[9.0, 9.0, 9.0],
        home=[0, 0],
        reserve_bytes=[1.0, 1.0],
        work_s=[1.0, 1.0],
        current=[1, 2],
        move_cost_s=[10.0, 20.0],
        fail_weight=[1.0, 1.0, 1.0],
    )
    stay = check_placement(p, PlacementPlan.of([1, 2])).objective
    moved = check_placement(p, PlacementPlan.of([2, 1])).objective
    assert stay == pytest.approx(1.0)  # worst load 1.0, no waits, no moves
    assert moved == pytest.approx(31.0)


def _recovery() -> RecoveryProblem:
    t = np.full((3, 2, 4), INF)
    t[0, 0, 0], t[0, 1, 1], t[0, :, 2] = 1.0, 3.0, 4.0  # request 0: holder is machine 0
    t[1, :, 2] = 2.0
    t[2, :, 2] = 5.0
    return RecoveryProblem.build(
        ready_s=[0.0, 1.0],
        queued=[2.0, 0.0],
        kv_free_tokens=[10.0, 10.0],
        kv_tokens=[4.0, 4.0, 4.0],
        mode_time_s=t,
    )


def test_recovery_objective_by_hand() -> None:
    p = _recovery()
    plan = RecoveryPlan.from_assignment(p, [0, 0, 1])
    assert plan.order == ((0, 1), (2,))
    assert plan.mode_names() == ["restore", "recompute", "recompute"]
    report = check_recovery(p, plan)
    assert report.feasible, report.violations
    # machine 0: C = 1, 3 -> 4, plus queued 2 * (1 + 2) = 6; machine 1: C = 1 + 5 = 6.
    assert report.objective == pytest.approx(16.0)
    # The checker evaluates the order it is given: LPT on machine 0 costs more.
    lpt = RecoveryPlan(plan.machine, plan.mode, ((1, 0), (2,)))
    assert check_recovery(p, lpt).objective == pytest.approx(17.0)


def test_recovery_violations() -> None:
    p = _recovery()
    good = RecoveryPlan.from_assignment(p, [0, 0, 1])
    swapped = RecoveryPlan(good.machine, good.mode, ((0,), (1, 2)))
    assert any("disagree" in v for v in check_recovery(p, swapped).violations)
    missing = RecoveryPlan(good.machine, np.array([1, 2, 2]), good.order)  # no transfer to 0
    assert any("not available" in v for v in check_recovery(p, missing).violations)
    # A slower mode is allowed (a checkpointless baseline recomputes) and costs its own time:
    # machine 0 now runs 4 then 2... in the plan's order (0, 1): C = 4, 6, queued 2 * 6 = 12.
    slow = RecoveryPlan(good.machine, np.array([2, 2, 2]), good.order)
    assert check_recovery(p, slow).objective == pytest.approx(4 + 6 + 12 + 6)
    full = RecoveryPlan.from_assignment(p, [0, 0, 0])  # 12 KV tokens on a machine with 10
    assert any("KV tokens" in v for v in check_recovery(p, full).violations)
