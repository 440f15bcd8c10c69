"""Speculative decoding: acceptance rules, the draft-side proposer and a driver loop.

A draft model proposes K tokens for a request; the target computes the K + 1 positions (the last
accepted token and the K drafts) in one forward pass and keeps the longest acceptable prefix plus
one token of its own, so every verification emits between 1 and K + 1 tokens.

- Greedy requests: a draft is accepted while it equals the target's argmax; the first mismatch is
  replaced by the target's argmax; when all K match the target adds its argmax at K + 1 (bonus).
  The output is exactly the target's greedy output.
- Sampled requests: the standard rejection rule (Leviathan et al. 2023; Chen et al. 2023). Draft
  token ``x`` drawn from ``q`` is accepted with probability ``min(1, p(x) / q(x))``; on rejection
  a token is drawn from ``max(0, p - q)`` normalized. Each emitted token is distributed exactly as
  the target's ``p``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from lumen.executor.engine.block_manager import BlockManager
from lumen.executor.engine.interface import Engine, Proposal, RequestSpec, SamplingParams
from lumen.executor.engine.sampling import STREAM_DRAFT, sample_from_probs
from lumen.executor.engine.scheduler import ChunkKind, ScheduledChunk, SchedulerOutput

if TYPE_CHECKING:
    from lumen.executor.engine.runner import ModelRunner

__all__ = [
    "DraftProposer",
    "SpeculativeRun",
    "accept_greedy",
    "accept_rejection",
    "speculative_generate",
]

# Block-manager keys of draft mirrors live in their own namespace, apart from served requests.
_MIRROR_PREFIX = "\x00draft\x00"


def accept_greedy(target_argmax: Sequence[int], draft_tokens: Sequence[int]) -> list[int]:
    """Tokens emitted by greedy verification.

    ``target_argmax[i]`` is the target's choice for the position of ``draft_tokens[i]``;
    ``target_argmax`` has one more entry (the bonus position).
    """
    if len(target_argmax) != len(draft_tokens) + 1:
        raise ValueError("target_argmax needs exactly one entry more than draft_tokens")
    out: list[int] = []
    for draft, target in zip(draft_tokens, target_argmax, strict=False):
        if draft != target:
            out.append(target)
            return out
        out.append(draft)
    out.append(target_argmax[-1])
    return out


def accept_rejection(
    target_probs: Tensor,
    draft_probs: Tensor | None,
    draft_tokens: Sequence[int],
    *,
    accept_uniforms: Sequence[float],
    residual_uniforms: Sequence[float],
    bonus_uniform: float,
) -> list[int]:
    """Tokens emitted by the rejection rule that preserves the target distribution.

    Args:
        target_probs: ``(K + 1, vocab)`` target distributions at the K draft positions and the
            bonus position.
        draft_probs: ``(K, vocab)`` distributions the drafts were drawn from; ``None`` means
            each draft was chosen deterministically (a point mass on the token).
        draft_tokens: the K proposed tokens.
        accept_uniforms: one uniform number per draft for the accept test.
        residual_uniforms: one uniform number per draft for sampling the residual.
        bonus_uniform: uniform number for the bonus token when every draft is accepted.
    """
    k = len(draft_tokens)
    if target_probs.shape[0] != k + 1:
        raise ValueError("target_probs needs K + 1 rows")
    out: list[int] = []
    for i, token in enumerate(draft_tokens):
        p = target_probs[i].double()
        if draft_probs is None:
            q = torch.zeros_like(p)
            q[token] = 1.0
        else:
            q = draft_probs[i].double()
        q_tok = float(q[token])
        # Accept with probability min(1, p/q), written without a division.
        if q_tok > 0.0 and accept_uniforms[i] * q_tok < float(p[token]):
            out.append(token)
            continue
        residual = torch.clamp(p - q, min=0.0)
        if float(residual.sum()) <= 0.0:  # p == q up to rounding: any draw from p is right
            residual = p
        out.append(sample_from_probs(residual, residual_uniforms[i]))
        return out
    out.append(sample_from_probs(target_probs[k], bonus_uniform))
    return out


@dataclass(eq=False)
class _Mirror:
    key: str
    tokens: list[int] = field(default_factory=list)
    num_computed: int = 0


class DraftProposer:
    """Keeps a mirror of each request on the draft model and proposes K tokens for it.

    A mirror holds the request's tokens and the K/V computed for them. On every call the mirror
    is synced with the request's real history: K/V of the longest common prefix is kept (draft
    tokens that the target rejected are rolled back), the new tail is prefilled in chunks, and K
    tokens are drawn one position at a time, batched over all mirrors.
    """

    def __init__(
        self,
        runner: ModelRunner,
        block_manager: BlockManager,
        *,
        max_num_batched_tokens: int,
        max_model_len: int,
        seed_of: Callable[[str, SamplingParams], int],
    ) -> None:
        self._runner = runner
        self._blocks = block_manager
        self._budget = max_num_batched_tokens
        self._max_model_len = max_model_len
        self._seed_of = seed_of
        self._mirrors: dict[str, _Mirror] = {}

    def drop(self, request_id: str) -> None:
        """Forget a mirror and free its blocks."""
        mirror = self._mirrors.pop(request_id, None)
        if mirror is not None:
            self._blocks.free(mirror.key)

    def drop_all(self) -> None:
        """Forget every mirror."""
        for request_id in list(self._mirrors):
            self.drop(request_id)

    @property
    def num_mirrors(self) -> int:
        """Requests currently mirrored."""
        return len(self._mirrors)

    def propose(self, specs: Sequence[RequestSpec], k: int) -> list[Proposal]:
        """Propose up to ``k`` tokens per request; requests that cannot get blocks are skipped."""
        if k <= 0:
            return []
        live: list[tuple[_Mirror, RequestSpec, int, int]] = []
        for spec in specs:
            history = spec.token_ids
            mirror = self._mirrors.setdefault(
                spec.request_id, _Mirror(key=_MIRROR_PREFIX + spec.request_id)
            )
            common = _common_prefix(mirror.tokens, history)
            mirror.num_computed = min(mirror.num_computed, common, len(history) - 1)
            mirror.tokens = list(history)
            self._blocks.truncate(mirror.key, mirror.num_computed)
            # The target emits one token of its own after the drafts, so drafts beyond
            # remaining - 1 could never be used.
            remaining = spec.sampling.max_new_tokens - len(spec.output_token_ids)
            count = min(k, self._max_model_len - len(history) - 1, remaining - 1)
            # Positions computed: the uncomputed history, then drafts 1..count-1.
            if count <= 0 or not self._blocks.can_allocate(mirror.key, len(history) + count - 1):
                self.drop(spec.request_id)
                continue
            self._blocks.allocate(mirror.key, len(history) + count - 1)
            live.append((mirror, spec, count, self._seed_of(spec.request_id, spec.sampling)))

        by_key = {m.key: m for m, _, _, _ in live}
        drafts: dict[str, list[int]] = {m.key: [] for m, _, _, _ in live}
        probs: dict[str, list[np.ndarray]] = {m.key: [] for m, _, _, _ in live}
        while True:
            budget = self._budget
            chunks: list[ScheduledChunk] = []
            for mirror, spec, count, seed in live:
                if len(drafts[mirror.key]) >= count or budget <= 0:
                    continue
                n = min(len(mirror.tokens) - mirror.num_computed, budget)
                start = mirror.num_computed
                end = start + n
                chunks.append(
                    ScheduledChunk(
                        request_id=mirror.key,
                        kind=ChunkKind.PREFILL if n > 1 else ChunkKind.DECODE,
                        start_position=start,
                        token_ids=tuple(mirror.tokens[start:end]),
                        block_table=self._blocks.block_table(mirror.key),
                        sample=end == len(mirror.tokens),
                        sampling=spec.sampling,
                        seed=seed,
                    )
                )
                budget -= n
            if not chunks:
                break
            result = self._runner.execute(
                SchedulerOutput(0, tuple(chunks)), want_probs=True, stream=STREAM_DRAFT
            )
            for chunk in chunks:
                mirror = by_key[chunk.request_id]
                mirror.num_computed = chunk.end_position
                if chunk.sample:
                    (token,) = result.sampled[chunk.request_id]
                    mirror.tokens.append(token)
                    drafts[chunk.request_id].append(token)
                    if chunk.request_id in result.probs:
                        probs[chunk.request_id].append(result.probs[chunk.request_id])

        proposals: list[Proposal] = []
        for mirror, spec, _, _ in live:
            history = spec.token_ids
            rows = probs[mirror.key]
            proposals.append(
                Proposal(
                    request_id=spec.request_id,
                    base_len=len(history),
                    last_token_id=history[-1],
                    token_ids=tuple(drafts[mirror.key]),
                    draft_probs=np.stack(rows) if rows else None,
                )
            )
        return proposals


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class SpeculativeRun:
    """Outputs and counters of :func:`speculative_generate`."""

    outputs: dict[str, list[int]]
    steps: int = 0
    proposed_tokens: int = 0
    accepted_tokens: int = 0
    rejections: int = 0
    verify_seqs: int = 0
    decode_seqs: int = 0
    mixed_steps: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Per-token acceptance: the chance a draft is accepted given its predecessors were.

        Each verification tests drafts until the first rejection, so this is accepted over
        (accepted + rejections); 0 when nothing was verified.
        """
        tested = self.accepted_tokens + self.rejections
        return self.accepted_tokens / tested if tested else 0.0

    @property
    def accepted_fraction(self) -> float:
        """Accepted over proposed draft tokens (0 when nothing was proposed)."""
        return self.accepted_tokens / self.proposed_tokens if self.proposed_tokens else 0.0

    @property
    def tokens_per_verification(self) -> float:
        """Mean tokens a verification emitted (accepted drafts plus the target's own)."""
        if not self.verify_seqs:
            return 0.0
        return (self.accepted_tokens + self.verify_seqs) / self.verify_seqs


