"""The compiled loops of the greedy on machine classes (:mod:`.recovery_scale`).

Insertion costs every occupied machine and every group head for each request, and a move pass
does it again for each request that may move: at 1,024 machines x 512 requests that is a few
hundred thousand scalar operations, about a millisecond compiled but about 7 ms as numpy calls
(each call's overhead, not its arithmetic, sets that pace). These loops are compiled by numba
and cached on disk after the first compilation (:func:`.recovery_scale.warm_up` compiles or
loads them ahead of time).

The state is plain arrays in two named tuples (:mod:`.classed_state`): ``Inputs`` (read only)
and ``State`` (changed in place). The arithmetic is that of the insertion cost of
:func:`lumen.planner.recovery_eval.insertion_cost`, summed in a fixed order (an occupied
machine's shared term over its requests in the order they were put there; a request's own
machine over its requests by increasing time), so a plan depends on its inputs only.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lumen.planner.heuristics.classed_state import Inputs, State
from lumen.planner.problems import FloatArray, IntArray

#: Empty machines of a group tried past its head when the head lacks KV room for a request.
ROOM_SCAN = 8

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _shared(st: State, u: int, x: float, less: int) -> float:
    """``sum_k min(t_k, x)`` over the requests of slot ``u``, less ``less`` of those with time
    ``x`` (1: leave out a request of time ``x`` that is there)."""
    total, below = 0.0, 0
    e = st.o_first[u]
    while e >= 0 and st.e_t[e] < x:
        total += st.e_t[e]
        below += 1
        e = st.e_next[e]
    return float(total + x * (st.o_count[u] - below - less))


@_jit
def _next_fit(inp: Inputs, st: State, g: int, skip: int, kv: float) -> int:
    """The first empty machine of group ``g`` other than ``skip`` with room for ``kv``,
    looking at most :data:`ROOM_SCAN` machines past those without room (-1: none)."""
    p, end, seen = st.ptr[g], inp.g_end[g], 0
    while p < end and seen <= ROOM_SCAN:
        j = inp.g_machines[p]
        if not st.taken[j] and j != skip:
            if st.room[j] >= kv:
                return int(j)
            seen += 1
        p += 1
    return -1


@_jit
def _own_cost(inp: Inputs, st: State, i: int, below: float) -> float:
    """The cost on request ``i``'s own machine (inf: none, no room or no mode there, or known
    not to be below ``below`` before its shared term is summed)."""
    j, x = inp.own[i], inp.po[i]
    if j < 0 or x == math.inf or st.room[j] < inp.kv[i]:
        return math.inf
    alone = inp.a[j] + x * inp.s[j]
    if alone >= below:  # sharing only adds
        return math.inf
    u = st.slot[j]
    return float(alone + (_shared(st, u, x, 0) if u >= 0 else 0.0))


@_jit
def _best(inp: Inputs, st: State, i: int, skip: int) -> tuple[int, float]:
    """The cheapest machine for request ``i`` other than ``skip`` and its insertion cost (-1
    and inf: none): the cheapest occupied machine with room (the first of equals), unless the
    best group head with room costs less (a head without room gives way to the next machines
    of its group), unless the request's own machine costs less still (its own time applies
    there, so it is never costed as an occupied machine or a head). An occupied machine's
    shared term is summed only when its cost without it could win."""
    kv, j_own = inp.kv[i], inp.own[i]
    head_j, head = -1, math.inf
    own_g = -1
    if j_own >= 0 and st.head[inp.group_of[j_own]] == j_own:
        own_g = inp.group_of[j_own]
    scan = kv > st.min_room[0]
    for g in range(inp.g_end.shape[0]):
        h = st.head[g]
        if h >= 0 and (g == own_g or (scan and st.head_room[g] < kv)):
            h = _next_fit(inp, st, g, j_own, kv)
        if h < 0:
            continue
        cost = inp.slope_cost[i, g] + inp.a[h]
        if cost < head:
            head_j, head = h, cost
    best_j, best = -1, math.inf
    u_own = st.slot[j_own] if j_own >= 0 else -1
    u_skip = st.slot[skip] if skip >= 0 else -1
    for u in range(st.counts[0]):
        if u in (u_own, u_skip) or st.o_room[u] < kv:
            continue
        x = inp.pc[i, st.o_cls[u]]
        alone = x * st.o_s[u] + st.o_a[u]  # the shared term only adds
        if alone >= best or alone > head:
            continue
        shared, e = 0.0, st.o_oldest[u]
        while e >= 0:
            t = st.e_t[e]
            shared += t if t < x else x
            e = st.e_after[e]
        cost = shared + x * st.o_s[u] + st.o_a[u]
        if cost < best:
            best_j, best = st.o_machine[u], cost
    if head < best:
        best_j, best = head_j, head
    if j_own != skip:
        mine = _own_cost(inp, st, i, best)
        if mine < best:
            best_j, best = j_own, mine
    return best_j, best


@_jit
def _take(inp: Inputs, st: State, j: int) -> None:
    """Machine ``j`` is no longer empty: move its group's head past taken machines."""
    g = inp.group_of[j]
    p, end = st.ptr[g], inp.g_end[g]
    while p < end and st.taken[inp.g_machines[p]]:
        p += 1
    st.ptr[g] = p
    was = st.head_room[g]
    if p < end:
        h = inp.g_machines[p]
        st.head[g], st.head_room[g] = h, st.room[h]
    else:
        st.head[g], st.head_room[g] = -1, math.inf
    if was <= st.min_room[0]:  # the least room may have left: look again
        st.min_room[0] = st.head_room.min()
    else:
        st.min_room[0] = min(st.min_room[0], st.head_room[g])


