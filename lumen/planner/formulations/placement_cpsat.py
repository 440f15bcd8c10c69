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
one. Bytes and stream rates are exact integers when the data are whole numbers or decimals of at
most :data:`DECIMALS` digits (scaled by a power of ten; :func:`capacity_units`). Otherwise they
are counted in units of ``max / 2**32`` and the full model rounds them the *relaxed* way (sizes
down, capacities up): every real plan stays a model plan, so the model's INFEASIBLE and its bound
are proofs, and its plan is checked in floating point (:func:`placement_feasible`). A plan over a
real capacity (the rounding bound) is replaced by the optimum of the *conservatively* rounded
model (sizes up, capacities down: its plans fit), reported FEASIBLE with the relaxed bound.

Time limit (:func:`solve`): the home subproblems get half of it, each an equal share of what is
left; the full model is written into the CP-SAT proto directly (the Python expression API cost
seconds at 100,000 pairs) with deadline checks, and CP-SAT gets what is left less the cost of
loading the model, without presolve when that would not fit (presolve overruns its limit). What
runs out of time returns the warm start (FEASIBLE) or NO_SOLUTION, with :attr:`Limit.TIME`.

The reported ``objective`` is recomputed from the plan in floating point
(:func:`placement_objective`); ``bound`` is the solver's bound divided by ``K``: valid within
the same resolution ``n / K``, and clipped to the objective.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from ortools.sat.python import cp_model

from lumen.planner.formulations.cpsat_proto import int_var, linear
from lumen.planner.formulations.deadline import OutOfTime, check_deadline
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
#: Capacities are scaled exactly when they are decimals with at most this many digits after
#: the point and the largest scaled value is at most EXACT_UNITS.
DECIMALS = 6
EXACT_UNITS = float(2**40)
#: The largest right-hand side of a linear row (CP-SAT's domains are int64).
_INT_MAX = 2**62
#: Keep |objective| below this many units so that CP-SAT's LP (doubles) stays exact.
_MAX_OBJECTIVE_UNITS = float(2**53)
#: Share of the time limit for the per-home subproblems (the rest is for the full model).
_RELAXATION_SHARE = 0.5
#: The full model is not started with less time than this left (seconds).
_MIN_SOLVE_S = 0.02
#: Seconds per Boolean of handing a model to CP-SAT, and of its presolve (measured: 0.07 s and
#: 0.5 s at 254,000 pairs on a loaded 2-core machine; kept on the safe side).
_LOAD_S_PER_PAIR = 5e-7
_PRESOLVE_S_PER_PAIR = 4e-6
GAP_MESSAGE = "stopped at the requested relative gap {:g}"

_STATUS: dict[int, tuple[Termination, Limit]] = {
    cp_model.OPTIMAL: (Termination.OPTIMAL, Limit.NONE),
    cp_model.FEASIBLE: (Termination.FEASIBLE, Limit.TIME),
    cp_model.INFEASIBLE: (Termination.INFEASIBLE, Limit.NONE),
    cp_model.MODEL_INVALID: (Termination.ERROR, Limit.NONE),
    cp_model.UNKNOWN: (Termination.NO_SOLUTION, Limit.TIME),
}


@dataclass(frozen=True)
class PlacementCpModel:
    """A built CP-SAT model with its variable indices and scaling (the model is written into
    its proto directly: the Python expression API costs seconds at 100,000 pairs)."""

    model: cp_model.CpModel
    #: The (request, worker) pairs that have a Boolean, one row each, and those Booleans'
    #: variable indices.
    pairs: IntArray
    x: IntArray
    #: Variable index of ``M_f`` per failure scenario that carries a worst-load term.
    worst: dict[int, int]
    #: Objective units per second of ``J``.
    scale: float
    #: Whether the byte and stream capacities are integral without rounding (see
    #: :func:`capacity_units`); otherwise they were rounded the way ``relaxed`` says.
    exact: bool = True


