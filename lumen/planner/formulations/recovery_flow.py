"""Position-indexed min-cost flow for the recovery problem without KV limits
(docs/planner.md, section 2; Horn 1973, Bruno-Coffman-Sethi 1974), solved with networkx.

**Model.** Without KV limits the problem is an assignment of requests to *slots*: request i in
the k-th position from the end of machine j (k = 1 runs last) costs ``a_j + (k + q_j) p_ij``
(it resumes at ``a_j`` plus the work before it and delays the k - 1 requests after it and the
``q_j`` queued ones by ``p_ij``). Nodes: one per request (supply 1), one per slot (j, k), a sink
(demand n); arcs request -> slot (capacity 1, that cost) and slot -> sink (capacity 1). Any
optimal flow fills each machine's slots from k = 1 in SPT order, so it is an optimal plan.

**Size.** Machine j gets ``K_j`` slots: at most the requests that may go there (finite mode and
room alone) and at most the number of them that fit its KV together; a slot (j, k) is reached
only from those requests. Arcs: ``sum_j n_j K_j``, up to n^2 m. networkx's network simplex is
pure Python: about 1 s at 30,000 arcs (8 machines x 64 requests), so instances above
:data:`MAX_ARCS` are refused (UNSUPPORTED); the CP-SAT backend is the scalable exact one.

**Integer weights.** networkx needs integer weights for exactness: every arc cost is rounded
*down* to :data:`RESOLUTION_S` (1 us). The flow value is then a valid lower bound (``bound``),
and the plan's objective, recomputed in floats, is within ``n * RESOLUTION_S`` of it.

**KV.** The flow relaxes the KV capacities (beyond the slot limits above), so its value bounds
the capacitated optimum from below. When its assignment respects KV it is OPTIMAL for the
capacitated problem too; otherwise the result is NO_SOLUTION with :attr:`Limit.UNSUPPORTED`
and the flow value as ``bound``.
"""

from __future__ import annotations

import math
import time

import networkx as nx
import numpy as np

from lumen.planner.formulations.deadline import OutOfTime, Pace
from lumen.planner.plans import RecoveryPlan
from lumen.planner.problems import FloatArray, IntArray, RecoveryProblem
from lumen.planner.recovery_eval import (
    is_feasible,
    processing_times,
    recovery_objective,
    trivial_result,
)
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination

#: Weight unit of the integer arc costs, seconds.
RESOLUTION_S = 1e-6
#: Largest flow network (request -> slot arcs) handed to networkx.
MAX_ARCS = 100_000
#: networkx's network simplex takes about this many times as long as building its network
#: (measured 14-17 from 17,000 to 89,000 arcs; both are pure Python, so load affects both).
SIMPLEX_FACTOR = 20.0


def slot_counts(problem: RecoveryProblem, p: FloatArray) -> IntArray:
    """``K_j``: slots of each machine (requests allowed there, capped by how many fit its KV)."""
    kv, cap = problem.kv_tokens, problem.kv_free_tokens
    allowed = np.isfinite(p) & (kv[:, None] <= cap[None, :])
    slots = np.zeros(problem.num_machines, np.int64)
    for j in range(problem.num_machines):
        demand = np.sort(kv[allowed[:, j]])
        fit = (
            len(demand)
            if math.isinf(cap[j])
            else int(np.searchsorted(np.cumsum(demand), cap[j], "right"))
        )
        slots[j] = min(len(demand), fit)
    return slots


