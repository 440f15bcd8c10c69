"""The gateway: sends each arriving request to the worker expected to start it soonest.

Waiting estimate (:meth:`SimWorker.estimated_wait_s`): the rest of the iteration the worker is
running (a new request can only join at an iteration boundary) plus the prompt tokens queued on
it — waiting requests and the uncomputed part of admitted ones — times the per-token time of a
full prefill chunk. Ties (e.g. several idle workers) go to the worker with fewer unfinished
requests, then to the lowest index, so dispatch is deterministic.

Workers that are down (failed, reloading) are never chosen. When every worker is down, arriving
requests are held at the gateway, in arrival order, until one comes back (:meth:`release`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from lumen.simulator.worker import SimWorker

__all__ = ["SimGateway"]


class SimGateway:
    """Least-estimated-waiting-time dispatch over a fixed set of workers."""

    def __init__(self, workers: Sequence[SimWorker]) -> None:
        if not workers:
            raise ValueError("the gateway needs at least one worker")
        self.workers = list(workers)
        self.dispatched = [0] * len(self.workers)
        self.held: deque[int] = deque()

    def choose(self, now: float) -> SimWorker | None:
        """The serving worker with the least estimated waiting time at ``now`` (None when all
        are down)."""
        best: SimWorker | None = None
        best_wait = best_load = 0.0
        for w in self.workers:
            if w.down:
                continue
            wait = w.estimated_wait_s(now)
            if (
                best is None
                or wait < best_wait
                or (wait == best_wait and w.active_requests < best_load)
            ):
                best, best_wait, best_load = w, wait, w.active_requests
        return best

    def dispatch(self, rid: int, now: float) -> SimWorker | None:
        """Send request ``rid`` to the chosen worker and return it; hold it (and return None)
        when every worker is down."""
        worker = self.choose(now)
        if worker is None:
            self.held.append(rid)
            return None
        worker.enqueue(rid)
        self.dispatched[worker.index] += 1
        return worker

    def release(self, now: float) -> None:
        """Dispatch the held requests, in arrival order (call when a worker comes back)."""
        held = self.held
        while held and self.choose(now) is not None:
            self.dispatch(held.popleft(), now)
