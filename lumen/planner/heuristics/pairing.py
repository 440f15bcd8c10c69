"""Greedy draft pairing: the paper's rule and a largest-saving-first greedy."""

from __future__ import annotations

import math
import time

import numpy as np

from lumen.planner.plans import PairingPlan
from lumen.planner.problems import PairingProblem
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination


def _result(
    name: str, problem: PairingProblem, pairs: list[tuple[int, int]], start: float
) -> SolveResult[PairingPlan]:
    plan = PairingPlan(tuple(sorted(pairs)))
    return SolveResult(
        method=name,
        termination=Termination.FEASIBLE,
        limit=Limit.HEURISTIC,
        objective=plan.total_saved_s(problem),
        wall_time_s=time.perf_counter() - start,
        plan=plan,
    )


def solve_lumen(problem: PairingProblem, settings: SolveSettings) -> SolveResult[PairingPlan]:
    """The paper's rule (docs/architecture.md): each recovering worker, in index order, pairs
    with the unpaired survivor that has the longest waiting time (ties: lowest index), skipping
    forbidden pairs. Savings play no part in the choice; they only score the result."""
    start = time.perf_counter()
    a, b = problem.saved_s.shape
    order = sorted(range(b), key=lambda s: (-float(problem.survivor_wait_s[s]), s))
    taken: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for r in range(a):
        for s in order:
            if s not in taken and math.isfinite(float(problem.saved_s[r, s])):
                pairs.append((r, s))
                taken.add(s)
                break
    return _result("lumen", problem, pairs, start)


def solve_greedy(problem: PairingProblem, settings: SolveSettings) -> SolveResult[PairingPlan]:
    """Largest saving first: a 1/2-approximation of the maximum-weight matching."""
    start = time.perf_counter()
    saved = problem.saved_s
    flat = np.argsort(-np.where(np.isfinite(saved), saved, -1.0), axis=None, kind="stable")
    used_r: set[int] = set()
    used_s: set[int] = set()
    pairs: list[tuple[int, int]] = []
    b = saved.shape[1]
    for k in flat.tolist():
        r, s = divmod(int(k), b)
        w = float(saved[r, s])
        if not (math.isfinite(w) and w > 0.0):
            break
        if r not in used_r and s not in used_s:
            pairs.append((r, s))
            used_r.add(r)
            used_s.add(s)
    return _result("greedy", problem, pairs, start)