def build_network(
    problem: RecoveryProblem, p: FloatArray, slots: IntArray, pace: Pace | None = None
) -> nx.DiGraph:
    """The flow network (see the module docstring); weights are integer microseconds.
    ``pace`` (over the slots) stops the build once the deadline cannot be met."""
    n = problem.num_requests
    kv, cap = problem.kv_tokens, problem.kv_free_tokens
    done = 0
    graph = nx.DiGraph()
    graph.add_node("sink", demand=n)
    for i in range(n):
        graph.add_node(("r", i), demand=-1)
    unit = 1.0 / RESOLUTION_S
    for j in range(problem.num_machines):
        jobs = np.flatnonzero(np.isfinite(p[:, j]) & (kv <= cap[j]))
        for k in range(1, int(slots[j]) + 1):
            if pace is not None:
                pace.step(done)
            done += 1
            graph.add_edge(("s", j, k), "sink", capacity=1, weight=0)
            a = problem.ready_s[j]
            q = problem.queued[j]
            for i in jobs.tolist():
                weight = math.floor((a + (k + q) * p[i, j]) * unit)
                graph.add_edge(("r", i), ("s", j, k), capacity=1, weight=weight)
    return graph


def solve_network(graph: nx.DiGraph, n: int) -> tuple[int, IntArray] | None:
    """Network simplex; returns (integer cost, machine of each request) or None if infeasible."""
    try:
        cost, flow = nx.network_simplex(graph)
    except nx.NetworkXUnfeasible:
        return None
    machine = np.full(n, -1, np.int64)
    for i in range(n):
        for node, f in flow[("r", i)].items():
            if f > 0:
                machine[i] = node[1]
    return int(cost), machine


def solve(problem: RecoveryProblem, settings: SolveSettings) -> SolveResult[RecoveryPlan]:
    """Solve the uncapacitated problem exactly (see the module docstring). networkx cannot be
    interrupted: the network is built with deadline checks that extrapolate the simplex's time
    from the build's (:data:`SIMPLEX_FACTOR`), and NO_SOLUTION with :attr:`Limit.TIME` is
    returned as soon as it would not fit; :data:`MAX_ARCS` bounds runs regardless."""
    start = time.perf_counter()
    method = "flow"

    def elapsed() -> float:
        return time.perf_counter() - start

    p = processing_times(problem)
    trivial = trivial_result(method, problem, p, start)
    if trivial is not None:
        return trivial
    slots = slot_counts(problem, p)
    allowed = np.isfinite(p) & (problem.kv_tokens[:, None] <= problem.kv_free_tokens[None, :])
    arcs = int((allowed.sum(axis=0) * slots).sum())
    if arcs > MAX_ARCS:
        msg = f"{arcs} arcs is beyond networkx ({MAX_ARCS}); use the cpsat backend"
        return SolveResult(
            method, Termination.NO_SOLUTION, Limit.UNSUPPORTED, wall_time_s=elapsed(), message=msg
        )
    try:
        # networkx cannot be stopped: the build's pace predicts the simplex (same Python).
        pace = Pace(int(slots.sum()), start + settings.time_limit_s, 1.0 + SIMPLEX_FACTOR)
        graph = build_network(problem, p, slots, pace)
    except OutOfTime:
        msg = "the network simplex would not finish within the time limit"
        return SolveResult(
            method, Termination.NO_SOLUTION, Limit.TIME, wall_time_s=elapsed(), message=msg
        )
    solved = solve_network(graph, problem.num_requests)
    if solved is None:
        msg = "no assignment of requests to slots exists"
        return SolveResult(method, Termination.INFEASIBLE, wall_time_s=elapsed(), message=msg)
    cost, machine = solved
    bound = cost * RESOLUTION_S
    if not is_feasible(problem, machine, p):
        msg = "GPU KV capacity binds: the uncapacitated optimum overfills a machine"
        return SolveResult(
            method,
            Termination.NO_SOLUTION,
            Limit.UNSUPPORTED,
            bound=bound,
            wall_time_s=elapsed(),
            message=msg,
        )
    plan = RecoveryPlan.from_assignment(problem, machine)
    objective = recovery_objective(problem, machine, p)
    return SolveResult(
        method,
        Termination.OPTIMAL,
        objective=objective,
        bound=min(bound, objective),
        wall_time_s=elapsed(),
        plan=plan,
    )
