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

CBC cannot be interrupted from Python: ``settings.cancel`` is honoured before the solve only.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pulp

from lumen.planner.placement_eval import (
    placement_feasible,
    placement_objective,
    unplaceable_requests,
)
from lumen.planner.plans import PlacementPlan
from lumen.planner.problems import IntArray, PlacementProblem
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination

_GB = 1e9
_MB = 1e6


@dataclass(frozen=True)
class PlacementMilp:
    """A built PuLP model with its variable handles."""

    prob: pulp.LpProblem
    x: dict[tuple[int, int], pulp.LpVariable]
    worst: dict[int, pulp.LpVariable]


def build_milp(problem: PlacementProblem) -> PlacementMilp:
    """Build the MILP of ``problem`` (module docstring); no solver is chosen here."""
    n, m = problem.num_requests, problem.num_workers
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    allowed = problem.allowed()
    x: dict[tuple[int, int], pulp.LpVariable] = {}
    for i in range(n):
        for j in np.flatnonzero(allowed[i]).tolist():
            x[i, j] = pulp.LpVariable(f"x_{i}_{j}", cat=pulp.LpBinary)
    for i in range(n):
        prob += pulp.lpSum(x[i, j] for j in range(m) if (i, j) in x) == 1, f"assign_{i}"
    for name, items, caps, unit in (
        ("budget", problem.reserve_bytes, problem.budget_bytes, _GB),
        ("stream", problem.stream_bytes_s, problem.stream_cap_bytes_s, _MB),
    ):
        for j in range(m):
            cap = float(caps[j])
            held = [i for i in range(n) if (i, j) in x]
            if np.isinf(cap) or sum(float(items[i]) for i in held) <= cap:
                continue
            prob += (
                pulp.lpSum(float(items[i]) / unit * x[i, j] for i in held) <= cap / unit,
                f"{name}_{j}",
            )
    objective: list[Any] = []
    worst: dict[int, pulp.LpVariable] = {}
    for f in np.unique(problem.home).tolist():
        members = np.flatnonzero(problem.home == f).tolist()
        weight = float(problem.fail_weight[f])
        top = max(float(problem.work_s[i]) for i in members)
        worst[f] = pulp.LpVariable(f"M_{f}", lowBound=top)
        for j in range(m):
            held = [i for i in members if (i, j) in x]
            if held:
                prob += (
                    worst[f] >= pulp.lpSum(float(problem.work_s[i]) * x[i, j] for i in held),
                    f"worst_{f}_{j}",
                )
        objective.append(weight * problem.alpha * worst[f])
        objective.extend(
            weight * float(problem.wait_s[j]) / len(members) * x[i, j]
            for i in members
            for j in range(m)
            if (i, j) in x
        )
    for i in range(n):
        cur, cost = int(problem.current[i]), float(problem.move_cost_s[i])
        if cur >= 0 and cost > 0:
            objective.append(cost * (1 - x[i, cur]) if (i, cur) in x else cost)
    prob += pulp.lpSum(objective)
    return PlacementMilp(prob, x, worst)


def _set_start(milp: PlacementMilp, problem: PlacementProblem, holder: IntArray) -> None:
    for (i, j), var in milp.x.items():
        var.setInitialValue(1 if holder[i] == j else 0)
    for f, var in milp.worst.items():
        members = problem.home == f
        loads = np.bincount(holder[members], weights=problem.work_s[members])
        var.setInitialValue(max(float(loads.max(initial=0.0)), float(var.lowBound or 0.0)))


def solve_milp(
    milp: PlacementMilp,
    problem: PlacementProblem,
    settings: SolveSettings,
    start_holder: IntArray | None = None,
    time_limit_s: float | None = None,
) -> tuple[int, int, float]:
    """Run CBC under ``settings`` (the time limit unless ``time_limit_s`` is given), from
    ``start_holder`` if given; returns PuLP's status, its solution status and the wall time."""
    if start_holder is not None:
        _set_start(milp, problem, start_holder)
    solver = pulp.PULP_CBC_CMD(
        msg=False,
        timeLimit=float(time_limit_s or settings.time_limit_s),
        threads=int(settings.threads) if settings.threads > 1 else None,
        gapRel=float(settings.rel_gap),
        warmStart=start_holder is not None,
        options=[f"randomCbcSeed {int(settings.seed) + 1}"],  # CBC reads 0 as "use the clock"
    )
    start = time.perf_counter()
    status = int(milp.prob.solve(solver))
    return status, int(milp.prob.sol_status), time.perf_counter() - start


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
    """Solve ``problem`` exactly with CBC through PuLP (see the module docstring)."""
    start = time.perf_counter()
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
    if settings.cancel is not None and settings.cancel.is_set():
        return result(Termination.NO_SOLUTION, Limit.CANCELLED)
    start_holder = _warm_holder(problem, settings.warm_start)
    with warnings.catch_warnings():
        # PuLP 3 deprecates the 2.x spellings used here for compatibility with both.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            milp = build_milp(problem)
            status, sol_status, wall = solve_milp(milp, problem, settings, start_holder)
            timed_out = wall >= 0.98 * settings.time_limit_s
            holder = plan_from_milp(milp, n) if status == pulp.LpStatusOptimal else None
            broken = holder is None or not placement_feasible(problem, holder)
            left = settings.time_limit_s - (time.perf_counter() - start)
            if start_holder is not None and broken and left > 0.05:
                # CBC 2.10 can close a search that its MIP start proved optimal with a false
                # "infeasible" or a garbled solution: solve again without the start.
                milp = build_milp(problem)
                status, sol_status, wall = solve_milp(milp, problem, settings, None, left)
                timed_out = wall >= 0.98 * left
                holder = plan_from_milp(milp, n) if status == pulp.LpStatusOptimal else None
        except pulp.PulpSolverError as exc:
            return result(Termination.ERROR, Limit.OTHER, message=f"CBC failed: {exc}")
    if status == pulp.LpStatusInfeasible:
        return result(Termination.INFEASIBLE, message="CBC proved the model infeasible")
    if holder is None:
        limit = Limit.TIME if timed_out or status == pulp.LpStatusNotSolved else Limit.OTHER
        return result(
            Termination.NO_SOLUTION, limit, message=f"PuLP status {pulp.LpStatus[status]}"
        )
    if not placement_feasible(problem, holder):
        return result(
            Termination.ERROR, Limit.OTHER, message="CBC's rounded solution breaks a capacity"
        )
    objective = placement_objective(problem, holder)
    plan = PlacementPlan.of(holder)
    if sol_status == pulp.LpSolutionOptimal and not timed_out:
        model_value = float(pulp.value(milp.prob.objective))
        # A relative gap lets CBC stop early: its bound is then only within that gap.
        bound = min(model_value * (1.0 - settings.rel_gap), objective)
        message = f"optimal within rel_gap {settings.rel_gap:g}" if settings.rel_gap else ""
        return result(
            Termination.OPTIMAL, objective=objective, bound=bound, plan=plan, message=message
        )
    return result(Termination.FEASIBLE, Limit.TIME, objective=objective, plan=plan)
