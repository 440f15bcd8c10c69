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
Every worker outside a home's row has ``L[f][j] = 0``, so one placement is a handful of
preallocated vector operations over ``m`` plus one scalar score per holder of the home (tens of
microseconds at 16,384 workers); a load update (:meth:`PlacementState.update_wait`) is one
weighted ``bincount`` over the stored pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lumen.planner.problems import BoolArray, FloatArray, IntArray, PlacementProblem

#: Online placement rules :meth:`PlacementState.place` applies.
PLACEMENT_RULES = ("greedy", "lumen", "fixed-ring")
#: Best-scored workers checked one by one before the full feasibility mask is computed.
FAST_TRIES = 2
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
        self.fail_weight: FloatArray = (
            np.full(m, 1.0 / m) if fail_weight is None else np.array(fail_weight, dtype=float)
        )
        self.wait_s: FloatArray = np.array(wait_s, dtype=np.float64)
        self.budget_left: FloatArray = np.array(budget_bytes, dtype=np.float64)
        self.stream_left: FloatArray = (
            np.full(m, np.inf)
            if stream_cap_bytes_s is None
            else np.array(stream_cap_bytes_s, dtype=np.float64)
        )
        hold = np.ones(m, bool) if can_hold is None else np.asarray(can_hold, dtype=bool)
        for name, arr in (
            ("wait_s", self.wait_s),
            ("budget_bytes", self.budget_left),
            ("fail_weight", self.fail_weight),
            ("stream_cap_bytes_s", self.stream_left),
            ("can_hold", hold),
        ):
            if arr.shape != (m,):
                raise ValueError(f"{name}: expected shape ({m},), got {arr.shape}")
        self.require_other_node = require_other_node
        #: Workers that may hold new checkpoints at all (``allowed_row`` adds the home rules).
        self.can_hold: BoolArray = hold.copy()
        self._hold_penalty: FloatArray = np.where(hold, 0.0, _BARRED)
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
        self.wait_sum: FloatArray = np.zeros(m)
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

    def allowed_row(self, home: int, out: BoolArray | None = None) -> BoolArray:
        """``allowed[j]``: may ``j`` hold checkpoints of requests whose home is ``home`` (it may
        hold at all, is not the home and, if required, is on another node)."""
        ok = np.empty(self.num_workers, dtype=bool) if out is None else out
        if self.require_other_node:
            np.not_equal(self.node, self.node[home], out=ok)
            ok &= self.can_hold
        else:
            np.copyto(ok, self.can_hold)
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
        if j == home or not self.can_hold[j] or self.budget_left[j] < reserve_bytes:
            return False
        if self.require_other_node and self.node[j] == self.node[home]:
            return False
        return not (stream_bytes_s > 0.0 and self.stream_left[j] < stream_bytes_s)

    def choose(
        self, home: int, reserve_bytes: float, work_s: float, stream_bytes_s: float = 0.0
    ) -> int:
        """The holder :meth:`place` would pick (-1 when nothing fits), without placing.

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
        wait = self.wait_s
        if self.rule == "greedy":
            worst, k = float(self.worst[home]), 1.0 / (self.home_count[home] + 1)
            np.multiply(wait, k, out=score)
            score += max(0.0 + work_s, worst) * alpha
            for j, slot in entries.items():
                score[j] = max(loads[slot] + work_s, worst) * alpha + wait[j] * k
        else:
            np.add(wait, (0.0 + work_s) * alpha, out=score)
            for j, slot in entries.items():
                score[j] = (loads[slot] + work_s) * alpha + wait[j]
        # Barred workers score _BARRED: those that may not hold at all, the home and its node.
        np.maximum(score, self._hold_penalty, out=score)
        score[self._mates[home] if self.require_other_node else home] = _BARRED
        for _ in range(FAST_TRIES):
            j = int(score.argmin())
            if score[j] >= _BARRED:
                return -1
            if self.budget_left[j] >= reserve_bytes and (
                stream_bytes_s <= 0.0 or self.stream_left[j] >= stream_bytes_s
            ):
                return j
            score[j] = _BARRED
        # Then those without room (multiply and maximum cost the same whatever the pattern of
        # the mask; a masked copy is several times slower on a scattered one).
        full, penalty = self._ok, self._penalty
        np.less(self.budget_left, reserve_bytes, out=full)
        if stream_bytes_s > 0.0:
            np.less(self.stream_left, stream_bytes_s, out=self._ok2)
            full |= self._ok2
        np.multiply(full, _BARRED, out=penalty)
        np.maximum(score, penalty, out=score)
        j = int(score.argmin())
        return j if score[j] < _BARRED else -1

    def _feasible(self, home: int, reserve_bytes: float, stream_bytes_s: float) -> BoolArray:
        """The workers that may take a new request of ``home`` (a scratch buffer)."""
        ok = self.allowed_row(home, self._ok)
        np.greater_equal(self.budget_left, reserve_bytes, out=self._ok2)
        ok &= self._ok2
        if stream_bytes_s > 0.0:
            np.greater_equal(self.stream_left, stream_bytes_s, out=self._ok2)
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
        self.wait_sum[home] += self.wait_s[holder]
        self.home_count[home] += 1
        self.budget_left[holder] -= reserve_bytes
        self.stream_left[holder] -= stream_bytes_s

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
        if self.home_count[home] == 0:
            self.wait_sum[home] = 0.0
        else:
            self.wait_sum[home] -= self.wait_s[holder]
        loads = self._slot_load
        self.worst[home] = max((loads[k] for k in entries.values()), default=0.0)
        self.worst[home] = max(float(self.worst[home]), 0.0)
        self.budget_left[holder] += reserve_bytes
        self.stream_left[holder] += stream_bytes_s

    def set_can_hold(self, worker: int, can_hold: bool) -> None:
        """Let ``worker`` hold new checkpoints again, or stop it (a failed or reloading one)."""
        self.can_hold[worker] = can_hold
        self._hold_penalty[worker] = 0.0 if can_hold else _BARRED

    def update_wait(self, wait_s: Any) -> None:
        """New queueing delays; every home's wait sum is recomputed over the stored (home,
        holder) pairs: O(m + pairs)."""
        wait = np.asarray(wait_s, dtype=np.float64)
        if wait.shape != (self.num_workers,):
            raise ValueError(f"wait_s: expected shape ({self.num_workers},), got {wait.shape}")
        self.wait_s[:] = wait
        live = np.flatnonzero(self._slot_count)
        self.wait_sum = np.bincount(
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
        after = self.alpha * m_new + (self.wait_sum[home] + self.wait_s[holder]) / (n + 1)
        return w * float(after - before)

    def objective(self) -> float:
        """``J`` of the placed requests (move costs are not part of the online state)."""
        n = self.home_count
        mean_wait = np.divide(self.wait_sum, n, out=np.zeros_like(self.wait_sum), where=n > 0)
        per_home = np.where(n > 0, self.alpha * self.worst + mean_wait, 0.0)
        return float((self.fail_weight * per_home).sum())
