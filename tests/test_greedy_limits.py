"""The recovery greedy keeps its time limit and its cancel event: on the matrix search and on
machine classes, before any plan (NO_SOLUTION with the limit) and after one exists (the plan so
far, FEASIBLE with the limit rather than a plain heuristic result)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lumen.planner.checker import check_recovery
from lumen.planner.generators.recovery import random_recovery_problem
from lumen.planner.heuristics import recovery as H
from lumen.planner.heuristics.clock import CHECK_EVERY, Clock, Stopped
from lumen.planner.problems import RecoveryProblem
from lumen.planner.result import Limit, SolveSettings, Termination


class SetOnCall(threading.Event):
    """An event that reads as set from its ``after``-th ``is_set()`` call on: cancels a solve
    at a chosen check, whatever the machine's speed."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls >= self.after


def tight_problem() -> RecoveryProblem:
    """Tight KV, above the multi-start size: the matrix search, one insertion order, swaps."""
    problem = random_recovery_problem(np.random.default_rng(3), 200, 600, "tight-kv")
    assert not H.uses_classes(problem)
    assert problem.num_requests * problem.num_machines > H.MULTI_START_CELLS
    return problem


def loose_problem() -> RecoveryProblem:
    problem = random_recovery_problem(np.random.default_rng(5), 400, 300, "uniform")
    assert H.uses_classes(problem)
    return problem


def insertion_checks(problem: RecoveryProblem) -> int:
    """How often one insertion pass asks the clock."""
    return -(-problem.num_requests // CHECK_EVERY)


def test_a_clock_records_the_first_limit_only() -> None:
    assert Clock().limit() is None and Clock().hit is None
    clock = Clock()
    clock.stop(Limit.TIME, "first")
    clock.stop(Limit.CANCELLED, "second")
    assert (clock.hit, clock.why) == (Limit.TIME, "first")
    assert Clock(deadline=0.0).limit() is Limit.TIME
    with pytest.raises(Stopped) as info:
        Clock(deadline=0.0).check("here")
    assert info.value.limit is Limit.TIME and "here" in str(info.value)


@pytest.mark.parametrize("make", [tight_problem, loose_problem])
def test_a_cancelled_or_expired_greedy_has_no_plan(make: type) -> None:
    problem = make()
    cancel = threading.Event()
    cancel.set()
    res = H.solve_greedy(problem, SolveSettings(cancel=cancel))
    assert (res.termination, res.limit) == (Termination.NO_SOLUTION, Limit.CANCELLED)
    res = H.solve_greedy(problem, SolveSettings(time_limit_s=1e-9))
    assert (res.termination, res.limit) == (Termination.NO_SOLUTION, Limit.TIME)
    assert res.plan is None and "stopped" in res.message


def test_the_matrix_greedy_cut_after_insertion_keeps_its_plan_and_says_so() -> None:
    problem = tight_problem()
    full = H.solve_greedy(problem, SolveSettings())
    assert (full.termination, full.limit) == (Termination.FEASIBLE, Limit.HEURISTIC)
    # One check after the processing times, then the insertion's; the next is in local search.
    cancel = SetOnCall(after=1 + insertion_checks(problem) + 1)
    cut = H.solve_greedy(problem, SolveSettings(cancel=cancel))
    assert (cut.termination, cut.limit) == (Termination.FEASIBLE, Limit.CANCELLED)
    assert cut.plan is not None and "local search stopped" in cut.message
    report = check_recovery(problem, cut.plan)
    assert report.feasible and report.objective == pytest.approx(cut.objective, rel=1e-9)
    assert cut.objective is not None and full.objective is not None
    assert cut.objective > full.objective  # local search had improved on the insertion


def test_the_greedy_on_classes_cut_in_its_move_pass_keeps_its_plan_and_says_so() -> None:
    problem = loose_problem()
    full = H.solve_greedy(problem, SolveSettings())
    cancel = SetOnCall(after=insertion_checks(problem) + 1)
    cut = H.solve_greedy(problem, SolveSettings(cancel=cancel))
    assert (cut.termination, cut.limit) == (Termination.FEASIBLE, Limit.CANCELLED)
    assert cut.plan is not None and "move pass stopped" in cut.message
    assert check_recovery(problem, cut.plan).feasible
    assert cut.objective is not None and full.objective is not None
    assert cut.objective > full.objective


def test_a_limit_that_does_not_bind_changes_nothing() -> None:
    for problem in (tight_problem(), loose_problem()):
        never = SetOnCall(after=10**9)
        a = H.solve_greedy(problem, SolveSettings(cancel=never))
        b = H.solve_greedy(problem, SolveSettings(time_limit_s=3600.0))
        assert never.calls > 0  # the clock was asked
        assert a.plan is not None and b.plan is not None
        np.testing.assert_array_equal(a.plan.machine, b.plan.machine)
        assert a.limit is Limit.HEURISTIC
