"""Continuous batching with chunked prefill (plain Python, no torch).

Each step the scheduler emits a :class:`SchedulerOutput` record saying which request computes
which token positions; the model runner executes it and returns a :class:`RunnerOutput`; the
scheduler then updates its requests from that output. Batching, chunking, preemption and KV block
accounting can therefore be tested without a model.

Policy (Sarathi-Serve style, FCFS):
1. Running requests first, in admission order. A request with one uncomputed token decodes it,
   or verifies ``1 + K`` positions when a fresh draft proposal is queued for it; a request with
   more uncomputed tokens (prompt, re-prefilled tail, recompute after preemption) gets a prefill
   chunk as large as the step's remaining token budget allows.
2. When a running request needs a KV block and none is free, the most recently admitted request
   is preempted: its blocks are freed and it is recomputed later. Sampling draws depend only on
   ``(seed, position)``, so recomputation reproduces its tokens exactly.
3. Waiting requests are admitted in order while budget, batch slots and blocks last, and only in
   steps that preempted nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from lumen.executor.engine.block_manager import BlockManager
from lumen.executor.engine.interface import (
    FinishReason,
    Proposal,
    RequestOutput,
    RequestSpec,
    SamplingParams,
    TokenLogprob,
)

__all__ = [
    "ChunkKind",
    "RunnerOutput",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "SeqStatus",
    "Sequence",
    "StepUpdate",
]


class ChunkKind(StrEnum):
    """What a scheduled chunk computes."""

    PREFILL = "prefill"
    DECODE = "decode"
    VERIFY = "verify"


class SeqStatus(StrEnum):
    """Where a request is in the scheduler."""

    WAITING = "waiting"
    RUNNING = "running"


@dataclass(eq=False)
class Sequence:
    """Scheduler state of one request.

    ``token_ids`` is the prompt followed by every output token; positions ``< num_computed``
    have their K/V in the cache. The last token is never computed until the next step feeds it.
    """

    request_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    sampling: SamplingParams
    seed: int
    num_computed: int = 0
    status: SeqStatus = SeqStatus.WAITING
    proposal: Proposal | None = None

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens."""
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        """Output tokens so far (including those generated before a restore)."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed(self) -> int:
        """Tokens whose K/V still have to be computed."""
        return len(self.token_ids) - self.num_computed


@dataclass(frozen=True, slots=True, eq=False)
class ScheduledChunk:
    """Positions ``[start_position, start_position + len(token_ids))`` of one request.

    For ``VERIFY`` chunks ``token_ids`` is the last accepted token followed by the K draft
    tokens, and logits of all ``K + 1`` positions are used; otherwise, when ``sample`` is set,
    the logits of the last position are sampled.
    """

    request_id: str
    kind: ChunkKind
    start_position: int
    token_ids: tuple[int, ...]
    block_table: tuple[int, ...]
    sample: bool
    sampling: SamplingParams
    seed: int
    draft_probs: np.ndarray | None = None

    @property
    def num_tokens(self) -> int:
        """Positions computed."""
        return len(self.token_ids)

    @property
    def end_position(self) -> int:
        """One past the last position computed."""
        return self.start_position + len(self.token_ids)

    @property
    def draft_token_ids(self) -> tuple[int, ...]:
        """The proposal being verified (empty unless ``kind`` is ``VERIFY``)."""
        return self.token_ids[1:] if self.kind is ChunkKind.VERIFY else ()


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """The per-step record: what to compute, and who was preempted to make room."""

    step_id: int
    chunks: tuple[ScheduledChunk, ...]
    preempted: tuple[str, ...] = ()

    @property
    def num_batched_tokens(self) -> int:
        """Positions computed in this step."""
        return sum(c.num_tokens for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to compute."""
        return not self.chunks


