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

The set-up (groups, regret order) is numpy; the insertion and move loops are compiled
(:mod:`.classed_kernel`), called a chunk of :data:`.clock.CHECK_EVERY` requests at a time so
that the clock is asked between chunks. :func:`warm_up` compiles them (or loads them from
numba's cache) ahead of the first real problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from lumen.planner.heuristics.classed_state import Inputs, State
from lumen.planner.heuristics.clock import CHECK_EVERY, Clock
from lumen.planner.mode_times import ModeTimes
from lumen.planner.problems import FloatArray, IntArray, RecoveryProblem


@dataclass
class _Groups:
    """Empty machines grouped by (class, queue), each group sorted by ready time, with each
    group's head (its first empty machine)."""

    machines: IntArray  # concatenated groups
    end: IntArray  # per group: one past its last position in ``machines``
    klass: IntArray  # per group: its machine class
    slope: FloatArray  # per group: 1 + queued
    group_of: IntArray  # per machine: its group
    head: IntArray  # per group: its head machine
    ptr: IntArray  # per group: its head's position

    @classmethod
    def of(cls, problem: RecoveryProblem) -> _Groups:
        mc, q, m = problem.modes.machine_class, problem.queued, problem.num_machines
        order = np.lexsort((np.arange(m), problem.ready_s, q, mc)).astype(np.int64)
        key_c, key_q = mc[order], q[order]
        new = np.r_[True, (key_c[1:] != key_c[:-1]) | (key_q[1:] != key_q[:-1])]
        start = np.flatnonzero(new).astype(np.int64)
        group_of = np.empty(m, np.int64)
        group_of[order] = np.cumsum(new) - 1
        return cls(
            machines=order,
            end=np.r_[start[1:], m].astype(np.int64),
            klass=key_c[start].astype(np.int64),
            slope=(1.0 + key_q[start]).astype(np.float64),
            group_of=group_of,
            head=order[start],
            ptr=start,
        )


def _kernel() -> ModuleType:
    """:mod:`.classed_kernel`, imported on first use (it imports numba)."""
    from lumen.planner.heuristics import classed_kernel

    return classed_kernel


def regret_order(inputs: Inputs) -> IntArray:
    """Decreasing regret (:func:`.classed_kernel.regret_loss`; one place only first), ties by
    index."""
    loss = _kernel().regret_loss(inputs)
    order: IntArray = np.lexsort((np.arange(len(loss)), -loss))
    return order


def _inputs(problem: RecoveryProblem, groups: _Groups) -> Inputs:
    """What the kernel reads of ``problem``."""
    pc, po = problem.modes.processing_by_class()
    return Inputs(
        pc=np.ascontiguousarray(pc, np.float64),
        po=np.ascontiguousarray(po, np.float64),
        own=problem.modes.own_machine.astype(np.int64),
        kv=problem.kv_tokens.astype(np.float64),
        mc=problem.modes.machine_class.astype(np.int64),
        a=problem.ready_s.astype(np.float64),
        s=(1.0 + problem.queued).astype(np.float64),
        slope_cost=np.ascontiguousarray(pc[:, groups.klass] * groups.slope[None, :]),
        g_machines=groups.machines,
        g_end=groups.end,
        g_klass=groups.klass,
        g_slope=groups.slope,
        group_of=groups.group_of,
    )


def _state(problem: RecoveryProblem, inputs: Inputs, groups: _Groups, moves: int) -> State:
    """The kernel's state before any insertion, with room for ``moves`` moves: an entry per
    insertion and per move, and as many slots (a machine becomes occupied with its first
    entry; a move to an empty machine occupies one more)."""
    n, m = problem.num_requests, problem.num_machines
    room = problem.kv_free_tokens.astype(np.float64)
    entries, head_room = n + moves, room[groups.head]
    slots = entries
    return State(
        room=room,
        taken=np.zeros(m, np.bool_),
        head=groups.head.copy(),
        head_room=head_room,
        ptr=groups.ptr.copy(),
        slot=np.full(m, -1, np.int64),
        o_machine=np.empty(slots, np.int64),
        o_a=np.empty(slots),
        o_s=np.empty(slots),
        o_cls=np.empty(slots, np.int64),
        o_room=np.empty(slots),
        o_joined=np.empty(slots, np.int64),
        o_count=np.empty(slots, np.int64),
        o_first=np.empty(slots, np.int64),
        o_oldest=np.empty(slots, np.int64),
        o_newest=np.empty(slots, np.int64),
        e_t=np.empty(entries),
        e_next=np.empty(entries, np.int64),
        e_after=np.empty(entries, np.int64),
        machine=np.full(n, -1, np.int64),
        entry=np.empty(n, np.int64),
        joined_at=np.empty(n, np.int64),
        counts=np.zeros(2, np.int64),
        min_room=np.array([head_room.min(initial=np.inf)]),
    )


def _insert(inputs: Inputs, state: State, order: IntArray, start: int, stop: int) -> int:
    """:func:`.classed_kernel.insert` (a seam where tests slow insertion down)."""
    return int(_kernel().insert(inputs, state, order, start, stop))


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
    groups = _Groups.of(problem)
    inputs = _inputs(problem, groups)
    state = _state(problem, inputs, groups, n * passes)
    order = regret_order(inputs)
    for k in range(0, n, CHECK_EVERY):
        clock.check(f"after inserting {k} of {n} requests")
        if _insert(inputs, state, order, k, min(k + CHECK_EVERY, n)) >= 0:
            return None
    for _ in range(passes):
        moved = 0
        for k in range(0, n, CHECK_EVERY):
            if (limit := clock.limit()) is not None:
                clock.stop(limit, f"the move pass stopped after {k} of {n} requests")
                return state.machine.copy()
            moved += int(_kernel().move(inputs, state, order, k, min(k + CHECK_EVERY, n)))
        if not moved:
            break
    return state.machine.copy()


def warm_up() -> None:
    """Compile the kernel's loops (or load them from numba's on-disk cache: about 5 s the first
    time on a machine, 0.1 s after) by planning a tiny problem."""
    times = np.full((2, 1, 4), np.inf)
    times[:, 0, 2] = [1.0, 2.0]
    problem = RecoveryProblem.build(
        ready_s=[0.0, 0.5, 0.6],
        queued=[0, 0, 0],
        kv_free_tokens=[10, 10, 10],
        kv_tokens=[1, 1],
        modes=ModeTimes.build(
            machine_class=[0, 0, 0],
            class_time_s=times,
            own_machine=[-1, -1],
            own_time_s=np.full((2, 4), np.inf),
        ),
        is_recovering=[False, False, False],
    )
    classed_insertion(problem, passes=1)
