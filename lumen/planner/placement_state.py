"""Online checkpoint placement: the incremental form of docs/planner.md section 1.

A :class:`PlacementState` holds, for the requests placed so far, the restore work of every
(home, holder) pair ``L[f][j]``, the worst load per home ``M_f``, the wait sum ``S_f`` and the
count ``n_f`` of each home's requests, and the budget and stream capacity left on each worker.
:meth:`PlacementState.place` puts one new request on the feasible holder that increases ``J`` the
least::

    fail_weight[f] * (alpha * max(M_f, L[f][j] + work) + (S_f + wait_s[j]) / (n_f + 1))
      - fail_weight[f] * (alpha * M_f + S_f / n_f)

Only the first part depends on ``j``, so the argmin is that of ``alpha * max(M_f, L[f][j] +
work) + wait_s[j] / (n_f + 1)`` (ties: lowest index).

Memory is O(m + requests): ``L`` and the counts are stored only for the (home, holder) pairs that
hold a request (a dict per home into flat tables), and the structural rules (``can_hold``, not
the home, another node if required) are computed per home from the node and can-hold vectors.

Every worker outside a home's row has ``L[f][j] = 0``, so its score is a non-decreasing function
of ``wait_s[j]`` alone. The workers are kept sorted by ``(wait_s, index)`` with max-trees of the
budget and stream capacity left over that order (:class:`lumen.planner.wait_order.WaitOrder`):
a placement scores the home's few holders one by one and walks the order from the least wait to
the first worker with room, then on to the next distinct waits while they round to the same
score (ties: lowest index). That is O(log m) Python work per placement, the same holder bit for
bit as the argmin over all ``m`` scores (:meth:`PlacementState.choose_dense`, which it falls
back to when more than :data:`SKIP_LIMIT` workers of the order are skipped: a large node or row).
Capacities change in O(log m); the waits change through :meth:`PlacementState.update_wait` (a
new order: O(m log m)) or :meth:`PlacementState.set_wait` (one worker, scored apart until
:data:`STALE_LIMIT` have changed). The public vectors (``wait_s``, ``budget_left``,
``stream_left``, ``can_hold``) are read-only views: every write goes through a method, so the
order and the wait sums never go stale.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from lumen.planner.problems import BoolArray, FloatArray, IntArray, PlacementProblem
from lumen.planner.wait_order import WaitOrder

ArrayT = TypeVar("ArrayT", bound=np.ndarray[Any, Any])

#: Online placement rules :meth:`PlacementState.place` applies.
PLACEMENT_RULES = ("greedy", "lumen", "fixed-ring")
#: Best-scored workers checked one by one before the full feasibility mask is computed (in
#: :meth:`PlacementState.choose_dense`).
FAST_TRIES = 2
#: Workers of the wait order skipped (the home's node or row, no stream room) before a
#: placement falls back to :meth:`PlacementState.choose_dense`.
SKIP_LIMIT = 32
#: Workers whose wait changed (:meth:`PlacementState.set_wait`) before the order is rebuilt.
STALE_LIMIT = 16
#: The score of a worker that may not take the request (above any real score).
_BARRED = float(np.finfo(np.float64).max)


class PlacementState:
    """Mutable placement state over ``m`` workers (see the module docstring)."""

    def __init__(
        self,
        *,
        node: Any,
        wait_s: Any,
        budget_bytes: Any,
        can_hold: Any = None,
        fail_weight: Any = None,
        stream_cap_bytes_s: Any = None,
        alpha: float = 1.0,
        require_other_node: bool = True,
        rule: str = "greedy",
    ) -> None:
        """Worker data as in :class:`PlacementProblem` (same defaults); budgets are what is
        free before any request of this state is placed.

        ``rule`` picks the holder of a new request: ``"greedy"`` the least increase of ``J``
        (above), ``"lumen"`` the paper's ``wait_s[j] + alpha * (L[f][j] + work)``, and
        ``"fixed-ring"`` the first allowed worker with room after the home in ring order
        (Fixed-Checkpointing)."""
        if rule not in PLACEMENT_RULES:
            raise ValueError(f"rule: expected one of {', '.join(PLACEMENT_RULES)}, got {rule!r}")
        self.rule = rule
        self.node: IntArray = np.asarray(node, dtype=np.int64).copy()
        m = self.node.shape[0]
        if m < 1:
            raise ValueError("node: at least one worker is needed")
        self.alpha = float(alpha)
        if self.alpha != self.alpha:
            raise ValueError("alpha: expected a number, got nan")
        self.fail_weight: FloatArray = (
            np.full(m, 1.0 / m) if fail_weight is None else np.array(fail_weight, dtype=float)
        )
        # The vectors the wait order depends on are private; read-only views are public.
        self._wait: FloatArray = np.array(wait_s, dtype=np.float64)
        self._budget: FloatArray = np.array(budget_bytes, dtype=np.float64)
        self._stream: FloatArray = (
            np.full(m, np.inf)
            if stream_cap_bytes_s is None
            else np.array(stream_cap_bytes_s, dtype=np.float64)
        )
        hold = np.ones(m, bool) if can_hold is None else np.asarray(can_hold, dtype=bool)
        for name, arr in (
            ("wait_s", self._wait),
            ("budget_bytes", self._budget),
            ("fail_weight", self.fail_weight),
            ("stream_cap_bytes_s", self._stream),
            ("can_hold", hold),
        ):
            if arr.shape != (m,):
                raise ValueError(f"{name}: expected shape ({m},), got {arr.shape}")
        _check_waits(self._wait)
        self.require_other_node = require_other_node
        self._hold: BoolArray = hold.copy()
        self._hold_penalty: FloatArray = np.where(hold, 0.0, _BARRED)
        self._wait_view, self._hold_view = _read_only(self._wait), _read_only(self._hold)
        self._budget_view, self._stream_view = _read_only(self._budget), _read_only(self._stream)
        # Python mirrors for the scalar work of a placement (list reads beat numpy's).
        self._wait_list: list[float] = self._wait.tolist()
        self._node_list: list[int] = self.node.tolist()
        self._hold_list: list[bool] = hold.tolist()
        self._order = WaitOrder(self._wait, self._budget, self._stream, self._hold)
        by_node = np.argsort(self.node, kind="stable")
        bounds = np.searchsorted(self.node[by_node], self.node)
        ends = np.searchsorted(self.node[by_node], self.node, side="right")
        #: Per worker, the workers of its node (itself included).
        self._mates: list[IntArray] = [
            by_node[a:b] for a, b in zip(bounds.tolist(), ends.tolist(), strict=True)
        ]
        #: Per home, its holders' slots in the flat (home, holder) tables below: only the pairs
        #: that hold a request are stored, so memory is O(m + requests), not m x m.
        self._rows: list[dict[int, int]] = [{} for _ in range(m)]
        self._slot_home: IntArray = np.zeros(0, dtype=np.int64)
        self._slot_holder: IntArray = np.zeros(0, dtype=np.int64)
        self._slot_count: IntArray = np.zeros(0, dtype=np.int64)
        self._slot_load: list[float] = []
        self._free_slots: list[int] = []
        self.worst: FloatArray = np.zeros(m)
        self._wait_sum: FloatArray = np.zeros(m)
        self._wait_sum_stale = False  # set_wait changed a wait: recomputed when next read
        self.home_count: IntArray = np.zeros(m, dtype=np.int64)
        # Scratch buffers: place() allocates nothing of size m.
        self._score = np.empty(m)
        self._penalty = np.empty(m)
        self._ok = np.empty(m, dtype=bool)
        self._ok2 = np.empty(m, dtype=bool)

    @classmethod
    def from_problem(cls, problem: PlacementProblem, holder: Any = None) -> PlacementState:
        """The state over ``problem``'s workers; with ``holder``, its requests are recorded on
        those holders first (for example the plan of the last re-optimization)."""
        state = cls(
            node=problem.node,
            wait_s=problem.wait_s,
            budget_bytes=problem.budget_bytes,
            can_hold=problem.can_hold,
            fail_weight=problem.fail_weight,
            stream_cap_bytes_s=problem.stream_cap_bytes_s,
            alpha=problem.alpha,
            require_other_node=problem.require_other_node,
        )
        if holder is not None:
            held = np.asarray(getattr(holder, "holder", holder), dtype=np.int64)
            if held.shape != (problem.num_requests,) or (
                held.size and ((held < 0) | (held >= problem.num_workers)).any()
            ):
                raise ValueError("holder: one worker index per request of the problem")
            for i, j in enumerate(held.tolist()):
                state.assign(
                    int(problem.home[i]),
                    j,
                    float(problem.reserve_bytes[i]),
                    float(problem.work_s[i]),
                    float(problem.stream_bytes_s[i]),
                )
        return state

    @property
    def num_workers(self) -> int:
        return int(self.node.shape[0])

    @property
    def wait_s(self) -> FloatArray:
        """Queueing delay per worker (read-only: :meth:`update_wait`, :meth:`set_wait`)."""
        return self._wait_view

    @property
    def budget_left(self) -> FloatArray:
        """Host budget left per worker (read-only: :meth:`assign`, :meth:`release`)."""
        return self._budget_view

    @property
    def stream_left(self) -> FloatArray:
        """Stream capacity left per worker (read-only: :meth:`assign`, :meth:`release`)."""
        return self._stream_view

    @property
    def can_hold(self) -> BoolArray:
        """Workers that may hold new checkpoints at all (read-only: :meth:`set_can_hold`;
        :meth:`allowed_row` adds the home rules)."""
        return self._hold_view

    @property
    def wait_sum(self) -> FloatArray:
        """``S_f``: per home, the waits of its requests' holders summed."""
        if self._wait_sum_stale:
            self._wait_sum = self._pair_wait_sum(self._wait)
            self._wait_sum_stale = False
        return self._wait_sum

    def allowed_row(self, home: int, out: BoolArray | None = None) -> BoolArray:
        """``allowed[j]``: may ``j`` hold checkpoints of requests whose home is ``home`` (it may
        hold at all, is not the home and, if required, is on another node)."""
        ok = np.empty(self.num_workers, dtype=bool) if out is None else out
        if self.require_other_node:
            np.not_equal(self.node, self.node[home], out=ok)
            ok &= self._hold
        else:
            np.copyto(ok, self._hold)
        ok[home] = False
        return ok

    def row(self, home: int) -> dict[int, tuple[int, float]]:
        """Home ``home``'s holders: ``{holder: (requests, restore work)}``."""
        return {
            j: (int(self._slot_count[k]), self._slot_load[k]) for j, k in self._rows[home].items()
        }

    def dense_load(self) -> FloatArray:
        """The m x m ``L[f][j]`` (for inspection and tests: O(m^2) memory)."""
        m = self.num_workers
        out = np.zeros((m, m))
        for f, entries in enumerate(self._rows):
            for j, k in entries.items():
                out[f, j] = self._slot_load[k]
        return out

    def dense_count(self) -> IntArray:
        """The m x m request counts per (home, holder) (for inspection and tests)."""
        m = self.num_workers
        out = np.zeros((m, m), dtype=np.int64)
        for f, entries in enumerate(self._rows):
            for j, k in entries.items():
                out[f, j] = self._slot_count[k]
        return out

    def _fits(self, home: int, j: int, reserve_bytes: float, stream_bytes_s: float) -> bool:
        """May ``j`` take a new request of ``home`` (rules and capacities), as one scalar test."""
        if j == home or not self._hold_list[j] or not self._budget[j] >= reserve_bytes:
            return False
        if self.require_other_node and self._node_list[j] == self._node_list[home]:
            return False
        return stream_bytes_s <= 0.0 or bool(self._stream[j] >= stream_bytes_s)

    def _terms(self, home: int, work_s: float) -> tuple[float, float, float]:
        """``(worst, k, base)``: a holder ``j`` of ``home``'s row with load ``l`` scores
        ``max(l + work_s, worst) * alpha + wait[j] * k``, any other ``wait[j] * k + base``
        (the lumen rule: ``worst = -inf`` and ``k = 1``, the same values as its own form). Both
        :meth:`choose` and :meth:`choose_dense` score with these."""
        if self.rule == "greedy":
            worst, k = float(self.worst[home]), 1.0 / (int(self.home_count[home]) + 1)
        else:
            worst, k = -np.inf, 1.0
        return worst, k, max(0.0 + work_s, worst) * self.alpha

    def choose(
        self, home: int, reserve_bytes: float, work_s: float, stream_bytes_s: float = 0.0
    ) -> int:
        """The holder :meth:`place` would pick (-1 when nothing fits), without placing.

        The argmin of the scores over the workers that may take the request (ties: lowest
        index), as :meth:`choose_dense` computes it, found by walking the wait order (module
        docstring)."""
        if reserve_bytes != reserve_bytes or work_s != work_s or stream_bytes_s != stream_bytes_s:
            raise ValueError("reserve_bytes, work_s and stream_bytes_s must be numbers, not nan")
        if self.rule == "fixed-ring":
            return self.choose_dense(home, reserve_bytes, work_s, stream_bytes_s)
        worst, k, base = self._terms(home, work_s)
        entries, loads, wait, alpha = self._rows[home], self._slot_load, self._wait_list, self.alpha
        best_s, best_j = _BARRED, -1  # only scores below _BARRED are taken
        # The home's holders, then the workers whose wait changed since the order was built.
        for j, slot in entries.items():
            if self._fits(home, j, reserve_bytes, stream_bytes_s):
                s = max(loads[slot] + work_s, worst) * alpha + wait[j] * k
                if s < best_s or (s == best_s and j < best_j):
                    best_s, best_j = s, j
        order = self._order
        for j in order.stale:
            if j not in entries and self._fits(home, j, reserve_bytes, stream_bytes_s):
                s = wait[j] * k + base
                if s < best_s or (s == best_s and j < best_j):
                    best_s, best_j = s, j
        # The rest in order of wait (as sorted: a stale worker's old wait is still a lower
        # bound for the positions after it). The first that fits has the least score of its
        # wait (the lowest index among equal waits); a larger wait can only round to the same
        # score, so the walk goes on to the next wait until the score is above the best.
        workers, waits, room, stream = order.order, order.waits, order.room, order.stream
        hold, node, stale, size = self._hold_list, self._node_list, order.stale, order.size
        mate = node[home] if self.require_other_node else None  # None: any node may hold
        position, skipped = order.first(0, reserve_bytes, stream_bytes_s), 0
        while position >= 0:
            s = waits[position] * k + base
            if s > best_s or s >= _BARRED:
                break
            j, leaf = workers[position], size + position
            if (
                j == home
                or node[j] == mate
                or j in entries
                or not hold[j]
                or j in stale
                or not room[leaf] >= reserve_bytes
                or (stream_bytes_s > 0.0 and not stream[leaf] >= stream_bytes_s)
            ):
                skipped += 1
                if skipped > SKIP_LIMIT:
                    return self.choose_dense(home, reserve_bytes, work_s, stream_bytes_s)
                position = order.first(position + 1, reserve_bytes, stream_bytes_s)
                continue
            if s < best_s or j < best_j:  # s == best_s: the lower index wins
                best_s, best_j = s, j
            position = order.first(order.group_end(position), reserve_bytes, stream_bytes_s)
        return best_j

    def choose_dense(
        self, home: int, reserve_bytes: float, work_s: float, stream_bytes_s: float = 0.0
    ) -> int:
        """:meth:`choose` by vector operations over all ``m`` workers (the fallback, and the
        fixed-ring rule).

        Every worker that holds none of ``home``'s requests scores alike but for its wait: two
        vector operations over ``m`` score them all, then the few holders of the home's requests
        are scored one by one. The best is checked alone (rules and capacities); only when a
        few in a row are barred is the full feasibility mask computed: the same argmin (ties:
        lowest index) at a fraction of the cost."""
        if self.rule == "fixed-ring":
            ok = self._feasible(home, reserve_bytes, stream_bytes_s)
            after = np.flatnonzero(ok[home + 1 :])
            if after.size:
                return home + 1 + int(after[0])
            before = np.flatnonzero(ok[:home])
            return int(before[0]) if before.size else -1
        score, entries, loads, alpha = self._score, self._rows[home], self._slot_load, self.alpha
        wait = self._wait
        worst, k, base = self._terms(home, work_s)
        np.multiply(wait, k, out=score)
        score += base
        for j, slot in entries.items():
            score[j] = max(loads[slot] + work_s, worst) * alpha + wait[j] * k
        # Barred workers score _BARRED: those that may not hold at all, the home and its node.
        np.maximum(score, self._hold_penalty, out=score)
        score[self._mates[home] if self.require_other_node else home] = _BARRED
        for _ in range(FAST_TRIES):
            j = int(score.argmin())
            if score[j] >= _BARRED:
                return -1
            if self._budget[j] >= reserve_bytes and (
                stream_bytes_s <= 0.0 or self._stream[j] >= stream_bytes_s
            ):
                return j
            score[j] = _BARRED
        # Then those without room (multiply and maximum cost the same whatever the pattern of
        # the mask; a masked copy is several times slower on a scattered one).
        full, penalty = self._ok, self._penalty
        np.less(self._budget, reserve_bytes, out=full)
        if stream_bytes_s > 0.0:
            np.less(self._stream, stream_bytes_s, out=self._ok2)
            full |= self._ok2
        np.multiply(full, _BARRED, out=penalty)
        np.maximum(score, penalty, out=score)
        j = int(score.argmin())
        return j if score[j] < _BARRED else -1

    def _feasible(self, home: int, reserve_bytes: float, stream_bytes_s: float) -> BoolArray:
        """The workers that may take a new request of ``home`` (a scratch buffer)."""
        ok = self.allowed_row(home, self._ok)
        np.greater_equal(self._budget, reserve_bytes, out=self._ok2)
        ok &= self._ok2
        if stream_bytes_s > 0.0:
            np.greater_equal(self._stream, stream_bytes_s, out=self._ok2)
            ok &= self._ok2
        return ok

    def place(
        self, home: int, reserve_bytes: float, work_s: float, stream_bytes_s: float = 0.0
    ) -> int:
        """Put a new request on the holder that increases ``J`` the least; returns its index,
        or -1 (state unchanged) when no allowed worker has the budget and stream cap left."""
        j = self.choose(home, reserve_bytes, work_s, stream_bytes_s)
        if j >= 0:
            self.assign(home, j, reserve_bytes, work_s, stream_bytes_s)
        return j

    def _slot(self, home: int, holder: int) -> int:
        """The slot of pair (home, holder), taken from the free list or the end of the tables."""
        slot = self._rows[home].get(holder)
        if slot is not None:
            return slot
        if not self._free_slots:
            size = len(self._slot_load)
            grow = max(16, size)
            self._slot_home = np.concatenate([self._slot_home, np.zeros(grow, np.int64)])
            self._slot_holder = np.concatenate([self._slot_holder, np.zeros(grow, np.int64)])
            self._slot_count = np.concatenate([self._slot_count, np.zeros(grow, np.int64)])
            self._slot_load.extend([0.0] * grow)
            self._free_slots = list(range(size + grow - 1, size - 1, -1))
        slot = self._free_slots.pop()
        self._slot_home[slot], self._slot_holder[slot] = home, holder
        self._rows[home][holder] = slot
        return slot

    def assign(
        self,
        home: int,
        holder: int,
        reserve_bytes: float,
        work_s: float,
        stream_bytes_s: float = 0.0,
    ) -> None:
        """Record a request on a given holder (capacities are charged, not checked)."""
        slot = self._slot(home, holder)
        load = self._slot_load[slot] + work_s
        self._slot_load[slot] = load
        self._slot_count[slot] += 1
        if load > self.worst[home]:
            self.worst[home] = load
        if not self._wait_sum_stale:
            self._wait_sum[home] += self._wait_list[holder]
        self.home_count[home] += 1
        self._charge(holder, reserve_bytes, stream_bytes_s)

    def _charge(self, holder: int, reserve_bytes: float, stream_bytes_s: float) -> None:
        """Take a request's budget and stream rate from ``holder`` (negative: give back)."""
        self._budget[holder] -= reserve_bytes
        self._stream[holder] -= stream_bytes_s
        self._sync_room(holder)

    def _sync_room(self, worker: int) -> None:
        """Bring ``worker``'s budget, stream capacity and can-hold flag into the wait order."""
        self._order.set_room(
            worker,
            float(self._budget[worker]),
            float(self._stream[worker]),
            self._hold_list[worker],
        )

    def release(
        self,
        home: int,
        holder: int,
        reserve_bytes: float,
        work_s: float,
        stream_bytes_s: float = 0.0,
    ) -> None:
        """Forget a request that ended (or moved): O(holders of its home) to recompute
        ``M_f``."""
        entries = self._rows[home]
        slot = entries.get(holder)
        if slot is None:
            raise ValueError(f"no request of home {home} is held by worker {holder}")
        self._slot_count[slot] -= 1
        self.home_count[home] -= 1
        if self._slot_count[slot] == 0:
            del entries[holder]  # an empty pair is forgotten: no floating-point residue
            self._slot_load[slot] = 0.0
            self._free_slots.append(slot)
        else:
            self._slot_load[slot] -= work_s
        if self._wait_sum_stale:
            pass  # recomputed when next read
        elif self.home_count[home] == 0:
            self._wait_sum[home] = 0.0
        else:
            self._wait_sum[home] -= self._wait_list[holder]
        loads = self._slot_load
        self.worst[home] = max((loads[k] for k in entries.values()), default=0.0)
        self.worst[home] = max(float(self.worst[home]), 0.0)
        self._charge(holder, -reserve_bytes, -stream_bytes_s)

    def set_can_hold(self, worker: int, can_hold: bool) -> None:
        """Let ``worker`` hold new checkpoints again, or stop it (a failed or reloading one)."""
        self._hold[worker] = can_hold
        self._hold_list[worker] = bool(can_hold)
        self._hold_penalty[worker] = 0.0 if can_hold else _BARRED
        self._sync_room(worker)

    def update_wait(self, wait_s: Any) -> None:
        """New queueing delays: the wait order is rebuilt (O(m log m)) and every home's wait sum
        is recomputed over the stored (home, holder) pairs (O(m + pairs))."""
        wait = np.asarray(wait_s, dtype=np.float64)
        if wait.shape != (self.num_workers,):
            raise ValueError(f"wait_s: expected shape ({self.num_workers},), got {wait.shape}")
        _check_waits(wait)
        self._wait[:] = wait
        self._wait_list = self._wait.tolist()
        self._order.rebuild(self._wait, self._budget, self._stream, self._hold)
        self._wait_sum = self._pair_wait_sum(self._wait)
        self._wait_sum_stale = False

    def set_wait(self, worker: int, wait_s: float) -> None:
        """A new queueing delay of one worker: O(1), the wait order is rebuilt after
        :data:`STALE_LIMIT` such changes (the wait sums are recomputed when next read)."""
        wait = float(wait_s)
        _check_waits(np.array([wait]))
        same = wait == self._wait_list[worker]  # same place in the order (0.0 == -0.0 too)
        self._wait[worker] = wait
        self._wait_list[worker] = wait
        if same:
            return
        self._wait_sum_stale = True
        self._order.mark_stale(worker)
        if len(self._order.stale) > STALE_LIMIT:
            self._order.rebuild(self._wait, self._budget, self._stream, self._hold)

    def _pair_wait_sum(self, wait: FloatArray) -> FloatArray:
        """Per home, the waits of its requests' holders summed over the stored pairs."""
        live = np.flatnonzero(self._slot_count)
        return np.bincount(
            self._slot_home[live],
            weights=self._slot_count[live] * wait[self._slot_holder[live]],
            minlength=self.num_workers,
        ).astype(np.float64)

    def increase(self, home: int, holder: int, work_s: float) -> float:
        """The exact increase of ``J`` if a request of ``home`` with ``work_s`` went to
        ``holder`` (capacities not considered)."""
        w, n = float(self.fail_weight[home]), int(self.home_count[home])
        m_old = float(self.worst[home])
        before = self.alpha * m_old + (self.wait_sum[home] / n if n else 0.0)
        slot = self._rows[home].get(holder)
        held = 0.0 if slot is None else self._slot_load[slot]
        m_new = max(m_old, held + work_s)
        after = self.alpha * m_new + (self.wait_sum[home] + self._wait[holder]) / (n + 1)
        return w * float(after - before)

    def objective(self) -> float:
        """``J`` of the placed requests (move costs are not part of the online state)."""
        n = self.home_count
        mean_wait = np.divide(self.wait_sum, n, out=np.zeros_like(self.wait_sum), where=n > 0)
        per_home = np.where(n > 0, self.alpha * self.worst + mean_wait, 0.0)
        return float((self.fail_weight * per_home).sum())


def _read_only(arr: ArrayT) -> ArrayT:
    """A view of ``arr`` that may not be written (the array itself still may)."""
    view: ArrayT = arr.view()
    view.flags.writeable = False
    return view


def _check_waits(wait: FloatArray) -> None:
    if np.isnan(wait).any():
        raise ValueError("wait_s: expected numbers, got nan")
