"""Exact checkpoint placement as a PuLP/CBC MILP (docs/planner.md, section 1).

An independent cross-check of the CP-SAT backend: written separately, in floating point, and
without its decomposition, so that a modelling slip in one is caught by disagreement.

- binaries ``x[i, j]`` for allowed pairs only, ``sum_j x[i, j] = 1``;
- ``sum_i reserve_GB[i] x[i, j] <= budget_GB[j]`` and ``sum_i stream_MBps[i] x[i, j] <=
  cap_MBps[j]`` where they could bind (bytes in GB and rates in MB/s keep CBC's rows scaled);
- continuous ``M_f >= max_{i in R_f} work_s[i]`` and ``M_f >= sum_{i in R_f} work_s[i] x[i, j]``
  for every worker ``j`` that may receive from ``f``;
- minimize ``sum_f fail_weight[f] * (alpha * M_f + sum_{i in R_f, j} wait_s[j] x[i, j] / n_f)
  + sum_i move_cost_s[i] * (1 - x[i, current[i]])`` (the move term is a constant for requests
  whose current holder is not allowed any more).

CBC runs as a subprocess killed at the deadline (:mod:`lumen.planner.formulations.cbc`);
``settings.cancel`` is honoured before the solve only.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pulp

from lumen.planner.formulations.cbc import MIN_CBC_S, DeadlineCbc
from lumen.planner.formulations.deadline import OutOfTime, Pace, check_deadline
from lumen.planner.placement_eval import (
    placement_feasible,
    placement_objective,
    unplaceable_requests,
)
from lumen.planner.plans import PlacementPlan
from lumen.planner.problems import IntArray, PlacementProblem
from lumen.planner.result import STATUS_REL_TOL, Limit, SolveResult, SolveSettings, Termination

_GB = 1e9
_MB = 1e6
_Result = Callable[..., SolveResult[PlacementPlan]]
#: Writing the model for CBC takes about this share of the time it took to build it.
_WRITE_SHARE = 0.6
#: Building and writing the whole model take about this many times as long as creating its
#: variables (measured 6.3 at 64 x 600; the deadline check extrapolates with it).
_BUILD_FACTOR = 5.0


@dataclass(frozen=True)
class PlacementMilp:
    """A built PuLP model with its variable handles."""

    prob: pulp.LpProblem
    x: dict[tuple[int, int], pulp.LpVariable]
    worst: dict[int, pulp.LpVariable]


def build_milp(problem: PlacementProblem, deadline: float = math.inf) -> PlacementMilp:
    """Build the MILP of ``problem`` (module docstring); no solver is chosen here. Raises
    :class:`OutOfTime` past ``deadline`` (a :func:`time.perf_counter` value)."""
    n = problem.num_requests
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    rows, cols = np.nonzero(problem.allowed())
    x: dict[tuple[int, int], pulp.LpVariable] = {}
    pace = Pace(len(rows), deadline, _BUILD_FACTOR)
    for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        if k % 2048 == 0:
            pace.step(k)
        x[i, j] = pulp.LpVariable(f"x_{i}_{j}", cat=pulp.LpBinary)
    by_request = np.searchsorted(rows, np.arange(n + 1))
    for i in range(n):
        held = cols[by_request[i] : by_request[i + 1]].tolist()
        prob += pulp.lpSum(x[i, j] for j in held) == 1, f"assign_{i}"
    check_deadline(deadline)
    order = np.argsort(cols, kind="stable")
    by_worker = np.searchsorted(cols[order], np.arange(problem.num_workers + 1))
    for name, items, caps, unit in (
        ("budget", problem.reserve_bytes, problem.budget_bytes, _GB),
        ("stream", problem.stream_bytes_s, problem.stream_cap_bytes_s, _MB),
    ):
        for j in range(problem.num_workers):
            check_deadline(deadline)
            cap = float(caps[j])
            held = rows[order[by_worker[j] : by_worker[j + 1]]].tolist()
            if np.isinf(cap) or sum(float(items[i]) for i in held) <= cap:
                continue
            prob += (
                pulp.lpSum(float(items[i]) / unit * x[i, j] for i in held) <= cap / unit,
                f"{name}_{j}",
            )
    worst, objective = _worst_terms(problem, prob, x, rows, cols, deadline)
    for i in range(n):
        cur, cost = int(problem.current[i]), float(problem.move_cost_s[i])
        if cur >= 0 and cost > 0:
            objective.append(cost * (1 - x[i, cur]) if (i, cur) in x else cost)
    prob += pulp.lpSum(objective)
    return PlacementMilp(prob, x, worst)


def _worst_terms(
    problem: PlacementProblem,
    prob: pulp.LpProblem,
    x: dict[tuple[int, int], pulp.LpVariable],
    rows: IntArray,
    cols: IntArray,
    deadline: float,
) -> tuple[dict[int, pulp.LpVariable], list[Any]]:
    """Per home: ``M_f`` with its worst-load rows, and the home's objective terms."""
    objective: list[Any] = []
    worst: dict[int, pulp.LpVariable] = {}
    pair_home = problem.home[rows]
    for f in np.unique(problem.home).tolist():
        check_deadline(deadline)
        members = np.flatnonzero(problem.home == f)
        weight = float(problem.fail_weight[f])
        top = float(problem.work_s[members].max())
        worst[f] = pulp.LpVariable(f"M_{f}", lowBound=top)
        mine = np.flatnonzero(pair_home == f)
        for j in np.unique(cols[mine]).tolist():
            held = rows[mine[cols[mine] == j]].tolist()
            prob += (
                worst[f] >= pulp.lpSum(float(problem.work_s[i]) * x[i, j] for i in held),
                f"worst_{f}_{j}",
            )
        objective.append(weight * problem.alpha * worst[f])
        share = weight / members.size
        objective.extend(
            share * float(problem.wait_s[j]) * x[i, j]
            for i, j in zip(rows[mine].tolist(), cols[mine].tolist(), strict=True)
        )
    return worst, objective


