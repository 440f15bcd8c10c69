"""One worker over real gRPC (port 0): tokens, pages, errors, load reports, metrics."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from lumen.executor.worker.api import GenerationRequest, WorkerAPI
from lumen.executor.worker.client import ExecutorClient, ExecutorError
from lumen.proto.gen.v1 import executor_pb2 as pb
from lumen.proto.gen.v1 import executor_pb2_grpc as pb_grpc

from .conftest import ENGINE, TINY, WorkerFactory
from .pages import make_pages

PROMPT = tuple(range(3, 17))


def reference(request: GenerationRequest) -> list[int]:
    """The tokens an engine with the workers' weights produces for ``request`` alone."""
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.engine.torch_engine import TorchEngine
    from lumen.executor.worker.loop import to_spec

    engine = TorchEngine(ENGINE, RandomWeights(TINY, 0))
    spec = to_spec(request)
    return engine.generate([spec])[spec.request_id][len(request.generated_token_ids) :]


def collect(client: ExecutorClient, request: GenerationRequest, **kwargs: Any) -> list[int]:
    tokens: list[int] = []
    events = list(client.submit(request, **kwargs))
    for event in events:
        tokens.extend(event.token_ids)
    assert events[-1].finished and not any(e.finished for e in events[:-1])
    assert events[-1].generated_tokens == len(request.generated_token_ids) + len(tokens)
    return tokens


def stub(target: str) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(target)
    return channel, pb_grpc.ExecutorStub(channel)  # type: ignore[no-untyped-call]


def test_submit_streams_exactly_the_engines_tokens(make_worker: WorkerFactory) -> None:
    server = make_worker()
    greedy = GenerationRequest(5, PROMPT, max_tokens=12)
    sampled = GenerationRequest(6, PROMPT, max_tokens=12, temperature=0.8, seed=3)
    with ExecutorClient(server.target, 0) as client:
        api: WorkerAPI = client
        assert api.worker_id == 0
        assert collect(client, greedy) == reference(greedy)
        assert collect(client, sampled) == reference(sampled)
        assert client.health() == "SERVING"
        status = client.status()
    assert status.stage == "serving"
    assert status.steps > 0
    assert status.kv_capacity_tokens == 256 * 4
    metrics = server.worker.metrics.render()
    assert "lumen_worker_ttft_seconds_count 2.0" in metrics
    assert 'lumen_worker_recovery_stage{stage="serving"} 1.0' in metrics


def test_stop_tokens_end_a_request(make_worker: WorkerFactory) -> None:
    server = make_worker()
    full = reference(GenerationRequest(5, PROMPT, max_tokens=12))
    stop = full[4]
    with ExecutorClient(server.target, 0) as client:
        tokens = collect(
            client, GenerationRequest(5, PROMPT, max_tokens=12, stop_token_ids=(stop,))
        )
    assert tokens == full[: full.index(stop) + 1]


def test_checkpoints_stream_to_the_holder_and_are_freed_at_the_end(
    make_worker: WorkerFactory,
) -> None:
    holder = make_worker(worker_id=1)
    home = make_worker(worker_id=0, peers={1: holder.target}, min_step_s=0.01)
    request = GenerationRequest(9, PROMPT, max_tokens=30, checkpoint_holder=1)
    seen: list[int] = []
    with ExecutorClient(home.target, 0) as client:
        tokens: list[int] = []
        for event in client.submit(request):
            tokens.extend(event.token_ids)
            seen.append(holder.worker.store.valid_prefix_tokens("9"))
    assert tokens == reference(request)
    assert max(seen) >= 16  # pages reached the holder while the request ran
    assert home.worker.streamer.flush()
    assert holder.worker.store.stats().reserved_bytes == 0  # released when the request ended
    assert home.worker.streamer.stats().bytes_sent > 0
    assert "lumen_worker_checkpoint_sent_bytes_total" in home.worker.metrics.render()


