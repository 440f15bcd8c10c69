"""What the gateway and the launcher ask of a worker process, in domain types (no stubs, no torch).

A worker process wraps one engine and serves the ``lumen.v1.Executor`` gRPC service; the
gateway talks to it through a :class:`WorkerAPI` (the gRPC adapter in production, in-process
fakes in tests). Requests carry everything a resumed request needs: the prompt, the tokens
already emitted (the gateway's token history), the worker to stream checkpoints to and the
worker to restore a checkpointed prefix from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from lumen.executor.engine.interface import TokenLogprob

__all__ = [
    "STAGES",
    "GenerationRequest",
    "TokenEvent",
    "TokenLogprob",
    "WorkerAPI",
    "WorkerStatus",
    "WorkerUnavailableError",
]

#: Recovery stages of a worker, in order (docs/architecture.md, the three decisions).
STAGES = ("draft-loading", "assisting", "switching", "serving")


class WorkerUnavailableError(ConnectionError):
    """The worker did not answer (dead, hung past the deadline, or not started)."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One request as the gateway submits it to a worker.

    Attributes:
        generated_token_ids: output tokens already emitted (resumed requests); the worker
            continues after them and never emits them again.
        max_tokens: output tokens in all, ``generated_token_ids`` included.
        temperature, seed, top_p, top_k: sampling; draws depend only on ``(seed, position)``,
            so a request resumed elsewhere samples the tokens it would have sampled.
        logprobs: alternatives per output token to return log probabilities for (None: none).
        checkpoint_holder: worker to stream KV checkpoint pages to (None: no checkpoint).
        restore_from: worker holding a checkpoint of this request to restore the longest valid
            prefix from (None: prefill everything).
    """

    request_id: int
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    generated_token_ids: tuple[int, ...] = ()
    temperature: float = 0.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    checkpoint_holder: int | None = None
    restore_from: int | None = None
    top_p: float = 1.0
    top_k: int = 0
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if not self.prompt_token_ids:
            raise ValueError("prompt_token_ids: at least one token")
        if self.max_tokens < 1 or len(self.generated_token_ids) >= self.max_tokens:
            raise ValueError("max_tokens: must exceed the tokens already generated")


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """New output tokens of a request (``generated_tokens`` counts all emitted so far;
    ``logprobs``: one per token when the request asked for them)."""

    request_id: int
    token_ids: tuple[int, ...]
    generated_tokens: int
    finished: bool = False
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A worker's report: load, recovery stage, checkpoint inventory and forward progress.

    Attributes:
        steps: engine iterations completed since start (grows while the worker makes
            progress; a worker with requests whose ``steps`` stops growing is hung).
        checkpoints: request id -> valid checkpointed prefix (tokens) held for other workers.
        max_model_len: longest context (prompt and output) a request may reach; 0: unknown.
    """

    worker_id: int
    stage: str
    queue_length: int
    running: int
    waiting_time_s: float
    kv_used_tokens: int
    kv_capacity_tokens: int
    host_budget_bytes: int
    host_reserved_bytes: int
    steps: int
    checkpoints: dict[int, int] = field(default_factory=dict)
    max_model_len: int = 0


class WorkerAPI(Protocol):
    """A worker process as the gateway sees it."""

    @property
    def worker_id(self) -> int: ...

    def submit(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        """Run ``request``; yields its tokens as they are produced, the last event finished.
        Raises :class:`WorkerUnavailableError` when the worker dies or stops answering."""
        ...

    def status(self, timeout_s: float = 1.0) -> WorkerStatus:
        """The worker's current report (raises :class:`WorkerUnavailableError`)."""
        ...

    def set_stage(self, stage: str, survivor: int | None = None) -> str:
        """Enter a recovery stage (one of :data:`STAGES`); returns the stage entered."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
