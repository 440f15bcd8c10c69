"""Vectorized evaluation of checkpoint placements (docs/planner.md, section 1).

Every placement backend reports its objective through :func:`placement_objective`, so exact and
heuristic results are scored by the same floating-point arithmetic. The independent checker
(``lumen.planner.checker``) deliberately does not use this module: it recomputes the same numbers
with plain loops, and the tests hold the two to 1e-9 relative agreement.
"""

from __future__ import annotations

import numpy as np

from lumen.planner.problems import BoolArray, FloatArray, IntArray, PlacementProblem

#: Relative slack on capacity sums, the same as the checker's (summation order differs).
CAPACITY_REL_TOL = 1e-9


def _holder_array(problem: PlacementProblem, holder: np.ndarray) -> IntArray:
    arr = np.asarray(holder, dtype=np.int64)
    if arr.shape != (problem.num_requests,):
        raise ValueError(f"holder: expected shape ({problem.num_requests},), got {arr.shape}")
    if arr.size and ((arr < 0) | (arr >= problem.num_workers)).any():
        raise ValueError(f"holder: worker indices must be in 0..{problem.num_workers - 1}")
    return arr


def home_terms(problem: PlacementProblem, holder: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """Per failure scenario ``f``: the worst holder load ``max_j L[f][j]`` and the mean wait of
    ``R_f`` at its holders (both 0 where ``n_f = 0``)."""
    h = _holder_array(problem, holder)
    m = problem.num_workers
    worst = np.zeros(m)
    mean_wait = np.zeros(m)
    if h.size == 0:
        return worst, mean_wait
    # L[f][j] is sparse (at most n non-zero cells), so aggregate over the sorted (home, holder)
    # keys instead of materializing an m x m matrix.
    key = problem.home * m + h
    cells, inverse = np.unique(key, return_inverse=True)
    load = np.bincount(inverse, weights=problem.work_s, minlength=cells.size)
    cell_home = cells // m
    starts = np.flatnonzero(np.r_[True, cell_home[1:] != cell_home[:-1]])
    worst[cell_home[starts]] = np.maximum.reduceat(load, starts)
    count = np.bincount(problem.home, minlength=m)
    wait_sum = np.bincount(problem.home, weights=problem.wait_s[h], minlength=m)
    np.divide(wait_sum, count, out=mean_wait, where=count > 0)
    return worst, mean_wait


def move_cost(problem: PlacementProblem, holder: np.ndarray) -> float:
    """Sum of ``move_cost_s`` over requests whose holder differs from their current one."""
    h = _holder_array(problem, holder)
    moved = (problem.current >= 0) & (h != problem.current)
    return float(problem.move_cost_s[moved].sum())


def placement_objective(problem: PlacementProblem, holder: np.ndarray) -> float:
    """The objective ``J`` of a holder assignment (feasibility is not checked)."""
    worst, mean_wait = home_terms(problem, holder)
    per_home = problem.fail_weight * (problem.alpha * worst + mean_wait)
    return float(per_home.sum()) + move_cost(problem, holder)


def capacity_usage(problem: PlacementProblem, holder: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """Reserved bytes and streamed bytes/s per worker."""
    h = _holder_array(problem, holder)
    m = problem.num_workers
    reserved = np.bincount(h, weights=problem.reserve_bytes, minlength=m).astype(np.float64)
    streamed = np.bincount(h, weights=problem.stream_bytes_s, minlength=m).astype(np.float64)
    return reserved, streamed


def _within(total: FloatArray, cap: FloatArray) -> bool:
    slack = CAPACITY_REL_TOL * np.maximum(1.0, np.abs(cap))
    return bool(np.all(total <= cap + slack))


def home_mask(problem: PlacementProblem) -> BoolArray:
    """``mask[f, j]``: whether ``j`` may hold checkpoints of requests whose home is ``f`` (the
    structural rules only: ``can_hold``, not the home itself, another node if required).

    Allowed holders depend on a request only through its home, so this m x m matrix replaces
    the n x m :meth:`PlacementProblem.allowed` at scale.
    """
    m = problem.num_workers
    mask = np.broadcast_to(problem.can_hold, (m, m)).copy()
    np.fill_diagonal(mask, False)
    if problem.require_other_node:
        mask &= problem.node[None, :] != problem.node[:, None]
    return mask


def holder_candidates(problem: PlacementProblem, home: int) -> IntArray:
    """Workers that may hold checkpoints of requests whose home is ``home`` (row of
    :func:`home_mask`, without building the whole matrix)."""
    ok = problem.can_hold.copy()
    ok[home] = False
    if problem.require_other_node:
        ok &= problem.node != problem.node[home]
    return np.flatnonzero(ok).astype(np.int64)


def placement_feasible(problem: PlacementProblem, holder: np.ndarray) -> bool:
    """Whether ``holder`` satisfies every constraint of docs/planner.md section 1."""
    arr = np.asarray(holder)
    if arr.shape != (problem.num_requests,) or not np.issubdtype(arr.dtype, np.integer):
        return False
    h = arr.astype(np.int64)
    if h.size == 0:
        return True
    if ((h < 0) | (h >= problem.num_workers)).any():
        return False
    ok = problem.can_hold[h] & (h != problem.home)
    if problem.require_other_node:
        ok &= problem.node[h] != problem.node[problem.home]
    if not ok.all():
        return False
    reserved, streamed = capacity_usage(problem, h)
    return _within(reserved, problem.budget_bytes) and _within(streamed, problem.stream_cap_bytes_s)


def unplaceable_requests(problem: PlacementProblem) -> IntArray:
    """Requests that no worker could hold even alone: no structurally allowed worker has the
    budget and stream cap for them (a certificate of infeasibility; an empty answer does not
    prove feasibility, since requests compete for capacity)."""
    bad: list[IntArray] = []
    mask = home_mask(problem)
    for f in np.unique(problem.home).tolist():
        reqs = np.flatnonzero(problem.home == f)
        cand = np.flatnonzero(mask[f])
        if cand.size == 0:
            bad.append(reqs)
            continue
        # Candidates by decreasing budget; those with budget >= r form a prefix, and the
        # request fits somewhere iff the largest stream cap within that prefix is enough.
        order = cand[np.argsort(-problem.budget_bytes[cand], kind="stable")]
        budgets = problem.budget_bytes[order]
        best_cap = np.maximum.accumulate(problem.stream_cap_bytes_s[order])
        k = np.searchsorted(-budgets, -problem.reserve_bytes[reqs], side="right")
        fits = (k > 0) & (best_cap[np.maximum(k - 1, 0)] >= problem.stream_bytes_s[reqs])
        bad.append(reqs[~fits])
    if not bad:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate(bad)).astype(np.int64)
