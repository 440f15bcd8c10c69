"""Vectorized evaluation of recovery assignments (docs/planner.md, section 2).

The backends use these helpers to score assignments quickly; the independent checker
(``lumen.planner.checker``) stays separate so that a bug here cannot hide a bug there.

For an assignment ``machine[i]`` each machine runs its requests in shortest-processing-time order
(ties by request index), which is optimal for a fixed assignment, so an assignment alone
determines the plan and its objective ``J = sum_i C_i + sum_j queued[j] * P_j``.
"""

from __future__ import annotations

import time

import numpy as np

from lumen.planner.plans import RecoveryPlan
from lumen.planner.problems import FloatArray, IntArray, RecoveryProblem
from lumen.planner.result import SolveResult, Termination


def processing_times(problem: RecoveryProblem) -> FloatArray:
    """``p[i, j]``: the fastest mode's time (inf when no mode is available), shape (n, m).

    Same values as ``problem.processing()[0]``, from the factored mode times without the argmin
    over modes (only needed for the few assigned pairs) and without the (n, m, 4) array.
    """
    if problem.num_requests == 0:
        return np.zeros((0, problem.num_machines))
    return problem.modes.processing()


def assigned_times(
    p: FloatArray | None, machine: IntArray, problem: RecoveryProblem | None = None
) -> FloatArray:
    """Each request's processing time on its assigned machine, from ``p`` or, when it is None,
    from ``problem``'s mode times (without an (n, m) matrix)."""
    rows = np.arange(len(machine))
    if p is None:
        if problem is None:
            raise ValueError("assigned_times: give p or problem")
        return problem.modes.processing_at(rows, machine)
    times: FloatArray = p[rows, machine]
    return times


def spt_order(machine: IntArray, times: FloatArray) -> IntArray:
    """Request indices sorted by (machine, time, index): every machine's SPT sequence in turn."""
    order: IntArray = np.lexsort((np.arange(len(machine)), times, machine))
    return order


def machine_costs(
    problem: RecoveryProblem, machine: IntArray, p: FloatArray | None = None
) -> FloatArray:
    """Per machine ``sum of C_i over its requests + queued * P`` in SPT order (inf if a request
    sits on a machine where it has no finite mode)."""
    m = problem.num_machines
    if len(machine) == 0:
        return np.zeros(m)
    times = assigned_times(p, machine, problem)
    bad = ~np.isfinite(times)
    if bad.any():  # keep the running sums finite; those machines cost inf anyway
        times = np.where(bad, 0.0, times)
    order = spt_order(machine, times)
    mach, t = machine[order], times[order]
    # Completion times: ready time plus the running sum of times within each machine's group.
    csum = np.cumsum(t)
    first = np.r_[True, mach[1:] != mach[:-1]]
    start_sum = np.where(first, csum - t, 0.0)
    group_base = np.maximum.accumulate(np.where(first, np.arange(len(t)), 0))
    completion = problem.ready_s[mach] + csum - start_sum[group_base]
    cost: FloatArray = np.bincount(mach, weights=completion, minlength=m).astype(np.float64)
    cost += problem.queued * np.bincount(mach, weights=t, minlength=m)
    if bad.any():
        cost[np.unique(machine[bad])] = np.inf
    return cost


def recovery_objective(
    problem: RecoveryProblem, machine: IntArray, p: FloatArray | None = None
) -> float:
    """``J`` of the SPT plan of ``machine`` (capacity is not checked; inf if a request has no
    finite mode on its machine)."""
    return float(machine_costs(problem, np.asarray(machine, np.int64), p).sum())


def kv_usage(problem: RecoveryProblem, machine: IntArray) -> FloatArray:
    """KV tokens needed on each machine by the assignment."""
    used = np.bincount(machine, weights=problem.kv_tokens, minlength=problem.num_machines)
    return used.astype(np.float64)


