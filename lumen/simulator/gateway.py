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

Cost of ``least-waiting``: the gateway keeps every worker's inputs of the estimate in arrays
(the end of the iteration in flight, the queued prompt tokens' time, down) and refreshes only
the workers that reported a change since the last choice (:meth:`SimWorker.watch`) or whose
pure-decode run has passed an iteration boundary; the estimates of all workers are then one
vectorised expression, evaluated exactly as :meth:`SimWorker.estimated_wait_s` does, and only
the workers tying on the least wait are looked at one by one for the tie-break. The choice is
the same as scanning every worker (``tests/test_sim_gateway.py`` checks it against such a
scan on random states).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from lumen.simulator.results import GATEWAY_RULES
from lumen.simulator.worker import SimWorker

__all__ = ["SimGateway"]

FloatArray = npt.NDArray[np.float64]


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
        self._waits = _WaitArrays(self.workers)

    def choose(self, now: float) -> SimWorker | None:
        """The serving worker the rule picks at ``now`` (None when all are down)."""
        if self.rule == "least-requests":
            return self._least_requests()
        if self.rule == "round-robin":
            return self._round_robin()
        return self._least_waiting(now)

    def _least_waiting(self, now: float) -> SimWorker | None:
        workers = self.workers
        candidates = self._waits.least(now)
        if len(candidates) == 1:
            return workers[candidates[0]]
        return _fewest_requests(workers[i] for i in candidates)

    def _least_requests(self) -> SimWorker | None:
        return _fewest_requests(w for w in self.workers if not w.down)

    def _round_robin(self) -> SimWorker | None:
        n = len(self.workers)
        for k in range(n):
            w = self.workers[(self._next + k) % n]
            if not w.down:
                return w
        return None

    def wait_estimates(self, now: float) -> FloatArray:
        """Every worker's :meth:`SimWorker.estimated_wait_s` at ``now``, ``inf`` for the
        workers that are down, by position (read-only; overwritten by the next call)."""
        return self._waits.estimates(now)

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


def _fewest_requests(workers: Iterable[SimWorker]) -> SimWorker | None:
    """The first of ``workers`` with the fewest active requests (None: none given)."""
    best: SimWorker | None = None
    best_load = 0
    for w in workers:
        if best is None or w.active_requests < best_load:
            best, best_load = w, w.active_requests
    return best


class _WaitArrays:
    """Every worker's waiting estimate at a given time, kept in arrays (module docstring).

    Per worker ``i``: ``end[i]``, the first iteration end of its run in flight at or after the
    time of the last refresh; ``multi[i]``, whether that run has several iterations (then
    ``end[i]`` moves on as time passes); ``zero[i]``, whether the remaining iteration time
    counts as 0 (idle, or every end of a run passed);
    ``queued[i]``, its queued prompt tokens times its per-token prefill time; ``down[i]``.
    """

    def __init__(self, workers: list[SimWorker]) -> None:
        n = len(workers)
        self.workers = workers
        self.end = np.zeros(n)
        self.multi = np.zeros(n, dtype=bool)
        self.zero = np.ones(n, dtype=bool)
        self.queued = np.zeros(n)
        self.down = np.zeros(n, dtype=bool)
        self._wait = np.empty(n)
        self._ends: list[list[float]] = [[] for _ in range(n)]  # the runs last read
        self._now = -np.inf
        self.changed: set[int] = set(range(n))
        for i, w in enumerate(workers):
            w.watch(self.changed, i)

    def estimates(self, now: float) -> FloatArray:
        """Every worker's :meth:`SimWorker.estimated_wait_s` at ``now`` (inf when down), by
        position; the array is reused by the next call."""
        changed = self.changed
        if now < self._now:  # time went back (a direct call): refresh everyone
            changed.update(range(len(self.workers)))
        self._now = now
        for i in changed:
            self._refresh(i, now)
        changed.clear()
        # Unchanged pure-decode runs whose current iteration ended before ``now``: move on to
        # the iteration in flight (the runs' end lists are as last read).
        passed = np.flatnonzero((self.end < now) & self.multi)
        if len(passed):
            end, all_ends = self.end, self._ends
            for i in passed.tolist():
                ends = all_ends[i]
                k = bisect_left(ends, now)
                if k < len(ends):
                    end[i] = ends[k]
                else:
                    self.zero[i] = True
                    self.multi[i] = False
        wait = self._wait
        np.subtract(self.end, now, out=wait)
        wait[self.zero] = 0.0
        wait += self.queued
        wait[self.down] = np.inf
        return wait

    def _refresh(self, i: int, now: float) -> None:
        """Read worker ``i``'s inputs as :meth:`SimWorker.estimated_wait_s` does at ``now``."""
        w = self.workers[i]
        self.down[i] = w.down
        self.queued[i] = w.pending_prefill_tokens * w.prefill_s_per_token
        ends = w.iteration_ends()
        self._ends[i] = ends
        multi = len(ends) > 1
        k = bisect_left(ends, now) if multi else 0
        zero = k >= len(ends)
        self.zero[i] = zero
        self.multi[i] = multi and not zero
        if not zero:
            self.end[i] = ends[k]

    def least(self, now: float) -> list[int]:
        """Indices of the serving workers with the least waiting estimate at ``now``,
        ascending (empty when every worker is down)."""
        wait = self.estimates(now)
        best = wait.min()
        if best == np.inf and self.down.all():
            return []
        return np.flatnonzero(wait == best).tolist()
