"""Workers in order of queueing delay, with the room each has left, for the online placement.

:class:`WaitOrder` keeps the workers sorted by ``(wait_s, index)`` and two max-trees over that
order: the host budget left (``-inf`` for a worker that may not hold, or whose wait changed
since the order was built) and the stream capacity left. :meth:`WaitOrder.first` finds the
leftmost worker of the order, from a position on, whose budget and stream capacity cover a
request: O(log m) for the budget alone (the stream tree only prunes, so a leaf it lets through
is checked again by the caller). Budgets change in O(log m) (:meth:`WaitOrder.set_room`); a new
wait only marks its worker *stale* (:meth:`WaitOrder.mark_stale`): it leaves the trees and the
caller scores it on its own until the next :meth:`WaitOrder.rebuild` (O(m log m)).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from lumen.planner.problems import BoolArray, FloatArray, IntArray

_NONE = float("-inf")


def _max_tree(leaves: FloatArray, size: int) -> list[float]:
    """A max segment tree as a flat list: node ``i`` has children ``2i`` and ``2i + 1``, the
    leaves are at ``size ...`` (padded with ``-inf``), the root at 1."""
    tree = np.full(2 * size, _NONE)
    tree[size : size + leaves.shape[0]] = leaves
    lo = size
    while lo > 1:
        np.maximum(tree[lo : 2 * lo : 2], tree[lo + 1 : 2 * lo : 2], out=tree[lo // 2 : lo])
        lo //= 2
    out: list[float] = tree.tolist()
    return out


def _sorted_order(wait: FloatArray) -> IntArray:
    """The workers by ``(wait, index)``: a quicksort, then (only when waits repeat) a second one
    on unique integer keys, several times faster than a stable sort of the floats."""
    m = wait.shape[0]
    order: IntArray = np.argsort(wait)
    ranked = wait[order]
    new_wait = np.empty(m, dtype=bool)
    new_wait[:1] = True
    np.not_equal(ranked[1:], ranked[:-1], out=new_wait[1:])  # -0.0 and 0.0 are one wait
    if m and not new_wait.all():
        group = np.empty(m, dtype=np.int64)
        group[order] = np.cumsum(new_wait)
        order = np.argsort(group * m + np.arange(m))
    return order


def _set_leaf(tree: list[float], i: int, value: float) -> None:
    """Set leaf ``i`` (a tree index) and its ancestors, stopping at the first that is
    unchanged."""
    tree[i] = value
    i >>= 1
    while i:
        a, b = tree[2 * i], tree[2 * i + 1]
        v = a if a >= b else b
        if tree[i] == v:
            return
        tree[i] = v
        i >>= 1


class WaitOrder:
    """Workers sorted by ``(wait, index)`` with max-trees of their room (module docstring)."""

    def __init__(
        self, wait: FloatArray, budget: FloatArray, stream: FloatArray, hold: BoolArray
    ) -> None:
        self.size = 1
        self.count = 0
        #: Worker at each position of the order, and each worker's position.
        self.order: list[int] = []
        self.pos: list[int] = []
        #: The waits at each position, as of the last rebuild (sorted).
        self.waits: list[float] = []
        #: Per tree node, the largest budget left below it (-inf: may not hold, or stale).
        self.room: list[float] = []
        #: Per tree node, the largest stream capacity left below it.
        self.stream: list[float] = []
        #: Workers whose wait changed since the last rebuild: out of the trees.
        self.stale: set[int] = set()
        self.rebuild(wait, budget, stream, hold)

    def rebuild(
        self, wait: FloatArray, budget: FloatArray, stream: FloatArray, hold: BoolArray
    ) -> None:
        """Sort the workers again and rebuild both trees (no worker is stale after it)."""
        m = int(wait.shape[0])
        order = _sorted_order(wait)
        size = 1 << max(0, (m - 1).bit_length())
        pos = np.empty(m, dtype=np.int64)
        pos[order] = np.arange(m)
        self.size, self.count = size, m
        self.order, self.pos = order.tolist(), pos.tolist()
        self.waits = wait[order].tolist()
        self.room = _max_tree(np.where(hold, budget, _NONE)[order], size)
        self.stream = _max_tree(stream[order], size)
        self.stale = set()

    def set_room(self, worker: int, budget: float, stream: float, hold: bool) -> None:
        """New budget and stream capacity left of ``worker`` (and whether it may hold)."""
        i = self.size + self.pos[worker]
        room = budget if hold and worker not in self.stale else _NONE
        if self.room[i] != room:
            _set_leaf(self.room, i, room)
        if self.stream[i] != stream:
            _set_leaf(self.stream, i, stream)

    def mark_stale(self, worker: int) -> None:
        """``worker``'s wait changed: it leaves the trees until the next rebuild."""
        self.stale.add(worker)
        _set_leaf(self.room, self.size + self.pos[worker], _NONE)

    def first(self, start: int, reserve: float, rate: float) -> int:
        """The leftmost position from ``start`` on whose budget covers ``reserve`` and, when
        ``rate > 0``, whose stream capacity covers ``rate`` by the trees (-1: none). With a
        rate, the stream tree prunes only: the caller checks the leaf again."""
        room, size = self.room, self.size
        i = start + size
        if i >= 2 * size:
            return -1
        # Two copies of the walk: the budget-only one, the common case of a placement, does not
        # test the stream tree at every node.
        if rate > 0.0:
            stream = self.stream
            while not (room[i] >= reserve and stream[i] >= rate):
                while i & 1:  # up while a right child, then to the next subtree on the right
                    i >>= 1
                if not i:
                    return -1
                i += 1
            while i < size:
                i <<= 1
                if not (room[i] >= reserve and stream[i] >= rate):
                    i += 1
        else:
            while not room[i] >= reserve:
                while i & 1:
                    i >>= 1
                if not i:
                    return -1
                i += 1
            while i < size:
                i <<= 1
                if not room[i] >= reserve:
                    i += 1
        i -= size
        return i if i < self.count else -1

    def group_end(self, position: int) -> int:
        """The first position after ``position`` with a larger wait (as sorted)."""
        waits = self.waits
        return bisect_right(waits, waits[position], position)
