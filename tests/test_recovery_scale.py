"""The greedy on machine classes: the matrix greedy's insertion, moves that only lower J, the
routing of solve_greedy (stopping on cancel or deadline: test_greedy_limits.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lumen.planner.checker import check_recovery
from lumen.planner.generators.recovery import random_recovery_problem
from lumen.planner.heuristics import recovery as H
from lumen.planner.heuristics.recovery_scale import (
    _Groups,
    _inputs,
    classed_insertion,
    regret_order,
)
from lumen.planner.mode_times import ModeTimes
from lumen.planner.problems import RecoveryProblem
from lumen.planner.recovery_eval import (
    is_feasible,
    plan_of,
    processing_times,
    recovery_objective,
    standalone_costs,
)
from lumen.planner.result import SolveSettings, Termination


def matrix_insertion(problem: RecoveryProblem) -> np.ndarray:
    """The matrix greedy's insertion in the order the greedy on classes uses."""
    order = regret_order(_inputs(problem, _Groups.of(problem)))
    p = processing_times(problem)
    dense = H.greedy_assignment(problem, p, order, standalone_costs(problem, p))
    assert dense is not None
    return dense


@pytest.mark.parametrize("family", ["uniform", "skewed", "multi-failure"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_insertion_on_classes_is_the_matrix_greedys_insertion(family: str, seed: int) -> None:
    problem = random_recovery_problem(np.random.default_rng(seed), 300, 120, family)
    assert problem.modes.num_classes == 2  # survivors and recovering workers
    classed = classed_insertion(problem, passes=0)
    assert classed is not None
    np.testing.assert_array_equal(classed, matrix_insertion(problem))


@pytest.mark.parametrize("family", ["uniform", "tight-kv", "multi-failure"])
@pytest.mark.parametrize("seed", [0, 1])
def test_move_passes_keep_the_plan_feasible_and_never_raise_j(family: str, seed: int) -> None:
    problem = random_recovery_problem(np.random.default_rng(seed), 200, 300, family)
    values = []
    for passes in (0, 1, 2):
        machine = classed_insertion(problem, passes=passes)
        assert machine is not None and is_feasible(problem, machine)
        values.append(recovery_objective(problem, machine))
    assert values[1] <= values[0] + 1e-9 and values[2] <= values[1] + 1e-9
    assert values[1] < values[0]  # at this size a pass finds improving moves


def test_a_request_restores_on_its_own_machine_when_that_is_cheapest() -> None:
    """Machine 0 heads the survivors' group (ready first) and is request 0's holder: its own
    time (restore, 0.1 s) applies there, not the class time (recompute, 2 s); request 1 is
    recomputed on the next survivor, ready at 0.05 s, rather than after the restore."""
    times = np.full((2, 2, 4), np.inf)
    times[:, 0, 2] = 2.0  # recompute on any survivor
    times[:, 1, 3] = 3.0  # wait for the recovering worker
    own_times = np.full((2, 4), np.inf)
    own_times[0, 0] = 0.1
    modes = ModeTimes.build(
        machine_class=[0, 0, 0, 1], class_time_s=times, own_machine=[0, -1], own_time_s=own_times
    )
    problem = RecoveryProblem.build(
        ready_s=[0.0, 0.05, 0.6, 30.0],
        queued=[0, 0, 0, 0],
        kv_free_tokens=[100, 100, 100, 100],
        kv_tokens=[10, 10],
        modes=modes,
        is_recovering=[False, False, False, True],
    )
    machine = classed_insertion(problem, passes=1)
    assert machine is not None
    assert machine[0] == 0
    # Request 1 costs 0 + 2 + 0.1 on machine 0 (after the restore), 0.05 + 2 on machine 1.
    assert machine[1] == 1
    report = check_recovery(problem, plan_of(problem, machine))
    assert report.feasible and report.objective == pytest.approx(0.1 + 2.05)


def test_solve_greedy_takes_the_classes_above_the_threshold_only() -> None:
    big = random_recovery_problem(np.random.default_rng(4), 400, 300, "uniform")
    assert big.num_machines * big.num_requests > H.CLASSED_CELLS
    assert H.uses_classes(big)
    dense = big.with_modes(ModeTimes.from_dense(big.mode_time_s))
    assert not H.uses_classes(dense)  # one class per machine: the matrix search
    tight = random_recovery_problem(np.random.default_rng(4), 200, 600, "tight-kv")
    assert not H.uses_classes(tight)  # tight KV keeps swaps and ejections
    small = random_recovery_problem(np.random.default_rng(4), 40, 30, "uniform")
    assert not H.uses_classes(small)
    res = H.solve_greedy(big, SolveSettings())
    assert res.termination is Termination.FEASIBLE and res.plan is not None
    report = check_recovery(big, res.plan)
    assert report.feasible and report.objective == pytest.approx(res.objective, rel=1e-9)


def test_a_slow_own_machine_is_not_costed_at_its_class_time() -> None:
    """Request 0's holder (machine 0, first of the survivors) only recomputes, slowly (5 s
    there, 2 s on the other survivors): the class time must not stand in for its own."""
    times = np.full((1, 2, 4), np.inf)
    times[0, 0, 2] = 2.0
    times[0, 1, 3] = 3.0
    own_times = np.full((1, 4), np.inf)
    own_times[0, 2] = 5.0
    modes = ModeTimes.build(
        machine_class=[0, 0, 1], class_time_s=times, own_machine=[0], own_time_s=own_times
    )
    problem = RecoveryProblem.build(
        ready_s=[0.0, 0.05, 30.0],
        queued=[0, 0, 0],
        kv_free_tokens=[100, 100, 100],
        kv_tokens=[10],
        modes=modes,
        is_recovering=[False, False, True],
    )
    for passes in (0, 1):
        machine = classed_insertion(problem, passes=passes)
        assert machine is not None and machine.tolist() == [1]


def _two_survivor_classes(seed: int) -> RecoveryProblem:
    """A generated problem whose survivors form two classes (every third one 1.25 times
    slower), so that insertion costs machines of several classes at once."""
    base = random_recovery_problem(np.random.default_rng(seed), 300, 120, "uniform")
    modes = base.modes
    slow = (np.arange(base.num_machines) % 3 == 0) & ~base.is_recovering
    machine_class = np.where(slow, 2, modes.machine_class)
    times = np.concatenate([modes.class_time_s, modes.class_time_s[:, :1] * 1.25], axis=1)
    two = ModeTimes.build(
        machine_class=machine_class,
        class_time_s=times,
        own_machine=modes.own_machine,
        own_time_s=modes.own_time_s,
    )
    return base.with_modes(two)


@pytest.mark.parametrize("seed", [0, 1])
def test_insertion_over_several_occupied_classes_is_the_matrix_greedys(seed: int) -> None:
    problem = _two_survivor_classes(seed)
    classed = classed_insertion(problem, passes=0)
    assert classed is not None
    assert len(set(problem.modes.machine_class[classed].tolist())) >= 2
    np.testing.assert_array_equal(classed, matrix_insertion(problem))
