"""The arrays the compiled loops of the greedy on machine classes read and change
(:mod:`.classed_kernel`), apart from them so that importing the planner does not import numba
(about 0.1 s and 120 MiB, mostly the LLVM library it maps) until those loops first run."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lumen.planner.problems import FloatArray, IntArray

BoolArray = np.ndarray[tuple[int], np.dtype[np.bool_]]


class Inputs(NamedTuple):
    """What the loops read: per request (n), machine (m) and group (G) of empty machines with
    the same class and queue, sorted by ready time (see :class:`.recovery_scale._Groups`)."""

    pc: FloatArray  # (n, classes): processing time of each request on each class
    po: FloatArray  # (n,): on its own machine (inf: none)
    own: IntArray  # (n,): its own machine (-1: none)
    kv: FloatArray  # (n,): its KV tokens
    mc: IntArray  # (m,): machine class
    a: FloatArray  # (m,): ready time
    s: FloatArray  # (m,): 1 + queued
    slope_cost: FloatArray  # (n, G): pc of the group's class x the group's slope
    g_machines: IntArray  # (m,): the groups' machines, concatenated
    g_end: IntArray  # (G,): one past a group's last position in g_machines
    g_klass: IntArray  # (G,): a group's class
    g_slope: FloatArray  # (G,): 1 + a group's queue
    group_of: IntArray  # (m,): a machine's group


class State(NamedTuple):
    """What the loops change. Occupied machines have slots (in order of occupation); every
    placement is an entry (the request's time there), linked into two lists of its slot: in
    the order of placement, and by increasing time while the request is there (a request that
    leaves keeps its entry in the first, with time 0)."""

    room: FloatArray  # (m,): KV room left
    taken: BoolArray  # (m,): holds a request
    head: IntArray  # (G,): a group's first empty machine (-1: none)
    head_room: FloatArray  # (G,): its KV room (inf: none)
    ptr: IntArray  # (G,): its position in g_machines
    slot: IntArray  # (m,): a machine's slot (-1: empty)
    o_machine: IntArray  # per slot: its machine
    o_a: FloatArray  # per slot: ready time
    o_s: FloatArray  # per slot: 1 + queued
    o_cls: IntArray  # per slot: class
    o_room: FloatArray  # per slot: KV room left
    o_joined: IntArray  # per slot: requests put there so far
    o_count: IntArray  # per slot: requests there now
    o_first: IntArray  # per slot: its first entry by time (-1: none)
    o_oldest: IntArray  # per slot: its first entry
    o_newest: IntArray  # per slot: its last entry
    e_t: FloatArray  # per entry: the request's processing time there (0 once it left)
    e_next: IntArray  # per entry: the next in its slot's list by time (-1: last)
    e_after: IntArray  # per entry: the next entry of its slot (-1: last)
    machine: IntArray  # (n,): a request's machine (-1: none yet)
    entry: IntArray  # (n,): its entry
    joined_at: IntArray  # (n,): its machine's o_joined once it was put there
    counts: IntArray  # [occupied slots, entries]
    min_room: FloatArray  # [the least KV room among the heads left]
