"""Shared fixtures of the executor tests: one torch thread, a tiny model, real workers on port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lumen.executor.engine.config import EngineConfig, ModelConfig

TINY = ModelConfig(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    vocab_size=256,
    max_position_embeddings=512,
)
#: KV blocks of 4 tokens (pages stay small and many), float32 on the CPU.
ENGINE = EngineConfig(device="cpu", block_size=4, num_kv_blocks=256, max_model_len=512)


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> None:
    """One torch thread: tiny models gain nothing from more (see tests/engine/conftest.py)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


WorkerFactory = Callable[..., Any]


@pytest.fixture
def make_worker() -> Iterator[WorkerFactory]:
    """Start a worker server on port 0 with random tiny weights; stopped after the test.

    Keyword arguments go to :class:`WorkerConfig` (``worker_id`` defaults to a fresh id),
    except ``assist_link``. Returns the started :class:`WorkerServer`.
    """
    pytest.importorskip("torch")
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.worker.core import WorkerConfig
    from lumen.executor.worker.server import ServerConfig, create_server

    servers: list[Any] = []

    def factory(**kwargs: Any) -> Any:
        kwargs.setdefault("worker_id", len(servers))
        kwargs.setdefault("weights", RandomWeights(TINY, 0))
        kwargs.setdefault("engine", ENGINE)
        link = kwargs.pop("assist_link", None)
        server, _ = create_server(
            WorkerConfig(**kwargs), ServerConfig(grace_s=0.2), assist_link=link
        )
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop(0)
