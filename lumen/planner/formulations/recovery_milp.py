"""MILP of the capacitated recovery problem (docs/planner.md, section 2), solved by CBC
through PuLP: the independent cross-check of :mod:`recovery_cpsat`.

**Formulation.** ``x_ij`` binary (pairs with a finite mode where the request fits alone). For
machine j with distinct times ``v_1 > ... > v_T`` of its allowed requests (``v_{T+1} = 0``,
``d_t = v_t - v_{t+1}``), ``N_jt = N_j,t-1 + sum of x_ij over the requests with p_ij = v_t``
counts its requests with ``p_ij >= v_t``, and continuous ``w_jt`` stands for ``N_jt^2``:

    min  sum_ij x_ij (a_j + (q_j + 1/2) p_ij) + 1/2 sum_jt d_t w_jt
    s.t. sum_j x_ij = 1,  sum_i kv_i x_ij <= kv_free_j,
         w_jt >= (2c + 1) N_jt - c (c + 1)   for c in a set C_jt of secants,

an SPT cost identity (``sum_k k p_(k) = sum_t d_t N_t (N_t + 1) / 2``, see
:mod:`recovery_cpsat`). The secant for c is exact at N = c and c + 1, below ``N^2`` elsewhere,
so with any C_jt the model is a relaxation. **Exactness by lazy secants:** solve; wherever the
optimum has ``w_jt < N_jt^2`` add the two secants through ``N_jt`` and solve again. When no
secant is violated, ``w = N^2`` at the optimum (to :data:`SECANT_TOL`, relative), so the
relaxation's optimum is a true solution of the same value: optimal. C_jt starts at the hint's
counts (the greedy plan, or ``settings.warm_start``), and the hint is CBC's MIP start.
Coefficients are floats in seconds (no integer scaling); the reported objective is recomputed
from the plan.

Cancellation (``settings.cancel``) takes effect between CBC runs (CBC runs as a subprocess,
killed at the deadline: :mod:`lumen.planner.formulations.cbc`); the model is built with
deadline checks.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pulp

from lumen.planner.formulations.cbc import MIN_CBC_S, DeadlineCbc
from lumen.planner.formulations.deadline import OutOfTime, Pace
from lumen.planner.heuristics.recovery import solve_greedy
from lumen.planner.plans import RecoveryPlan
from lumen.planner.problems import FloatArray, IntArray, RecoveryProblem
from lumen.planner.recovery_eval import (
    is_feasible,
    processing_times,
    recovery_objective,
    trivial_result,
)
from lumen.planner.result import STATUS_REL_TOL, Limit, SolveResult, SolveSettings, Termination

#: Most CBC runs of the lazy-secant loop (each adds at least one secant).
MAX_ROUNDS = 50
#: A secant is added when ``w < N^2 - SECANT_TOL`` at the optimum.
SECANT_TOL = 1e-6
#: Writing the model for CBC takes about this share of the time it took to build it.
WRITE_SHARE = 0.6


@dataclass
class Chain:
    """One count ``N_jt`` with its square stand-in ``w_jt`` and the secants it has."""

    machine: int
    #: The threshold v_t: N counts the machine's requests with p_ij >= v_t.
    value: float
    count: pulp.LpVariable
    square: pulp.LpVariable | None
    top: int
    secants: set[int] = field(default_factory=set)


@dataclass
class RecoveryMilp:
    """A built MILP with its variable handles."""

    prob: pulp.LpProblem
    #: (i, j) -> binary "request i on machine j".
    x: dict[tuple[int, int], pulp.LpVariable]
    chains: list[Chain]


def build_model(
    problem: RecoveryProblem,
    p: FloatArray,
    hint: IntArray | None = None,
    deadline: float = math.inf,
) -> RecoveryMilp:
    """Build the MILP with the secants at the hint's counts (c and c - 1: the two secants
    through c); no solving here. Raises :class:`OutOfTime` past ``deadline`` (a
    :func:`time.perf_counter` value)."""
    n, m = problem.num_requests, problem.num_machines
    kv, cap = problem.kv_tokens, problem.kv_free_tokens
    allowed = np.isfinite(p) & (kv[:, None] <= cap[None, :])
    prob = pulp.LpProblem("recovery", pulp.LpMinimize)
    x = {
        (int(i), int(j)): prob.add_variable(f"x_{i}_{j}", cat=pulp.LpBinary)
        for i, j in zip(*np.nonzero(allowed), strict=True)
    }
    terms: list[tuple[pulp.LpVariable, float]] = []
    for i in range(n):
        prob += pulp.lpSum(x[i, int(j)] for j in np.flatnonzero(allowed[i])) == 1, f"assign_{i}"
    chains: list[Chain] = []
    pace = Pace(m, deadline, 1.0 + WRITE_SHARE)
    for j in range(m):
        pace.step(j)
        jobs = np.flatnonzero(allowed[:, j])
        if len(jobs) == 0:
            continue
        a, q = float(problem.ready_s[j]), float(problem.queued[j])
        terms += [(x[int(i), j], a + (q + 0.5) * float(p[i, j])) for i in jobs]
        top_all = len(jobs)
        if math.isfinite(cap[j]):
            demand = pulp.lpSum(float(kv[i]) * x[int(i), j] for i in jobs)
            prob += demand <= float(cap[j]), f"kv_{j}"
            top_all = int(np.searchsorted(np.cumsum(np.sort(kv[jobs])), cap[j], "right"))
        times = p[jobs, j]
        values = np.unique(times)[::-1]
        hinted = p[np.flatnonzero(hint == j), j] if hint is not None else np.zeros(0)
        prev: pulp.LpVariable | None = None
        for t, v in enumerate(values.tolist()):
            top = min(int((times >= v).sum()), top_all)
            count = prob.add_variable(f"N_{j}_{t}", lowBound=0, upBound=top)
            step = pulp.lpSum(x[int(i), j] for i in jobs[times == v])
            prob += count == (prev + step if prev is not None else step), f"chain_{j}_{t}"
            prev = count
            d = v - (float(values[t + 1]) if t + 1 < len(values) else 0.0)
            if d <= 0 or top == 0:
                continue
            square = prob.add_variable(f"w_{j}_{t}", lowBound=0, upBound=top * top)
            terms.append((square, 0.5 * d))
            chain = Chain(j, v, count, square, top)
            k = int((hinted >= v).sum())
            for c in {max(k - 1, 0), min(k, top - 1)}:
                add_secant(prob, chain, c)
            chains.append(chain)
    prob += pulp.lpSum(c * v for v, c in terms)
    return RecoveryMilp(prob, x, chains)


def add_secant(prob: pulp.LpProblem, chain: Chain, c: int) -> None:
    """``w >= (2c + 1) N - c (c + 1)``: the secant of N^2 through c and c + 1."""
    if chain.square is None or c in chain.secants:
        return
    chain.secants.add(c)
    prob += chain.square >= (2 * c + 1) * chain.count - c * (c + 1), f"{chain.square.name}_s{c}"


def violated_secants(built: RecoveryMilp) -> int:
    """Add the secants through N wherever the current optimum has ``w < N^2``; how many."""
    added = 0
    for chain in built.chains:
        if chain.square is None:
            continue
        n_val = round(chain.count.value() or 0.0)
        w_val = chain.square.value() or 0.0
        if w_val < n_val * n_val - SECANT_TOL * max(1.0, n_val * n_val):
            before = len(chain.secants)
            for c in (n_val - 1, n_val):
                if 0 <= c < chain.top:
                    add_secant(built.prob, chain, c)
            added += len(chain.secants) - before
    return added


def solve_model(
    built: RecoveryMilp,
    settings: SolveSettings,
    time_limit_s: float,
    log: Path,
    deadline: float = math.inf,
) -> tuple[int, float | None]:
    """One CBC run, killed at ``deadline``; returns PuLP's solution status and CBC's lower
    bound when it reports one."""
    with warnings.catch_warnings():
        # PuLP 3 deprecates PULP_CBC_CMD in favour of COIN_CMD with a separately installed CBC;
        # the bundled binary is the one this project ships with.
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = DeadlineCbc(
            min(deadline, time.perf_counter() + time_limit_s),
            msg=False,
            timeLimit=max(time_limit_s, 0.1),
            threads=settings.threads,
            gapRel=settings.rel_gap if settings.rel_gap > 0 else None,
            warmStart=True,
            # CBC reads seed 0 as "use the clock": shift by one to stay reproducible.
            options=[f"randomSeed {settings.seed + 1}", f"randomCbcSeed {settings.seed + 1}"],
            logPath=str(log),
        )
    built.prob.solve(solver)
    text = log.read_text() if log.exists() else ""
    found = re.findall(r"Lower bound:\s*([-+0-9.eE]+)", text)
    lower_bound = float(found[-1]) if found else None
    # CBC's presolve can prove infeasibility without a solution status to match: PuLP then
    # reports the problem status Infeasible beside the solution status "no solution found".
    if built.prob.status == pulp.LpStatusInfeasible and not solver.killed:
        return pulp.LpSolutionInfeasible, lower_bound
    return int(built.prob.sol_status), lower_bound


def set_start(built: RecoveryMilp, machine: IntArray, p: FloatArray) -> None:
    """CBC's MIP start: the assignment and its counts and squares."""
    for (i, j), var in built.x.items():
        var.setInitialValue(1 if int(machine[i]) == j else 0)
    for chain in built.chains:
        k = int((p[np.flatnonzero(machine == chain.machine), chain.machine] >= chain.value).sum())
        chain.count.setInitialValue(k)
        if chain.square is not None:
            chain.square.setInitialValue(k * k)