@dataclass(frozen=True, slots=True)
class RunnerOutput:
    """What the runner produced: new tokens per sampled request.

    For ``VERIFY`` chunks ``sampled`` holds the accepted draft tokens followed by one token from
    the target (the correction or the bonus token). ``probs`` holds sampling distributions when
    the caller asked for them (a draft engine needs them for the rejection rule).
    """

    sampled: Mapping[str, tuple[int, ...]]
    probs: Mapping[str, np.ndarray] = field(default_factory=dict)
    logprobs: Mapping[str, tuple[TokenLogprob, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepUpdate:
    """What :meth:`Scheduler.update` applied.

    Attributes:
        outputs: new tokens and finish reasons, per request that produced any.
        num_accepted: draft tokens accepted over all verifications.
        num_rejections: verifications that stopped at a rejected draft (the rest accepted all),
            so ``num_accepted / (num_accepted + num_rejections)`` estimates the per-token
            acceptance rate.
    """

    outputs: tuple[RequestOutput, ...]
    num_accepted: int = 0
    num_rejections: int = 0


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Limits of one step."""

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int


class Scheduler:
    """FCFS continuous-batching scheduler over a :class:`BlockManager`."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self._requests: dict[str, Sequence] = {}
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._step_id = 0

    # ---- request lifecycle -------------------------------------------------------------------

    def add(self, spec: RequestSpec, seed: int, num_computed: int = 0) -> Sequence:
        """Queue ``spec``; ``num_computed`` positions must already be in its allocated blocks.

        Raises:
            ValueError: duplicate id, a context over ``max_model_len``, or a request that could
                never fit in the KV cache even alone.
        """
        if spec.request_id in self._requests:
            raise ValueError(f"request {spec.request_id!r} already exists")
        tokens = list(spec.token_ids)
        limit = self.config.max_model_len
        if len(tokens) >= limit:
            raise ValueError(
                f"request {spec.request_id!r}: {len(tokens)} tokens reach max_model_len={limit}"
            )
        # Positions a request may ever compute: up to its final length minus the last token.
        longest = min(len(spec.prompt_token_ids) + spec.sampling.max_new_tokens, limit)
        if self.block_manager.blocks_for(longest) > self.block_manager.num_blocks:
            raise ValueError(
                f"request {spec.request_id!r} needs up to {longest} KV slots, the cache has "
                f"{self.block_manager.num_blocks * self.block_manager.block_size}"
            )
        if not 0 <= num_computed < len(tokens):
            raise ValueError(f"num_computed={num_computed} must lie in [0, {len(tokens)})")
        if num_computed and len(self.block_manager.block_table(spec.request_id)) < (
            self.block_manager.blocks_for(num_computed)
        ):
            raise ValueError(f"request {spec.request_id!r}: restored positions have no blocks")
        seq = Sequence(
            request_id=spec.request_id,
            token_ids=tokens,
            num_prompt_tokens=len(spec.prompt_token_ids),
            sampling=spec.sampling,
            seed=seed,
            num_computed=num_computed,
        )
        self._requests[seq.request_id] = seq
        self._waiting.append(seq)
        return seq

    def abort(self, request_id: str) -> bool:
        """Drop a request and free its blocks. Returns whether it existed."""
        seq = self._requests.pop(request_id, None)
        if seq is None:
            self.block_manager.free(request_id)
            return False
        if seq.status is SeqStatus.RUNNING:
            self._running.remove(seq)
        else:
            self._waiting.remove(seq)
        self.block_manager.free(request_id)
        return True

    def get(self, request_id: str) -> Sequence | None:
        """The request's state, or ``None`` when unknown or finished."""
        return self._requests.get(request_id)

    def has_unfinished(self) -> bool:
        """Whether any request waits or runs."""
        return bool(self._requests)

    @property
    def num_running(self) -> int:
        """Requests admitted to the running batch."""
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        """Requests waiting for admission."""
        return len(self._waiting)

    def add_proposal(self, proposal: Proposal) -> bool:
        """Queue a draft proposal for the next step; returns False (dropped) when stale."""
        seq = self._requests.get(proposal.request_id)
        if (
            seq is None
            or seq.status is not SeqStatus.RUNNING
            or seq.num_uncomputed != 1
            or proposal.base_len != seq.num_tokens
            or proposal.last_token_id != seq.token_ids[-1]
            or not proposal.token_ids
        ):
            return False
        seq.proposal = proposal
        return True

    # ---- one step ----------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Decide the next step."""
        self._step_id += 1
        budget = self.config.max_num_batched_tokens
        chunks: list[ScheduledChunk] = []
        preempted: list[str] = []
        index = 0
        while index < len(self._running) and budget > 0:
            seq = self._running[index]
            kind, num_tokens, draft = self._plan(seq, budget)
            while not self.block_manager.can_allocate(
                seq.request_id, seq.num_computed + num_tokens
            ):
                victim = self._running[-1]
                self._preempt(victim)
                preempted.append(victim.request_id)
                if victim is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                break
            chunks.append(self._make_chunk(seq, kind, num_tokens, draft))
            budget -= num_tokens
            index += 1

        while (
            not preempted
            and self._waiting
            and budget > 0
            and len(self._running) < self.config.max_num_seqs
        ):
            seq = self._waiting[0]
            num_tokens = min(seq.num_uncomputed, budget)
            if not self.block_manager.can_allocate(seq.request_id, seq.num_computed + num_tokens):
                break
            self._waiting.popleft()
            seq.status = SeqStatus.RUNNING
            self._running.append(seq)
            kind = ChunkKind.PREFILL if seq.num_uncomputed > 1 else ChunkKind.DECODE
            chunks.append(self._make_chunk(seq, kind, num_tokens, None))
            budget -= num_tokens
        return SchedulerOutput(self._step_id, tuple(chunks), tuple(preempted))

    def update(self, scheduled: SchedulerOutput, result: RunnerOutput) -> StepUpdate:
        """Apply the runner's output to the requests."""
        outputs: list[RequestOutput] = []
        accepted_total = 0
        rejections = 0
        for chunk in scheduled.chunks:
            seq = self._requests.get(chunk.request_id)
            if seq is None or seq.status is not SeqStatus.RUNNING:
                continue  # aborted between schedule and update
            new_tokens: tuple[int, ...] = ()
            if chunk.kind is ChunkKind.VERIFY:
                new_tokens = result.sampled[chunk.request_id]
                accepted = len(new_tokens) - 1
                accepted_total += accepted
                rejections += int(accepted < chunk.num_tokens - 1)
                # K/V is valid for the fed token and the accepted drafts only.
                seq.num_computed = chunk.start_position + 1 + accepted
                self.block_manager.truncate(seq.request_id, seq.num_computed)
            else:
                seq.num_computed = chunk.end_position
                if chunk.sample:
                    new_tokens = result.sampled[chunk.request_id]
            emitted, reason = self._append(seq, new_tokens)
            if emitted or reason is not None:
                logprobs = result.logprobs.get(chunk.request_id, ())[: len(emitted)]
                outputs.append(
                    RequestOutput(seq.request_id, emitted, seq.num_output_tokens, reason, logprobs)
                )
            if reason is not None:
                self._finish(seq)
        return StepUpdate(tuple(outputs), accepted_total, rejections)

    # ---- helpers -----------------------------------------------------------------------------

    def _plan(self, seq: Sequence, budget: int) -> tuple[ChunkKind, int, Proposal | None]:
        if seq.num_uncomputed > 1:
            return ChunkKind.PREFILL, min(seq.num_uncomputed, budget), None
        proposal, seq.proposal = seq.proposal, None
        if proposal is not None and proposal.base_len == seq.num_tokens:
            remaining = seq.sampling.max_new_tokens - seq.num_output_tokens
            room = self.config.max_model_len - seq.num_tokens
            # Never verify more drafts than could be emitted: outputs stay within the limits.
            k = min(len(proposal.token_ids), remaining - 1, room - 1, budget - 1)
            if k > 0:
                return ChunkKind.VERIFY, 1 + k, proposal
        return ChunkKind.DECODE, 1, None

    def _make_chunk(
        self, seq: Sequence, kind: ChunkKind, num_tokens: int, proposal: Proposal | None
    ) -> ScheduledChunk:
        start = seq.num_computed
        table = self.block_manager.allocate(seq.request_id, start + num_tokens)
        probs: np.ndarray | None = None
        if kind is ChunkKind.VERIFY and proposal is not None:
            k = num_tokens - 1
            tokens = (seq.token_ids[-1], *proposal.token_ids[:k])
            if proposal.draft_probs is not None:
                probs = proposal.draft_probs[:k]
        else:
            tokens = tuple(seq.token_ids[start : start + num_tokens])
        return ScheduledChunk(
            request_id=seq.request_id,
            kind=kind,
            start_position=start,
            token_ids=tokens,
            block_table=table,
            sample=kind is not ChunkKind.PREFILL or start + num_tokens == seq.num_tokens,
            sampling=seq.sampling,
            seed=seq.seed,
            draft_probs=probs,
        )

    def _append(
        self, seq: Sequence, tokens: tuple[int, ...]
    ) -> tuple[tuple[int, ...], FinishReason | None]:
        emitted: list[int] = []
        for token in tokens:
            seq.token_ids.append(token)
            emitted.append(token)
            if token in seq.sampling.stop_token_ids:
                return tuple(emitted), FinishReason.STOP
            if (
                seq.num_output_tokens >= seq.sampling.max_new_tokens
                or seq.num_tokens >= self.config.max_model_len
            ):
                return tuple(emitted), FinishReason.LENGTH
        return tuple(emitted), None

    def _preempt(self, seq: Sequence) -> None:
        self._running.remove(seq)
        self.block_manager.free(seq.request_id)
        seq.num_computed = 0
        seq.proposal = None
        seq.status = SeqStatus.WAITING
        self._waiting.appendleft(seq)

    def _finish(self, seq: Sequence) -> None:
        self._running.remove(seq)
        del self._requests[seq.request_id]
        self.block_manager.free(seq.request_id)
