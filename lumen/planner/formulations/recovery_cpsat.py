"""CP-SAT model of the capacitated recovery problem (docs/planner.md, section 2).

**Formulation** (compact and exact; no position index). ``x[i, j] = 1`` when request i resumes
on machine j (pairs exist only where i has a finite mode and fits alone). For a fixed assignment
a machine runs SPT; with its distinct processing times ``v_1 > v_2 > ... > v_T`` (``v_{T+1} = 0``,
``d_t = v_t - v_{t+1}``) and ``N_t`` = the number of its requests with ``p_ij >= v_t``, its cost is

    sum_i x_ij (a_j + (q_j + 1/2) p_ij)  +  1/2 sum_t d_t N_t^2

because the k-th longest request (k = 1 runs last) costs ``a_j + (k + q_j) p`` and
``sum_k k p_(k) = sum_t d_t N_t (N_t + 1) / 2`` with ``sum_t d_t N_t = sum_i p_ij x_ij``. ``N_t``
is a chain ``N_t = N_{t-1} + (x of the requests whose time on j is v_t)``, ``sq_t = N_t^2`` an
``AddMultiplicationEquality`` (convex in N; CP-SAT adds its tangent cuts to the LP), and KV is
``sum_i kv_i x_ij <= kv_free_j``. Nothing is relaxed: every solution is an assignment and its
model value is its SPT cost. Size: n m Booleans and at most n m counts, versus n^2 m for the
position-indexed model (1M at 16 x 256).

**Proving fast.** CP-SAT alone finds good solutions but closes the gap slowly at 16 x 256 (its LP
gains square cuts a few at a time; 30 s were not enough). Two valid facts make it immediate when
KV does not bind: the uncapacitated optimum of the *same* integer model is a min-cost flow
(:func:`horn_flow`, OR-Tools' C++ network solver, 0.3 s at 16 x 256), whose value is a lower
bound and becomes the objective domain's lower end; its assignment, when it respects KV, is
the hint (with the greedy plan and ``settings.warm_start``, the best one wins). If the hint meets
the bound it is optimal and CP-SAT does not run (with one thread it used to spend the whole time
limit confirming it); otherwise CP-SAT searches, with that bound.

**Time limit.** The flow runs only when its estimated time (:data:`FLOW_S_PER_ARC`) fits a share
of the limit; the model is written into the CP-SAT proto directly with paced deadline checks;
CP-SAT gets what is left less the cost of loading the model. What does not fit is skipped and
the best hint is returned FEASIBLE with :attr:`Limit.TIME`.

**Integer scaling.** Times are in units of :data:`RESOLUTION_S` (1 us) and the objective in half
units. Each coefficient is rounded down (processing times to ``V = floor(p / RESOLUTION_S)``,
``2 a_j`` and ``2 q_j p_ij`` separately), so an assignment's model value never exceeds its true
``J``: the scaled bound is valid, and the proven optimum is within ``n (n + 2) * RESOLUTION_S``
of the true one (0.07 s at 256 requests; 2e-6 relative at 16 x 256 in practice). The reported
objective is recomputed in floats from the plan.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.graph.python import min_cost_flow
from ortools.sat.python import cp_model

from lumen.planner.formulations.cpsat_proto import int_var, linear
from lumen.planner.formulations.deadline import OutOfTime, Pace
from lumen.planner.heuristics.recovery import solve_greedy
from lumen.planner.plans import RecoveryPlan
from lumen.planner.problems import BoolArray, FloatArray, IntArray, RecoveryProblem
from lumen.planner.recovery_eval import (
    is_feasible,
    processing_times,
    recovery_objective,
    trivial_result,
)
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination

#: Time unit of the integer model, seconds (the objective unit is half of it).
RESOLUTION_S = 1e-6
#: KV tokens are scaled by this factor when they are not integers (then rounded conservatively:
#: demands up, capacities down).
KV_SCALE = 1000
#: CP-SAT presolves models with at most this many pairs (presolve time grows fast with size).
PRESOLVE_PAIRS = 2000
#: Seconds per arc of :func:`horn_flow` (measured: 2.1 s for 2.4M arcs at 64 x 512 on a loaded
#: 2-core machine; kept on the safe side), and the share of the time left it may take.
FLOW_S_PER_ARC = 1e-6
FLOW_SHARE = 0.6
#: Seconds per Boolean of handing a model to CP-SAT and loading it (measured: 0.33 s beyond its
#: limit at 64 x 512, 32,768 pairs); CP-SAT is not started with less time left
#: than MIN_SOLVE_S.
LOAD_S_PER_PAIR = 1e-5
MIN_SOLVE_S = 0.02

Chain = list[tuple[int, int, IntArray]]


@dataclass(frozen=True)
class CompactData:
    """Integer data of the compact model: allowed pairs ``(i[k], j[k])`` with their linear
    coefficient and scaled time, request demands and machine capacities (-1: none)."""

    i: IntArray
    j: IntArray
    linear: IntArray
    vt: IntArray
    kv: IntArray
    cap: IntArray
    num_requests: int
    num_machines: int
    #: Model objective units per second.
    scale: float = 2.0 / RESOLUTION_S

    def chains(self, keep: BoolArray | None = None) -> dict[int, Chain]:
        """Per machine, longest first: ``(V_t, V_t - V_{t+1}, pair indices with time V_t)``."""
        ks = np.arange(len(self.i)) if keep is None else np.flatnonzero(keep)
        order = ks[np.lexsort((-self.vt[ks], self.j[ks]))]
        out: dict[int, Chain] = {}
        if len(order) == 0:
            return out
        cut = np.flatnonzero((np.diff(self.j[order]) != 0) | (np.diff(self.vt[order]) != 0)) + 1
        groups: dict[int, list[IntArray]] = {}
        for grp in np.split(order, cut):
            groups.setdefault(int(self.j[grp[0]]), []).append(grp)
        for j, grps in groups.items():
            vs = [int(self.vt[g[0]]) for g in grps] + [0]
            out[j] = [(vs[t], vs[t] - vs[t + 1], g) for t, g in enumerate(grps)]
        return out

    def value(self, machine: IntArray) -> int:
        """The model objective of an assignment whose pairs are all allowed."""
        on = machine[self.i] == self.j
        total = int(self.linear[on].sum())
        for chain in self.chains(on).values():
            count = 0
            for _, d, grp in chain:
                count += len(grp)
                total += d * count * count
        return total

    def allows(self, machine: IntArray) -> bool:
        """Whether every request of the assignment sits on an allowed pair."""
        n, m = self.num_requests, self.num_machines
        if machine.shape != (n,) or ((machine < 0) | (machine >= m)).any():
            return False
        return int((machine[self.i] == self.j).sum()) == n


def compact_data(problem: RecoveryProblem, p: FloatArray) -> CompactData:
    """Integer coefficients of the compact model (rounded down; see the module docstring)."""
    unit = 1.0 / RESOLUTION_S
    kv, cap = problem.kv_tokens, problem.kv_free_tokens
    finite = cap[np.isfinite(cap)]
    exact = bool(np.all(kv == np.round(kv)) and np.all(finite == np.round(finite)))
    factor = 1.0 if exact else float(KV_SCALE)
    kv_int = np.ceil(kv * factor - 1e-9).astype(np.int64)
    cap_f = np.where(np.isfinite(cap), cap, 0.0)
    cap_int = np.where(np.isfinite(cap), np.floor(cap_f * factor + 1e-9), -1).astype(np.int64)
    fits = (cap_int[None, :] < 0) | (kv_int[:, None] <= cap_int[None, :])
    ii, jj = np.nonzero(np.isfinite(p) & fits)
    pv = p[ii, jj]
    vt = np.floor(pv * unit).astype(np.int64)
    linear = (
        np.floor(2.0 * problem.ready_s[jj] * unit)
        + np.floor(2.0 * problem.queued[jj] * pv * unit)
        + vt
    ).astype(np.int64)
    return CompactData(
        ii.astype(np.int64),
        jj.astype(np.int64),
        linear,
        vt,
        kv_int,
        cap_int,
        problem.num_requests,
        problem.num_machines,
    )


def _fit_max(data: CompactData, ks: IntArray, j: int) -> int:
    """The most of the pairs ``ks`` that machine j can take: the smallest demands first."""
    if data.cap[j] < 0:
        return len(ks)
    return int(np.searchsorted(np.cumsum(np.sort(data.kv[data.i[ks]])), data.cap[j], "right"))


@dataclass
class RecoveryCpSatModel:
    """A built CP-SAT model with its variable indices (written into the proto directly: the
    Python expression API costs seconds at 64 x 512)."""

    model: cp_model.CpModel
    data: CompactData
    #: Variable index of the Boolean "request data.i[k] on machine data.j[k]", per pair k.
    x: IntArray
    #: Per machine: (V_t, index of N_t, index of N_t^2 or -1), longest first.
    counts: dict[int, list[tuple[int, int, int]]]


def _bool_proto() -> Any:
    """A Boolean's variable message, copied into models in bulk (``variables.extend``)."""
    var = cp_model.CpModel().proto.variables.add()
    var.domain.extend([0, 1])
    return var


