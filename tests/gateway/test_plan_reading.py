"""Reading recovery plans, the cluster snapshot, and the entry point's arguments."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from lumen.executor.gateway.__main__ import AddressedWorker, main, parse_address, parse_workers
from lumen.executor.gateway.dispatch import WorkerBoard
from lumen.executor.gateway.history import TrackedRequest
from lumen.executor.gateway.recovery import snapshot
from lumen.executor.worker.api import GenerationRequest, TokenEvent, WorkerStatus
from lumen.planner.costmodel import CostModel
from lumen.planner.decisions import RecoveryAssignment, RecoveryDecision
from lumen.planner.domain import WorkerState
from lumen.planner.resume import Resumption, resumptions


def status(worker: int, checkpoints: dict[int, int] | None = None) -> WorkerStatus:
    return WorkerStatus(worker, "serving", 0, 0, 0.0, 0, 1000, 10**9, 0, 5, checkpoints or {})


def tracked(rid: int, worker: int, holder: int | None, generated: int) -> TrackedRequest:
    r = TrackedRequest(rid, (1,) * 100, 50, queue.Queue(), worker=worker, holder=holder)
    r.history.extend((7,) * generated, generated)
    return r


def board_of(up: list[int], checkpoints: dict[int, dict[int, int]]) -> WorkerBoard:
    board = WorkerBoard([0, 1, 2])
    for w in (0, 1, 2):
        board.update(status(w, checkpoints.get(w)))
        board.set_up(w, w in up)
    return board


def test_snapshot_reports_failed_workers_histories_and_valid_prefixes(cost: CostModel) -> None:
    # worker 0 failed; request 0 (home 0) is checkpointed on 1 up to 96 tokens, request 1
    # (home 2) on 0, whose copy died with it; request 2 waits for a worker and is left out.
    board = board_of([1, 2], {1: {0: 96}, 0: {1: 40}})
    requests = [tracked(0, 0, 1, 10), tracked(1, 2, 0, 3), tracked(2, 0, None, 0)]
    requests[2].worker = None
    state = snapshot(board, cost, requests)
    assert [w.state for w in state.workers] == [
        WorkerState.FAILED,
        WorkerState.SERVING,
        WorkerState.SERVING,
    ]
    r0 = state.request(0)
    assert (r0.home, r0.generated_tokens, r0.checkpoint_holder, r0.checkpointed_tokens) == (
        0,
        10,
        1,
        96,
    )
    assert state.request(1).checkpoint_holder == 0  # the planner sees the holder failed
    assert set(state.requests) == {0, 1}


def test_plan_modes_become_resumptions(cost: CostModel) -> None:
    board = board_of([1, 2], {1: {0: 96, 1: 80, 2: 20}})
    requests = [tracked(k, 0, 1, 10) for k in range(4)]
    state = snapshot(board, cost, requests)
    decision = RecoveryDecision(
        (
            RecoveryAssignment(0, 1, "restore", 0),
            RecoveryAssignment(1, 2, "transfer", 0),
            RecoveryAssignment(2, 0, "wait", 0),
        ),
        ((1, (0,)), (2, (1,)), (0, (2,))),
    )
    got = resumptions(decision, state, cost, [0, 1, 2, 3], alive=[1, 2])
    restore = cost.kv_restore_time(96)
    transfer = cost.kv_transfer_time(80) + cost.kv_restore_time(80)
    # request 2 waits; restoring its 20 tokens is slower than recomputing the whole context
    # (mostly network latency), so it recomputes, as the recovery problem priced it
    assert got == [
        Resumption(0, 1, "restore", 1, 96, restore),
        Resumption(1, 2, "transfer", 1, 80, transfer),
        Resumption(2, 0, "wait", wait=True),
        Resumption(3, None),  # left out by the plan: least-loaded worker, recompute
    ]
    assert resumptions(None, state, cost, [0], alive=[1, 2]) == [Resumption(0, None)]
    # a dead holder cannot serve a restore
    assert resumptions(decision, state, cost, [1], alive=[2])[0].restore_from is None


def test_entry_point_arguments() -> None:
    assert parse_address("0.0.0.0:8000") == ("0.0.0.0", 8000)
    assert parse_workers("0=a:1, 3=b:2") == [(0, "a:1"), (3, "b:2")]
    for bad in ("a:1", "0=a", "0=a:1,0=b:2", "x=a:1", ""):
        with pytest.raises(ValueError, match="expected"):
            parse_workers(bad)
    with pytest.raises(SystemExit) as exc:
        main(["--address", "nowhere", "--workers", "0=a:1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["--address", "h:1", "--workers", "0=a:1", "--policy", "nonsense"])


class _Client:
    worker_id = 4

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def submit(
        self, request: GenerationRequest, *, holder_address: str, restore_address: str
    ) -> Iterator[TokenEvent]:
        self.calls.append((holder_address, restore_address))
        return iter([TokenEvent(request.request_id, (1,), 1, True)])


def test_submissions_name_the_holder_and_restore_addresses() -> None:
    client = _Client()
    worker = AddressedWorker(client, {0: "a:1", 1: "b:2"})
    assert worker.worker_id == 4
    list(worker.submit(GenerationRequest(1, (1,), 2, checkpoint_holder=1, restore_from=0)))
    list(worker.submit(GenerationRequest(2, (1,), 2)))
    assert client.calls == [("b:2", "a:1"), ("", "")]
