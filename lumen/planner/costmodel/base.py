"""The cost-model interface shared by the planner, the simulator and the analysis.

A :class:`Deployment` fixes what one worker is (a model replica on ``tensor_parallel`` GPUs of one
hardware type, plus its I/O bandwidths). A :class:`CostModel` turns work on that worker into
seconds: one engine iteration (:class:`BatchShape`), KV restore and transfer, model reload.
:class:`DeploymentCosts` implements the parts that follow from bandwidths alone, so every cost
model moves bytes the same way and differs only in how it times an iteration.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from lumen.planner.costmodel.deployment import Deployment

__all__ = [
    "BatchShape",
    "CostModel",
    "DeploymentCosts",
    "NoDraftModelError",
    "ReloadTimeline",
]


class NoDraftModelError(LookupError):
    """Asked for a draft model's cost on a cost model that was built without one."""


@dataclass(frozen=True, slots=True)
class BatchShape:
    """The work of one engine iteration under Sarathi-Serve style mixed batching.

    Attributes:
        prefill_tokens: new prompt tokens computed this step, summed over prefill chunks.
        prefill_attention: attended query-key pairs of the prefill chunks,
            ``sum(chunk * (context_before + (chunk + 1) / 2))`` (causal within a chunk).
        prefill_seqs: number of prefill chunks. Each is charged one lm_head row although only
            a prompt's last chunk needs logits (an over-count of ``2 * hidden * vocab`` FLOPs per
            non-final chunk, well under 1 % of a chunk's cost).
        decode_seqs: sequences in the decode (or speculative verification) phase.
        decode_context_tokens: KV tokens already cached for those sequences, summed.
        decode_query_tokens: positions computed for them, summed: ``decode_seqs`` for plain
            decoding, ``K + 1`` per sequence verifying ``K`` draft tokens.
    """

    prefill_tokens: int = 0
    prefill_attention: int = 0
    prefill_seqs: int = 0
    decode_seqs: int = 0
    decode_context_tokens: int = 0
    decode_query_tokens: int = 0

    def __post_init__(self) -> None:
        if (
            min(
                self.prefill_tokens,
                self.prefill_attention,
                self.prefill_seqs,
                self.decode_seqs,
                self.decode_context_tokens,
                self.decode_query_tokens,
            )
            < 0
        ):
            raise ValueError(f"BatchShape counts must be non-negative: {self}")
        if (self.prefill_tokens == 0) != (self.prefill_seqs == 0) or (
            self.prefill_seqs > self.prefill_tokens
        ):
            raise ValueError(f"BatchShape needs 1 <= prefill_seqs <= prefill_tokens: {self}")
        if self.decode_query_tokens < self.decode_seqs or (
            self.decode_seqs == 0 and (self.decode_query_tokens or self.decode_context_tokens)
        ):
            raise ValueError(f"BatchShape needs decode_query_tokens >= decode_seqs: {self}")

    @classmethod
    def prefill(cls, chunk_tokens: int, context_tokens: int = 0) -> BatchShape:
        """One prefill chunk of ``chunk_tokens`` new tokens after ``context_tokens`` cached ones."""
        return cls.build(prefill_chunks=((chunk_tokens, context_tokens),))

    @classmethod
    def decode(
        cls, batch_size: int, context_tokens: int, query_tokens_per_seq: int = 1
    ) -> BatchShape:
        """A decode step of ``batch_size`` sequences; ``context_tokens`` is the batch total."""
        if batch_size == 0:
            return cls()
        return cls(
            decode_seqs=batch_size,
            decode_context_tokens=context_tokens,
            decode_query_tokens=batch_size * query_tokens_per_seq,
        )

    @classmethod
    def build(
        cls,
        prefill_chunks: Iterable[tuple[int, int]] = (),
        decode_contexts: Iterable[int] = (),
        query_tokens_per_seq: int = 1,
    ) -> BatchShape:
        """A mixed batch from per-request parts.

        Args:
            prefill_chunks: ``(chunk_tokens, context_before)`` per prefill chunk.
            decode_contexts: cached KV length of each decoding sequence.
            query_tokens_per_seq: positions per decoding sequence (``K + 1`` when verifying).
        """
        tokens = pairs = chunks = 0
        for chunk, context in prefill_chunks:
            if chunk < 1 or context < 0:
                raise ValueError(f"bad prefill chunk (tokens={chunk}, context={context})")
            tokens += chunk
            pairs += chunk * context + chunk * (chunk + 1) // 2
            chunks += 1
        contexts = list(decode_contexts)
        if query_tokens_per_seq < 1:
            raise ValueError(f"query_tokens_per_seq must be >= 1, got {query_tokens_per_seq}")
        return cls(
            prefill_tokens=tokens,
            prefill_attention=pairs,
            prefill_seqs=chunks,
            decode_seqs=len(contexts),
            decode_context_tokens=sum(contexts),
            decode_query_tokens=len(contexts) * query_tokens_per_seq,
        )

    def __add__(self, other: BatchShape) -> BatchShape:
        """Both batches' work in one iteration."""
        return BatchShape(
            self.prefill_tokens + other.prefill_tokens,
            self.prefill_attention + other.prefill_attention,
            self.prefill_seqs + other.prefill_seqs,
            self.decode_seqs + other.decode_seqs,
            self.decode_context_tokens + other.decode_context_tokens,
            self.decode_query_tokens + other.decode_query_tokens,
        )

    @property
    def is_empty(self) -> bool:
        """No token is computed (such an iteration costs nothing: it is not run)."""
        return self.prefill_tokens == 0 and self.decode_query_tokens == 0

    @property
    def total_tokens(self) -> int:
        """Token positions pushed through the model."""
        return self.prefill_tokens + self.decode_query_tokens

    @property
    def prefill_context_tokens(self) -> float:
        """Cached tokens the prefill chunks attend to, summed over chunks.

        Recovered from ``prefill_attention``; exact when all chunks have the same length.
        """
        if self.prefill_seqs == 0:
            return 0.0
        mean_chunk = self.prefill_tokens / self.prefill_seqs
        per_token = self.prefill_attention / self.prefill_tokens - (mean_chunk + 1.0) / 2.0
        return max(0.0, per_token * self.prefill_seqs)

    @property
    def decode_attention(self) -> float:
        """Attended query-key pairs of the decode part (every query position reads the context)."""
        if self.decode_seqs == 0:
            return 0.0
        return self.decode_context_tokens * self.decode_query_tokens / self.decode_seqs


