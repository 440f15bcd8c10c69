"""Draft pairing: the matching is optimal, heuristics are feasible, every plan is checked."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.planner.checker import check_pairing
from lumen.planner.generators.pairing import FAMILIES, random_pairing_problem
from lumen.planner.plans import PairingPlan
from lumen.planner.problems import PairingProblem, ProblemError, expected_tokens_per_step
from lumen.planner.result import Termination, status_violations
from lumen.planner.solve import methods, solve

NEG = -math.inf


def _brute_force(problem: PairingProblem) -> float:
    a, b = problem.saved_s.shape
    best = 0.0
    for k in range(min(a, b) + 1):
        for rs in itertools.combinations(range(a), k):
            for ss in itertools.permutations(range(b), k):
                vals = [problem.saved_s[r, s] for r, s in zip(rs, ss, strict=True)]
                if all(math.isfinite(v) for v in vals):
                    best = max(best, float(sum(vals)))
    return best


def test_hand_instance() -> None:
    # Greedy takes (0, 0) = 10 and is left with (1, 1) = 1: 11. Optimum: (0, 1) + (1, 0) = 9 + 8.
    p = PairingProblem.build(saved_s=[[10.0, 9.0], [8.0, 1.0]], survivor_wait_s=[0.0, 5.0])
    exact = solve(p, "matching")
    assert exact.termination is Termination.OPTIMAL
    assert exact.objective == pytest.approx(17.0)
    assert solve(p, "greedy").objective == pytest.approx(11.0)
    # The paper's rule pairs worker 0 with the longest-waiting survivor (1), then 1 with 0.
    lumen = solve(p, "lumen")
    assert lumen.require_plan().pairs == ((0, 1), (1, 0))
    assert lumen.objective == pytest.approx(17.0)


def test_forbidden_pairs_are_never_used() -> None:
    p = PairingProblem.build(saved_s=[[NEG, 3.0], [NEG, 5.0]], survivor_wait_s=[9.0, 1.0])
    for name in methods("pairing"):
        res = solve(p, name)
        assert not status_violations(res, maximize=True), (name, status_violations(res, True))
        report = check_pairing(p, res.require_plan())
        assert report.feasible, (name, report.violations)
        assert len(res.require_plan().pairs) <= 1
    assert solve(p, "matching").objective == pytest.approx(5.0)


def test_checker_rejects_bad_plans() -> None:
    p = PairingProblem.build(saved_s=[[1.0, NEG], [2.0, 3.0]])
    assert not check_pairing(p, PairingPlan(((0, 0), (1, 0)))).feasible
    assert not check_pairing(p, PairingPlan(((0, 1),))).feasible
    assert not check_pairing(p, PairingPlan(((5, 0),))).feasible
    assert check_pairing(p, PairingPlan(((0, 0), (1, 1)))).objective == pytest.approx(4.0)


def test_invalid_problems_are_rejected() -> None:
    with pytest.raises(ProblemError, match="negative"):
        PairingProblem.build(saved_s=[[-1.0]])
    with pytest.raises(ProblemError, match="NaN"):
        PairingProblem.build(saved_s=[[math.nan]])
    with pytest.raises(ProblemError, match="2-D"):
        PairingProblem.build(saved_s=[1.0, 2.0])


def test_expected_tokens_per_step() -> None:
    assert expected_tokens_per_step(0.0, 4) == pytest.approx(1.0)
    # a = 0.6, K = 4: (1 - 0.6^5) / 0.4 = 2.3056
    assert expected_tokens_per_step(0.6, 4) == pytest.approx(2.3056)


@settings(max_examples=40, deadline=None)
@given(
    a=st.integers(1, 3),
    b=st.integers(1, 4),
    family=st.sampled_from(FAMILIES),
    seed=st.integers(0, 2**31),
)
def test_matching_is_optimal_and_never_beaten(a: int, b: int, family: str, seed: int) -> None:
    p = random_pairing_problem(np.random.default_rng(seed), a, b, family)
    best = _brute_force(p)
    exact = solve(p, "matching")
    assert exact.termination is Termination.OPTIMAL
    assert exact.objective == pytest.approx(best, rel=1e-9, abs=1e-9)
    for name in methods("pairing"):
        res = solve(p, name)
        assert not status_violations(res, maximize=True), (name, status_violations(res, True))
        report = check_pairing(p, res.require_plan())
        assert report.feasible, (name, report.violations)
        assert res.objective == pytest.approx(report.objective, rel=1e-9, abs=1e-9)
        assert report.objective <= best + 1e-9
