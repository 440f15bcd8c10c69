"""Executor engines: one small interface, backends imported lazily.

Importing this package never imports torch: the interface, configuration, block manager and
scheduler are plain Python. :func:`create_engine` imports a backend only when asked for it.

Example::

    from lumen.executor.engine import EngineConfig, RequestSpec, create_engine

    engine = create_engine("torch", config=EngineConfig(), weights="/path/to/checkpoint")
    tokens = engine.generate([RequestSpec("r1", prompt_token_ids=(1, 2, 3))])["r1"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lumen.executor.engine.block_manager import BlockManager, OutOfBlocksError
from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.executor.engine.interface import (
    Engine,
    FinishReason,
    KVLayout,
    KVPage,
    ModelRole,
    NoModelLoadedError,
    Proposal,
    RandomWeights,
    RequestOutput,
    RequestSpec,
    SamplingParams,
    StepOutput,
    StepStats,
    UnknownRequestError,
    WeightSource,
    page_tag,
    page_tags,
)
from lumen.executor.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput

if TYPE_CHECKING:
    from lumen.executor.engine.torch_engine import TorchEngine

__all__ = [
    "BlockManager",
    "Engine",
    "EngineConfig",
    "FinishReason",
    "KVLayout",
    "KVPage",
    "ModelConfig",
    "ModelRole",
    "NoModelLoadedError",
    "OutOfBlocksError",
    "Proposal",
    "RandomWeights",
    "RequestOutput",
    "RequestSpec",
    "SamplingParams",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "StepOutput",
    "StepStats",
    "TorchEngine",
    "UnknownRequestError",
    "WeightSource",
    "create_engine",
    "engine_kinds",
    "page_tag",
    "page_tags",
]

_KINDS = ("torch",)


def engine_kinds() -> tuple[str, ...]:
    """Names :func:`create_engine` accepts."""
    return _KINDS


def create_engine(
    kind: str = "torch",
    *,
    config: EngineConfig | None = None,
    weights: WeightSource | None = None,
    role: ModelRole = "target",
) -> Engine:
    """Build an engine backend by name, importing it only now.

    Args:
        kind: ``"torch"`` (the built-in PyTorch engine; needs the ``executor`` extra).
        config: serving knobs; defaults to :class:`EngineConfig()`.
        weights: checkpoint directory or :class:`RandomWeights` to load right away.
        role: what the weights serve as, ``"target"`` or ``"draft"``.

    Raises:
        ValueError: unknown kind.
        ImportError: the backend's dependencies are not installed.
    """
    if kind == "torch":
        from lumen.executor.engine.torch_engine import TorchEngine

        return TorchEngine(config, weights, role)
    raise ValueError(f"unknown engine kind {kind!r}; known: {', '.join(_KINDS)}")


def __getattr__(name: str) -> Any:
    # Lazy attribute so that `from lumen.executor.engine import TorchEngine` works without
    # making `import lumen.executor.engine` pay for (or require) torch.
    if name == "TorchEngine":
        from lumen.executor.engine.torch_engine import TorchEngine

        return TorchEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