def _set_start(milp: PlacementMilp, problem: PlacementProblem, holder: IntArray) -> None:
    for (i, j), var in milp.x.items():
        var.setInitialValue(1 if holder[i] == j else 0)
    for f, var in milp.worst.items():
        members = problem.home == f
        loads = np.bincount(holder[members], weights=problem.work_s[members])
        var.setInitialValue(max(float(loads.max(initial=0.0)), float(var.lowBound or 0.0)))


@dataclass(frozen=True)
class CbcRun:
    """What one CBC run gave: PuLP's status and solution status, its wall time, whether it was
    killed at the deadline, and the lower bound CBC's log reports (None without one)."""

    status: int
    sol_status: int
    wall_s: float
    killed: bool
    lower: float | None


def solve_milp(
    milp: PlacementMilp,
    problem: PlacementProblem,
    settings: SolveSettings,
    start_holder: IntArray | None = None,
    time_limit_s: float | None = None,
    deadline: float = math.inf,
) -> CbcRun:
    """Run CBC under ``settings`` (the time limit unless ``time_limit_s`` is given), from
    ``start_holder`` if given, killed at ``deadline`` (a :func:`time.perf_counter` value)."""
    if start_holder is not None:
        _set_start(milp, problem, start_holder)
    limit = float(time_limit_s or settings.time_limit_s)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lumen-cbc-") as tmp:
        log = Path(tmp) / "cbc.log"
        solver = DeadlineCbc(
            min(deadline, start + limit),
            msg=False,
            timeLimit=limit,
            threads=int(settings.threads) if settings.threads > 1 else None,
            gapRel=float(settings.rel_gap),
            warmStart=start_holder is not None,
            options=[f"randomCbcSeed {int(settings.seed) + 1}"],  # CBC reads 0 as the clock
            logPath=str(log),
        )
        status = int(milp.prob.solve(solver))
        text = log.read_text() if log.exists() else ""
    found = re.findall(r"Lower bound:\s*([-+0-9.eE]+)", text)
    lower = float(found[-1]) if found else None
    wall = time.perf_counter() - start
    return CbcRun(status, int(milp.prob.sol_status), wall, solver.killed, lower)


def _warm_holder(problem: PlacementProblem, warm: Any) -> IntArray | None:
    if warm is None:
        return None
    holder = np.asarray(getattr(warm, "holder", warm), dtype=np.int64)
    ok = holder.shape == (problem.num_requests,) and placement_feasible(problem, holder)
    return holder if ok else None


def plan_from_milp(milp: PlacementMilp, n: int) -> IntArray | None:
    """Holders from the variable values (each request on its largest ``x``); None if unset."""
    holder = np.full(n, -1, dtype=np.int64)
    best = np.full(n, -1.0)
    for (i, j), var in milp.x.items():
        value = var.value()
        if value is not None and value > best[i]:
            best[i], holder[i] = value, j
    return holder if (best > 0.5).all() else None


