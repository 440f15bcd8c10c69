"""A request restored from a holder's checkpoint on another worker continues token for token."""

from __future__ import annotations

import time
from typing import Any

import pytest

from lumen.executor.worker.api import GenerationRequest, WorkerUnavailableError
from lumen.executor.worker.client import ExecutorClient

from .conftest import WorkerFactory
from .test_worker import PROMPT, collect

CASES = {
    "greedy": GenerationRequest(21, PROMPT, max_tokens=48),
    "sampled": GenerationRequest(22, PROMPT, max_tokens=48, temperature=0.9, seed=11),
}


def sample(server: Any, name: str) -> float:
    value = server.worker.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return float(value)


@pytest.mark.parametrize(
    ("name", "on_holder"),
    [("greedy", False), ("sampled", False), ("greedy", True)],
    ids=["greedy-on-another-worker", "sampled-on-another-worker", "greedy-on-the-holder"],
)
def test_restore_from_a_holder_is_token_identical(
    make_worker: WorkerFactory, name: str, on_holder: bool
) -> None:
    request = CASES[name]
    b = make_worker(worker_id=1)
    a = make_worker(worker_id=0, peers={1: b.target}, min_step_s=0.01)
    c = b if on_holder else make_worker(worker_id=2, peers={1: b.target})
    with ExecutorClient(c.target, 2) as client:
        uninterrupted = collect(client, request)  # a plain run (on C, before any restore)
    # (C is B itself when the request resumes on its holder: a local restore.)

    # Run on A, checkpointing to B; A dies mid-generation.
    history: list[int] = []
    rid = str(request.request_id)
    with ExecutorClient(a.target, 0) as client:
        events = client.submit(
            GenerationRequest(
                request.request_id,
                request.prompt_token_ids,
                request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                checkpoint_holder=1,
            )
        )
        with pytest.raises(WorkerUnavailableError):
            for event in events:
                history.extend(event.token_ids)
                if len(history) >= 20 and b.worker.store.valid_prefix_tokens(rid) >= 16:
                    a.stop(0)
    checkpointed = b.worker.store.valid_prefix_tokens(rid)
    assert checkpointed >= 16 and len(history) < request.max_tokens

    # The gateway resumes it on C from its token history, restoring from B.
    resumed = GenerationRequest(
        request.request_id,
        request.prompt_token_ids,
        request.max_tokens,
        generated_token_ids=tuple(history),
        temperature=request.temperature,
        seed=request.seed,
        restore_from=1,
    )
    with ExecutorClient(c.target, 2) as client:
        tail = collect(client, resumed)
    assert history + tail == uninterrupted
    restored = sample(c, "lumen_worker_restored_tokens_total")
    assert sample(c, "lumen_worker_restores_total") == 1
    assert 16 <= restored <= checkpointed
    context = len(PROMPT) + len(history)
    assert sample(c, "lumen_worker_recomputed_tokens_total") == context - restored
    deadline = time.monotonic() + 5
    while b.worker.store.has(rid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not b.worker.store.has(rid)  # B's copy was freed when the request ended on C


def test_restore_falls_back_to_recompute_when_the_holder_is_gone(
    make_worker: WorkerFactory,
) -> None:
    request = CASES["greedy"]
    c = make_worker(worker_id=2, peers={1: "127.0.0.1:1"}, fetch_timeout_s=1.0)
    with ExecutorClient(c.target, 2) as client:
        full = collect(client, request)
        resumed = GenerationRequest(
            request.request_id,
            request.prompt_token_ids,
            request.max_tokens,
            generated_token_ids=tuple(full[:10]),
            restore_from=1,
        )
        assert full[:10] + collect(client, resumed) == full
    assert sample(c, "lumen_worker_restores_total") == 0
    assert sample(c, "lumen_worker_recomputed_tokens_total") == len(PROMPT) + 10