@dataclass(frozen=True, slots=True)
class ReloadTimeline:
    """Phases of a full target-model reload after a failure, run one after the other."""

    ssd_to_host_s: float
    host_to_gpu_s: float

    @property
    def total_s(self) -> float:
        """Time from reload start until the worker can serve again."""
        return self.ssd_to_host_s + self.host_to_gpu_s


@dataclass(frozen=True, slots=True)
class ProgressiveTimeline:
    """A progressive reload, in seconds from the failure: the draft model serves from
    ``draft_ready_s`` until the target weights are in host memory (``target_in_host_s``); the
    worker serves the target from ``serving_s``."""

    draft_ready_s: float
    target_in_host_s: float
    serving_s: float

    @property
    def assist_window_s(self) -> float:
        """How long the draft can assist a survivor."""
        return max(0.0, self.target_in_host_s - self.draft_ready_s)


@runtime_checkable
class CostModel(Protocol):
    """Seconds for the work of one worker; all times in seconds, all sizes in bytes."""

    @property
    def deployment(self) -> Deployment:
        """The worker being modelled."""
        ...

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes per token of the target model."""
        ...

    @property
    def weight_bytes(self) -> int:
        """Checkpoint bytes of the target model."""
        ...

    def batch_time(self, shape: BatchShape) -> float:
        """Duration of one engine iteration doing ``shape``'s work (0 for an empty batch)."""
        ...

    def prefill_time(self, chunk_tokens: int, context_tokens: int = 0) -> float:
        """One iteration prefilling ``chunk_tokens`` new tokens after ``context_tokens`` cached."""
        ...

    def decode_step_time(
        self, batch_size: int, context_tokens: int, query_tokens_per_seq: int = 1
    ) -> float:
        """One decode iteration; ``context_tokens`` is the KV length summed over the batch."""
        ...

    def kv_restore_time(self, tokens: int) -> float:
        """Copying ``tokens`` tokens of KV from host memory into the worker's GPUs."""
        ...

    def kv_transfer_time(self, tokens: int) -> float:
        """Sending ``tokens`` tokens of KV to another worker over the network."""
        ...

    def reload_timeline(self) -> ReloadTimeline:
        """Full target reload: SSD -> host, then host -> GPU."""
        ...

    def draft_load_time(self) -> float:
        """Loading the draft model SSD -> host -> GPU; raises NoDraftModelError without one."""
        ...

    def draft_load_timeline(self) -> ReloadTimeline:
        """The draft's load in phases (SSD -> host, host -> GPU); NoDraftModelError without one."""
        ...

    def checkpoint_stream_bytes(self, tokens: int) -> int:
        """Bytes streamed to a holder to checkpoint ``tokens`` tokens of KV."""
        ...

    def gpu_kv_capacity_tokens(self) -> int:
        """Tokens of KV cache the worker's GPUs hold."""
        ...

    def draft_cost_model(self) -> CostModel | None:
        """The draft model on the same hardware (for proposal step times), or None."""
        ...