@_jit
def _place(inp: Inputs, st: State, i: int, j: int) -> None:
    """Put request ``i`` on machine ``j``."""
    klass = inp.mc[j]
    t = inp.po[i] if j == inp.own[i] else inp.pc[i, klass]
    st.room[j] -= inp.kv[i]
    u = st.slot[j]
    new = u < 0
    if new:
        u = st.counts[0]
        st.counts[0] += 1
        st.slot[j], st.o_machine[u], st.o_cls[u] = u, j, klass
        st.o_a[u], st.o_s[u] = inp.a[j], inp.s[j]
        st.o_joined[u], st.o_count[u], st.o_first[u] = 0, 0, -1
    st.o_room[u] = st.room[j]
    c = st.counts[1]
    st.counts[1] += 1
    st.e_t[c], st.e_after[c] = t, -1
    if new:
        st.o_oldest[u] = c
    else:
        st.e_after[st.o_newest[u]] = c
    st.o_newest[u] = c
    prev, e = -1, st.o_first[u]  # after the requests of time <= t
    while e >= 0 and st.e_t[e] <= t:
        prev, e = e, st.e_next[e]
    st.e_next[c] = e
    if prev < 0:
        st.o_first[u] = c
    else:
        st.e_next[prev] = c
    st.o_count[u] += 1
    st.o_joined[u] += 1
    st.entry[i], st.joined_at[i], st.machine[i] = c, st.o_joined[u], j
    if new:
        st.taken[j] = True
        _take(inp, st, j)


@_jit
def _saving(inp: Inputs, st: State, i: int) -> float:
    """What taking request ``i`` off its machine would save: its insertion cost there given
    the machine's other requests."""
    j = st.machine[i]
    t = st.e_t[st.entry[i]]
    return float(inp.a[j] + t * inp.s[j] + _shared(st, st.slot[j], t, 1))


@_jit
def _leave(inp: Inputs, st: State, i: int) -> None:
    """Take request ``i`` off its machine: out of its slot's list, its entry's time 0 (it then
    shares nothing); an emptied machine stays occupied, where it costs what an empty one
    costs."""
    j, c = st.machine[i], st.entry[i]
    u = st.slot[j]
    prev, e = -1, st.o_first[u]
    while e != c:
        prev, e = e, st.e_next[e]
    if prev < 0:
        st.o_first[u] = st.e_next[c]
    else:
        st.e_next[prev] = st.e_next[c]
    st.o_count[u] -= 1
    st.e_t[c] = 0.0
    st.room[j] += inp.kv[i]
    st.o_room[u] = st.room[j]


@_jit
def _two_least(first: float, second: float, cost: float) -> tuple[float, float]:
    """The two least of ``first <= second`` and ``cost``, in order."""
    if cost < first:
        return cost, first
    return first, min(second, cost)


@_jit
def regret_loss(inp: Inputs) -> FloatArray:
    """Per request, its second-cheapest minus its cheapest standalone cost (inf: one place
    only) over each group's first two machines and its own machine (KV room is not
    considered)."""
    n, groups = inp.pc.shape[0], inp.g_end.shape[0]
    loss = np.empty(n)
    for i in range(n):
        first, second = math.inf, math.inf
        for g in range(groups):
            p = inp.g_end[g - 1] if g else 0
            for q in range(p, min(p + 2, inp.g_end[g])):
                cost = inp.a[inp.g_machines[q]] + inp.slope_cost[i, g]
                first, second = _two_least(first, second, cost)
        j = inp.own[i]
        if j >= 0:
            first, second = _two_least(first, second, inp.a[j] + inp.po[i] * inp.s[j])
        loss[i] = second - first if second < math.inf else math.inf
    return loss


@_jit
def insert(inp: Inputs, st: State, order: IntArray, start: int, stop: int) -> int:
    """Insert requests ``order[start:stop]``, each on its cheapest machine; the position of the
    first that finds no machine with room (-1: none)."""
    for k in range(start, stop):
        i = order[k]
        j, cost = _best(inp, st, i, -1)
        if j < 0 or not math.isfinite(cost):
            return k
        _place(inp, st, i, j)
    return -1


@_jit
def move(inp: Inputs, st: State, order: IntArray, start: int, stop: int) -> int:
    """Offer requests ``order[start:stop]`` a move to their cheapest other machine, taken when
    it lowers ``J``; how many moved. Requests whose machine took no other request after them,
    and requests on their own machine, stay (why: :func:`.recovery_scale.classed_insertion`)."""
    moved = 0
    for k in range(start, stop):
        i = order[k]
        here = st.machine[i]
        if st.o_joined[st.slot[here]] == st.joined_at[i] or here == inp.own[i]:
            continue
        gain = _saving(inp, st, i)
        j, cost = _best(inp, st, i, here)
        if j >= 0 and cost < gain - 1e-12 * max(1.0, gain):
            _leave(inp, st, i)
            _place(inp, st, i, j)
            moved += 1
    return moved