@dataclass(frozen=True)
class CpOutcome:
    """What one CP-SAT run gave: its status, the holders it chose (-1 for requests outside the
    model or without a solution), the objective and bound in model units, and whether the
    optimum was proven (CP-SAT also says OPTIMAL when it stops at ``relative_gap_limit``)."""

    status: int
    holder: IntArray | None
    objective_units: float
    bound_units: float
    proven: bool = False


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


def capacity_units(
    items: FloatArray, caps: FloatArray, relaxed: bool = True
) -> tuple[IntArray, IntArray, bool]:
    """Integral sizes and capacities (-1 for none) and whether they are exact.

    Exact when the data are whole numbers, or decimals with at most :data:`DECIMALS` digits
    (scaled by a power of ten), up to :data:`EXACT_UNITS`. Otherwise they are counted in units
    of ``max / 2**32``: ``relaxed`` rounds sizes down and capacities up (every plan of the real
    problem stays a plan of the model: its infeasibility and its bound are proofs, its plans
    must be checked), else sizes up and capacities down (every plan of the model is a plan of
    the real problem, but the model may cut off the optimum)."""
    finite = np.isfinite(caps)
    values = np.concatenate([items, caps[finite]])
    top = float(np.abs(values).max(initial=0.0))
    for digits in range(DECIMALS + 1):
        factor = 10.0**digits
        if top * factor > EXACT_UNITS:
            break
        scaled = np.round(values * factor)
        if np.array_equal(scaled / factor, values):
            size = np.round(items * factor).astype(np.int64)
            cap = np.where(finite, np.round(np.where(finite, caps, 0.0) * factor), -1.0)
            return size, cap.astype(np.int64), True
    unit = max(top / CAPACITY_STEPS, 1e-300)
    down, up = (np.floor, np.ceil) if relaxed else (np.ceil, np.floor)
    size = down(items / unit).astype(np.int64)
    cap = np.where(finite, up(np.where(finite, caps, 0.0) / unit), -1.0)
    return size, cap.astype(np.int64), False


def _bool_proto() -> Any:
    """A Boolean's variable message, copied into models in bulk (``variables.extend``)."""
    var = cp_model.CpModel().proto.variables.add()
    var.domain.extend([0, 1])
    return var


_BOOL = _bool_proto()


def _bools(proto: Any, count: int) -> IntArray:
    first = len(proto.variables)
    proto.variables.extend([_BOOL] * count)
    return np.arange(first, first + count, dtype=np.int64)


def _groups(keys: IntArray, count: int) -> list[IntArray]:
    """Positions of ``keys`` grouped by value ``0 .. count - 1``."""
    order = np.argsort(keys, kind="stable")
    cuts = np.searchsorted(keys[order], np.arange(count + 1))
    return [order[cuts[k] : cuts[k + 1]] for k in range(count)]


