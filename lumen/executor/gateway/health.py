"""Failure detection: heartbeat polling of every worker's ``status()``, with suspicion, a probe,
adaptive deadlines and forward progress.

One thread per worker calls ``status(deadline)`` every ``interval_s``, on its own channel in
production (the gRPC adapter keeps heartbeats off the connection that carries token streams),
so a heartbeat never queues behind model work on the gateway's side. A missed heartbeat (an
error, or no answer within the deadline) makes the worker *suspect*, not failed. A worker is
*failed* when

- it missed ``suspect_beats`` heartbeats in a row and then a final *probe* (one more status
  call with ``probe_factor`` times the deadline) gets no answer either: reason ``"timeout"``
  (a killed process refuses at once, so this takes about ``suspect_beats * interval_s``; a
  stalled one takes the deadlines as well); or
- it has work (it reports running or queued requests, or the gateway has requests on it) and
  its ``steps`` counter has not grown for the hang deadline: reason ``"hang"``. A hung worker
  still answers heartbeats, so liveness alone would never catch it.

Deadlines adapt to what is observed, so a worker that is slow because it is busy is not taken
for dead: the status deadline is the largest of ``timeout_s``, ``rtt_factor`` times the
smoothed round trip of the worker's recent heartbeats and ``rtt_factor`` times its smoothed
engine step time, capped at ``max_timeout_s``; the hang deadline is the larger of
``hang_timeout_s`` and ``step_factor`` times the smoothed step time (a step longer than
the configured hang timeout cannot be a hang on its own).

A failed worker keeps being polled; it *returns* when it answers again and has either made
progress since (``steps`` changed: a restarted process counts from zero) or holds no work, so a
hung process that still answers is not taken back while it is stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lumen.executor.worker.api import WorkerAPI, WorkerStatus

log = logging.getLogger(__name__)

#: Weight of the newest sample in the smoothed round trip and step time.
_EWMA = 0.2


@dataclass(frozen=True)
class HealthSettings:
    """Heartbeat period and deadlines, in seconds, and the suspicion rule (module docstring)."""

    interval_s: float = 0.5
    timeout_s: float = 1.0
    hang_timeout_s: float = 5.0
    suspect_beats: int = 2
    probe_factor: float = 2.0
    rtt_factor: float = 4.0
    step_factor: float = 4.0
    max_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not (self.interval_s > 0 and self.timeout_s > 0 and self.hang_timeout_s > 0):
            raise ValueError("interval_s, timeout_s and hang_timeout_s must be > 0")
        if self.suspect_beats < 1 or self.probe_factor < 1.0:
            raise ValueError("suspect_beats must be >= 1 and probe_factor >= 1")
        if self.rtt_factor <= 0 or self.step_factor <= 0:
            raise ValueError("rtt_factor and step_factor must be > 0")
        if self.max_timeout_s < self.timeout_s:
            raise ValueError("max_timeout_s must be >= timeout_s")


@dataclass
class _Watch:
    steps: int = -1
    progress_s: float = 0.0
    failed: bool = False
    failed_steps: int = -1
    missed: int = 0
    rtt_s: float = 0.0
    step_s: float = 0.0
    seen_s: float = 0.0
    busy: bool = False


class HealthMonitor:
    """Polls workers and reports failures and returns through callbacks.

    Args:
        busy: whether the gateway has requests on a worker.
        on_status: every answered heartbeat.
        on_failure: ``(worker_id, reason)`` once per failure.
        on_return: ``(worker_id, status)`` when a failed worker is back.
        on_suspect: ``worker_id`` at every missed heartbeat that did not declare a failure.
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
        on_suspect: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._workers = {w.worker_id: w for w in workers}
        self._busy = busy
        self._on_status = on_status
        self._on_failure = on_failure
        self._on_return = on_return
        self._on_suspect = on_suspect
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

    def deadline(self, worker_id: int) -> float:
        """The status deadline of ``worker_id`` now (module docstring)."""
        s = self.settings
        with self._lock:
            watch = self._watch[worker_id]
            observed = s.rtt_factor * max(watch.rtt_s, watch.step_s)
        return min(s.max_timeout_s, max(s.timeout_s, observed))

    def hang_deadline(self, worker_id: int) -> float:
        """How long a busy worker may make no progress before it is hung."""
        with self._lock:
            return self._hang_locked(self._watch[worker_id])

    def probe(self, worker_id: int) -> WorkerStatus | None:
        """One status call with the probe deadline (None: no answer)."""
        timeout = self.deadline(worker_id) * self.settings.probe_factor
        return self._call(worker_id, timeout)

    def _call(self, worker_id: int, timeout: float) -> WorkerStatus | None:
        start = time.monotonic()
        try:
            status: WorkerStatus | None = self._workers[worker_id].status(timeout_s=timeout)
        except Exception as exc:  # WorkerUnavailableError, or a broken client
            log.debug("worker %d: no heartbeat: %s", worker_id, exc)
            return None
        rtt = time.monotonic() - start
        with self._lock:
            watch = self._watch[worker_id]
            watch.rtt_s = rtt if watch.rtt_s == 0.0 else (1 - _EWMA) * watch.rtt_s + _EWMA * rtt
        return status

    def _loop(self, worker_id: int) -> None:
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.poll(worker_id)
            except Exception:  # a callback's bug must not stop the heartbeat
                log.exception("health check of worker %d failed", worker_id)

    def poll(self, worker_id: int) -> WorkerStatus | None:
        """One heartbeat of ``worker_id`` (also called once per worker at gateway start)."""
        status = self._call(worker_id, self.deadline(worker_id))
        if status is None:
            status = self._missed(worker_id)
            if status is None:
                return None
        with self._lock:
            self._watch[worker_id].missed = 0
        self._on_status(worker_id, status)
        self._progress(worker_id, status)
        return status

    def _missed(self, worker_id: int) -> WorkerStatus | None:
        """A missed heartbeat: suspicion, then a probe; the probe's answer if it got one."""
        with self._lock:
            watch = self._watch[worker_id]
            if watch.failed:
                return None
            watch.missed += 1
            suspect = watch.missed < self.settings.suspect_beats
        if suspect:
            log.info("worker %d missed a heartbeat; suspect", worker_id)
            if self._on_suspect is not None:
                self._on_suspect(worker_id)
            return None
        status = self.probe(worker_id)
        if status is not None:
            log.info("worker %d answered the probe; not failed", worker_id)
            return status
        if self.mark_failed(worker_id):
            self._on_failure(worker_id, "timeout")
        return None

    def _progress(self, worker_id: int, status: WorkerStatus) -> None:
        """Forward progress: the step time, a return after a failure, or a hang."""
        busy = status.running + status.queue_length > 0 or self._busy(worker_id)
        now = time.monotonic()
        back = hung = False
        with self._lock:
            watch = self._watch[worker_id]
            grown = status.steps - watch.steps
            if watch.busy and busy and grown > 0:  # steps of a busy spell time the engine
                step = min((now - watch.seen_s) / grown, self.settings.hang_timeout_s)
                watch.step_s = (
                    step if watch.step_s == 0 else (1 - _EWMA) * watch.step_s + _EWMA * step
                )
            watch.steps = status.steps
            watch.busy = busy
            if grown != 0 or not busy:
                watch.progress_s = now
            watch.seen_s = now
            if watch.failed:
                back = status.steps != watch.failed_steps or not busy
                if back:
                    watch.failed = False
                    watch.missed = 0
                    watch.progress_s = now
            elif busy and now - watch.progress_s >= self._hang_locked(watch):
                hung = watch.failed = True
                watch.failed_steps = status.steps
        if back:
            self._on_return(worker_id, status)
        if hung:
            self._on_failure(worker_id, "hang")

    def _hang_locked(self, watch: _Watch) -> float:
        return max(self.settings.hang_timeout_s, self.settings.step_factor * watch.step_s)
