"""Online checkpoint placement: the incremental form of docs/planner.md section 1.

A :class:`PlacementState` holds, for the requests placed so far, the restore work of every
(home, holder) pair ``L[f][j]``, the worst load per home ``M_f``, the wait sum ``S_f`` and the
count ``n_f`` of each home's requests, and the budget and stream capacity left on each worker.
:meth:`PlacementState.place` puts one new request on the feasible holder that increases ``J`` the
least::

    fail_weight[f] * (alpha * max(M_f, L[f][j] + work) + (S_f + wait_s[j]) / (n_f + 1))
      - fail_weight[f] * (alpha * M_f + S_f / n_f)

Only the first part depends on ``j``, so the argmin is that of ``alpha * max(M_f, L[f][j] +
work) + wait_s[j] / (n_f + 1)`` (ties: lowest index). One placement touches one row of ``L``
with a handful of preallocated numpy operations (tens of microseconds at 1,024 workers); the
structural rules (``can_hold``, not the home, another node if required) are one precomputed
m x m mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lumen.planner.problems import BoolArray, FloatArray, IntArray, PlacementProblem

#: Online placement rules :meth:`PlacementState.place` applies.
PLACEMENT_RULES = ("greedy", "lumen", "fixed-ring")


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
        #: ``allowed[f, j]``: may ``j`` hold checkpoints of requests whose home is ``f``.
        self.allowed: BoolArray = np.broadcast_to(hold, (m, m)).copy()
        np.fill_diagonal(self.allowed, False)
        if require_other_node:
            self.allowed &= self.node[None, :] != self.node[:, None]
        self.load: FloatArray = np.zeros((m, m))
        self.count: IntArray = np.zeros((m, m), dtype=np.int64)
        self.worst: FloatArray = np.zeros(m)
        self.wait_sum: FloatArray = np.zeros(m)
        self.home_count: IntArray = np.zeros(m, dtype=np.int64)
        # Scratch buffers: place() allocates nothing of size m.
        self._score = np.empty(m)
        self._scaled_wait = np.empty(m)
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

    def choose(
        self, home: int, reserve_bytes: float, work_s: float, stream_bytes_s: float = 0.0
    ) -> int:
        """The holder :meth:`place` would pick (-1 when nothing fits), without placing."""
        score, ok = self._score, self._ok
        np.greater_equal(self.budget_left, reserve_bytes, out=ok)
        ok &= self.allowed[home]
        if stream_bytes_s > 0.0:
            np.greater_equal(self.stream_left, stream_bytes_s, out=self._ok2)
            ok &= self._ok2
        if self.rule == "fixed-ring":
            m = self.num_workers
            for step in range(1, m):
                j = (home + step) % m
                if ok[j]:
                    return j
            return -1
        np.add(self.load[home], work_s, out=score)
        if self.rule == "greedy":
            np.maximum(score, self.worst[home], out=score)
            score *= self.alpha
            np.multiply(self.wait_s, 1.0 / (self.home_count[home] + 1), out=self._scaled_wait)
            score += self._scaled_wait
        else:
            score *= self.alpha
            score += self.wait_s
        np.logical_not(ok, out=ok)
        np.copyto(score, np.inf, where=ok)
        j = int(score.argmin())
        return j if score[j] < np.inf else -1

    def place(
        self, home: int, reserve_bytes: float, work_s: float, stream_bytes_s: float = 0.0
    ) -> int:
        """Put a new request on the holder that increases ``J`` the least; returns its index,
        or -1 (state unchanged) when no allowed worker has the budget and stream cap left."""
        j = self.choose(home, reserve_bytes, work_s, stream_bytes_s)
        if j >= 0:
            self.assign(home, j, reserve_bytes, work_s, stream_bytes_s)
        return j

    def assign(
        self,
        home: int,
        holder: int,
        reserve_bytes: float,
        work_s: float,
        stream_bytes_s: float = 0.0,
    ) -> None:
        """Record a request on a given holder (capacities are charged, not checked)."""
        self.load[home, holder] += work_s
        self.count[home, holder] += 1
        self.worst[home] = max(self.worst[home], self.load[home, holder])
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
        """Forget a request that ended (or moved): O(m) to recompute ``M_f`` of its home."""
        if self.count[home, holder] <= 0:
            raise ValueError(f"no request of home {home} is held by worker {holder}")
        self.count[home, holder] -= 1
        self.home_count[home] -= 1
        if self.count[home, holder] == 0:
            self.load[home, holder] = 0.0  # no floating-point residue on an empty cell
        else:
            self.load[home, holder] -= work_s
        if self.home_count[home] == 0:
            self.wait_sum[home] = 0.0
        else:
            self.wait_sum[home] -= self.wait_s[holder]
        self.worst[home] = float(self.load[home].max())
        self.budget_left[holder] += reserve_bytes
        self.stream_left[holder] += stream_bytes_s

    def set_can_hold(self, worker: int, can_hold: bool) -> None:
        """Let ``worker`` hold new checkpoints again, or stop it (a failed or reloading one)."""
        column = self.allowed[:, worker]
        if can_hold:
            column[:] = True
            column[worker] = False
            if self.require_other_node:
                column &= self.node != self.node[worker]
        else:
            column[:] = False

    def update_wait(self, wait_s: Any) -> None:
        """New queueing delays; every home's wait sum is recomputed (one m x m product)."""
        wait = np.asarray(wait_s, dtype=np.float64)
        if wait.shape != (self.num_workers,):
            raise ValueError(f"wait_s: expected shape ({self.num_workers},), got {wait.shape}")
        self.wait_s[:] = wait
        self.wait_sum = self.count.astype(np.float64) @ self.wait_s

    def increase(self, home: int, holder: int, work_s: float) -> float:
        """The exact increase of ``J`` if a request of ``home`` with ``work_s`` went to
        ``holder`` (capacities not considered)."""
        w, n = float(self.fail_weight[home]), int(self.home_count[home])
        m_old = float(self.worst[home])
        before = self.alpha * m_old + (self.wait_sum[home] / n if n else 0.0)
        m_new = max(m_old, float(self.load[home, holder]) + work_s)
        after = self.alpha * m_new + (self.wait_sum[home] + self.wait_s[holder]) / (n + 1)
        return w * float(after - before)

    def objective(self) -> float:
        """``J`` of the placed requests (move costs are not part of the online state)."""
        n = self.home_count
        mean_wait = np.divide(self.wait_sum, n, out=np.zeros_like(self.wait_sum), where=n > 0)
        per_home = np.where(n > 0, self.alpha * self.worst + mean_wait, 0.0)
        return float((self.fail_weight * per_home).sum())