def _worst_load(
    proto: Any, x: IntArray, pair_units: IntArray, groups: list[IntArray], member_units: IntArray
) -> int:
    """``M >= sum of pair_units`` over each group of pair indices (one group per receiving
    worker); ``member_units`` (the home's requests, once each) give the valid lower bounds."""
    total = int(member_units.sum())
    groups = [g for g in groups if g.size]
    lower = max(int(member_units.max(initial=0)), -(-total // max(len(groups), 1)))
    worst = int_var(proto, min(lower, total), total)
    for ks in groups:
        var = [worst, *x[ks].tolist()]
        linear(proto, var, [1, *(-pair_units[ks]).tolist()], 0, _INT_MAX)
    return worst


def _capacities(
    problem: PlacementProblem,
    proto: Any,
    x: IntArray,
    rows: IntArray,
    by_worker: list[IntArray],
    relaxed: bool,
    deadline: float,
) -> bool:
    """Budget and stream-cap rows where they could bind; whether their scaling is exact."""
    exact = True
    for items, caps in (
        (problem.reserve_bytes, problem.budget_bytes),
        (problem.stream_bytes_s, problem.stream_cap_bytes_s),
    ):
        size, cap, fine = capacity_units(items, caps, relaxed)
        exact &= fine
        for j, ks in enumerate(by_worker):
            if j % 256 == 0:
                check_deadline(deadline)
            if cap[j] >= 0 and ks.size and int(size[rows[ks]].sum()) > cap[j]:
                linear(proto, x[ks].tolist(), size[rows[ks]].tolist(), -_INT_MAX, int(cap[j]))
    return exact


def build_model(
    problem: PlacementProblem,
    scale: float | None = None,
    home_floor: Mapping[int, int] | None = None,
    relaxed: bool = True,
    deadline: float = math.inf,
) -> PlacementCpModel:
    """The full model (module docstring). ``home_floor[f]``, optional, is a proven lower bound
    on home ``f``'s part of the objective in model units (from :func:`build_home_model`);
    ``relaxed`` chooses the rounding of inexact capacities (:func:`capacity_units`). Raises
    :class:`OutOfTime` past ``deadline`` (a :func:`time.perf_counter` value)."""
    n, m = problem.num_requests, problem.num_workers
    scale = objective_scale(problem) if scale is None else scale
    model = cp_model.CpModel()
    proto = model.proto
    rows, cols = np.nonzero(problem.allowed())
    pairs = np.stack([rows, cols], axis=1).astype(np.int64)
    x = _bools(proto, len(rows))
    cuts = np.searchsorted(rows, np.arange(n + 1))
    xl = x.tolist()
    for i in range(n):
        # An empty exactly-one is false: a request without allowed holders makes it infeasible.
        proto.constraints.add().exactly_one.literals.extend(xl[cuts[i] : cuts[i + 1]])
    check_deadline(deadline)
    exact = _capacities(problem, proto, x, rows, _groups(cols, m), relaxed, deadline)
    request_units = _work_units(problem, scale)
    units = request_units[rows]
    coef = _pair_costs(problem, rows, cols, scale)
    worst: dict[int, int] = {}
    by_home = _groups(problem.home[rows], m)
    for f in np.unique(problem.home).tolist():
        check_deadline(deadline)
        ks_f = by_home[f]
        var, cf = x[ks_f].tolist(), coef[ks_f].tolist()
        if problem.fail_weight[f] * problem.alpha > 0.0:
            groups = [ks_f[g] for g in _groups(cols[ks_f], m)]
            member_units = request_units[problem.home == f]
            worst[f] = _worst_load(proto, x, units, groups, member_units)
            var, cf = [worst[f], *var], [1, *cf]
        if home_floor is not None and f in home_floor:
            linear(proto, var, cf, int(home_floor[f]), _INT_MAX)
    keep = np.flatnonzero(coef)
    proto.objective.vars.extend([*worst.values(), *x[keep].tolist()])
    proto.objective.coeffs.extend([1] * len(worst) + coef[keep].tolist())
    return PlacementCpModel(model, pairs, x, worst, scale, exact)


def build_home_model(problem: PlacementProblem, home: int, scale: float) -> PlacementCpModel:
    """Home ``home``'s part of the objective over its requests with capacities dropped (a
    relaxation), with the wait-order dominance of the module docstring when no move costs
    apply."""
    model = cp_model.CpModel()
    proto = model.proto
    members = np.flatnonzero(problem.home == home)
    cand = holder_candidates(problem, home)
    cur = problem.current[members]
    dominance = not bool(((cur >= 0) & (problem.move_cost_s[members] > 0)).any())
    if dominance:
        cand = cand[np.lexsort((cand, problem.wait_s[cand]))][: members.size]
    rows = np.repeat(members, cand.size)
    cols = np.tile(cand, members.size)
    pairs = np.stack([rows, cols], axis=1).astype(np.int64)
    x = _bools(proto, len(rows))
    grid = x.reshape(members.size, cand.size)
    for row in grid.tolist():
        proto.constraints.add().exactly_one.literals.extend(row)
    if dominance:
        for a, b in zip(grid.T[:-1].tolist(), grid.T[1:].tolist(), strict=True):
            linear(proto, a + b, [1] * len(a) + [-1] * len(b), 0, _INT_MAX)
    worst: dict[int, int] = {}
    if problem.fail_weight[home] * problem.alpha > 0.0:
        member_units = _work_units(problem, scale)[members]
        units = np.repeat(member_units, cand.size)
        index = np.arange(len(rows)).reshape(members.size, cand.size)
        worst[home] = _worst_load(proto, x, units, list(index.T), member_units)
    coef = _pair_costs(problem, rows, cols, scale)
    keep = np.flatnonzero(coef)
    proto.objective.vars.extend([*worst.values(), *x[keep].tolist()])
    proto.objective.coeffs.extend([1] * len(worst) + coef[keep].tolist())
    return PlacementCpModel(model, pairs, x, worst, scale)


def plan_from_solution(cp: PlacementCpModel, solution: Any, n: int) -> IntArray:
    """Holders encoded by a CP-SAT solution vector (-1 for requests the model does not cover)."""
    chosen = np.asarray(solution, dtype=np.int64)[cp.x] > 0
    holder = np.full(n, -1, dtype=np.int64)
    holder[cp.pairs[chosen, 0]] = cp.pairs[chosen, 1]
    return holder


def solve_model(
    cp: PlacementCpModel,
    settings: SolveSettings,
    n: int,
    hint: IntArray | None = None,
    time_limit_s: float | None = None,
    presolve: bool = True,
) -> CpOutcome:
    """Run CP-SAT on a built model under ``settings`` (threads, seed, gap; the time limit unless
    ``time_limit_s`` is given); ``settings.cancel`` stops the search early. CP-SAT's presolve
    overruns short time limits on large models: ``presolve=False`` skips it."""
    if hint is not None:
        proto = cp.model.proto
        proto.ClearField("solution_hint")
        proto.solution_hint.vars.extend(cp.x.tolist())
        proto.solution_hint.values.extend(
            (hint[cp.pairs[:, 0]] == cp.pairs[:, 1]).astype(int).tolist()
        )
    solver = cp_model.CpSolver()
    params: Any = solver.parameters
    params.max_time_in_seconds = float(time_limit_s or settings.time_limit_s)
    params.num_workers = int(settings.threads)
    params.random_seed = int(settings.seed)
    params.relative_gap_limit = float(settings.rel_gap)
    params.cp_model_presolve = presolve
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
    bound = float(solver.best_objective_bound)
    proven = status == cp_model.OPTIMAL and objective <= bound + 0.5
    return CpOutcome(status, holder, objective, bound, proven)


def _warm(problem: PlacementProblem, warm: Any) -> IntArray | None:
    if warm is None:
        return None
    holder = np.asarray(warm.holder if isinstance(warm, PlacementPlan) else warm, dtype=np.int64)
    return holder if holder.shape == (problem.num_requests,) else None


def _cancelled(settings: SolveSettings) -> bool:
    return settings.cancel is not None and settings.cancel.is_set()


@dataclass
class _Search:
    """What the per-home stage has found: holders of the relaxation (-1 where unsolved), the
    proven per-home floors (model units) and why homes were left unproven."""

    relaxed: IntArray
    floors: dict[int, int] = field(default_factory=dict)
    timed_out: bool = False
    gap_stopped: bool = False

    def limit(self, settings: SolveSettings) -> tuple[Limit, str]:
        if _cancelled(settings):
            return Limit.CANCELLED, ""
        if self.gap_stopped and not self.timed_out:
            return Limit.OTHER, GAP_MESSAGE.format(settings.rel_gap)
        return Limit.TIME, ""


def _solve_homes(
    problem: PlacementProblem,
    settings: SolveSettings,
    scale: float,
    homes: list[int],
    deadline: float,
    search: _Search,
) -> list[int]:
    """Solve the relaxed subproblems of ``homes``, smallest first, each given an equal share of
    the time left until ``deadline`` (so quick homes leave their time to the hard ones); update
    ``search`` in place and return the homes not proven optimal."""
    n = problem.num_requests
    count = np.bincount(problem.home, minlength=problem.num_workers)
    order = sorted(homes, key=lambda f: (int(count[f]), f))
    unproven: list[int] = []
    relaxed, floors = search.relaxed, search.floors
    for k, f in enumerate(order):
        left = deadline - time.perf_counter()
        if _cancelled(settings) or left <= 0.0:
            search.timed_out |= left <= 0.0
            unproven.extend(order[k:])
            break
        members = problem.home == f
        hint = relaxed if (relaxed[members] >= 0).all() else None
        share = max(left / (len(order) - k), 1e-3)
        out = solve_model(build_home_model(problem, f, scale), settings, n, hint, share)
        if out.holder is not None:
            relaxed[members] = out.holder[members]
        if np.isfinite(out.bound_units):
            floors[f] = max(floors.get(f, 0), int(np.ceil(out.bound_units - 1e-6)))
        if not out.proven:
            unproven.append(f)
            search.gap_stopped |= out.status == cp_model.OPTIMAL
            search.timed_out |= out.status != cp_model.OPTIMAL
    return unproven


@dataclass(frozen=True)
class _Run:
    """One call of :func:`solve`: its problem, settings, clock and objective scale."""

    problem: PlacementProblem
    settings: SolveSettings
    start: float
    scale: float

    @property
    def deadline(self) -> float:
        return self.start + self.settings.time_limit_s

    def result(
        self,
        termination: Termination,
        limit: Limit = Limit.NONE,
        holder: IntArray | None = None,
        bound_units: float | None = None,
        message: str = "",
    ) -> SolveResult[PlacementPlan]:
        plan = None if holder is None else PlacementPlan.of(holder)
        objective = None if holder is None else placement_objective(self.problem, holder)
        bound = None
        if bound_units is not None and objective is not None:
            bound = min(bound_units / self.scale, objective)
        elapsed = time.perf_counter() - self.start
        return SolveResult("cpsat", termination, limit, objective, bound, elapsed, plan, message)

    def fallback(self, limit: Limit, search: _Search, message: str) -> SolveResult[PlacementPlan]:
        """No plan of CP-SAT's: the warm start as FEASIBLE if it fits, else NO_SOLUTION."""
        warm = _warm(self.problem, self.settings.warm_start)
        if warm is not None and placement_feasible(self.problem, warm):
            bound = float(sum(search.floors.values()))
            return self.result(Termination.FEASIBLE, limit, warm, bound, message)
        return self.result(Termination.NO_SOLUTION, limit, message=message)


def solve(problem: PlacementProblem, settings: SolveSettings) -> SolveResult[PlacementPlan]:
    """Solve ``problem`` exactly with CP-SAT (see the module docstring for the method)."""
    start = time.perf_counter()
    n = problem.num_requests
    if n == 0:
        return SolveResult(
            "cpsat",
            Termination.OPTIMAL,
            objective=0.0,
            bound=0.0,
            plan=PlacementPlan.of(np.zeros(0, np.int64)),
        )
    run = _Run(problem, settings, start, objective_scale(problem))
    stuck = unplaceable_requests(problem)
    if stuck.size:
        return run.result(
            Termination.INFEASIBLE,
            message=f"request {int(stuck[0])} fits on no allowed worker ({stuck.size} such)",
        )
    # Stage 1: the capacity relaxation, one subproblem per home.
    search = _Search(np.full(n, -1, dtype=np.int64))
    homes = np.unique(problem.home).tolist()
    stage_end = start + _RELAXATION_SHARE * settings.time_limit_s
    unproven = _solve_homes(problem, settings, run.scale, homes, stage_end, search)
    relaxed = search.relaxed
    if (relaxed >= 0).all() and placement_feasible(problem, relaxed):
        if unproven and not _cancelled(settings):
            # The relaxation's plan fits: spend the rest of the time on its open homes.
            kept = relaxed.copy()
            unproven = _solve_homes(problem, settings, run.scale, unproven, run.deadline, search)
            if not placement_feasible(problem, relaxed):
                relaxed[:] = kept
                search.timed_out = True
                unproven = unproven or [-1]  # the proven improvement did not fit
        bound_units = float(sum(search.floors.values()))
        if not unproven:
            return run.result(Termination.OPTIMAL, holder=relaxed, bound_units=bound_units)
        limit, message = search.limit(settings)
        return run.result(Termination.FEASIBLE, limit, relaxed, bound_units, message)
    if _cancelled(settings):
        return run.fallback(Limit.CANCELLED, search, "")
    try:
        return _solve_full(run, search)
    except OutOfTime:
        return run.fallback(Limit.TIME, search, "the time limit ran out while building the model")


def _solver_time(run: _Run, pairs: int) -> tuple[float, bool]:
    """CP-SAT's time limit and whether to presolve, for a model of ``pairs`` Booleans: the time
    left less the cost of handing the model over, presolve only when the time left covers it
    (CP-SAT's presolve does not stop at the limit). Raises :class:`OutOfTime` when too little
    is left to start."""
    remaining = run.deadline - time.perf_counter() - pairs * _LOAD_S_PER_PAIR
    if remaining < _MIN_SOLVE_S:
        raise OutOfTime
    return remaining, remaining >= pairs * _PRESOLVE_S_PER_PAIR


def _solve_full(run: _Run, search: _Search) -> SolveResult[PlacementPlan]:
    """Stage 2: the full model, each home's part bounded below by its relaxed optimum. Its
    capacities are relaxed where they cannot be scaled exactly, so its infeasibility and bound
    are proofs; a plan that breaks a real capacity sends it to :func:`_solve_conservative`."""
    problem, settings = run.problem, run.settings
    n = problem.num_requests
    cp = build_model(problem, run.scale, search.floors, True, run.deadline - _MIN_SOLVE_S)
    hint = _warm(problem, settings.warm_start)
    if hint is None and (search.relaxed >= 0).all():
        hint = search.relaxed
    remaining, presolve = _solver_time(run, len(cp.x))
    out = solve_model(cp, settings, n, hint, remaining, presolve)
    termination, limit = _STATUS.get(out.status, (Termination.ERROR, Limit.OTHER))
    message = ""
    if termination is Termination.OPTIMAL and not out.proven:
        termination, limit = Termination.FEASIBLE, Limit.OTHER
        message = GAP_MESSAGE.format(settings.rel_gap)
    if _cancelled(settings) and termination in (Termination.FEASIBLE, Termination.NO_SOLUTION):
        limit = Limit.CANCELLED
    if termination is Termination.ERROR:
        return run.result(termination, limit, message=cp.model.validate() or "CP-SAT error")
    bound_units = max(out.bound_units, float(sum(search.floors.values())))
    if out.holder is None:
        if termination is Termination.INFEASIBLE:
            return run.result(termination, message="CP-SAT proved the model infeasible")
        return run.fallback(limit, search, message)
    if not placement_feasible(problem, out.holder):
        return _solve_conservative(run, search, bound_units)
    return run.result(termination, limit, out.holder, bound_units, message)


def _solve_conservative(
    run: _Run, search: _Search, bound_units: float
) -> SolveResult[PlacementPlan]:
    """The relaxed rounding let a plan over a capacity through: solve again with sizes rounded
    up and capacities down (its plans fit; it may miss the optimum, so the result is at best
    FEASIBLE, with the relaxed model's bound)."""
    problem, settings = run.problem, run.settings
    why = "capacities not integral: the rounded model may miss the optimum"
    cp = build_model(problem, run.scale, None, False, run.deadline - _MIN_SOLVE_S)
    remaining, presolve = _solver_time(run, len(cp.x))
    hint = _warm(problem, settings.warm_start)
    out = solve_model(cp, settings, problem.num_requests, hint, remaining, presolve)
    if out.holder is None or not placement_feasible(problem, out.holder):
        return run.fallback(Limit.OTHER, search, why)
    return run.result(Termination.FEASIBLE, Limit.OTHER, out.holder, bound_units, why)