def violations(
    problem: RecoveryProblem, machine: IntArray, p: FloatArray | None = None
) -> list[str]:
    """Why an assignment is infeasible (empty when it is feasible)."""
    n, m = problem.num_requests, problem.num_machines
    machine = np.asarray(machine, np.int64)
    if machine.shape != (n,):
        return [f"assignment has shape {machine.shape}, expected ({n},)"]
    if n and ((machine < 0) | (machine >= m)).any():
        return ["machine index out of range"]
    out = [
        f"request {i}: no mode available on machine {machine[i]}"
        for i in np.flatnonzero(~np.isfinite(assigned_times(p, machine, problem)))
    ]
    used = kv_usage(problem, machine)
    cap = problem.kv_free_tokens
    # The same relative slack as the checker: sums are accumulated in a different order there.
    over = used > cap + 1e-9 * np.maximum(1.0, cap)
    out += [
        f"machine {j}: needs {used[j]:.0f} KV tokens, has {cap[j]:.0f}"
        for j in np.flatnonzero(over)
    ]
    return out


def is_feasible(problem: RecoveryProblem, machine: IntArray, p: FloatArray | None = None) -> bool:
    """Every request has a finite mode on its machine and every machine's KV suffices."""
    return not violations(problem, machine, p)


def plan_of(
    problem: RecoveryProblem, machine: IntArray, p: FloatArray | None = None
) -> RecoveryPlan:
    """The same plan as :meth:`RecoveryPlan.from_assignment` (SPT order, ties by index, fastest
    mode), computing modes only for the assigned pairs: at 512 x 1,024 this saves the full argmin
    over the (n, m, 4) mode array."""
    n, m = problem.num_requests, problem.num_machines
    machine = np.asarray(machine, np.int64)
    rows = np.arange(n)
    times = problem.modes.at(rows, machine)
    mode = np.argmin(times, axis=1).astype(np.int64)
    order = spt_order(machine, times[rows, mode])
    bounds = np.searchsorted(machine[order], np.arange(m + 1))
    flat, cut = order.tolist(), bounds.tolist()  # Python slices: m numpy slices cost more
    seqs = tuple(tuple(flat[cut[j] : cut[j + 1]]) for j in range(m))
    mach = machine.copy()
    mach.flags.writeable = False
    mode.flags.writeable = False
    return RecoveryPlan(mach, mode, seqs)


def infeasibility_reason(problem: RecoveryProblem, p: FloatArray | None = None) -> str | None:
    """A cheap proof that no plan exists, or None when none is found.

    Checks that every request has a machine with a finite mode and room for it alone, and that
    the requests fit the machines' total KV when each goes where it may. Without ``p`` it works
    on the machine classes of the factored mode times (no (n, m) matrix).
    """
    if problem.num_requests == 0:
        return None
    if p is None:
        return _reason_by_class(problem)
    kv, cap = problem.kv_tokens, problem.kv_free_tokens
    fits = kv[:, None] <= cap[None, :] + 1e-9 * np.maximum(1.0, cap[None, :])
    allowed = np.isfinite(p) & fits
    none = np.flatnonzero(~np.isfinite(p).any(axis=1))
    if len(none):
        return f"request {int(none[0])} has no finite mode on any machine"
    stuck = np.flatnonzero(~allowed.any(axis=1))
    if len(stuck):
        i = int(stuck[0])
        return f"request {i} ({kv[i]:.0f} KV tokens) fits on no machine where it can resume"
    usable = allowed.any(axis=0)
    if kv.sum() > cap[usable].sum() * (1 + 1e-9):
        return "the requests need more KV than all usable machines have together"
    return None


def _class_capacity(problem: RecoveryProblem, cap: FloatArray) -> FloatArray:
    """Per request and class, the largest capacity among the class's machines other than the
    request's own machine (-inf: no such machine), shape (n, C)."""
    modes = problem.modes
    n, c, cls = modes.num_requests, modes.num_classes, modes.machine_class
    first, second = modes.class_leaders(-cap)  # largest capacity first
    top = np.where(first >= 0, cap[first], -np.inf)
    out = np.broadcast_to(top, (n, c)).copy()
    rows = np.flatnonzero(modes.has_own)
    j = modes.own_machine[rows]
    k = cls[j]
    hit = first[k] == j  # the own machine is its class's largest: the next one counts
    out[rows[hit], k[hit]] = np.where(second[k[hit]] >= 0, cap[second[k[hit]]], -np.inf)
    return out


