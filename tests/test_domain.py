"""Domain model invariants: values are validated on construction and snapshots are immutable."""

from __future__ import annotations

import pytest

from lumen.planner.domain import (
    ClusterState,
    DomainError,
    Request,
    Worker,
    WorkerLoad,
    WorkerState,
)

KV = 1024  # bytes per token, small to keep the arithmetic readable


def _state() -> ClusterState:
    workers = [Worker(i, node=i // 2, hardware="A100-80GB") for i in range(4)]
    requests = [
        Request(
            0,
            home=0,
            prompt_tokens=100,
            generated_tokens=10,
            max_tokens=50,
            checkpoint_holder=2,
            checkpointed_tokens=96,
        ),
        Request(
            1, home=1, prompt_tokens=30, generated_tokens=0, max_tokens=20, checkpoint_holder=2
        ),
        Request(2, home=3, prompt_tokens=8, generated_tokens=2, max_tokens=8),
    ]
    loads = {0: WorkerLoad(queue_length=3, waiting_time_s=0.5, host_budget_bytes=10**6)}
    return ClusterState.build(workers, requests, loads, kv_bytes_per_token=KV)


def test_request_derived_token_counts() -> None:
    r = _state().request(0)
    assert r.context_tokens == 110
    assert r.max_context_tokens == 150
    assert r.remaining_tokens == 40
    assert r.uncheckpointed_tokens == 14


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prompt_tokens": 0}, "prompt_tokens"),
        ({"generated_tokens": 60}, "generated_tokens"),
        ({"checkpoint_holder": 0}, "differ from its home"),
        ({"checkpointed_tokens": 5}, "no checkpoint holder"),
        ({"checkpoint_holder": 1, "checkpointed_tokens": 200}, "checkpointed_tokens"),
        ({"home": -1}, "home worker"),
    ],
)
def test_request_rejects_inconsistent_values(kwargs: dict[str, int], fragment: str) -> None:
    base = {"id": 7, "home": 0, "prompt_tokens": 10, "generated_tokens": 0, "max_tokens": 50}
    with pytest.raises(DomainError, match=fragment):
        Request(**(base | kwargs))


def test_worker_load_rejects_negative_and_nan() -> None:
    with pytest.raises(DomainError, match="queue_length"):
        WorkerLoad(queue_length=-1)
    with pytest.raises(DomainError, match="waiting_time_s"):
        WorkerLoad(waiting_time_s=float("nan"))


def test_cluster_state_lookups_and_reservations() -> None:
    st = _state()
    assert st.nodes == {0: (0, 1), 1: (2, 3)}
    assert [r.id for r in st.checkpoints_on(2)] == [0, 1]
    assert [r.id for r in st.requests_on(3)] == [2]
    # Holder 2 reserves the max context of both requests: (150 + 50) tokens.
    assert st.reservation_bytes(2) == 200 * KV
    assert st.load(1) == WorkerLoad()  # unreported loads default to empty
    assert st.load(0).host_free_bytes == 10**6
    with pytest.raises(DomainError, match="unknown worker 9"):
        st.worker(9)
    with pytest.raises(DomainError, match="unknown request 9"):
        st.request(9)


def test_cluster_state_rejects_unknown_and_duplicate_ids() -> None:
    w = [Worker(0, 0, "h"), Worker(1, 0, "h")]
    with pytest.raises(DomainError, match="duplicate worker"):
        ClusterState.build([*w, Worker(1, 1, "h")], kv_bytes_per_token=KV)
    with pytest.raises(DomainError, match="unknown home worker 5"):
        ClusterState.build(w, [Request(0, 5, 1, 0, 1)], kv_bytes_per_token=KV)
    with pytest.raises(DomainError, match="unknown checkpoint holder 5"):
        ClusterState.build(w, [Request(0, 0, 1, 0, 1, checkpoint_holder=5)], kv_bytes_per_token=KV)
    with pytest.raises(DomainError, match="duplicate request"):
        ClusterState.build(w, [Request(0, 0, 1, 0, 1)] * 2, kv_bytes_per_token=KV)
    with pytest.raises(DomainError, match="unknown worker"):
        ClusterState.build(w, loads={3: WorkerLoad()}, kv_bytes_per_token=KV)


def test_snapshots_are_immutable_and_updates_return_new_ones() -> None:
    st = _state()
    with pytest.raises(TypeError):
        st.requests[99] = st.request(0)  # type: ignore[index]
    failed = st.with_worker_state(1, WorkerState.FAILED)
    assert st.worker(1).state is WorkerState.SERVING
    assert failed.worker(1).state is WorkerState.FAILED
    assert [w.id for w in failed.alive_workers()] == [0, 2, 3]
    grown = st.with_request(Request(5, home=2, prompt_tokens=4, generated_tokens=0, max_tokens=4))
    assert 5 in grown.requests and 5 not in st.requests
    assert 0 not in st.without_request(0).requests


def test_worker_states() -> None:
    assert not WorkerState.FAILED.alive
    assert WorkerState.ASSISTING.recovering and WorkerState.ASSISTING.alive
    assert not WorkerState.ASSISTING.serves_target
    assert WorkerState.SERVING.serves_target and not WorkerState.SERVING.recovering
