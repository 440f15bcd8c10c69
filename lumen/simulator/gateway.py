"""The gateway: sends each arriving request to a serving worker by one of three rules.

The paper does not say which rule its gateway uses, so the rule is a scenario reading
(``readings.gateway``, :attr:`lumen.simulator.results.ClusterOptions.gateway`):

- ``least-waiting`` (the default): the worker expected to start the request soonest. Waiting
  estimate (:meth:`SimWorker.estimated_wait_s`): the rest of the iteration the worker is
  running (a new request can only join at an iteration boundary) plus the prompt tokens queued
  on it — waiting requests and the uncomputed part of admitted ones — times the per-token time
  of a full prefill chunk. Ties (e.g. several idle workers) go to the worker with fewer
  unfinished requests, then to the lowest index.
- ``least-requests``: the worker with the fewest unfinished requests on it
  (:attr:`SimWorker.active_requests`: restoring, waiting, prefilling and decoding), ties to the
  lowest index.
- ``round-robin``: the workers in turn, from a cursor that moves past each worker chosen;
  workers that are down are skipped.

Every rule is deterministic. Workers that are down (failed, reloading) are never chosen. When
every worker is down, arriving requests are held at the gateway, in arrival order, until one
comes back (:meth:`release`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from lumen.simulator.results import GATEWAY_RULES
from lumen.simulator.worker import SimWorker

__all__ = ["SimGateway"]


class SimGateway:
    """Dispatch of new requests over a fixed set of workers by ``rule`` (module docstring)."""

    def __init__(self, workers: Sequence[SimWorker], rule: str = "least-waiting") -> None:
        if not workers:
            raise ValueError("the gateway needs at least one worker")
        if rule not in GATEWAY_RULES:
            allowed = ", ".join(GATEWAY_RULES)
            raise ValueError(f"gateway rule must be one of {allowed}, got {rule!r}")
        self.workers = list(workers)
        self.rule = rule
        self.dispatched = [0] * len(self.workers)
        self.held: deque[int] = deque()
        self._next = 0  # round-robin: the first worker to try next time

    def choose(self, now: float) -> SimWorker | None:
        """The serving worker the rule picks at ``now`` (None when all are down)."""
        if self.rule == "least-requests":
            return self._least_requests()
        if self.rule == "round-robin":
            return self._round_robin()
        return self._least_waiting(now)

    def _least_waiting(self, now: float) -> SimWorker | None:
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

    def _least_requests(self) -> SimWorker | None:
        best: SimWorker | None = None
        best_load = 0
        for w in self.workers:
            if not w.down and (best is None or w.active_requests < best_load):
                best, best_load = w, w.active_requests
        return best

    def _round_robin(self) -> SimWorker | None:
        n = len(self.workers)
        for k in range(n):
            w = self.workers[(self._next + k) % n]
            if not w.down:
                return w
        return None

    def dispatch(self, rid: int, now: float) -> SimWorker | None:
        """Send request ``rid`` to the chosen worker and return it; hold it (and return None)
        when every worker is down."""
        worker = self.choose(now)
        if worker is None:
            self.held.append(rid)
            return None
        worker.enqueue(rid)
        self.dispatched[worker.index] += 1
        if self.rule == "round-robin":
            self._next = (self.workers.index(worker) + 1) % len(self.workers)
        return worker

    def release(self, now: float) -> None:
        """Dispatch the held requests, in arrival order (call when a worker comes back)."""
        held = self.held
        while held and self.choose(now) is not None:
            self.dispatch(held.popleft(), now)