_BOOL = _bool_proto()
_INT_MAX = 2**62


def _square(proto: Any, count: int, top: int) -> int:
    """A variable equal to ``count`` squared (CP-SAT's int_prod)."""
    sq = int_var(proto, 0, top * top)
    ct = proto.constraints.add()
    ct.int_prod.target.vars.append(sq)
    ct.int_prod.target.coeffs.append(1)
    for _ in range(2):
        expr = ct.int_prod.exprs.add()
        expr.vars.append(count)
        expr.coeffs.append(1)
    return sq


def build_model(
    data: CompactData,
    objective_range: tuple[int, int] | None = None,
    deadline: float = math.inf,
) -> RecoveryCpSatModel:
    """Build the compact CP-SAT model; ``objective_range`` (model units) restricts the objective
    (redundant when it comes from a valid bound and a feasible solution). No solving here.
    Raises :class:`OutOfTime` past ``deadline`` (a :func:`time.perf_counter` value)."""
    model = cp_model.CpModel()
    proto = model.proto
    first = len(proto.variables)
    proto.variables.extend([_BOOL] * len(data.i))
    x = np.arange(first, first + len(data.i), dtype=np.int64)
    order = np.argsort(data.i, kind="stable")
    cuts = np.searchsorted(data.i[order], np.arange(data.num_requests + 1))
    for r in range(data.num_requests):
        literals = x[order[cuts[r] : cuts[r + 1]]].tolist()
        proto.constraints.add().exactly_one.literals.extend(literals)
    obj_var, obj_coef = x.tolist(), data.linear.tolist()
    counts: dict[int, list[tuple[int, int, int]]] = {}
    chains = data.chains()
    pace = Pace(len(data.i), deadline)
    done = 0
    for j, chain in chains.items():
        pace.step(done)
        mine = np.concatenate([g for _, _, g in chain])
        if data.cap[j] >= 0:
            kv = data.kv[data.i[mine]].tolist()
            linear(proto, x[mine].tolist(), kv, -_INT_MAX, int(data.cap[j]))
        top_all = _fit_max(data, mine, j)
        out: list[tuple[int, int, int]] = []
        prev = -1
        seen = 0
        for v, d, grp in chain:
            seen += len(grp)
            top = min(seen, top_all)
            n_var = int_var(proto, 0, top)
            # N_t = N_{t-1} + (the Booleans of the requests whose time here is V_t)
            var = [n_var, *([prev] if prev >= 0 else []), *x[grp].tolist()]
            coef = [1, *([-1] if prev >= 0 else []), *([-1] * len(grp))]
            linear(proto, var, coef, 0, 0)
            prev = n_var
            sq = -1
            if d > 0 and top > 0:
                sq = _square(proto, n_var, top)
                obj_var.append(sq)
                obj_coef.append(d)
            out.append((v, n_var, sq))
        counts[j] = out
        done += len(mine)
    proto.objective.vars.extend(obj_var)
    proto.objective.coeffs.extend(obj_coef)
    if objective_range is not None:
        proto.objective.domain.extend(objective_range)
    return RecoveryCpSatModel(model, data, x, counts)