def speculative_generate(
    target: Engine,
    draft: Engine,
    specs: Iterable[RequestSpec],
    k: int,
    *,
    mirrored: Callable[[str], bool] | None = None,
) -> SpeculativeRun:
    """Serve ``specs`` on ``target`` with proposals from ``draft`` until all finish.

    Like LUMEN's Assisting phase: the caller (here this loop, in the cluster the gateway) holds
    each request's token history and is the source of truth; before each target step the draft
    proposes for the mirrored requests (all, unless ``mirrored`` says otherwise) that are past
    their prefill, and the target verifies those while decoding the others in the same step.
    """
    specs = list(specs)
    by_id = {spec.request_id: spec for spec in specs}
    run = SpeculativeRun(outputs={spec.request_id: list(spec.output_token_ids) for spec in specs})
    for spec in specs:
        target.add_request(spec)
    active = set(by_id)
    while target.has_unfinished():
        ready = [
            RequestSpec(
                request_id,
                by_id[request_id].prompt_token_ids,
                by_id[request_id].sampling,
                tuple(run.outputs[request_id]),
            )
            for request_id in sorted(active)
            if run.outputs[request_id] and (mirrored is None or mirrored(request_id))
        ]
        if ready:
            target.submit_proposals(draft.propose(ready, k))
        step = target.step()
        run.steps += 1
        stats = step.stats
        run.proposed_tokens += stats.num_draft_tokens
        run.accepted_tokens += stats.num_accepted_tokens
        run.rejections += stats.num_rejections
        run.verify_seqs += stats.num_verify_seqs
        run.decode_seqs += stats.num_decode_seqs
        run.mixed_steps += int(stats.num_verify_seqs > 0 and stats.num_decode_seqs > 0)
        for out in step.outputs:
            run.outputs[out.request_id].extend(out.new_token_ids)
            if out.finished:
                active.discard(out.request_id)
                draft.abort(out.request_id)
    return run
