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

What failover needs of the gateway that owns the requests is the narrow :class:`FailoverHost`
(the :class:`~lumen.executor.gateway.gateway.Gateway` implements it; tests use a fake); the
worker board, the failure detector, the holder placer, the recovery planner and the metrics are
its own collaborators.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from lumen.executor.gateway.config import GatewayConfig, Pending
from lumen.executor.gateway.dispatch import HolderPlacer, WorkerBoard
from lumen.executor.gateway.health import HealthMonitor
from lumen.executor.gateway.history import TrackedRequest
from lumen.executor.gateway.metrics import GatewayMetrics
from lumen.executor.gateway.recovery import RecoveryPlanner
from lumen.planner.domain import ClusterState
from lumen.planner.resume import resumptions

__all__ = ["Failover", "FailoverHost"]

log = logging.getLogger(__name__)


class FailoverHost(Protocol):
    """What :class:`Failover` needs of the gateway that owns the requests and the workers."""

    def active(self) -> list[TrackedRequest]:
        """The requests not finished yet."""
        ...

    def pend(self, item: Pending) -> None:
        """Put a request in the pending list (the dispatcher starts it)."""
        ...

    def finish_locked(self, request: TrackedRequest, reason: str, error: str = "") -> None:
        """End a request with ``reason`` (the caller holds ``request.lock``)."""
        ...

    def wake_dispatcher(self) -> None:
        """Let the dispatcher look at the pending list now."""
        ...

    def snapshot(self) -> ClusterState:
        """The cluster as the planner sees it, with the requests running on each worker."""
        ...

    def answers(self, worker: int) -> bool:
        """Whether ``worker`` answers a status call within the heartbeat deadline."""
        ...


class Failover:
    """Failure handling of one gateway (module docstring), on behalf of ``host``."""

    def __init__(
        self,
        host: FailoverHost,
        *,
        config: GatewayConfig,
        board: WorkerBoard,
        monitor: HealthMonitor,
        placer: HolderPlacer,
        recovery: RecoveryPlanner,
        metrics: GatewayMetrics,
    ) -> None:
        self.host = host
        self.config = config
        self.board = board
        self.monitor = monitor
        self.placer = placer
        self.recovery = recovery
        self.metrics = metrics
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
        if self.host.answers(worker):
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
                self.host.finish_locked(request, "error", "too many failures of this request")
                return
            self.board.detach(request, worker)
            request.worker = None
            holder = request.holder
        source = holder if holder is not None and self.board.is_up(holder) else None
        self.metrics.restores.labels("transfer" if source is not None else "recompute").inc()
        # A worker that answers but broke the stream (or refused the call) may do it again:
        # back off, doubling from 50 ms up to 2 s, so a retry loop cannot spin.
        delay = min(2.0, 0.05 * 2 ** min(request.resumes - 1, 6))
        self.host.pend(
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
        self.host.wake_dispatcher()

    def _mark_down(self, worker: int, reason: str) -> None:
        log.warning("worker %d failed (%s); recovering its requests", worker, reason)
        self.metrics.failures.labels(reason).inc()
        self.metrics.set_worker_state(worker, "failed")
        self.board.set_up(worker, False)
        for r in self.host.active():
            with r.lock:
                if r.holder == worker:  # its host memory, and the checkpoints in it, are gone
                    r.holder = None
                    self.placer.release(r)
        self.placer.rebuild()

    def _recover(self, worker: int, frozen: list[TrackedRequest], started: float) -> None:
        state = self.host.snapshot()
        decision, source = self.recovery.plan(state, [worker])
        alive = [w for w in self.board.ids if self.board.is_up(w)]
        plan = resumptions(
            decision,
            state,
            self.recovery.cost,
            [r.request_id for r in frozen],
            alive,
            self.recovery.chunk,
        )
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
            self.host.pend(Pending(r, res.worker, res.restore_from, deadline, resumed=True))
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
