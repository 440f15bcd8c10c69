"""The small engine interface every backend implements (no torch import).

An engine serves requests step by step (:meth:`Engine.add_request`, :meth:`Engine.step`,
:meth:`Engine.abort`), hands a request's KV cache out and back in as checksummed, tagged pages
(:meth:`Engine.export_kv`, :meth:`Engine.import_kv`), and takes part in speculative decoding either
as a draft (:meth:`Engine.propose`) or as the target that verifies proposals inside its normal step
(:meth:`Engine.submit_proposals`). Weights are loaded for a role and unloaded again, which is how a
recovering worker goes DraftLoading -> Assisting -> Switching -> Serving.

The KV page types live in :mod:`lumen.executor.engine.kv_page` and are re-exported here.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np

from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.executor.engine.kv_page import ROOT_TAG, KVLayout, KVPage, page_tag, page_tags

__all__ = [
    "MAX_LOGPROBS",
    "ROOT_TAG",
    "Engine",
    "FinishReason",
    "KVLayout",
    "KVPage",
    "ModelRole",
    "NoModelLoadedError",
    "Proposal",
    "RandomWeights",
    "RequestOutput",
    "RequestSpec",
    "SamplingParams",
    "StepOutput",
    "StepStats",
    "TokenLogprob",
    "UnknownRequestError",
    "WeightSource",
    "page_tag",
    "page_tags",
]

ModelRole = Literal["target", "draft"]

#: Most alternatives a request may ask log probabilities for, per output token.
MAX_LOGPROBS = 20


class UnknownRequestError(KeyError):
    """The engine holds no request with this id (never added, finished or aborted)."""


class NoModelLoadedError(RuntimeError):
    """The call needs weights, and none are loaded (or they were loaded for the other role)."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How a request picks its tokens.

    Attributes:
        temperature: 0 means greedy (argmax); otherwise logits are divided by it.
        top_p: nucleus sampling mass, in (0, 1].
        top_k: sample among the ``top_k`` most likely tokens only (0: all tokens).
        logprobs: return each output token's log probability under the model's raw
            distribution (before temperature and filtering, as vLLM's default) with this many
            most likely alternatives (0 to :data:`MAX_LOGPROBS`); ``None``: none.
        seed: sampling seed. Draws are a pure function of ``(seed, position)``, so a request
            resumed on another engine samples exactly the tokens it would have sampled. ``None``
            derives the seed from the request id and the engine seed.
        max_new_tokens: output tokens after which the request finishes (counting tokens
            generated before an interruption).
        stop_token_ids: tokens that finish the request (the stop token is emitted).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    max_new_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    top_k: int = 0
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise ValueError(f"SamplingParams.logprobs must be in [0, {MAX_LOGPROBS}] or None")
        if self.max_new_tokens < 1:
            raise ValueError(
                f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}"
            )

    @property
    def greedy(self) -> bool:
        """Whether tokens are chosen by argmax."""
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """A request as the gateway knows it: its prompt and the tokens generated so far.

    ``output_token_ids`` is empty for a new request; for a request resumed after a failure it
    holds what the failed worker had already streamed out, and the engine continues after it.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    output_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("RequestSpec.request_id must be non-empty")
        if not self.prompt_token_ids:
            raise ValueError(f"RequestSpec {self.request_id!r}: prompt_token_ids is empty")
        if len(self.output_token_ids) >= self.sampling.max_new_tokens:
            raise ValueError(
                f"RequestSpec {self.request_id!r}: already has {len(self.output_token_ids)} "
                f"output tokens of max_new_tokens={self.sampling.max_new_tokens}"
            )

    @property
    def token_ids(self) -> tuple[int, ...]:
        """Prompt followed by the output so far."""
        return self.prompt_token_ids + self.output_token_ids


class FinishReason(StrEnum):
    """Why a request ended."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """An output token's log probability and the most likely alternatives at its position
    (``top``: ``(token id, log probability)``, most likely first)."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """What one step produced for one request (``logprobs``: one per new token when the
    request asked for them, else empty)."""

    request_id: str
    new_token_ids: tuple[int, ...]
    num_output_tokens: int
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] = ()

    @property
    def finished(self) -> bool:
        """Whether the request ended in this step."""
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class StepStats:
    """Counters of one engine step (what the scheduler decided and what was accepted).

    ``num_rejections`` counts verifications that stopped at a rejected draft; the per-token
    acceptance rate is ``num_accepted_tokens / (num_accepted_tokens + num_rejections)``.
    """

    num_prefill_tokens: int = 0
    num_prefill_seqs: int = 0
    num_decode_seqs: int = 0
    num_verify_seqs: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_rejections: int = 0
    num_preempted: int = 0


@dataclass(frozen=True, slots=True)
class StepOutput:
    """The result of :meth:`Engine.step`."""

    outputs: tuple[RequestOutput, ...] = ()
    stats: StepStats = field(default_factory=StepStats)


@dataclass(frozen=True, slots=True, eq=False)
class Proposal:
    """K draft tokens that extend a request's history of ``base_len`` tokens.

    Attributes:
        request_id: the request on the target engine.
        base_len: number of tokens (prompt + output) the draft saw; the target drops the proposal
            unless its own history has exactly this length and ends in ``last_token_id``.
        last_token_id: the last token the draft saw.
        token_ids: the proposed tokens, in order.
        draft_probs: for sampled requests, the draft's distribution at each proposed position
            (float32, shape ``(K, vocab)``), which the rejection rule needs; ``None`` for greedy
            drafts, which the rule treats as point masses.
    """

    request_id: str
    base_len: int
    last_token_id: int
    token_ids: tuple[int, ...]
    draft_probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.draft_probs is not None and self.draft_probs.shape[0] != len(self.token_ids):
            raise ValueError(
                f"Proposal {self.request_id!r}: draft_probs has {self.draft_probs.shape[0]} rows "
                f"for {len(self.token_ids)} tokens"
            )


@dataclass(frozen=True, slots=True)
class RandomWeights:
    """Weights drawn from ``config`` and ``seed`` instead of read from disk.

    ``init_std=None`` uses a fan-in scaled init that keeps activations of order one, so random
    models give varied, peaked next-token distributions rather than near-uniform ones.
    """

    config: ModelConfig
    seed: int = 0
    init_std: float | None = None


WeightSource = str | os.PathLike[str] | RandomWeights


class Engine(abc.ABC):
    """The contract every engine backend implements.

    Engines are single-threaded state machines: the caller adds requests, calls :meth:`step`
    in a loop, and reads the new tokens from its output.
    """

    @property
    @abc.abstractmethod
    def role(self) -> ModelRole | None:
        """What the loaded weights serve as, or ``None`` when nothing is loaded."""

    @property
    @abc.abstractmethod
    def model_config(self) -> ModelConfig:
        """Architecture of the loaded model (raises :class:`NoModelLoadedError` without one)."""

    @property
    @abc.abstractmethod
    def engine_config(self) -> EngineConfig:
        """The serving knobs this engine runs with."""

    @property
    @abc.abstractmethod
    def kv_layout(self) -> KVLayout:
        """Shape and dtype of this engine's KV pages."""

    @abc.abstractmethod
    def load_weights(self, source: WeightSource, role: ModelRole = "target") -> None:
        """Load a model for ``role`` from a checkpoint directory or random weights.

        Any previously loaded model, its KV cache and its requests are dropped first.
        """

    @abc.abstractmethod
    def unload(self) -> None:
        """Free the model and its KV cache; running requests are aborted."""

    @abc.abstractmethod
    def add_request(self, spec: RequestSpec) -> None:
        """Queue a request; its prompt is prefilled in chunks by later steps."""

    @abc.abstractmethod
    def abort(self, request_id: str) -> None:
        """Drop a request and free its KV blocks (a no-op for unknown ids)."""

    @abc.abstractmethod
    def step(self) -> StepOutput:
        """Run one scheduling step: mixed prefill chunks, decodes and verifications."""

    @abc.abstractmethod
    def has_unfinished(self) -> bool:
        """Whether any request is waiting or running."""

    @abc.abstractmethod
    def export_kv(self, request_id: str, from_position: int = 0) -> list[KVPage]:
        """Pages of the request's computed KV whose end lies after ``from_position``.

        Pages start on block boundaries, so the first page returned may start before
        ``from_position``; a partial last page is exported again, longer, by a later call.
        """

    @abc.abstractmethod
    def import_kv(self, spec: RequestSpec, pages: Iterable[KVPage]) -> int:
        """Resume ``spec`` from the longest valid contiguous prefix of ``pages``.

        Pages that fail :meth:`KVPage.verify`, do not match the request's tokens, or do not
        continue the prefix are ignored, as is everything after them. The tail after the restored
        prefix is re-prefilled. Returns the number of positions restored.
        """

    @abc.abstractmethod
    def propose(self, specs: Sequence[RequestSpec], k: int) -> list[Proposal]:
        """Draft role: propose ``k`` tokens for each mirrored request in ``specs``."""

    @abc.abstractmethod
    def submit_proposals(self, proposals: Iterable[Proposal]) -> int:
        """Target role: queue proposals for verification in the next step.

        Stale proposals (the request moved on, finished, or is still prefilling) are dropped.
        Returns how many were queued.
        """

    def generate(self, specs: Iterable[RequestSpec]) -> dict[str, list[int]]:
        """Add ``specs`` and step until all finish; returns each request's output tokens."""
        outputs: dict[str, list[int]] = {}
        for spec in specs:
            self.add_request(spec)
            outputs[spec.request_id] = list(spec.output_token_ids)
        while self.has_unfinished():
            for out in self.step().outputs:
                outputs.setdefault(out.request_id, []).extend(out.new_token_ids)
        return outputs