def _reason_by_class(problem: RecoveryProblem) -> str | None:
    """:func:`infeasibility_reason` on machine classes: the same proofs in O(n C + m)."""
    modes = problem.modes
    kv = problem.kv_tokens
    cap = problem.kv_free_tokens + 1e-9 * np.maximum(1.0, problem.kv_free_tokens)
    by_class, own = modes.processing_by_class()
    best_cap = _class_capacity(problem, cap)
    finite = np.isfinite(by_class) & (best_cap > -np.inf)
    own_j = np.maximum(modes.own_machine, 0)
    own_ok = modes.has_own & np.isfinite(own)
    none = np.flatnonzero(~finite.any(axis=1) & ~own_ok)
    if len(none):
        return f"request {int(none[0])} has no finite mode on any machine"
    allowed = finite & (kv[:, None] <= best_cap)
    own_fits = own_ok & (kv <= cap[own_j])
    stuck = np.flatnonzero(~allowed.any(axis=1) & ~own_fits)
    if len(stuck):
        i = int(stuck[0])
        return f"request {i} ({kv[i]:.0f} KV tokens) fits on no machine where it can resume"
    # Usable machines (counted generously: a request's own machine is not taken out of its
    # class here, which can only add machines and so only weakens the proof).
    smallest = np.where(np.isfinite(by_class), kv[:, None], np.inf).min(axis=0)
    usable = smallest[modes.machine_class] <= cap
    usable[own_j[own_fits]] = True
    if kv.sum() > problem.kv_free_tokens[usable].sum() * (1 + 1e-9):
        return "the requests need more KV than all usable machines have together"
    return None


def insertion_cost(
    problem: RecoveryProblem, p: FloatArray, machine: IntArray, i: int
) -> FloatArray:
    """The exact increase of ``J`` when request ``i`` is added to each machine (SPT insertion),
    given the other requests' assignment (``machine[k] < 0``: unassigned; ``machine[i]`` is
    ignored).

    On machine j with requests K and ``x = p[i, j]``, request i resumes after every shorter
    request and delays every longer one, and the queue, by x:
    ``a_j + sum_{k in K, p_kj <= x} p_kj + x + x * #{k in K: p_kj > x} + q_j * x``
    ``= a_j + x * (1 + q_j) + sum_{k in K} min(p_kj, x)``.
    (Ties contribute x either way.) The same value is the decrease of ``J`` when i leaves j.
    """
    others = np.flatnonzero(machine >= 0)
    others = others[others != i]
    row = p[i]
    mk = machine[others]
    shared = np.bincount(
        mk, weights=np.minimum(p[others, mk], row[mk]), minlength=problem.num_machines
    )
    cost: FloatArray = problem.ready_s + row * (1.0 + problem.queued) + shared
    return cost


def insertion_cost_matrix(problem: RecoveryProblem, p: FloatArray, machine: IntArray) -> FloatArray:
    """``D[i, j]``: :func:`insertion_cost` of every request on every machine at once for a full
    assignment; ``D[i, machine[i]]`` is the decrease of ``J`` when i leaves its machine.

    O(n^2 + n m): the shared term groups ``min(p_kj, p_ij)`` by the machine of k.
    """
    n, m = problem.num_requests, problem.num_machines
    if n == 0:
        return np.zeros((0, m))
    rows = np.arange(n)
    t = p[rows, machine]
    order = np.argsort(machine, kind="stable")
    mk = machine[order]
    # pair[i, k] = min(t_k, p[i, machine[k]]) over the requests k grouped by machine.
    pair = np.minimum(t[order][None, :], p[:, mk])
    starts = np.flatnonzero(np.r_[True, mk[1:] != mk[:-1]])
    shared = np.zeros((n, m))
    shared[:, mk[starts]] = np.add.reduceat(pair, starts, axis=1)
    shared[rows, machine] -= t  # a request does not share its machine with itself
    cost: FloatArray = problem.ready_s[None, :] + p * (1.0 + problem.queued)[None, :] + shared
    return cost