def test_pages_over_the_wire_budgets_and_cut_pages(make_worker: WorkerFactory) -> None:
    server = make_worker(checkpoint_budget_bytes=1_000)
    pages = make_pages("4", tuple(range(40)), 4, end=12)
    with ExecutorClient(server.target, 0) as client:
        with pytest.raises(ExecutorError) as refused:
            client.send_pages(4, pages, reserve_bytes=2_000)
        assert refused.value.code == "RESOURCE_EXHAUSTED"
        assert "only 1000 of 1000 are free" in refused.value.details
        with pytest.raises(ExecutorError) as missing:
            client.send_pages(4, pages)
        assert missing.value.code == "NOT_FOUND"
        assert client.send_pages(4, pages[:2], reserve_bytes=600) == 8
        # a page whose payload was cut in transit is acknowledged but never becomes valid
        channel, raw = stub(server.target)
        cut = pb.KVPage(
            request_id=4,
            page_index=2,
            start_position=8,
            end_position=12,
            tag=pages[2][0].token_tag,
            checksum=pages[2][0].checksum,
            dtype="float32",
            shape=list(pages[2][0].shape),
            payload=pages[2][0].payload[:-5],
            token_ids=list(pages[2][1]),
        )
        reply = raw.SendPages(iter([cut]), timeout=5)
        channel.close()
        assert reply.pages_received == 0
        assert reply.valid_tokens_by_request[4] == 8
        assert client.fetch_pages(4) == [p for p, _ in pages[:2]]
        assert client.status().checkpoints == {4: 8}
        assert client.send_pages(4, pages[2:]) == 12
        assert client.fetch_pages(4, 5) == [p for p, _ in pages[1:]]
        client.release_pages(4)
        assert client.status().host_reserved_bytes == 0
        with pytest.raises(ExecutorError) as gone:
            client.fetch_pages(4)
        assert gone.value.code == "NOT_FOUND"


def test_bad_input_names_the_field(make_worker: WorkerFactory) -> None:
    server = make_worker()
    channel, raw = stub(server.target)
    try:
        with pytest.raises(grpc.RpcError) as empty:
            list(raw.SubmitRequest(pb.SubmitRequestRequest(request_id=1, max_tokens=4), timeout=5))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "prompt_token_ids" in (empty.value.details() or "")
        with pytest.raises(grpc.RpcError) as holder:
            request = pb.SubmitRequestRequest(
                request_id=1, prompt_token_ids=[1], max_tokens=4, checkpoint_holder=7
            )
            list(raw.SubmitRequest(request, timeout=5))
        assert holder.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "checkpoint_holder: unknown worker 7" in (holder.value.details() or "")
        with pytest.raises(grpc.RpcError) as stage:
            raw.SetStage(pb.SetStageRequest(), timeout=5)
        assert stage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()


def test_a_stopped_worker_is_unavailable(make_worker: WorkerFactory) -> None:
    from lumen.executor.worker.api import WorkerUnavailableError

    server = make_worker(min_step_s=0.01)
    client = ExecutorClient(server.target, 0, timeout_s=2)
    events = client.submit(GenerationRequest(1, PROMPT, max_tokens=200))
    next(events)
    start = time.perf_counter()
    server.stop(0)
    with pytest.raises(WorkerUnavailableError):
        list(events)
    with pytest.raises(WorkerUnavailableError):
        client.status(timeout_s=0.5)
    assert time.perf_counter() - start < 5
    client.close()


def test_every_stage_round_trips_through_the_wire() -> None:
    from lumen.executor.worker import wire
    from lumen.executor.worker.api import STAGES
    from lumen.executor.worker.errors import InvalidField

    for stage in STAGES:
        assert wire.stage_from_proto(wire.stage_to_proto(stage)) == stage
    with pytest.raises(InvalidField, match="stage"):
        wire.stage_to_proto("sleeping")
    with pytest.raises(InvalidField, match="unspecified"):
        wire.stage_from_proto(pb.RECOVERY_STAGE_UNSPECIFIED)


def test_filters_logprobs_and_context_limit_cross_the_wire(make_worker: WorkerFactory) -> None:
    server = make_worker()
    filtered = GenerationRequest(7, PROMPT, 10, temperature=1.0, seed=5, top_p=0.9, top_k=4)
    with ExecutorClient(server.target, 0) as client:
        assert collect(client, filtered) == reference(filtered)
        events = list(client.submit(GenerationRequest(8, PROMPT, 5, logprobs=2)))
        status = client.status()
    logprobs = [lp for e in events for lp in e.logprobs]
    tokens = [t for e in events for t in e.token_ids]
    assert len(logprobs) == len(tokens) == 5
    assert all(
        lp.top[0][0] == t and len(lp.top) == 2 for t, lp in zip(tokens, logprobs, strict=True)
    )
    assert status.max_model_len == min(512, TINY.max_position_embeddings)
    steps = server.worker.metrics.registry.get_sample_value("lumen_worker_steps_total")
    assert steps is not None and steps == status.steps > 0  # a counter, advanced per report