def add_hint(built: RecoveryCpSatModel, machine: IntArray) -> None:
    """Hint a complete assignment (every variable of the model gets a value)."""
    data = built.data
    on = machine[data.i] == data.j
    var, value = built.x.tolist(), on.astype(int).tolist()
    for j, chain in built.counts.items():
        times = data.vt[on & (data.j == j)]
        for v, n_var, sq in chain:
            k = int((times >= v).sum())
            var.append(n_var)
            value.append(k)
            if sq >= 0:
                var.append(sq)
                value.append(k * k)
    hint = built.model.proto.solution_hint
    hint.vars.extend(var)
    hint.values.extend(value)


def solve_model(
    built: RecoveryCpSatModel, settings: SolveSettings, presolve: bool = True
) -> tuple[cp_model.CpSolver, str, bool]:
    """Run CP-SAT under the settings; returns the solver, its status name (``OPTIMAL``,
    ``FEASIBLE``, ``INFEASIBLE``, ``UNKNOWN``, ``MODEL_INVALID``) and whether
    ``settings.cancel`` stopped it."""
    solver = cp_model.CpSolver()
    params = solver.parameters
    params.cp_model_presolve = presolve
    params.max_time_in_seconds = max(settings.time_limit_s, 1e-3)
    params.num_workers = settings.threads
    params.random_seed = settings.seed
    if settings.rel_gap > 0:
        params.relative_gap_limit = settings.rel_gap
    cancelled = threading.Event()
    done = threading.Event()
    watcher: threading.Thread | None = None
    if settings.cancel is not None:
        cancel = settings.cancel

        def watch() -> None:  # CP-SAT does not poll the event; stop it from outside
            while not done.is_set():
                if cancel.wait(0.02):
                    cancelled.set()
                    solver.stop_search()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    try:
        status = solver.solve(built.model)
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
    return solver, solver.status_name(status), cancelled.is_set()


