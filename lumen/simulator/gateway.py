"""The gateway: sends each arriving request to the worker expected to start it soonest.

Waiting estimate (:meth:`Worker.estimated_wait_s`): the rest of the iteration the worker is
running (a new request can only join at an iteration boundary) plus the prompt tokens queued on
it — waiting requests and the uncomputed part of admitted ones — times the per-token time of a
full prefill chunk. Ties (e.g. several idle workers) go to the worker with fewer unfinished
requests, then to the lowest index, so dispatch is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

from lumen.simulator.worker import Worker

__all__ = ["Gateway"]


class Gateway:
    """Least-estimated-waiting-time dispatch over a fixed set of workers."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        if not workers:
            raise ValueError("the gateway needs at least one worker")
        self.workers = list(workers)
        self.dispatched = [0] * len(self.workers)

    def choose(self, now: float) -> Worker:
        """The worker with the least estimated waiting time at ``now``."""
        best = self.workers[0]
        best_wait = best.estimated_wait_s(now)
        best_load = best.active_requests
        for w in self.workers[1:]:
            wait = w.estimated_wait_s(now)
            if wait < best_wait or (wait == best_wait and w.active_requests < best_load):
                best, best_wait, best_load = w, wait, w.active_requests
        return best

    def dispatch(self, rid: int, now: float) -> Worker:
        """Send request ``rid`` to the chosen worker and return it."""
        worker = self.choose(now)
        worker.enqueue(rid)
        self.dispatched[worker.index] += 1
        return worker
