"""Exact checkpoint placement with OR-Tools CP-SAT (docs/planner.md, section 1).

Model (:func:`build_model`; one Boolean per *allowed* pair, so structural rules need no
constraint):

- ``x[i, j] = 1`` iff worker ``j`` holds request ``i``; ``sum_j x[i, j] = 1`` for every ``i``;
- budgets ``sum_i R_i x[i, j] <= B_j`` and stream caps ``sum_i S_i x[i, j] <= C_j`` (only where
  the requests that may land on ``j`` could exceed them);
- per failure scenario ``f`` with ``fail_weight[f] * alpha > 0``, an integer ``M_f >= sum_{i in
  R_f} W_i x[i, j]`` for every ``j`` that may receive from ``f`` (the worst holder load), with
  the valid cuts ``M_f >= max_i W_i`` and ``M_f >= ceil(sum_i W_i / receivers)``;
- minimize ``sum_f M_f + sum_{i, j} c_ij x[i, j]`` with ``c_ij = K * (fail_weight[f] *
  wait_s[j] / n_f + move_cost_s[i] * [current[i] >= 0 and j != current[i]])``.

Solving (:func:`solve`) first drops the capacity constraints: ``J`` then separates into one
subproblem per home (:func:`build_home_model`), each small and solved on its own. Exchanging the
whole contents of two holders leaves the worst load unchanged, so (without move costs) some
optimum gives the lower-wait holder at least as many requests: the home model orders candidates
by wait, requires non-increasing counts along that order and keeps only the first ``n_f`` of
them. If the union of the home optima fits the capacities it is optimal for the whole problem;
otherwise the full model is solved with each home's part bounded below by its relaxed optimum.
Without this split the joint search multiplies independent subproblems and stalls at a dozen
workers.

Scaling (CP-SAT is integral). The objective is counted in units of ``1 / K`` seconds of ``J``
with ``K = 2**24 / max_f(fail_weight[f] * alpha * max_{i in R_f} work_s[i])``; restore work
enters pre-multiplied by its scenario's coefficient, ``W_i = round(K * fail_weight[f] * alpha *
work_s[i])``, so ``M_f`` is in objective units and each rounding error is at most half a unit
per request: the model's optimum is within ``n / K`` (at most ``n * 6e-8`` of ``J``) of the true
one. Bytes are exact integers when the data are whole bytes; otherwise they are counted in units
of ``max / 2**32``, reservations rounded up and capacities down, so a plan of the model is always
feasible. The reported ``objective`` is recomputed from the plan in floating point
(:func:`placement_objective`); ``bound`` is the solver's bound divided by ``K``: valid within
the same resolution ``n / K``, and clipped to the objective.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from ortools.sat.python import cp_model

from lumen.planner.placement_eval import (
    holder_candidates,
    placement_feasible,
    placement_objective,
    unplaceable_requests,
)
from lumen.planner.plans import PlacementPlan
from lumen.planner.problems import FloatArray, IntArray, PlacementProblem
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination

#: Objective resolution: the largest weighted restore work is 2**24 objective units.
OBJECTIVE_STEPS = float(2**24)
#: Byte and stream resolution when the data are not whole numbers: the largest value / 2**32.
CAPACITY_STEPS = float(2**32)
#: Keep |objective| below this many units so that CP-SAT's LP (doubles) stays exact.
_MAX_OBJECTIVE_UNITS = float(2**53)
#: Share of the time limit for the per-home subproblems (the rest is for the full model).
_RELAXATION_SHARE = 0.5

_STATUS: dict[int, tuple[Termination, Limit]] = {
    cp_model.OPTIMAL: (Termination.OPTIMAL, Limit.NONE),
    cp_model.FEASIBLE: (Termination.FEASIBLE, Limit.TIME),
    cp_model.INFEASIBLE: (Termination.INFEASIBLE, Limit.NONE),
    cp_model.MODEL_INVALID: (Termination.ERROR, Limit.NONE),
    cp_model.UNKNOWN: (Termination.NO_SOLUTION, Limit.TIME),
}


@dataclass(frozen=True)
class PlacementCpModel:
    """A built CP-SAT model with its variable handles and scaling."""

    model: cp_model.CpModel
    #: The (request, worker) pairs that have a Boolean, one row each, and those Booleans.
    pairs: IntArray
    x: list[cp_model.IntVar]
    #: ``M_f`` per failure scenario that carries a worst-load term.
    worst: dict[int, cp_model.IntVar]
    #: Objective units per second of ``J``.
    scale: float


@dataclass(frozen=True)
class CpOutcome:
    """What one CP-SAT run gave: its status, the holders it chose (-1 for requests outside the
    model or without a solution) and the objective and bound in model units."""

    status: int
    holder: IntArray | None
    objective_units: float
    bound_units: float


def objective_scale(problem: PlacementProblem) -> float:
    """``K``, objective units per second of ``J`` (module docstring)."""
    weighted = problem.fail_weight[problem.home] * problem.alpha * problem.work_s
    top = float(weighted.max(initial=0.0))
    mean_wait = float((problem.fail_weight * problem.wait_s).max(initial=0.0))
    costs = max(mean_wait, float(problem.move_cost_s.max(initial=0.0)))
    if top <= 0.0:
        top = costs
    if top <= 0.0:
        return 1.0
    scale = OBJECTIVE_STEPS / top
    # Huge waits or move costs against tiny restore work: keep int64/double arithmetic exact.
    n = max(problem.num_requests, 1)
    if (costs + top) * scale * n > _MAX_OBJECTIVE_UNITS:
        scale = _MAX_OBJECTIVE_UNITS / ((costs + top) * n)
    return scale


def _work_units(problem: PlacementProblem, scale: float) -> IntArray:
    weighted = problem.fail_weight[problem.home] * problem.alpha * problem.work_s
    return np.round(scale * weighted).astype(np.int64)


def _pair_costs(
    problem: PlacementProblem, rows: IntArray, cols: IntArray, scale: float
) -> IntArray:
    f = problem.home[rows]
    count = np.bincount(problem.home, minlength=problem.num_workers)
    cost = problem.fail_weight[f] * problem.wait_s[cols] / np.maximum(count[f], 1)
    cur = problem.current[rows]
    cost = cost + np.where((cur >= 0) & (cur != cols), problem.move_cost_s[rows], 0.0)
    return np.round(cost * scale).astype(np.int64)


def _capacity_units(items: FloatArray, caps: FloatArray) -> tuple[IntArray, IntArray]:
    """Integral sizes (rounded up) and capacities (rounded down, -1 for none)."""
    finite = np.isfinite(caps)
    top = float(max(items.max(initial=0.0), caps[finite].max(initial=0.0)))
    whole = bool(
        np.all(items == np.round(items)) and np.all(caps[finite] == np.round(caps[finite]))
    )
    unit = 1.0 if whole and top <= CAPACITY_STEPS * 256 else max(top / CAPACITY_STEPS, 1e-300)
    size = np.ceil(items / unit).astype(np.int64)
    cap = np.where(finite, np.floor(np.where(finite, caps, 0.0) / unit), -1.0)
    return size, cap.astype(np.int64)


def _worst_load(
    model: cp_model.CpModel,
    name: str,
    x: list[cp_model.IntVar],
    pair_units: IntArray,
    groups: Any,
    member_units: IntArray,
) -> cp_model.IntVar:
    """``M >= sum of pair_units`` over each group of pair indices (one group per receiving
    worker); ``member_units`` (the home's requests, once each) give the valid lower bounds."""
    total = int(member_units.sum())
    groups = [g for g in groups if g]
    lower = max(int(member_units.max(initial=0)), -(-total // max(len(groups), 1)))
    worst = model.new_int_var(min(lower, total), total, name)
    for ks in groups:
        model.add(worst >= sum(int(pair_units[k]) * x[k] for k in ks))
    return worst


def build_model(
    problem: PlacementProblem,
    scale: float | None = None,
    home_floor: Mapping[int, int] | None = None,
) -> PlacementCpModel:
    """The full model (module docstring). ``home_floor[f]``, optional, is a proven lower bound
    on home ``f``'s part of the objective in model units (from :func:`build_home_model`)."""
    n, m = problem.num_requests, problem.num_workers
    scale = objective_scale(problem) if scale is None else scale
    model = cp_model.CpModel()
    rows, cols = np.nonzero(problem.allowed())
    pairs = np.stack([rows, cols], axis=1).astype(np.int64)
    x = [model.new_bool_var(f"x_{i}_{j}") for i, j in pairs.tolist()]
    by_request: list[list[int]] = [[] for _ in range(n)]
    by_worker: list[list[int]] = [[] for _ in range(m)]
    for k, (i, j) in enumerate(pairs.tolist()):
        by_request[i].append(k)
        by_worker[j].append(k)
    for ks in by_request:
        # An empty exactly-one is false: a request without allowed holders makes it infeasible.
        model.add_exactly_one(x[k] for k in ks)
    for items, caps in (
        (problem.reserve_bytes, problem.budget_bytes),
        (problem.stream_bytes_s, problem.stream_cap_bytes_s),
    ):
        size, cap = _capacity_units(items, caps)
        for j, ks in enumerate(by_worker):
            if cap[j] >= 0 and ks and int(size[rows[ks]].sum()) > cap[j]:
                model.add(sum(int(size[rows[k]]) * x[k] for k in ks) <= int(cap[j]))
    request_units = _work_units(problem, scale)
    units = request_units[rows]
    coef = _pair_costs(problem, rows, cols, scale)
    worst: dict[int, cp_model.IntVar] = {}
    for f in np.unique(problem.home).tolist():
        ks_f = np.flatnonzero(problem.home[rows] == f)
        part: Any = sum(int(coef[k]) * x[k] for k in ks_f.tolist())
        if problem.fail_weight[f] * problem.alpha > 0.0:
            groups: dict[int, list[int]] = {}
            for k in ks_f.tolist():
                groups.setdefault(int(cols[k]), []).append(k)
            member_units = request_units[problem.home == f]
            worst[f] = _worst_load(model, f"M_{f}", x, units, groups.values(), member_units)
            part = part + worst[f]
        if home_floor is not None and f in home_floor:
            model.add(part >= int(home_floor[f]))
    model.minimize(sum(worst.values()) + sum(int(c) * x[k] for k, c in enumerate(coef) if c))
    return PlacementCpModel(model, pairs, x, worst, scale)


def build_home_model(problem: PlacementProblem, home: int, scale: float) -> PlacementCpModel:
    """Home ``home``'s part of the objective over its requests with capacities dropped (a
    relaxation), with the wait-order dominance of the module docstring when no move costs
    apply."""
    model = cp_model.CpModel()
    members = np.flatnonzero(problem.home == home)
    cand = holder_candidates(problem, home)
    cur = problem.current[members]
    dominance = not bool(((cur >= 0) & (problem.move_cost_s[members] > 0)).any())
    if dominance:
        cand = cand[np.lexsort((cand, problem.wait_s[cand]))][: members.size]
    rows = np.repeat(members, cand.size)
    cols = np.tile(cand, members.size)
    pairs = np.stack([rows, cols], axis=1).astype(np.int64)
    x = [model.new_bool_var(f"x_{i}_{j}") for i, j in pairs.tolist()]
    grid = np.arange(pairs.shape[0]).reshape(members.size, cand.size)
    for ks in grid.tolist():
        model.add_exactly_one(x[k] for k in ks)
    if dominance:
        for a, b in zip(grid.T[:-1].tolist(), grid.T[1:].tolist(), strict=True):
            model.add(sum(x[k] for k in a) >= sum(x[k] for k in b))
    worst: dict[int, cp_model.IntVar] = {}
    if problem.fail_weight[home] * problem.alpha > 0.0:
        member_units = _work_units(problem, scale)[members]
        units = member_units[np.repeat(np.arange(members.size), cand.size)]
        worst[home] = _worst_load(model, f"M_{home}", x, units, grid.T.tolist(), member_units)
    coef = _pair_costs(problem, rows, cols, scale)
    model.minimize(sum(worst.values()) + sum(int(c) * x[k] for k, c in enumerate(coef) if c))
    return PlacementCpModel(model, pairs, x, worst, scale)


def plan_from_solution(cp: PlacementCpModel, solution: Any, n: int) -> IntArray:
    """Holders encoded by a CP-SAT solution vector (-1 for requests the model does not cover)."""
    index = np.array([v.index for v in cp.x], dtype=np.int64)
    chosen = np.asarray(solution, dtype=np.int64)[index] > 0
    holder = np.full(n, -1, dtype=np.int64)
    holder[cp.pairs[chosen, 0]] = cp.pairs[chosen, 1]
    return holder


def solve_model(
    cp: PlacementCpModel,
    settings: SolveSettings,
    n: int,
    hint: IntArray | None = None,
    time_limit_s: float | None = None,
) -> CpOutcome:
    """Run CP-SAT on a built model under ``settings`` (threads, seed, gap; the time limit unless
    ``time_limit_s`` is given); ``settings.cancel`` stops the search early."""
    if hint is not None:
        for k, (i, j) in enumerate(cp.pairs.tolist()):
            cp.model.add_hint(cp.x[k], int(hint[i] == j))
    solver = cp_model.CpSolver()
    params: Any = solver.parameters
    params.max_time_in_seconds = float(time_limit_s or settings.time_limit_s)
    params.num_workers = int(settings.threads)
    params.random_seed = int(settings.seed)
    params.relative_gap_limit = float(settings.rel_gap)
    done = threading.Event()
    cancel = settings.cancel

    def watch() -> None:
        # Poll rather than block so that the thread ends with the solve.
        while cancel is not None and not done.is_set():
            if cancel.wait(0.01):
                solver.stop_search()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        status = cast(int, solver.solve(cp.model))
    finally:
        done.set()
        watcher.join()
    holder = None
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        holder = plan_from_solution(cp, solver.response_proto.solution, n)
    objective = float(solver.objective_value) if holder is not None else float("inf")
    return CpOutcome(status, holder, objective, float(solver.best_objective_bound))


def _warm(problem: PlacementProblem, warm: Any) -> IntArray | None:
    if warm is None:
        return None
    holder = np.asarray(warm.holder if isinstance(warm, PlacementPlan) else warm, dtype=np.int64)
    return holder if holder.shape == (problem.num_requests,) else None


def _cancelled(settings: SolveSettings) -> bool:
    return settings.cancel is not None and settings.cancel.is_set()


def _solve_homes(
    problem: PlacementProblem,
    settings: SolveSettings,
    scale: float,
    homes: list[int],
    deadline: float,
    relaxed: IntArray,
    floors: dict[int, int],
) -> list[int]:
    """Solve the relaxed subproblems of ``homes``, smallest first, each given an equal share of
    the time left until ``deadline`` (so quick homes leave their time to the hard ones); update
    ``relaxed`` (holders) and ``floors`` (proven bounds, model units) in place and return the
    homes not proven optimal."""
    n = problem.num_requests
    count = np.bincount(problem.home, minlength=problem.num_workers)
    order = sorted(homes, key=lambda f: (int(count[f]), f))
    unproven: list[int] = []
    for k, f in enumerate(order):
        if _cancelled(settings):
            unproven.extend(order[k:])
            break
        share = max((deadline - time.perf_counter()) / (len(order) - k), 0.01)
        members = problem.home == f
        hint = relaxed if (relaxed[members] >= 0).all() else None
        out = solve_model(build_home_model(problem, f, scale), settings, n, hint, share)
        if out.holder is not None:
            relaxed[members] = out.holder[members]
        if np.isfinite(out.bound_units):
            floors[f] = max(floors.get(f, 0), int(np.ceil(out.bound_units - 1e-6)))
        if out.status != cp_model.OPTIMAL:
            unproven.append(f)
    return unproven


def solve(problem: PlacementProblem, settings: SolveSettings) -> SolveResult[PlacementPlan]:
    """Solve ``problem`` exactly with CP-SAT (see the module docstring for the method)."""
    start = time.perf_counter()
    n = problem.num_requests

    def result(
        termination: Termination,
        limit: Limit = Limit.NONE,
        holder: IntArray | None = None,
        bound_units: float | None = None,
        message: str = "",
    ) -> SolveResult[PlacementPlan]:
        plan = None if holder is None else PlacementPlan.of(holder)
        objective = None if holder is None else placement_objective(problem, holder)
        bound = None
        if bound_units is not None and objective is not None:
            bound = min(bound_units / scale, objective)
        if termination is Termination.OPTIMAL and settings.rel_gap > 0:
            message = message or f"optimal within rel_gap {settings.rel_gap:g}"
        elapsed = time.perf_counter() - start
        return SolveResult("cpsat", termination, limit, objective, bound, elapsed, plan, message)

    if n == 0:
        return SolveResult(
            "cpsat",
            Termination.OPTIMAL,
            objective=0.0,
            bound=0.0,
            plan=PlacementPlan.of(np.zeros(0, np.int64)),
        )
    stuck = unplaceable_requests(problem)
    if stuck.size:
        return result(
            Termination.INFEASIBLE,
            message=f"request {int(stuck[0])} fits on no allowed worker ({stuck.size} such)",
        )
    scale = objective_scale(problem)
    # Stage 1: the capacity relaxation, one subproblem per home.
    relaxed = np.full(n, -1, dtype=np.int64)
    floors: dict[int, int] = {}
    homes = np.unique(problem.home).tolist()
    stage_end = start + _RELAXATION_SHARE * settings.time_limit_s
    unproven = _solve_homes(problem, settings, scale, homes, stage_end, relaxed, floors)
    if (relaxed >= 0).all() and placement_feasible(problem, relaxed):
        if unproven and not _cancelled(settings):
            # The relaxation's plan fits: spend the rest of the time on its open homes.
            kept = relaxed.copy()
            deadline = start + settings.time_limit_s
            unproven = _solve_homes(problem, settings, scale, unproven, deadline, relaxed, floors)
            if not placement_feasible(problem, relaxed):
                relaxed = kept
                unproven = unproven or [-1]  # the proven improvement did not fit
        bound_units = float(sum(floors.values()))
        if not unproven:
            return result(Termination.OPTIMAL, holder=relaxed, bound_units=bound_units)
        stopped = Limit.CANCELLED if _cancelled(settings) else Limit.TIME
        return result(Termination.FEASIBLE, stopped, relaxed, bound_units)
    if _cancelled(settings):
        return result(Termination.NO_SOLUTION, Limit.CANCELLED)
    # Stage 2: the full model, each home's part bounded below by its relaxed optimum.
    cp = build_model(problem, scale, floors)
    hint = _warm(problem, settings.warm_start)
    if hint is None and (relaxed >= 0).all():
        hint = relaxed
    remaining = max(settings.time_limit_s - (time.perf_counter() - start), 0.05)
    out = solve_model(cp, settings, n, hint, remaining)
    termination, limit = _STATUS.get(out.status, (Termination.ERROR, Limit.OTHER))
    if _cancelled(settings) and termination in (Termination.FEASIBLE, Termination.NO_SOLUTION):
        limit = Limit.CANCELLED
    if termination is Termination.ERROR:
        return result(termination, limit, message=cp.model.validate() or "CP-SAT error")
    bound_units = max(out.bound_units, float(sum(floors.values())))
    return result(termination, limit, out.holder, bound_units)