def extract_plan(
    problem: RecoveryProblem, built: RecoveryCpSatModel, solver: cp_model.CpSolver
) -> RecoveryPlan:
    """The plan of the solver's assignment (SPT order, fastest modes)."""
    machine = np.full(problem.num_requests, -1, np.int64)
    on = np.asarray(solver.response_proto.solution, dtype=np.int64)[built.x] > 0
    machine[built.data.i[on]] = built.data.j[on]
    return RecoveryPlan.from_assignment(problem, machine)


def horn_flow(data: CompactData) -> tuple[int, IntArray] | None:
    """The optimum of the compact model without KV limits (Horn; Bruno-Coffman-Sethi): a
    position-indexed min-cost flow solved by OR-Tools' C++ network solver, in model units.

    Request i in the k-th slot from the end of machine j costs ``linear_ij + (2k - 1) V_ij``
    (the model's ``sum_t d_t N_t^2`` is ``sum_k (2k - 1) V_(k)`` over the machine's times sorted
    longest first), so the flow optimum is exactly the model's uncapacitated optimum and a valid
    lower bound with KV limits. Slots per machine: at most its allowed pairs and at most the
    requests that fit its KV together. Returns (value, assignment), or None when no assignment
    exists; raises :class:`RuntimeError` when the network solver fails otherwise.
    """
    n = data.num_requests
    tails: list[IntArray] = []
    heads: list[IntArray] = []
    costs: list[IntArray] = []
    slot_machine: list[IntArray] = []
    base = n
    for j in range(data.num_machines):
        ks = np.flatnonzero(data.j == j)
        slots = _fit_max(data, ks, j)
        if slots == 0:
            continue
        pos = np.arange(1, slots + 1)
        tails.append(np.repeat(data.i[ks], slots))
        heads.append(base + np.tile(pos - 1, len(ks)))
        costs.append((data.linear[ks][:, None] + np.outer(data.vt[ks], 2 * pos - 1)).ravel())
        slot_machine.append(np.full(slots, j, np.int64))
        base += slots
    if not tails:
        return None if n else (0, np.zeros(0, np.int64))
    flow = min_cost_flow.SimpleMinCostFlow()
    t, h, c = np.concatenate(tails), np.concatenate(heads), np.concatenate(costs)
    flow.add_arcs_with_capacity_and_unit_cost(t, h, np.ones_like(t), c)
    sink = base
    slot_nodes = np.arange(n, base)
    flow.add_arcs_with_capacity_and_unit_cost(
        slot_nodes,
        np.full(len(slot_nodes), sink),
        np.ones_like(slot_nodes),
        np.zeros_like(slot_nodes),
    )
    supplies = np.zeros(base + 1, np.int64)
    supplies[:n] = 1
    supplies[sink] = -n
    flow.set_nodes_supplies(np.arange(base + 1), supplies)
    status = flow.solve()
    if status == flow.INFEASIBLE:
        return None
    if status != flow.OPTIMAL:
        raise RuntimeError(f"min-cost flow failed with status {status}")
    used = flow.flows(np.arange(len(t))) > 0
    machine = np.full(n, -1, np.int64)
    machine[t[used]] = np.concatenate(slot_machine)[h[used] - n]
    return int(flow.optimal_cost()), machine


