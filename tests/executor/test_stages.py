"""Staged recovery: DraftLoading -> Assisting -> Switching -> Serving, with throttled loads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lumen.executor.worker.api import GenerationRequest
from lumen.executor.worker.client import ExecutorClient, ExecutorError

from .conftest import TINY, WorkerFactory
from .test_worker import PROMPT, collect, reference


def test_throttled_read_of_a_checkpoint_directory_takes_size_over_bandwidth(
    tmp_path: Path,
) -> None:
    from lumen.executor.worker.stages import throttled_read, weight_bytes

    (tmp_path / "model.safetensors").write_bytes(bytes(2_000_000))
    (tmp_path / "config.json").write_text("{}")
    assert weight_bytes(str(tmp_path)) == 2_000_002
    elapsed = throttled_read(str(tmp_path), gbyte_s=0.01)  # 10 MB/s -> 0.2 s
    assert 0.19 <= elapsed < 1.0
    assert throttled_read(str(tmp_path), None) == 0.0
    with pytest.raises(ValueError, match="ssd_gbyte_s"):
        throttled_read(str(tmp_path), 0.0)


def test_recovering_worker_goes_through_the_stages_to_serving(make_worker: WorkerFactory) -> None:
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.worker.stages import weight_bytes

    target = RandomWeights(TINY, 0)
    draft = RandomWeights(TINY.with_layers(1), 1)
    gbyte_s = weight_bytes(target) / 0.4 / 1e9  # the target reads in 0.4 s
    survivor = make_worker(worker_id=0)
    start = time.perf_counter()
    server = make_worker(
        worker_id=1,
        weights=target,
        draft_weights=draft,
        ssd_gbyte_s=gbyte_s,
        start_stage="draft-loading",
        peers={0: survivor.target},
    )
    request = GenerationRequest(3, PROMPT, max_tokens=10)
    with ExecutorClient(server.target, 1) as client:
        assert client.status().stage == "draft-loading"
        assert client.health() == "SERVING"  # reachable: it answers SetStage and reports
        with pytest.raises(ExecutorError) as not_serving:
            collect(client, request)
        assert not_serving.value.code == "FAILED_PRECONDITION"
        with pytest.raises(ExecutorError) as no_survivor:
            client.set_stage("assisting")
        assert no_survivor.value.code == "INVALID_ARGUMENT"
        deadline = time.monotonic() + 10
        while True:  # the draft (1 of 2 layers) loads first
            try:
                assert client.set_stage("assisting", survivor=0) == "assisting"
                break
            except ExecutorError as exc:
                assert exc.code == "FAILED_PRECONDITION"
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert server.worker.stages.draft_engine is not None
        assert client.status().stage == "assisting"
        assert client.set_stage("switching") == "switching"
        while client.status().stage != "serving":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # draft and target were each read at the emulated bandwidth
        assert time.perf_counter() - start >= 0.4 + weight_bytes(draft) / gbyte_s / 1e9
        assert server.worker.stages.draft_engine is None
        assert collect(client, request) == reference(request)
        assert client.set_stage("serving") == "serving"
    metrics = server.worker.metrics.render()
    assert 'lumen_worker_recovery_stage{stage="serving"} 1.0' in metrics
    assert 'lumen_worker_recovery_stage{stage="assisting"} 0.0' in metrics


def test_draft_loading_without_a_draft_model_is_refused(make_worker: WorkerFactory) -> None:
    server = make_worker()
    with ExecutorClient(server.target, 0) as client:
        with pytest.raises(ExecutorError) as refused:
            client.set_stage("draft-loading")
        assert refused.value.code == "FAILED_PRECONDITION"
        assert "--draft-weights" in refused.value.details
        assert client.status().stage == "serving"


def _wait_assisting(client: ExecutorClient, survivor: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            client.set_stage("assisting", survivor=survivor)
            return
        except ExecutorError as exc:
            assert exc.code == "FAILED_PRECONDITION"
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_recovering_worker_switches_by_itself_once_the_target_is_in_host_memory(
    make_worker: WorkerFactory,
) -> None:
    from lumen.executor.engine.interface import RandomWeights

    server = make_worker(
        worker_id=1,
        draft_weights=RandomWeights(TINY.with_layers(1), 1),
        start_stage="draft-loading",
    )
    request = GenerationRequest(4, PROMPT, max_tokens=6)
    with ExecutorClient(server.target, 1) as client:
        deadline = time.monotonic() + 10
        while client.status().stage != "serving":  # nobody pairs it or tells it to switch
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.set_stage("switching") == "serving"  # a late switch is a no-op
        assert collect(client, request) == reference(request)


@pytest.mark.parametrize("draft_kind", ["same-as-target", "unrelated"])
def test_assisting_drafts_speed_the_survivor_and_keep_its_outputs(
    make_worker: WorkerFactory, draft_kind: str
) -> None:
    from lumen.executor.engine.interface import RandomWeights

    draft = (
        RandomWeights(TINY, 0)  # agrees with the target on every token
        if draft_kind == "same-as-target"
        else RandomWeights(TINY.with_layers(1), 5)
    )
    survivor = make_worker(worker_id=0, min_step_s=0.02)
    recovering = make_worker(
        worker_id=1,
        draft_weights=draft,
        start_stage="draft-loading",
        peers={0: survivor.target},
        assist_link=lambda _id, _address: survivor.worker,
        auto_switch=False,  # stay assisting for the whole test
    )
    requests = [
        GenerationRequest(31, PROMPT, max_tokens=30),
        GenerationRequest(32, PROMPT[:9], max_tokens=30, temperature=0.8, seed=4),
    ]
    with ExecutorClient(recovering.target, 1) as helper:
        _wait_assisting(helper, survivor=0)
    with ExecutorClient(survivor.target, 0) as client:
        for request in requests:
            assert collect(client, request) == reference(request)
    stats = survivor.worker.loop.stats()
    assistant = recovering.worker.stages.assistant
    assert assistant is not None and assistant.stats().queued > 0
    if draft_kind == "same-as-target":
        # accepted drafts saved steps on the greedy request (about 60 steps without help:
        # two 30-token requests); the sampled one is not mirrored (its exact seeded draws
        # must not depend on the draft). The bounds leave room for a loaded machine, where
        # the draft falls behind the survivor's steps more often.
        assert stats.accepted_tokens >= 5
        assert stats.steps < 58
    recovering.stop(0)


def test_a_restarted_worker_without_a_draft_reloads_and_serves(make_worker: WorkerFactory) -> None:
    server = make_worker(start_stage="draft-loading")
    request = GenerationRequest(2, PROMPT, max_tokens=6)
    with ExecutorClient(server.target, 0) as client:
        deadline = time.monotonic() + 10
        while client.status().stage != "serving":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert collect(client, request) == reference(request)