def machine_cost(problem: RecoveryProblem, p: FloatArray, jobs: list[int], j: int) -> float:
    """``sum C_i + queued * P`` of machine j running ``jobs`` in SPT order."""
    if len(jobs) > 24:
        t = np.sort(p[jobs, j])
        return float(
            len(jobs) * problem.ready_s[j] + np.cumsum(t).sum() + problem.queued[j] * t.sum()
        )
    # Plain Python is several times faster than numpy on the few requests of one machine.
    total = run = 0.0
    for x in sorted(float(p[i, j]) for i in jobs):
        run += x
        total += run
    return len(jobs) * float(problem.ready_s[j]) + total + float(problem.queued[j]) * run


def standalone_costs(problem: RecoveryProblem, p: FloatArray) -> FloatArray:
    """``a_j + p_ij (1 + q_j)``: the cost of request i alone on machine j (inf where it has no
    mode or does not fit), the insertion cost on an empty machine."""
    cost: FloatArray = p * (1.0 + problem.queued)[None, :]
    cost += problem.ready_s[None, :]
    cost[problem.kv_tokens[:, None] > problem.kv_free_tokens[None, :]] = np.inf
    return cost


class AssignmentState:
    """A mutable assignment for local search: KV used per machine and each machine's requests,
    with feasibility and the exact change of ``J`` of compound moves."""

    def __init__(self, problem: RecoveryProblem, p: FloatArray, machine: IntArray) -> None:
        self.problem, self.p = problem, p
        self.machine = machine.copy()
        m = problem.num_machines
        self.used = np.bincount(machine, weights=problem.kv_tokens, minlength=m)
        self.members: list[list[int]] = [[] for _ in range(m)]
        for i, j in enumerate(machine.tolist()):
            self.members[j].append(i)

    def fits(self, moves: list[tuple[int, int]]) -> bool:
        """Whether KV allows the moves (request, destination) applied together."""
        kv = self.problem.kv_tokens
        delta: dict[int, float] = {}
        for i, b in moves:
            a = int(self.machine[i])
            delta[a] = delta.get(a, 0.0) - kv[i]
            delta[b] = delta.get(b, 0.0) + kv[i]
        cap = self.problem.kv_free_tokens
        return all(self.used[j] + d <= cap[j] for j, d in delta.items() if d > 0)

    def change(self, moves: list[tuple[int, int]]) -> float:
        """The exact change of ``J`` if the moves were applied together."""
        after = {j: list(self.members[j]) for i, b in moves for j in (int(self.machine[i]), b)}
        for i, b in moves:
            after[int(self.machine[i])].remove(i)
            after[b].append(i)
        pb, p = self.problem, self.p
        return sum(
            machine_cost(pb, p, jobs, j) - machine_cost(pb, p, self.members[j], j)
            for j, jobs in after.items()
        )

    def apply(self, moves: list[tuple[int, int]]) -> None:
        """Apply the moves (request, destination) in order."""
        kv = self.problem.kv_tokens
        for i, b in moves:
            a = int(self.machine[i])
            self.members[a].remove(i)
            self.members[b].append(i)
            self.machine[i] = b
            self.used[a] -= kv[i]
            self.used[b] += kv[i]


def trivial_result(
    method: str, problem: RecoveryProblem, p: FloatArray, start: float
) -> SolveResult[RecoveryPlan] | None:
    """The result of an instance that needs no solver: INFEASIBLE with a cheap proof, or
    OPTIMAL with an empty plan when there is nothing to recover (solvers dislike empty models).
    None when the instance needs solving."""
    reason = infeasibility_reason(problem, p)
    if reason:
        return SolveResult(
            method,
            Termination.INFEASIBLE,
            wall_time_s=time.perf_counter() - start,
            message=reason,
        )
    if problem.num_requests == 0:
        empty = RecoveryPlan.from_assignment(problem, np.zeros(0, np.int64))
        return SolveResult(method, Termination.OPTIMAL, objective=0.0, bound=0.0, plan=empty)
    return None
