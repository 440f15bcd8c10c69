"""What the gateway does when a worker fails: freeze, plan, resume.

A failure reaches :class:`Failover` from the heartbeat (:class:`HealthMonitor`: no answer, or
a hang) or from a broken token stream, which a status probe turns into either a worker failure
(no answer) or the resumption of that one request (the worker is fine: its stream broke).

For a failed worker, every request on it is *frozen* first: its attempt counter is bumped under
its lock, so tokens the dead or hung stream still delivers are dropped from then on and the
token history stops exactly at what the client has. Then the worker is marked down (its held
checkpoints are forgotten: its host memory is gone), the cluster snapshot is taken, the
recovery plan is made (:class:`RecoveryPlanner`: planner service, fallback or local), and each
request goes back to the pending list with its destination and checkpoint source. Recoveries
run one at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from lumen.executor.gateway.config import GatewayConfig, Pending
from lumen.executor.gateway.dispatch import HolderPlacer, WorkerBoard
from lumen.executor.gateway.health import HealthMonitor
from lumen.executor.gateway.history import TrackedRequest
from lumen.executor.gateway.metrics import GatewayMetrics
from lumen.executor.gateway.recovery import RecoveryPlanner, resumptions, snapshot
from lumen.executor.worker.api import WorkerAPI
from lumen.planner.costmodel import CostModel

log = logging.getLogger(__name__)


class Failover:
    """Failure handling of one gateway (module docstring); the callbacks are the gateway's:
    ``pend`` queues a request, ``finish_locked`` ends one (its lock held), ``active`` lists the
    live requests, ``wake`` wakes the dispatcher."""

    def __init__(
        self,
        *,
        workers: Mapping[int, WorkerAPI],
        config: GatewayConfig,
        cost: CostModel,
        board: WorkerBoard,
        monitor: HealthMonitor,
        placer: HolderPlacer,
        recovery: RecoveryPlanner,
        metrics: GatewayMetrics,
        pend: Callable[[Pending], None],
        finish_locked: Callable[[TrackedRequest, str, str], None],
        active: Callable[[], list[TrackedRequest]],
        wake: Callable[[], None],
    ) -> None:
        self._workers = workers
        self.config = config
        self.cost = cost
        self.board = board
        self.monitor = monitor
        self.placer = placer
        self.recovery = recovery
        self.metrics = metrics
        self._pend = pend
        self._finish_locked = finish_locked
        self._active = active
        self._wake = wake
        self._recovery_lock = threading.Lock()

    def stream_failed(self, request: TrackedRequest, attempt: int, worker: int, error: str) -> None:
        """A stream of the current attempt broke: a dead worker is a failure of all its
        requests; a live one only resumes this request."""
        with request.lock:
            if request.attempt != attempt or request.done:
                return
        log.warning(
            "request %d: stream from worker %d broke: %s", request.request_id, worker, error
        )
        try:
            self._workers[worker].status(timeout_s=self.config.health.timeout_s)
            alive = True
        except Exception:
            alive = False
        if alive:
            self.resume_one(request, attempt, worker)
        else:
            self.handle_failure(worker, "stream", newly=self.monitor.mark_failed(worker))

    def resume_one(self, request: TrackedRequest, attempt: int, worker: int) -> None:
        """Put one request back in the pending list (restoring from its live holder)."""
        with request.lock:
            if request.attempt != attempt or request.done:
                return
            request.attempt += 1
            request.resumes += 1
            if request.resumes > self.config.max_resumes:
                self._finish_locked(request, "error", "too many failures of this request")
                return
            self.board.detach(request, worker)
            request.worker = None
            holder = request.holder
        source = holder if holder is not None and self.board.is_up(holder) else None
        self.metrics.restores.labels("transfer" if source is not None else "recompute").inc()
        # A worker that answers but broke the stream (or refused the call) may do it again:
        # back off, doubling from 50 ms up to 2 s, so a retry loop cannot spin.
        delay = min(2.0, 0.05 * 2 ** min(request.resumes - 1, 6))
        self._pend(
            Pending(
                request,
                restore_from=source,
                resumed=True,
                not_before_s=time.monotonic() + delay,
            )
        )

    def handle_failure(self, worker: int, reason: str, newly: bool) -> None:
        """Freeze the requests of a failed worker, plan their recovery, pend them again."""
        started = time.monotonic()
        with self._recovery_lock:
            self.metrics.recovering.set(1)
            try:
                if newly:
                    self._mark_down(worker, reason)
                frozen: list[TrackedRequest] = []
                for r in self.board.requests_on(worker):
                    with r.lock:
                        if r.done or r.worker != worker:
                            continue
                        r.attempt += 1  # late tokens of the dead stream are dropped from now on
                    frozen.append(r)
                if frozen:
                    self._recover(worker, frozen, started)
            finally:
                self.metrics.recovering.set(0)
        self._wake()

    def _mark_down(self, worker: int, reason: str) -> None:
        log.warning("worker %d failed (%s); recovering its requests", worker, reason)
        self.metrics.failures.labels(reason).inc()
        self.metrics.set_worker_state(worker, "failed")
        self.board.set_up(worker, False)
        for r in self._active():
            with r.lock:
                if r.holder == worker:  # its host memory, and the checkpoints in it, are gone
                    r.holder = None
                    self.placer.release(r)
        self.placer.rebuild()

    def _recover(self, worker: int, frozen: list[TrackedRequest], started: float) -> None:
        running = [r for w in self.board.ids for r in self.board.requests_on(w)]
        state = snapshot(self.board, self.cost, running, self.config.workers_per_node)
        decision, source = self.recovery.plan(state, [worker])
        alive = [w for w in self.board.ids if self.board.is_up(w)]
        plan = resumptions(decision, state, [r.request_id for r in frozen], alive)
        by_id = {r.request_id: r for r in frozen}
        now = time.monotonic()
        for res in plan:
            r = by_id[res.request_id]
            with r.lock:
                self.board.detach(r, worker)
                r.worker = None
                r.resumes += 1
                context = r.context_tokens
            self.placer.release(r)
            self.metrics.restores.labels(res.mode).inc()
            self.metrics.restored_tokens.inc(res.restored)
            self.metrics.recomputed_tokens.inc(max(0, context - res.restored))
            deadline = now + self.config.wait_timeout_s if res.wait else 0.0
            self._pend(Pending(r, res.worker, res.restore_from, deadline, resumed=True))
        self.metrics.recoveries.labels(source).inc()
        self.metrics.recovery_seconds.observe(time.monotonic() - started)
        modes = sorted({res.mode for res in plan})
        log.info(
            "worker %d: %d request(s) resumed (%s plan; modes %s)",
            worker,
            len(plan),
            source,
            ", ".join(modes),
        )