def _check_tokens(tokens: int) -> None:
    if tokens < 0:
        raise ValueError(f"token count must be non-negative, got {tokens}")


class DeploymentCosts:
    """The cost-model methods that follow from a deployment's sizes and bandwidths alone.

    Data movement is modelled as pure bandwidth (no per-transfer latency): KV pages move in large
    streams, and seconds-long reloads dwarf any setup cost.
    """

    def __init__(self, deployment: Deployment, draft_deployment: Deployment | None) -> None:
        if draft_deployment is not None and draft_deployment.hardware != deployment.hardware:
            raise ValueError("the draft model must run on the target's hardware")
        self._deployment = deployment
        self._draft_deployment = draft_deployment
        kv = deployment.model.kv_bytes_per_token
        self._restore_s_per_token = kv / deployment.worker_host_to_gpu_bandwidth
        self._transfer_s_per_token = kv / deployment.effective_network_bandwidth

    @property
    def deployment(self) -> Deployment:
        """The worker being modelled."""
        return self._deployment

    @property
    def draft_deployment(self) -> Deployment | None:
        """Where the draft model runs during recovery, if there is one."""
        return self._draft_deployment

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes per token of the target model."""
        return self._deployment.model.kv_bytes_per_token

    @property
    def weight_bytes(self) -> int:
        """Checkpoint bytes of the target model."""
        return self._deployment.model.weight_bytes

    def kv_restore_time(self, tokens: int) -> float:
        """Copying ``tokens`` tokens of KV from host memory into the worker's GPUs."""
        _check_tokens(tokens)
        return tokens * self._restore_s_per_token

    def kv_transfer_time(self, tokens: int) -> float:
        """Sending ``tokens`` tokens of KV to another worker over the network."""
        _check_tokens(tokens)
        return tokens * self._transfer_s_per_token

    def reload_timeline(self) -> ReloadTimeline:
        """Full target reload: SSD -> host, then host -> GPU."""
        return _load_timeline(self._deployment)

    def draft_load_time(self) -> float:
        """Loading the draft model SSD -> host -> GPU.

        Raises:
            NoDraftModelError: the cost model was built without a draft model.
        """
        return self.draft_load_timeline().total_s

    def draft_load_timeline(self) -> ReloadTimeline:
        """The draft's load in phases: SSD -> host, then host -> GPU.

        Raises:
            NoDraftModelError: the cost model was built without a draft model.
        """
        if self._draft_deployment is None:
            raise NoDraftModelError(
                f"no draft model configured for {self._deployment.model.name}; "
                "pass draft= when building the cost model"
            )
        return _load_timeline(self._draft_deployment)

    def checkpoint_stream_bytes(self, tokens: int) -> int:
        """Bytes streamed to a holder to checkpoint ``tokens`` tokens of KV."""
        _check_tokens(tokens)
        return tokens * self._deployment.model.kv_bytes_per_token

    def gpu_kv_capacity_tokens(self) -> int:
        """Tokens of KV cache the worker's GPUs hold."""
        return self._deployment.gpu_kv_capacity_tokens


def _load_timeline(deployment: Deployment) -> ReloadTimeline:
    size = deployment.model.weight_bytes
    return ReloadTimeline(
        ssd_to_host_s=size / deployment.effective_ssd_bandwidth,
        host_to_gpu_s=size / deployment.worker_host_to_gpu_bandwidth,
    )


def progressive_timeline(cost: CostModel, parallel: bool = True) -> ProgressiveTimeline:
    """When a recovering worker's draft serves and its target arrives (docs/simulator-model.md).

    A checkpoint is read from one drive at the profile's per-drive bandwidth. ``parallel``: the
    draft and the target are read at the same time, from separate drives when the worker has
    two or more (neither slows the other), or sharing its one drive equally until the draft is
    read. Otherwise the draft is loaded first and the target read after it. The draft is copied
    to the GPUs as soon as it is read; the target follows it once it is in host memory.
    """
    target = cost.reload_timeline()
    draft = cost.draft_load_timeline()
    if not parallel:
        ready = draft.total_s
        in_host = ready + target.ssd_to_host_s
        return ProgressiveTimeline(ready, in_host, in_host + target.host_to_gpu_s)
    if cost.deployment.hardware.ssd_drives >= 2:
        read, in_host = draft.ssd_to_host_s, target.ssd_to_host_s
    else:  # one drive at half speed each until the draft is read
        read = 2.0 * draft.ssd_to_host_s
        if target.ssd_to_host_s <= draft.ssd_to_host_s:
            in_host = 2.0 * target.ssd_to_host_s
        else:
            in_host = target.ssd_to_host_s + draft.ssd_to_host_s
    ready = read + draft.host_to_gpu_s
    return ProgressiveTimeline(ready, in_host, max(in_host, ready) + target.host_to_gpu_s)