def flow_arcs(data: CompactData) -> int:
    """Request-to-slot arcs of :func:`horn_flow`'s network (its cost grows with them)."""
    total = 0
    for j in np.unique(data.j).tolist():
        ks = np.flatnonzero(data.j == j)
        total += len(ks) * _fit_max(data, ks, j)
    return total


def _relaxation(data: CompactData, deadline: float) -> tuple[int, IntArray] | str | None:
    """:func:`horn_flow` when it fits the time left (``"skipped"`` otherwise, or when the
    network solver fails): its bound is worth at most :data:`FLOW_SHARE` of the time left."""
    left = deadline - time.perf_counter()
    if flow_arcs(data) * FLOW_S_PER_ARC > FLOW_SHARE * left:
        return "skipped"
    try:
        return horn_flow(data)
    except RuntimeError:  # e.g. cost overflow: go on without the bound
        return "skipped"


def solve(problem: RecoveryProblem, settings: SolveSettings) -> SolveResult[RecoveryPlan]:
    """Solve exactly with CP-SAT: bound and hint from :func:`horn_flow`, hints from the greedy
    plan and ``settings.warm_start``, then CP-SAT with the objective domain [bound, best hint].
    A hint that meets the bound is optimal without CP-SAT; building, the flow and CP-SAT all
    fit in the time limit (what does not fit is skipped, and the best hint is returned)."""
    start = time.perf_counter()
    deadline = start + settings.time_limit_s
    method = "cpsat"

    def elapsed() -> float:
        return time.perf_counter() - start

    p = processing_times(problem)
    trivial = trivial_result(method, problem, p, start)
    if trivial is not None:
        return trivial
    data = compact_data(problem, p)
    candidates: list[IntArray] = []
    relaxed = _relaxation(data, deadline)
    if relaxed is None:
        msg = "no assignment exists even without KV limits between requests"
        return SolveResult(method, Termination.INFEASIBLE, wall_time_s=elapsed(), message=msg)
    lower = 0
    if not isinstance(relaxed, str):
        lower = relaxed[0]
        candidates.append(relaxed[1])
    if isinstance(settings.warm_start, RecoveryPlan):
        candidates.append(np.asarray(settings.warm_start.machine, np.int64))
    greedy = solve_greedy(problem, settings).plan
    if greedy is not None:
        candidates.append(greedy.machine)
    feasible = [c for c in candidates if data.allows(c) and is_feasible(problem, c, p)]
    hint = min(feasible, key=data.value) if feasible else None
    upper = data.value(hint) if hint is not None else np.iinfo(np.int64).max // 4
    stopped = Limit.CANCELLED if settings.cancel is not None and settings.cancel.is_set() else None
    if hint is not None and upper <= lower:
        # The hint meets a valid lower bound: proven, nothing for CP-SAT to do.
        return _hint_result(problem, p, hint, lower / data.scale, None, elapsed())
    try:
        if stopped is not None:
            raise OutOfTime
        load_s = MIN_SOLVE_S + len(data.i) * LOAD_S_PER_PAIR
        built = build_model(data, (min(lower, upper), upper), deadline - load_s)
        left = deadline - time.perf_counter() - len(data.i) * LOAD_S_PER_PAIR
        if left < MIN_SOLVE_S:
            raise OutOfTime
    except OutOfTime:
        limit = stopped or Limit.TIME
        if hint is None:
            return SolveResult(method, Termination.NO_SOLUTION, limit, wall_time_s=elapsed())
        return _hint_result(problem, p, hint, lower / data.scale, limit, elapsed())
    if hint is not None:
        add_hint(built, hint)
    # CP-SAT's presolve costs seconds on the products of a large model (8 s at 16 x 256) and is
    # useless when the hint meets the bound.
    presolve = len(data.i) <= PRESOLVE_PAIRS
    solver, status, cancelled = solve_model(
        built, dataclasses.replace(settings, time_limit_s=left), presolve
    )
    if status == "UNKNOWN" and hint is not None:
        # Stopped before CP-SAT reported a solution: the hint is still a feasible plan.
        limit = Limit.CANCELLED if cancelled else Limit.TIME
        return _hint_result(problem, p, hint, lower / data.scale, limit, elapsed())
    return _result(problem, p, built, solver, status, cancelled, elapsed())


