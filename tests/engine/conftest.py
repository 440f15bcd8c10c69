"""Shared fixtures: a tiny Qwen3 configuration and an engine factory (torch imported lazily)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from lumen.executor.engine.config import EngineConfig, ModelConfig

if TYPE_CHECKING:
    from lumen.executor.engine.torch_engine import TorchEngine

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


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> None:
    """Run torch on one thread: tiny models gain nothing from more, and on a shared 2-core
    machine OpenMP threads waiting for each other make each small op tens of times slower."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> ModelConfig:
    """Hidden 64, 2 layers, 4 query / 2 KV heads of 16, vocab 256."""
    return TINY


EngineFactory = Callable[..., "TorchEngine"]


@pytest.fixture
def make_engine() -> EngineFactory:
    """Build a CPU float32 ``TorchEngine`` with random tiny weights (seed 0 by default).

    Keyword arguments go to :class:`EngineConfig`, except ``weights`` (a weight source),
    ``seed`` (of the random weights), ``config`` (a :class:`ModelConfig`) and ``role``.
    """
    pytest.importorskip("torch")
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.engine.torch_engine import TorchEngine

    def factory(**kwargs: Any) -> TorchEngine:
        model_config = kwargs.pop("config", TINY)
        weights = kwargs.pop("weights", None) or RandomWeights(model_config, kwargs.pop("seed", 0))
        role = kwargs.pop("role", "target")
        kwargs.setdefault("device", "cpu")
        kwargs.setdefault("block_size", 4)
        kwargs.setdefault("num_kv_blocks", 256)
        return TorchEngine(EngineConfig(**kwargs), weights, role)

    return factory
