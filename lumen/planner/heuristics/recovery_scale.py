"""The marginal-cost greedy on machine classes, for recovery problems too large for matrices.

At 16,384 machines x 2,048 requests an (n, m) matrix of processing times is 256 MiB and every
pass over it costs tens of milliseconds. With factored mode times (:class:`ModeTimes`) the
machines of one class give a request the same processing time, so among a class's *empty*
machines with the same queue the cheapest for any request is the one ready first: insertion
needs only the head of each (class, queue) group, the occupied machines (at most n) and the
request's own machine. :func:`classed_insertion` inserts requests in decreasing-regret order,
each where it raises ``J`` least among those candidates, with the exact SPT insertion cost
(:func:`lumen.planner.recovery_eval.insertion_cost`). Its plan is the plan of the matrix greedy's
insertion (:func:`lumen.planner.heuristics.recovery.greedy_assignment`) with the same order, up to
ties and to empty machines skipped for lack of KV room beyond the first few of a group.
Passes of single moves follow, each request in turn leaving its machine for the candidate
where it costs least when that lowers ``J`` (the same candidates, the same exact costs).
``benchmarks/bench_recovery.py`` compares it with the matrix search.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from lumen.planner.heuristics.clock import CHECK_EVERY, Clock
from lumen.planner.problems import FloatArray, IntArray, RecoveryProblem

#: Empty machines of a group tried past its head when the head lacks KV room for a request.
ROOM_SCAN = 8


@dataclass
class _Groups:
    """Empty machines grouped by (class, queue), each group sorted by ready time, with each
    group's head (its first empty machine). What vectorized costs read is in arrays, what is
    read one value at a time in Python lists (numpy's scalar access costs more); the
    positions (``machines``, ``end``) are read both ways and kept both ways."""

    machines: IntArray  # concatenated groups
    end: IntArray  # per group: one past its last position in ``machines``
    klass: IntArray  # per group: its machine class
    slope: FloatArray  # per group: 1 + queued
    head_a: FloatArray  # per group: its head's ready time (inf: none left)
    head_room: FloatArray  # ... its head's KV room (inf: none left, never blocks)
    min_room: float = 0.0  # the least KV room among the heads that are left
    machine_list: list[int] = field(default_factory=list)  # ``machines``
    end_list: list[int] = field(default_factory=list)  # ``end``
    group_of: list[int] = field(default_factory=list)  # per machine: its group
    head: list[int] = field(default_factory=list)  # per group: its head machine (-1: none)
    ptr: list[int] = field(default_factory=list)  # per group: its head's position

    @classmethod
    def of(cls, problem: RecoveryProblem) -> _Groups:
        mc, q, m = problem.modes.machine_class, problem.queued, problem.num_machines
        order = np.lexsort((np.arange(m), problem.ready_s, q, mc)).astype(np.int64)
        key_c, key_q = mc[order], q[order]
        new = np.r_[True, (key_c[1:] != key_c[:-1]) | (key_q[1:] != key_q[:-1])]
        start = np.flatnonzero(new).astype(np.int64)
        group_of = np.empty(m, np.int64)
        group_of[order] = np.cumsum(new) - 1
        head = order[start]
        rooms = problem.kv_free_tokens[head].astype(np.float64)
        end = np.r_[start[1:], m].astype(np.int64)
        return cls(
            machines=order,
            end=end,
            klass=key_c[start],
            slope=1.0 + key_q[start],
            head_a=problem.ready_s[head].astype(np.float64),
            head_room=rooms,
            min_room=float(rooms.min(initial=np.inf)),
            machine_list=order.tolist(),
            end_list=end.tolist(),
            group_of=group_of.tolist(),
            head=head.tolist(),
            ptr=start.tolist(),
        )

    def take(self, j: int, taken: list[bool], room: list[float], ready: list[float]) -> None:
        """Machine ``j`` is no longer empty: move its group's head past taken machines."""
        g = self.group_of[j]
        p, end, machines = self.ptr[g], self.end_list[g], self.machine_list
        while p < end and taken[machines[p]]:
            p += 1
        self.ptr[g] = p
        was = float(self.head_room[g])
        if p < end:
            h = machines[p]
            self.head[g], self.head_a[g], self.head_room[g] = h, ready[h], room[h]
        else:
            self.head[g], self.head_a[g], self.head_room[g] = -1, np.inf, np.inf
        if was <= self.min_room:  # the least room may have left: look again
            self.min_room = float(self.head_room.min())
        else:
            self.min_room = min(self.min_room, float(self.head_room[g]))

    def next_fit(self, g: int, skip: int, kv: float, room: list[float], taken: list[bool]) -> int:
        """The first empty machine of group ``g`` other than ``skip`` with room for ``kv``,
        looking at most :data:`ROOM_SCAN` machines past those without room (-1: none)."""
        p, end, seen, machines = self.ptr[g], self.end_list[g], 0, self.machine_list
        while p < end and seen <= ROOM_SCAN:
            j = machines[p]
            if not taken[j] and j != skip:
                if room[j] >= kv:
                    return j
                seen += 1
            p += 1
        return -1


def regret_order(
    problem: RecoveryProblem, pc: FloatArray, po: FloatArray, groups: _Groups
) -> IntArray:
    """Decreasing regret (second-cheapest minus cheapest standalone cost; one place only
    first), over each group's first two machines and the request's own machine (KV room is
    not considered); ties by index."""
    n = problem.num_requests
    a, q = problem.ready_s, problem.queued
    first = np.r_[0, groups.end[:-1]]
    costs = [np.full((n, 1), np.inf)]
    for rank in (0, 1):
        pos = first + rank
        ok = pos < groups.end
        heads = groups.machines[pos[ok]]
        costs.append(a[heads][None, :] + pc[:, groups.klass[ok]] * groups.slope[ok][None, :])
    own = problem.modes.own_machine
    has = own >= 0
    own_cost = np.full(n, np.inf)
    own_cost[has] = a[own[has]] + po[has] * (1.0 + q[own[has]])
    costs.append(own_cost[:, None])
    alone = np.concatenate(costs, axis=1)
    alone.partition(1, axis=1)
    loss = np.where(np.isfinite(alone[:, 1]), alone[:, 1] - alone[:, 0], np.inf)
    order: IntArray = np.lexsort((np.arange(n), -loss))
    return order


class _Occupied:
    """The machines holding requests (in order of occupation: their slots) with their ready
    time, slope, class and KV room, and every placement as a flat entry (slot, class, time)
    for the shared term ``sum_k min(t_k, x)`` of the insertion cost. Scalars read one at a time
    live in Python lists (numpy's scalar access costs more than the vector work here)."""

    def __init__(self, n: int, m: int, entries: int) -> None:
        self.machines: list[int] = []  # per slot
        self.slot: list[int] = [-1] * m
        self.a = np.empty(n)
        self.s = np.empty(n)
        self.cls = np.empty(n, np.int64)
        self.room = np.empty(n)
        self.times: list[list[float]] = []  # per slot: the times of its requests, sorted
        self.joined: list[int] = []  # per slot: requests put there so far
        self.classes: set[int] = set()  # the classes of the occupied machines
        self.first_class = -1  # the first of them
        self.e_slot = np.empty(entries, np.int64)
        self.e_cls = np.empty(entries, np.int64)
        self.e_t = np.empty(entries)
        self.k = 0  # occupied machines
        self.c = 0  # entries

    def shared(self, u: int, x: float, less: int = 0) -> float:
        """``sum_k min(t_k, x)`` over the requests of slot ``u``, less ``less`` of those with
        time ``x`` (1: leave out a request of time ``x`` that is there)."""
        times = self.times[u]
        below = bisect.bisect_left(times, x)
        return sum(times[:below]) + x * (len(times) - below - less)

    def add(
        self, j: int, klass: int, t: float, a: float, s: float, room: float
    ) -> tuple[bool, int]:
        """Put a request of time ``t`` on machine ``j`` (``room``: its KV room after);
        whether ``j`` was empty and the request's entry."""
        u = self.slot[j]
        new = u < 0
        if new:
            u = self.k
            self.slot[j] = u
            self.machines.append(j)
            self.a[u], self.s[u], self.cls[u] = a, s, klass
            self.times.append([])
            self.joined.append(0)
            self.k += 1
            if not self.classes:
                self.first_class = klass
            self.classes.add(klass)
        self.room[u] = room
        bisect.insort(self.times[u], t)
        self.joined[u] += 1
        c = self.c
        self.e_slot[c], self.e_cls[c], self.e_t[c] = u, klass, t
        self.c += 1
        return new, c


class _Insertion:
    """The state of :func:`classed_insertion` and the cost of each kind of candidate."""

    def __init__(self, problem: RecoveryProblem, moves: int) -> None:
        self.pc, po = problem.modes.processing_by_class()
        #: ``pc`` as lists, for scalar reads.
        self.pc_rows: list[list[float]] = self.pc.tolist()
        self.po: list[float] = po.tolist()
        self.own: list[int] = problem.modes.own_machine.tolist()
        self.mc: list[int] = problem.modes.machine_class.tolist()
        self.kv: list[float] = problem.kv_tokens.astype(np.float64).tolist()
        self.a: list[float] = problem.ready_s.astype(np.float64).tolist()
        self.s: list[float] = (1.0 + problem.queued).astype(np.float64).tolist()
        self.room: list[float] = problem.kv_free_tokens.astype(np.float64).tolist()
        self.groups = _Groups.of(problem)
        #: Per request and group, x * (1 + queued) on the group's machines.
        self.slope_cost = self.pc[:, self.groups.klass] * self.groups.slope[None, :]
        self.taken: list[bool] = [False] * problem.num_machines
        n = problem.num_requests
        self.occ = _Occupied(n, problem.num_machines, n + moves)
        self.machine: list[int] = [-1] * n
        self.entry: list[int] = [-1] * n
        #: Per request, its machine's ``joined`` count once it was put there.
        self.joined_at: list[int] = [0] * n

    def best(self, i: int, skip: int = -1) -> tuple[int, float]:
        """The cheapest machine for request ``i`` other than ``skip`` and its insertion cost:
        the cheapest occupied machine with room, the best group head with room (a head without
        room gives way to the next machines of its group) and the request's own machine, where
        its own time applies (so it is never costed as an occupied machine or a head). One
        method, not three: this runs once per request and per move, and calls cost here."""
        kv, j_own = self.kv[i], self.own[i]
        occ, gr = self.occ, self.groups
        best_j, best = -1, math.inf
        k, c = occ.k, occ.c
        if k:
            if len(occ.classes) == 1:  # one class occupied (typical): its time is a scalar
                x = self.pc_rows[i][occ.first_class]
                shared = np.minimum(occ.e_t[:c], x)
                cost = cast(FloatArray, np.bincount(occ.e_slot[:c], shared, minlength=k))
                cost += x * occ.s[:k]
            else:
                row = self.pc[i]
                shared = np.minimum(occ.e_t[:c], row[occ.e_cls[:c]])
                cost = cast(FloatArray, np.bincount(occ.e_slot[:c], shared, minlength=k))
                cost += row[occ.cls[:k]] * occ.s[:k]
            cost += occ.a[:k]
            if j_own >= 0 and occ.slot[j_own] >= 0:
                cost[occ.slot[j_own]] = math.inf
            if skip >= 0:
                cost[occ.slot[skip]] = math.inf
            # Machines without room for it (the cheapest often is: masking first is cheaper).
            np.putmask(cost, occ.room[:k] < kv, math.inf)
            u = int(cost.argmin())
            best_j, best = occ.machines[u], float(cost[u])
        heads = gr.head
        cost = self.slope_cost[i] + gr.head_a
        blocked: list[int] = np.flatnonzero(gr.head_room < kv).tolist() if kv > gr.min_room else []
        if j_own >= 0 and heads[gr.group_of[j_own]] == j_own:
            blocked.append(gr.group_of[j_own])
        if blocked:
            heads = heads.copy()
            for g in blocked:
                if heads[g] < 0:
                    continue
                j = gr.next_fit(g, j_own, kv, self.room, self.taken)
                heads[g] = j
                x_g = self.pc_rows[i][int(gr.klass[g])]
                cost[g] = self.a[j] + x_g * float(gr.slope[g]) if j >= 0 else math.inf
        g = int(cost.argmin())
        if (head_cost := float(cost[g])) < best:
            best_j, best = heads[g], head_cost
        if j_own != skip:
            mine = self.own_cost(i, kv, best)
            if mine < best:
                best_j, best = j_own, mine
        return best_j, best

    def own_cost(self, i: int, kv: float, below: float = math.inf) -> float:
        """The cost on the request's own machine (inf: none, no room or no mode there, or
        known not to be below ``below`` before its shared term is summed)."""
        j, x = self.own[i], self.po[i]
        if j < 0 or x == math.inf or self.room[j] < kv:
            return math.inf
        if self.a[j] + x * self.s[j] >= below:  # sharing only adds
            return math.inf
        u = self.occ.slot[j]
        share = self.occ.shared(u, x) if u >= 0 else 0.0
        return self.a[j] + x * self.s[j] + share

    def place(self, i: int, j: int) -> None:
        """Put request ``i`` on machine ``j``."""
        t = self.po[i] if j == self.own[i] else self.pc_rows[i][self.mc[j]]
        self.room[j] -= self.kv[i]
        new, self.entry[i] = self.occ.add(j, self.mc[j], t, self.a[j], self.s[j], self.room[j])
        self.joined_at[i] = self.occ.joined[self.occ.slot[j]]
        if new:
            self.taken[j] = True
            self.groups.take(j, self.taken, self.room, self.a)
        self.machine[i] = j

    def saving(self, i: int) -> float:
        """What taking request ``i`` off its machine would save: its insertion cost there given
        the machine's other requests. The state does not change: costing the other machines
        does not need it off (its own machine is skipped there)."""
        j, occ = self.machine[i], self.occ
        t = float(occ.e_t[self.entry[i]])
        return self.a[j] + t * self.s[j] + occ.shared(occ.slot[j], t, less=1)

    def leave(self, i: int) -> None:
        """Take request ``i`` off its machine. Its entry stays, with time 0 (it then shares
        nothing); an emptied machine stays among the occupied, where it costs what an empty
        machine costs."""
        j, entry, occ = self.machine[i], self.entry[i], self.occ
        u = occ.slot[j]
        occ.times[u].remove(float(occ.e_t[entry]))
        occ.e_t[entry] = 0.0
        self.room[j] += self.kv[i]
        occ.room[u] = self.room[j]


def classed_insertion(
    problem: RecoveryProblem,
    passes: int = 1,
    clock: Clock | None = None,
) -> IntArray | None:
    """Insert every request where it raises ``J`` least (see the module docstring), then make
    up to ``passes`` passes of single moves over the requests in the same order, each to the
    machine where it costs least when that lowers ``J``. A request whose machine took no other
    request after it stays: its machine costs it what it did when it was the cheapest, and
    every other has only grown dearer since (unless a move of this pass emptied one). So does
    a request on its own machine (its holder): elsewhere it pays a transfer or a recompute;
    skipping those changed J by -0.06 to 0 % over 15 instances (1,024 x 512 to 16,384 x 2,048)
    and saves up to half the pass at 512 x 1,024.
    None when a request finds no candidate machine with room.

    A ``clock`` whose limit is reached (checked every :data:`CHECK_EVERY` requests) raises
    :class:`.clock.Stopped` during insertion and ends the move passes early, recording it on the
    clock (the plan then depends on timing; without a limit reached it does not)."""
    n = problem.num_requests
    clock = clock if clock is not None else Clock()
    state = _Insertion(problem, n * passes)
    order = regret_order(problem, state.pc, np.asarray(state.po), state.groups).tolist()
    for k, i in enumerate(order):
        if k % CHECK_EVERY == 0:
            clock.check(f"after inserting {k} of {n} requests")
        j, cost = state.best(i)
        if j < 0 or not np.isfinite(cost):
            return None
        state.place(i, j)
    for _ in range(passes):
        moved = 0
        for k, i in enumerate(order):
            if k % CHECK_EVERY == 0 and (limit := clock.limit()) is not None:
                clock.stop(limit, f"the move pass stopped after {k} of {n} requests")
                return np.array(state.machine, np.int64)
            here = state.machine[i]
            if state.occ.joined[state.occ.slot[here]] == state.joined_at[i]:
                continue  # nothing joined it since its choice, which was the cheapest then
            if here == state.own[i]:
                continue  # anywhere else costs it a transfer or a recompute
            gain = state.saving(i)
            j, cost = state.best(i, skip=here)
            if j >= 0 and cost < gain - 1e-12 * max(1.0, gain):
                state.leave(i)
                state.place(i, j)
                moved += 1
        if not moved:
            break
    return np.array(state.machine, np.int64)