def _hint_result(
    problem: RecoveryProblem,
    p: FloatArray,
    hint: IntArray,
    bound: float,
    limit: Limit | None,
    wall: float,
) -> SolveResult[RecoveryPlan]:
    """The hint as the result: OPTIMAL when ``limit`` is None (it met the bound), else
    FEASIBLE with that limit."""
    objective = recovery_objective(problem, hint, p)
    termination = Termination.OPTIMAL if limit is None else Termination.FEASIBLE
    return SolveResult(
        "cpsat",
        termination,
        limit or Limit.NONE,
        objective=objective,
        bound=min(bound, objective),
        wall_time_s=wall,
        plan=RecoveryPlan.from_assignment(problem, hint),
    )


def _result(
    problem: RecoveryProblem,
    p: FloatArray,
    built: RecoveryCpSatModel,
    solver: cp_model.CpSolver,
    status: str,
    cancelled: bool,
    wall: float,
) -> SolveResult[RecoveryPlan]:
    """Map CP-SAT's status onto the result record (objective recomputed in floats)."""
    method = "cpsat"
    stopped = Limit.CANCELLED if cancelled else Limit.TIME
    if status == "INFEASIBLE":
        msg = "CP-SAT proved the model infeasible"
        return SolveResult(method, Termination.INFEASIBLE, wall_time_s=wall, message=msg)
    if status == "MODEL_INVALID":
        info = solver.solution_info()
        return SolveResult(method, Termination.ERROR, Limit.OTHER, wall_time_s=wall, message=info)
    if status not in ("OPTIMAL", "FEASIBLE"):
        return SolveResult(method, Termination.NO_SOLUTION, stopped, wall_time_s=wall)
    plan = extract_plan(problem, built, solver)
    objective = recovery_objective(problem, plan.machine, p)
    bound = min(solver.best_objective_bound / built.data.scale, objective)
    if status == "OPTIMAL" and solver.objective_value <= solver.best_objective_bound:
        return SolveResult(
            method,
            Termination.OPTIMAL,
            objective=objective,
            bound=bound,
            wall_time_s=wall,
            plan=plan,
        )
    if status == "OPTIMAL":  # stopped by settings.rel_gap
        limit, msg = Limit.OTHER, "stopped at the requested relative gap"
    else:
        limit, msg = stopped, ""
    return SolveResult(
        method,
        Termination.FEASIBLE,
        limit,
        objective=objective,
        bound=bound,
        wall_time_s=wall,
        plan=plan,
        message=msg,
    )
