"""KV checkpoints in the simulator: holder placement, page streaming and the valid prefix.

**Placement.** When a worker admits a request (checkpointing policies only), a
:class:`CheckpointPlacer` picks its holder with the planner's online placement
(:class:`lumen.planner.placement_state.PlacementState`, the rule of the policy: the paper's,
our greedy or the fixed ring). The holder reserves host memory for the request's maximum
context (``prompt + output`` tokens of KV) up front and frees it when the request ends; a
request that no worker has budget for runs without a checkpoint. Holders are never the home,
never down, and not on the home's node when the scenario asks so. Queueing delays are
refreshed from the workers at most every :data:`WAIT_REFRESH_S` simulated seconds, as a live
controller refreshes them from load reports.

**Streaming.** Every KV token a checkpointed request computes (prompt chunks, decoded tokens,
a restored prefix on re-admission) becomes checkpoint bytes on its home worker's outgoing
network link. The link is one FIFO fluid queue of ``link_bytes_s`` shared by all the worker's
streams (:class:`lumen.simulator.stream.StreamHistory`): bytes leave in the order they were
produced, at the link's rate whenever there is a backlog. A page (:data:`PAGE_TOKENS` tokens)
is valid on the holder only once all of it has arrived: atomic activation.

**Valid prefix at a failure** (:func:`valid_prefixes`). The ``backlog`` bytes still queued
when the home fails are the newest ones produced, so they were produced after a cutoff time
``c`` found on the history of cumulative production. A request's missing tokens are what it
produced after ``c``: its decode tokens since the decode clock's value at ``c``, and the part
of its prefill (restored prefix included) computed after ``c`` (linear over its prefill
interval). What remains, rounded down to whole pages, is restored; the rest is re-prefilled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from lumen.planner.costmodel import CostModel
from lumen.planner.placement_state import PlacementState
from lumen.planner.problems import FloatArray

if TYPE_CHECKING:
    from lumen.simulator.worker import SimWorker

__all__ = ["PAGE_TOKENS", "CheckpointPlacer", "valid_prefixes"]

#: Tokens per KV page (vLLM's default block size): the unit of checkpoint activation.
PAGE_TOKENS = 16
#: Simulated seconds between refreshes of the placement's queueing delays.
WAIT_REFRESH_S = 0.1


def valid_prefixes(worker: SimWorker, now: float) -> dict[int, int]:
    """Per admitted, checkpointed request of ``worker`` failing at ``now``: the tokens of its
    context whose pages had fully reached the holder (see the module docstring)."""
    req = worker.requests
    cut_t, cut_clock = worker.stream.cutoff(now)
    clock = worker.clock(now)
    out: dict[int, int] = {}
    for rid, _, computed in worker.admitted(now):
        if req.holder[rid] < 0:
            continue
        missing = 0.0
        if cut_t < math.inf:
            admit, end = req.admit_s[rid], req.prefill_end_s[rid]
            prefilled = req.context_tokens[rid] if end == end else computed
            stop = end if end == end else now
            if stop > cut_t:
                share = 1.0 if admit >= cut_t else (stop - cut_t) / max(stop - admit, 1e-12)
                missing += prefilled * share
            if end == end:  # decoding: tokens since the cutoff
                decoded = computed - req.context_tokens[rid]
                missing += min(max(decoded, 0), max(0.0, clock - max(cut_clock, 0.0)))
        valid = max(0, int(computed - missing))
        out[rid] = valid // PAGE_TOKENS * PAGE_TOKENS
    return out


class CheckpointPlacer:
    """Online holder choice and host-memory reservations for one simulation.

    Args:
        rule: a :data:`lumen.planner.placement_state.PLACEMENT_RULES` rule.
        nodes: node index per worker.
        budget_bytes: host checkpoint budget per worker.
    """

    def __init__(
        self,
        rule: str,
        nodes: list[int],
        budget_bytes: float,
        cost_model: CostModel,
        alpha: float = 1.0,
        require_other_node: bool = True,
    ) -> None:
        m = len(nodes)
        self.cost_model = cost_model
        self.kv = cost_model.kv_bytes_per_token
        self.state = PlacementState(
            node=nodes,
            wait_s=[0.0] * m,
            budget_bytes=[budget_bytes] * m,
            alpha=alpha,
            require_other_node=require_other_node and len(set(nodes)) > 1,
            rule=rule,
        )
        self.held_by: list[set[int]] = [set() for _ in range(m)]
        # rid -> (home, holder, reserved bytes, restore work)
        self._placed: dict[int, tuple[int, int, float, float]] = {}
        self._refreshed = -math.inf
        self.unplaced = 0  # admissions that found no holder with budget
        self.peak_reserved_bytes = [0.0] * m
        self._budget = budget_bytes

    def place(self, worker: SimWorker, rid: int, waits: Callable[[float], FloatArray]) -> int:
        """Choose and reserve a holder for ``rid`` admitted on ``worker`` (-1: none).

        ``waits`` returns every worker's waiting estimate at a time (inf when down) by worker
        index, as :meth:`lumen.simulator.gateway.SimGateway.wait_estimates` does."""
        now = worker.sim.now
        if now - self._refreshed >= WAIT_REFRESH_S:
            self.state.update_wait(waits(now))
            self._refreshed = now
        req = worker.requests
        tokens = req.context_tokens[rid] + req.todo_tokens[rid]
        reserve = float(tokens * self.kv)
        work = self.cost_model.kv_restore_time(tokens)
        home = worker.index
        holder = self.state.place(home, reserve, work)
        if holder < 0:
            self.unplaced += 1
            req.holder[rid] = -1
            return -1
        req.holder[rid] = holder
        self.held_by[holder].add(rid)
        self._placed[rid] = (home, holder, reserve, work)
        used = self._budget - float(self.state.budget_left[holder])
        if used > self.peak_reserved_bytes[holder]:
            self.peak_reserved_bytes[holder] = used
        return holder

    def release(self, rid: int) -> None:
        """Free ``rid``'s reservation (it ended, failed, or lost its holder)."""
        placed = self._placed.pop(rid, None)
        if placed is None:
            return
        home, holder, reserve, work = placed
        self.held_by[holder].discard(rid)
        self.state.release(home, holder, reserve, work)

    def set_down(self, worker: int, down: bool) -> None:
        """A worker failed (holds nothing new) or is serving again."""
        self.state.set_can_hold(worker, not down)
