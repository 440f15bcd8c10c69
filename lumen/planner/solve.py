"""One solve interface for every backend, chosen by name (docs/architecture.md).

Backends live one per module under ``lumen.planner.formulations`` (exact) and
``lumen.planner.heuristics`` (greedy rules); they are imported only when first used, so that
asking for a greedy plan never loads OR-Tools or CBC. Every backend has the signature
``(problem, settings) -> SolveResult`` and never raises for infeasible instances or limits.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from lumen.planner.problems import PairingProblem, PlacementProblem, RecoveryProblem
from lumen.planner.result import (
    STATUS_REL_TOL,
    Limit,
    SolveResult,
    SolveSettings,
    Termination,
)

Problem = PlacementProblem | RecoveryProblem | PairingProblem
Backend = Callable[[Any, SolveSettings], SolveResult[Any]]

_FORM = "lumen.planner.formulations"
_HEUR = "lumen.planner.heuristics"


@dataclass(frozen=True)
class BackendInfo:
    kind: str
    name: str
    module: str
    function: str
    exact: bool
    description: str

    def load(self) -> Backend:
        fn: Backend = getattr(importlib.import_module(self.module), self.function)
        return fn


def _b(kind: str, name: str, target: str, exact: bool, description: str) -> BackendInfo:
    module, function = target.rsplit(":", 1)
    return BackendInfo(kind, name, module, function, exact, description)


BACKENDS: dict[str, dict[str, BackendInfo]] = {
    "placement": {
        b.name: b
        for b in (
            _b(
                "placement",
                "cpsat",
                f"{_FORM}.placement_cpsat:solve",
                True,
                "OR-Tools CP-SAT model of the placement problem",
            ),
            _b(
                "placement",
                "milp",
                f"{_FORM}.placement_milp:solve",
                True,
                "PuLP/CBC MILP of the placement problem",
            ),
            _b(
                "placement",
                "lumen",
                f"{_HEUR}.placement:solve_lumen",
                False,
                "the paper's rule: argmin Wait_j + alpha * RestorePressure_j(r), per request",
            ),
            _b(
                "placement",
                "fixed-ring",
                f"{_HEUR}.placement:solve_fixed_ring",
                False,
                "Fixed-Checkpointing baseline: the next worker in ring order",
            ),
            _b(
                "placement",
                "greedy",
                f"{_HEUR}.placement:solve_greedy",
                False,
                "objective-aware LPT greedy with failure-domain awareness, then local search",
            ),
        )
    },
    "recovery": {
        b.name: b
        for b in (
            _b(
                "recovery",
                "flow",
                f"{_FORM}.recovery_flow:solve",
                True,
                "position-indexed min-cost flow (exact when GPU KV capacity does not bind)",
            ),
            _b(
                "recovery",
                "cpsat",
                f"{_FORM}.recovery_cpsat:solve",
                True,
                "OR-Tools CP-SAT model of the capacitated recovery problem",
            ),
            _b(
                "recovery",
                "milp",
                f"{_FORM}.recovery_milp:solve",
                True,
                "PuLP/CBC MILP of the capacitated recovery problem",
            ),
            _b(
                "recovery",
                "lumen",
                f"{_HEUR}.recovery:solve_lumen",
                False,
                "the paper's rule: restore on the holder, then shortest-prefix rebalancing",
            ),
            _b(
                "recovery",
                "restore-on-holder",
                f"{_HEUR}.recovery:solve_restore_on_holder",
                False,
                "Fixed-Checkpointing: restore on the holder, recompute when it is dead",
            ),
            _b(
                "recovery",
                "stop-and-restart",
                f"{_HEUR}.recovery:solve_stop_and_restart",
                False,
                "baseline: least-loaded survivor, full recompute",
            ),
            _b(
                "recovery",
                "greedy",
                f"{_HEUR}.recovery:solve_greedy",
                False,
                "marginal-cost greedy (SPT-aware) with KV capacity, then local search",
            ),
        )
    },
    "pairing": {
        b.name: b
        for b in (
            _b(
                "pairing",
                "matching",
                f"{_FORM}.pairing_matching:solve",
                True,
                "maximum-weight bipartite matching (networkx)",
            ),
            _b(
                "pairing",
                "lumen",
                f"{_HEUR}.pairing:solve_lumen",
                False,
                "the paper's rule: pair with the longest-waiting survivor",
            ),
            _b("pairing", "greedy", f"{_HEUR}.pairing:solve_greedy", False, "largest saving first"),
        )
    },
}

#: ``auto``: the greedy backend always runs; the exact one runs, warm-started from the greedy
#: plan, when the instance's size (decision variables) is at most this many per second of
#: time limit. Sizes beyond it rarely reach a proof in time, so the greedy plan is returned.
AUTO: dict[str, tuple[str, str, int]] = {
    "placement": ("greedy", "cpsat", 20_000),
    "recovery": ("greedy", "cpsat", 500),
    "pairing": ("greedy", "matching", 10**9),
}


def problem_kind(problem: Problem) -> str:
    if isinstance(problem, PlacementProblem):
        return "placement"
    if isinstance(problem, RecoveryProblem):
        return "recovery"
    if isinstance(problem, PairingProblem):
        return "pairing"
    raise TypeError(f"not a planner problem: {type(problem).__name__}")


def methods(kind: str) -> list[str]:
    """Names accepted by :func:`solve` for a problem kind (``auto`` first)."""
    return ["auto", *BACKENDS[kind]]


def instance_size(problem: Problem) -> int:
    """Assignment variables of the exact models (requests x machines), the yardstick ``auto``
    compares against its budget."""
    if isinstance(problem, PlacementProblem):
        return problem.num_requests * problem.num_workers
    if isinstance(problem, RecoveryProblem):
        return problem.num_requests * problem.num_machines
    return int(problem.saved_s.size)


def solve(
    problem: Problem, method: str = "auto", settings: SolveSettings | None = None
) -> SolveResult[Any]:
    """Solve ``problem`` with the backend named ``method`` (see :func:`methods`)."""
    settings = settings or SolveSettings()
    kind = problem_kind(problem)
    if method == "auto":
        return _auto(kind, problem, settings)
    try:
        info = BACKENDS[kind][method]
    except KeyError:
        raise ValueError(
            f"unknown {kind} method {method!r}; choose from {', '.join(methods(kind))}"
        ) from None
    start = time.perf_counter()
    result = info.load()(problem, settings)
    if result.wall_time_s <= 0.0:
        result = dataclasses.replace(result, wall_time_s=time.perf_counter() - start)
    return result


def _auto(kind: str, problem: Problem, settings: SolveSettings) -> SolveResult[Any]:
    greedy_name, exact_name, per_second = AUTO[kind]
    start = time.perf_counter()
    greedy = solve(problem, greedy_name, settings)
    remaining = settings.time_limit_s - (time.perf_counter() - start)
    fits = instance_size(problem) <= per_second * settings.time_limit_s
    if not fits or remaining <= 0.05 or (settings.cancel is not None and settings.cancel.is_set()):
        return dataclasses.replace(
            greedy,
            method=f"auto:{greedy_name}",
            wall_time_s=time.perf_counter() - start,
            message=(greedy.message + "; " if greedy.message else "")
            + ("instance too large for the exact model" if not fits else "no time left"),
        )
    exact_settings = dataclasses.replace(settings, time_limit_s=remaining, warm_start=greedy.plan)
    exact = solve(problem, exact_name, exact_settings)
    merged = merge_auto(kind == "pairing", greedy, exact)
    used = greedy_name if merged.method == greedy.method else exact_name
    return dataclasses.replace(
        merged, method=f"auto:{used}", wall_time_s=time.perf_counter() - start
    )


def merge_auto(
    maximize: bool, greedy: SolveResult[Any], exact: SolveResult[Any]
) -> SolveResult[Any]:
    """One consistent result from the greedy's and the exact backend's: the better plan, the
    exact backend's bound where it is valid for that plan, OPTIMAL only when that bound meets
    the plan's objective, and never INFEASIBLE beside a plan."""
    # Ties keep the greedy plan (the exact one must be strictly better to replace it).
    found = [r for r in (greedy, exact) if r.has_plan and r.objective is not None]
    if not found:
        return exact if exact.termination is not Termination.NO_SOLUTION else greedy
    chosen = found[0]
    for other in found[1:]:
        if _better(maximize, cast(float, other.objective), cast(float, chosen.objective)):
            chosen = other
    value = cast(float, chosen.objective)
    slack = STATUS_REL_TOL * max(1.0, abs(value))
    notes = [chosen.message] if chosen.message else []
    bound = exact.bound if exact.termination is not Termination.INFEASIBLE else None
    if exact.termination is Termination.INFEASIBLE:
        notes.append(f"{exact.method} reported infeasible, yet this plan passes the check")
    if bound is not None and (bound < value - slack if maximize else bound > value + slack):
        notes.append(f"{exact.method}'s bound {bound:.6g} contradicts this plan; dropped")
        bound = None
    proven = (
        exact.termination is Termination.OPTIMAL
        and bound is not None
        and abs(bound - value) <= slack
    )
    if bound is not None:
        bound = max(bound, value) if maximize else min(bound, value)
    if proven:
        return dataclasses.replace(
            chosen,
            termination=Termination.OPTIMAL,
            limit=Limit.NONE,
            bound=bound,
            message="; ".join(notes),
        )
    limit = next((r.limit for r in (exact, chosen) if r.limit is not Limit.NONE), Limit.OTHER)
    return dataclasses.replace(
        chosen,
        termination=Termination.FEASIBLE,
        limit=limit,
        bound=bound,
        message="; ".join(notes),
    )


def _better(maximize: bool, a: float, b: float) -> bool:
    return a > b + 1e-12 if maximize else a < b - 1e-12
