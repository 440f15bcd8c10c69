"""Failure detection: heartbeat polling of every worker's ``status()``, with forward progress.

One thread per worker calls ``status(timeout_s)`` every ``interval_s``. A worker is *failed*
when

- it does not answer within ``timeout_s`` (it raised :class:`WorkerUnavailableError`, any other
  error, or answered late): reason ``"timeout"``; or
- it has work (it reports running or queued requests, or the gateway has requests on it) and
  its ``steps`` counter has not grown for ``hang_timeout_s``: reason ``"hang"``. A hung worker
  still answers heartbeats, so liveness alone would never catch it.

A failed worker keeps being polled; it *returns* when it answers again and has either made
progress since (``steps`` changed: a restarted process counts from zero) or holds no work, so a
hung process that still answers is not taken back while it is stuck.

``hang_timeout_s`` must exceed the longest legitimate engine iteration (a long prefill chunk),
``timeout_s`` the status call's worst round trip; detection takes at most ``hang_timeout_s +
interval_s`` (hang) or ``timeout_s + interval_s`` (timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lumen.executor.worker.api import WorkerAPI, WorkerStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthSettings:
    """Heartbeat period, status deadline and hang timeout, in seconds (module docstring)."""

    interval_s: float = 0.5
    timeout_s: float = 1.0
    hang_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not (self.interval_s > 0 and self.timeout_s > 0 and self.hang_timeout_s > 0):
            raise ValueError("interval_s, timeout_s and hang_timeout_s must be > 0")


@dataclass
class _Watch:
    steps: int = -1
    progress_s: float = 0.0
    failed: bool = False
    failed_steps: int = -1


class HealthMonitor:
    """Polls workers and reports failures and returns through callbacks.

    Args:
        busy: whether the gateway has requests on a worker.
        on_status: every answered heartbeat.
        on_failure: ``(worker_id, reason)`` once per failure.
        on_return: ``(worker_id, status)`` when a failed worker is back.
    """

    def __init__(
        self,
        workers: Sequence[WorkerAPI],
        settings: HealthSettings,
        *,
        busy: Callable[[int], bool],
        on_status: Callable[[int, WorkerStatus], None],
        on_failure: Callable[[int, str], None],
        on_return: Callable[[int, WorkerStatus], None],
    ) -> None:
        self.settings = settings
        self._workers = {w.worker_id: w for w in workers}
        self._busy = busy
        self._on_status = on_status
        self._on_failure = on_failure
        self._on_return = on_return
        self._watch = {w: _Watch() for w in self._workers}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for wid in self._workers:
            t = threading.Thread(
                target=self._loop, args=(wid,), name=f"lumen-health-{wid}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)

    def is_failed(self, worker_id: int) -> bool:
        with self._lock:
            return self._watch[worker_id].failed

    def mark_failed(self, worker_id: int) -> bool:
        """Record a failure found elsewhere (a broken stream); False if already failed."""
        with self._lock:
            watch = self._watch[worker_id]
            if watch.failed:
                return False
            watch.failed = True
            watch.failed_steps = watch.steps
            return True

    def _loop(self, worker_id: int) -> None:
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.poll(worker_id)
            except Exception:  # a callback's bug must not stop the heartbeat
                log.exception("health check of worker %d failed", worker_id)

    def poll(self, worker_id: int) -> WorkerStatus | None:
        """One heartbeat of ``worker_id`` (also called once per worker at gateway start)."""
        worker = self._workers[worker_id]
        timeout = self.settings.timeout_s
        start = time.monotonic()
        try:
            status: WorkerStatus | None = worker.status(timeout_s=timeout)
        except Exception as exc:  # WorkerUnavailableError, or a broken client
            log.debug("worker %d: no heartbeat: %s", worker_id, exc)
            status = None
        now = time.monotonic()
        if status is not None and now - start > timeout:
            status = None
        if status is None:
            if self.mark_failed(worker_id):
                self._on_failure(worker_id, "timeout")
            return None
        self._on_status(worker_id, status)
        busy = status.running + status.queue_length > 0 or self._busy(worker_id)
        back = hung = False
        with self._lock:
            watch = self._watch[worker_id]
            progressed = status.steps != watch.steps
            watch.steps = status.steps
            if progressed or not busy:
                watch.progress_s = now
            if watch.failed:
                back = status.steps != watch.failed_steps or not busy
                if back:
                    watch.failed = False
                    watch.progress_s = now
            elif busy and now - watch.progress_s >= self.settings.hang_timeout_s:
                hung = watch.failed = True
                watch.failed_steps = status.steps
        if back:
            self._on_return(worker_id, status)
        if hung:
            self._on_failure(worker_id, "hang")
        return status