def solve(problem: PlacementProblem, settings: SolveSettings) -> SolveResult[PlacementPlan]:
    """Solve ``problem`` exactly with CBC through PuLP (see the module docstring). The model is
    built with deadline checks and CBC is killed at the deadline; a build that would leave CBC
    no time returns NO_SOLUTION (or the warm start as FEASIBLE) with :attr:`Limit.TIME`."""
    start = time.perf_counter()
    deadline = start + settings.time_limit_s
    n = problem.num_requests

    def result(
        termination: Termination, limit: Limit = Limit.NONE, **kw: Any
    ) -> SolveResult[PlacementPlan]:
        return SolveResult(
            "milp", termination, limit, wall_time_s=time.perf_counter() - start, **kw
        )

    if n == 0:
        return result(
            Termination.OPTIMAL, objective=0.0, bound=0.0, plan=PlacementPlan.of(np.zeros(0))
        )
    stuck = unplaceable_requests(problem)
    if stuck.size:
        return result(
            Termination.INFEASIBLE,
            message=f"request {int(stuck[0])} fits on no allowed worker ({stuck.size} such)",
        )
    start_holder = _warm_holder(problem, settings.warm_start)
    if settings.cancel is not None and settings.cancel.is_set():
        return result(Termination.NO_SOLUTION, Limit.CANCELLED)
    with warnings.catch_warnings():
        # PuLP 3 deprecates the 2.x spellings used here for compatibility with both.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            holder, run = _run(problem, settings, start_holder, deadline)
        except OutOfTime:
            holder, run = None, None
        except pulp.PulpSolverError as exc:
            return result(Termination.ERROR, Limit.OTHER, message=f"CBC failed: {exc}")
    if run is not None and run.status == pulp.LpStatusInfeasible:
        return result(Termination.INFEASIBLE, message="CBC proved the model infeasible")
    if run is None or holder is None or not placement_feasible(problem, holder):
        return _without_plan(problem, settings, start_holder, holder, run, result)
    return _finish(problem, settings, holder, run, result)


def _without_plan(
    problem: PlacementProblem,
    settings: SolveSettings,
    start_holder: IntArray | None,
    holder: IntArray | None,
    run: CbcRun | None,
    result: _Result,
) -> SolveResult[PlacementPlan]:
    """CBC gave no usable plan: the warm start as FEASIBLE if there is one, else NO_SOLUTION."""
    if run is None:
        limit, why = Limit.TIME, "the time limit ran out while building the model"
    elif holder is not None:
        limit, why = Limit.OTHER, "CBC's rounded solution breaks a capacity"
    else:
        stopped = run.killed or run.wall_s >= 0.98 * settings.time_limit_s
        limit = Limit.TIME if stopped or run.status == pulp.LpStatusNotSolved else Limit.OTHER
        why = "the time limit ran out" if limit is Limit.TIME else f"PuLP status {run.status}"
    if start_holder is None:
        return result(Termination.NO_SOLUTION, limit, message=why)
    value = placement_objective(problem, start_holder)
    plan = PlacementPlan.of(start_holder)
    return result(Termination.FEASIBLE, limit, objective=value, plan=plan, message=why)


def _run(
    problem: PlacementProblem,
    settings: SolveSettings,
    start_holder: IntArray | None,
    deadline: float,
) -> tuple[IntArray | None, CbcRun]:
    """Build and run CBC (again without the start if a start made it fail); the plan, if any."""
    n = problem.num_requests
    begin = time.perf_counter()
    milp = build_milp(problem, deadline)
    # Writing the model for CBC costs about half of building it: refuse if that cannot fit.
    write_s = _WRITE_SHARE * (time.perf_counter() - begin)
    if deadline - time.perf_counter() < write_s + MIN_CBC_S:
        raise OutOfTime
    run = solve_milp(milp, problem, settings, start_holder, deadline=deadline)
    holder = plan_from_milp(milp, n) if run.status == pulp.LpStatusOptimal else None
    broken = holder is None or not placement_feasible(problem, holder)
    if start_holder is not None and broken and not run.killed:
        left = deadline - time.perf_counter()
        if left > 2 * write_s + MIN_CBC_S:
            # CBC 2.10 can close a search that its MIP start proved optimal with a false
            # "infeasible" or a garbled solution: solve again without the start.
            milp = build_milp(problem, deadline)
            run = solve_milp(milp, problem, settings, None, left, deadline)
            holder = plan_from_milp(milp, n) if run.status == pulp.LpStatusOptimal else None
    return holder, run


def _finish(
    problem: PlacementProblem,
    settings: SolveSettings,
    holder: IntArray,
    run: CbcRun,
    result: _Result,
) -> SolveResult[PlacementPlan]:
    """The result of a plan CBC returned: OPTIMAL only with a proof (no time limit, and with a
    relative gap asked for, CBC's lower bound at the objective)."""
    objective = placement_objective(problem, holder)
    plan = PlacementPlan.of(holder)
    timed_out = run.wall_s >= 0.98 * settings.time_limit_s
    if run.sol_status != pulp.LpSolutionOptimal or timed_out:
        return result(Termination.FEASIBLE, Limit.TIME, objective=objective, plan=plan)
    bound = objective
    if settings.rel_gap > 0 and run.lower is not None:
        bound = min(run.lower, objective)
    slack = STATUS_REL_TOL * max(1.0, abs(objective))
    if objective - bound > slack:
        message = f"stopped at the requested relative gap {settings.rel_gap:g}"
        return result(
            Termination.FEASIBLE,
            Limit.OTHER,
            objective=objective,
            bound=bound,
            plan=plan,
            message=message,
        )
    return result(Termination.OPTIMAL, objective=objective, bound=bound, plan=plan)