def extract_plan(problem: RecoveryProblem, built: RecoveryMilp) -> RecoveryPlan | None:
    """The plan of CBC's assignment, or None when a request is not assigned."""
    machine = np.full(problem.num_requests, -1, np.int64)
    for (i, j), var in built.x.items():
        if (var.value() or 0.0) > 0.5:
            machine[i] = j
    if (machine < 0).any():
        return None
    return RecoveryPlan.from_assignment(problem, machine)


def solve(problem: RecoveryProblem, settings: SolveSettings) -> SolveResult[RecoveryPlan]:
    """Solve exactly with CBC and lazy secants (see the module docstring)."""
    start = time.perf_counter()
    method = "milp"

    def elapsed() -> float:
        return time.perf_counter() - start

    p = processing_times(problem)
    trivial = trivial_result(method, problem, p, start)
    if trivial is not None:
        return trivial
    warm = settings.warm_start
    hint_plan = warm if isinstance(warm, RecoveryPlan) else solve_greedy(problem, settings).plan
    hint = None
    if hint_plan is not None and is_feasible(problem, hint_plan.machine, p):
        hint = np.asarray(hint_plan.machine, np.int64)
    # The hint is a feasible plan already: returned if CBC finds nothing better in time.
    plan = RecoveryPlan.from_assignment(problem, hint) if hint is not None else None
    begin = time.perf_counter()
    try:
        built = build_model(problem, p, hint, start + settings.time_limit_s)
    except OutOfTime:
        return _stopped(problem, p, plan, Limit.TIME, elapsed(), "building the model ran out")
    # Writing the model for CBC costs about half of building it: keep that inside the limit.
    write_s = WRITE_SHARE * (time.perf_counter() - begin)
    if hint is not None:
        set_start(built, hint, p)
    bound: float | None = None
    limit = Limit.NONE
    with tempfile.TemporaryDirectory(prefix="lumen-cbc-") as tmp:
        for rnd in range(MAX_ROUNDS):
            left = settings.time_limit_s - elapsed()
            if settings.cancel is not None and settings.cancel.is_set():
                limit = Limit.CANCELLED
                break
            if left <= write_s + MIN_CBC_S:
                limit = Limit.TIME
                break
            log = Path(tmp) / f"cbc{rnd}.log"
            status, lower = solve_model(built, settings, left, log, start + settings.time_limit_s)
            if status == pulp.LpSolutionInfeasible:
                msg = "CBC proved the MILP infeasible"
                return SolveResult(
                    method, Termination.INFEASIBLE, wall_time_s=elapsed(), message=msg
                )
            current = extract_plan(problem, built) if status > 0 else None
            if current is not None and (
                plan is None
                or recovery_objective(problem, current.machine, p)
                <= recovery_objective(problem, plan.machine, p)
            ):
                plan = current
            if status != pulp.LpSolutionOptimal:  # stopped by the time limit
                limit, bound = Limit.TIME, lower
                break
            # CBC's optimum of the current relaxation bounds the true optimum from below (with
            # a relative gap asked for, only its reported lower bound does).
            value = pulp.value(built.prob.objective)
            bound = lower if settings.rel_gap > 0 else (float(value) if value is not None else None)
            if violated_secants(built) == 0:
                break
            if plan is not None:
                set_start(built, plan.machine, p)
        else:
            limit = Limit.OTHER
    wall = elapsed()
    if plan is None:
        stopped = limit if limit is not Limit.NONE else Limit.TIME
        return SolveResult(method, Termination.NO_SOLUTION, stopped, wall_time_s=wall)
    if limit is not Limit.NONE:
        return _stopped(problem, p, plan, limit, wall, "", bound)
    objective = recovery_objective(problem, plan.machine, p)
    # Without a relative gap the last relaxation was solved to optimality with no secant
    # violated: its value is the plan's (the bound is that value); with one, CBC's bound.
    bound = min(bound if bound is not None else objective, objective)
    slack = STATUS_REL_TOL * max(1.0, abs(objective))
    if settings.rel_gap > 0 and objective - bound > slack:
        return SolveResult(
            method,
            Termination.FEASIBLE,
            Limit.OTHER,
            objective,
            bound,
            wall,
            plan,
            f"stopped at the requested relative gap {settings.rel_gap:g}",
        )
    return SolveResult(method, Termination.OPTIMAL, Limit.NONE, objective, bound, wall, plan)


def _stopped(
    problem: RecoveryProblem,
    p: FloatArray,
    plan: RecoveryPlan | None,
    limit: Limit,
    wall: float,
    message: str,
    bound: float | None = None,
) -> SolveResult[RecoveryPlan]:
    """A run stopped short of a proof: its best plan as FEASIBLE, else NO_SOLUTION."""
    if plan is None:
        return SolveResult(
            "milp", Termination.NO_SOLUTION, limit, wall_time_s=wall, message=message
        )
    objective = recovery_objective(problem, plan.machine, p)
    bound = None if bound is None else min(bound, objective)
    return SolveResult("milp", Termination.FEASIBLE, limit, objective, bound, wall, plan, message)
