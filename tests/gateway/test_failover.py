"""Failover on its own, driven through a fake :class:`FailoverHost`: a dead worker is marked
down, its requests frozen, planned and pended again; a live worker whose stream broke resumes
only that request; stale attempts and exhausted requests."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from lumen.executor.gateway import GatewayConfig
from lumen.executor.gateway.config import Pending
from lumen.executor.gateway.dispatch import HolderPlacer, WorkerBoard
from lumen.executor.gateway.failover import Failover, FailoverHost
from lumen.executor.gateway.health import HealthMonitor
from lumen.executor.gateway.history import TrackedRequest
from lumen.executor.gateway.metrics import GatewayMetrics
from lumen.executor.gateway.recovery import RecoveryPlanner, snapshot
from lumen.executor.worker.api import WorkerStatus
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState

from .conftest import FAST
from .fakes import make_fakes

WORKERS = (0, 1, 2)


@dataclass
class FakeHost:
    """Records what failover asks of its gateway; ``alive`` workers answer a status probe."""

    board: WorkerBoard
    cost: CostModel
    requests: list[TrackedRequest]
    alive: set[int]
    pended: list[Pending] = field(default_factory=list)
    finished: list[tuple[int, str, str]] = field(default_factory=list)
    probed: list[int] = field(default_factory=list)
    wakes: int = 0

    def active(self) -> list[TrackedRequest]:
        return [r for r in self.requests if not r.done]

    def pend(self, item: Pending) -> None:
        self.pended.append(item)

    def finish_locked(self, request: TrackedRequest, reason: str, error: str = "") -> None:
        request.done = True
        self.finished.append((request.request_id, reason, error))

    def wake_dispatcher(self) -> None:
        self.wakes += 1

    def snapshot(self) -> ClusterState:
        running = [r for w in self.board.ids for r in self.board.requests_on(w)]
        return snapshot(self.board, self.cost, running)

    def answers(self, worker: int) -> bool:
        self.probed.append(worker)
        return worker in self.alive


@dataclass
class Rig:
    failover: Failover
    host: FakeHost
    board: WorkerBoard
    monitor: HealthMonitor
    metrics: GatewayMetrics
    requests: list[TrackedRequest]


def _status(worker: int, checkpoints: dict[int, int]) -> WorkerStatus:
    return WorkerStatus(worker, "serving", 0, 0, 0.0, 0, 100_000, 10**9, 0, 5, checkpoints)


@pytest.fixture
def rig(cost: CostModel) -> Iterator[Rig]:
    """Requests 0-3 run on worker 0, their whole context (1,510 tokens) checkpointed on worker 1;
    request 4 runs on worker 2 and checkpoints on worker 0."""
    board = WorkerBoard(WORKERS)
    held = {1: {k: 1510 for k in range(4)}, 0: {4: 64}}
    for w in WORKERS:
        board.update(_status(w, held.get(w, {})))
        board.set_up(w, True)
    requests: list[TrackedRequest] = []
    for rid, (home, holder) in enumerate([(0, 1)] * 4 + [(2, 0)]):
        r = TrackedRequest(rid, (1,) * 1500, 50, queue.Queue(), worker=home, holder=holder)
        r.history.extend((7,) * 10, 10)
        board.attach(r, home)
        requests.append(r)
    host = FakeHost(board, cost, requests, alive=set(WORKERS))
    with failover_on(
        host, GatewayConfig(health=FAST, max_resumes=2), RecoveryPlanner(cost, "greedy")
    ) as (
        failover,
        monitor,
        metrics,
    ):
        yield Rig(failover, host, board, monitor, metrics, requests)


@contextmanager
def failover_on(
    host: FakeHost, config: GatewayConfig, recovery: RecoveryPlanner
) -> Iterator[tuple[Failover, HealthMonitor, GatewayMetrics]]:
    """A failover over ``host``'s board with fake workers, a health monitor and metrics,
    closed on exit."""
    fakes = make_fakes(len(host.board.ids))
    monitor = HealthMonitor(
        fakes,
        config.health,
        busy=lambda w: True,
        on_status=lambda w, s: None,
        on_failure=lambda w, reason: None,
        on_return=lambda w, s: None,
    )
    metrics = GatewayMetrics()
    try:
        yield (
            Failover(
                host,
                config=config,
                board=host.board,
                monitor=monitor,
                placer=HolderPlacer(None, host.board, host.cost),
                recovery=recovery,
                metrics=metrics,
            ),
            monitor,
            metrics,
        )
    finally:
        metrics.close()
        for f in fakes:
            f.close()


def _count(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_fake_host_satisfies_the_protocol(rig: Rig) -> None:
    host: FailoverHost = rig.host  # checked by mypy: the protocol is all failover needs
    assert host.active() == rig.requests


def test_a_dead_worker_is_marked_down_and_its_requests_planned_and_resumed(rig: Rig) -> None:
    rig.host.alive = {1, 2}
    rig.failover.stream_failed(rig.requests[0], 0, 0, "connection reset")

    assert rig.host.probed == [0]
    assert rig.monitor.is_failed(0) and not rig.board.is_up(0)
    assert rig.board.requests_on(0) == []
    assert _count(rig.metrics, "lumen_gateway_worker_failures_total", reason="stream") == 1
    assert _count(rig.metrics, "lumen_gateway_recoveries_total", source="local") == 1
    # every request of the dead worker is frozen (late tokens dropped) and pended again, once
    assert sorted(p.request.request_id for p in rig.host.pended) == [0, 1, 2, 3]
    for p in rig.host.pended:
        assert p.resumed and p.target in (*WORKERS, None)
        assert p.target != 0 or p.deadline_s > 0  # waiting for the failed worker is bounded
        assert p.restore_from in (1, None)  # the live holder, or recompute
        assert (p.request.attempt, p.request.resumes, p.request.worker) == (1, 1, None)
    assert any(p.restore_from == 1 for p in rig.host.pended)  # long prompts restore
    # the request checkpointed on the dead worker lost its holder but keeps running
    other = rig.requests[4]
    assert (other.holder, other.worker, other.attempt) == (None, 2, 0)
    assert rig.host.wakes == 1 and rig.host.finished == []


def test_a_failure_the_heartbeat_already_marked_is_recovered_without_marking_again(
    rig: Rig,
) -> None:
    assert rig.monitor.mark_failed(0)
    rig.board.set_up(0, False)
    rig.failover.handle_failure(0, "timeout", newly=False)
    assert _count(rig.metrics, "lumen_gateway_worker_failures_total", reason="timeout") == 0
    assert sorted(p.request.request_id for p in rig.host.pended) == [0, 1, 2, 3]
    assert rig.requests[4].holder == 0  # only a newly marked failure forgets its checkpoints
    assert rig.host.wakes == 1


def test_a_live_worker_whose_stream_broke_resumes_only_that_request(rig: Rig) -> None:
    before = time.monotonic()
    rig.failover.stream_failed(rig.requests[0], 0, 0, "stream ended early")

    assert rig.host.probed == [0]
    assert rig.board.is_up(0) and not rig.monitor.is_failed(0)
    [p] = rig.host.pended
    assert p.request is rig.requests[0] and p.resumed
    assert p.target is None and p.restore_from == 1  # its holder is up
    assert p.not_before_s >= before + 0.05  # backed off
    assert rig.requests[0] not in rig.board.requests_on(0)
    assert [r.attempt for r in rig.requests] == [1, 0, 0, 0, 0]
    assert rig.host.wakes == 0  # pending wakes the dispatcher itself


def test_a_stale_attempt_is_ignored(rig: Rig) -> None:
    rig.requests[0].attempt = 3
    rig.failover.stream_failed(rig.requests[0], 2, 0, "late")
    assert rig.host.probed == [] and rig.host.pended == []


def test_a_request_that_fails_too_often_ends_with_an_error(rig: Rig) -> None:
    r = rig.requests[0]
    for attempt in range(3):
        rig.failover.resume_one(r, attempt, 0)
    assert len(rig.host.pended) == 2
    assert rig.host.finished == [(0, "error", "too many failures of this request")]
    assert r.done
