"""Failure detection under load: suspicion before failure, a probe, deadlines that adapt to the
observed round trips and step times, and a dead worker still found quickly."""

from __future__ import annotations

import time

import pytest

from lumen.executor.gateway.health import HealthMonitor, HealthSettings
from lumen.executor.worker.api import WorkerStatus, WorkerUnavailableError


class SlowWorker:
    """Answers ``status`` after ``delay`` seconds, or times out like a gRPC deadline when
    ``delay`` exceeds the caller's; ``dead`` refuses at once."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.dead = False
        self.steps = 0
        self.running = 0
        self.deadlines: list[float] = []

    @property
    def worker_id(self) -> int:
        return 0

    def status(self, timeout_s: float = 1.0) -> WorkerStatus:
        self.deadlines.append(timeout_s)
        if self.dead:
            raise WorkerUnavailableError("connection refused")
        if self.delay > timeout_s:
            time.sleep(timeout_s)
            raise WorkerUnavailableError("DEADLINE_EXCEEDED")
        time.sleep(self.delay)
        return WorkerStatus(0, "serving", 0, self.running, 0.0, 0, 1, 1, 0, self.steps)


def monitor(worker: SlowWorker, **settings: float) -> tuple[HealthMonitor, list[str]]:
    failures: list[str] = []
    m = HealthMonitor(
        [worker],  # type: ignore[list-item]
        HealthSettings(**{"interval_s": 0.01, "timeout_s": 0.1, **settings}),  # type: ignore[arg-type]
        busy=lambda w: False,
        on_status=lambda w, s: None,
        on_failure=lambda w, reason: failures.append(reason),
        on_return=lambda w, s: None,
    )
    return m, failures


def test_one_late_heartbeat_is_suspicion_not_failure() -> None:
    worker = SlowWorker()
    m, failures = monitor(worker)
    worker.delay = 0.15  # one beat past the 0.1 s deadline
    assert m.poll(0) is None
    worker.delay = 0.0
    assert m.poll(0) is not None
    assert failures == [] and not m.is_failed(0)


def test_the_probe_saves_a_slow_worker() -> None:
    worker = SlowWorker()
    m, failures = monitor(worker)
    worker.delay = 0.15  # misses both beats, answers the probe (2 x the deadline)
    assert m.poll(0) is None
    assert m.poll(0) is not None
    assert failures == []
    assert worker.deadlines[-1] == pytest.approx(0.2)


def test_deadline_follows_observed_round_trips_and_steps() -> None:
    worker = SlowWorker()
    m, failures = monitor(worker)
    worker.delay = 0.06
    for _ in range(10):  # round trips of 60 ms: the deadline grows to 4 x 60 ms
        m.poll(0)
    assert 0.2 < m.deadline(0) <= 0.25
    worker.delay = 0.18  # a spike the fixed 0.1 s deadline would have missed
    assert m.poll(0) is not None
    worker.delay, worker.running = 0.0, 1
    for _ in range(4):  # a busy worker making a step every poll (about 10 ms)
        worker.steps += 1
        m.poll(0)
    assert failures == []
    assert m.hang_deadline(0) == m.settings.hang_timeout_s  # fast steps: the configured one


def test_a_dead_worker_is_still_declared_after_the_suspicion_beats() -> None:
    worker = SlowWorker()
    m, failures = monitor(worker, interval_s=0.05)
    m.start()
    try:
        time.sleep(0.2)
        worker.dead = True
        killed = time.monotonic()
        while not failures and time.monotonic() - killed < 5:
            time.sleep(0.01)
    finally:
        m.stop()
    assert failures == ["timeout"]
    # two missed beats and a refused probe: a few heartbeat intervals, not the deadlines
    assert time.monotonic() - killed < 1.0


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="suspect_beats"):
        HealthSettings(suspect_beats=0)
    with pytest.raises(ValueError, match="max_timeout_s"):
        HealthSettings(timeout_s=2.0, max_timeout_s=1.0)
