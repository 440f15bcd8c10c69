"""The solve facade: names, settings validation and result helpers."""

from __future__ import annotations

import pytest

from lumen.planner.problems import PairingProblem
from lumen.planner.result import Limit, NoPlanError, SolveResult, SolveSettings, Termination
from lumen.planner.solve import BACKENDS, methods, solve


def test_every_kind_has_exact_and_heuristic_backends() -> None:
    for kind, backends in BACKENDS.items():
        assert methods(kind)[0] == "auto"
        assert any(b.exact for b in backends.values()), kind
        assert any(not b.exact for b in backends.values()), kind
        assert "lumen" in backends, kind


def test_unknown_method_lists_the_known_ones() -> None:
    problem = PairingProblem.build(saved_s=[[1.0]])
    with pytest.raises(ValueError, match="matching"):
        solve(problem, "simplex")


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="time_limit_s"):
        SolveSettings(time_limit_s=0)
    with pytest.raises(ValueError, match="threads"):
        SolveSettings(threads=0)
    with pytest.raises(ValueError, match="rel_gap"):
        SolveSettings(rel_gap=1.5)


def test_result_without_plan_raises_on_request() -> None:
    res: SolveResult[object] = SolveResult(
        "x", Termination.NO_SOLUTION, Limit.TIME, message="nothing found"
    )
    assert not res.has_plan and res.gap is None
    with pytest.raises(NoPlanError, match="time limit: nothing found"):
        res.require_plan()
    assert SolveResult("x", Termination.FEASIBLE, objective=11.0, bound=10.0).gap == (
        pytest.approx(1 / 11)
    )
