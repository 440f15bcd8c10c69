"""The model runner: executes a :class:`SchedulerOutput` on the model and samples.

It owns the only device state of the engine, the KV cache, a tensor of shape
``(layers, 2, num_blocks * block_size, num_kv_heads, head_dim)``: block ``b`` is the slot range
``[b * block_size, (b + 1) * block_size)``, so one KV page is one contiguous slice per layer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lumen.executor.engine.interface import TokenLogprob
from lumen.executor.engine.model import AttentionMetadata, ChunkAttention, Qwen3ForCausalLM
from lumen.executor.engine.sampling import (
    STREAM_ACCEPT,
    STREAM_SAMPLE,
    processed_probs,
    sample_from_probs,
    uniform,
)
from lumen.executor.engine.scheduler import ChunkKind, RunnerOutput, ScheduledChunk, SchedulerOutput
from lumen.executor.engine.speculative import accept_greedy, accept_rejection

__all__ = ["ModelRunner", "PreparedBatch"]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Model inputs of one step: the flat batch and where to read logits."""

    input_ids: Tensor
    positions: Tensor
    meta: AttentionMetadata
    logit_rows: Tensor


class ModelRunner:
    """Runs the model over scheduled chunks and turns logits into tokens."""

    def __init__(
        self,
        model: Qwen3ForCausalLM,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        config = model.config
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.device = device
        self.dtype = dtype
        self.groups = config.num_query_groups
        # Zero-filled rather than empty: unwritten slots are never read, but zeros keep stray
        # NaNs out of any debugging dump of the cache.
        self.kv_cache = torch.zeros(
            (
                config.num_hidden_layers,
                2,
                num_blocks * block_size,
                config.num_key_value_heads,
                config.head_dim,
            ),
            dtype=dtype,
            device=device,
        )
        # A byte view of the CPU cache (shares its memory; works for bfloat16, which numpy
        # lacks) for page export and import without going through torch per page.
        self._host_bytes: np.ndarray | None = (
            self.kv_cache.view(torch.uint8).numpy() if device.type == "cpu" else None
        )

    # ---- forward and sampling ----------------------------------------------------------------

    @torch.inference_mode()
    def execute(
        self, scheduled: SchedulerOutput, *, want_probs: bool = False, stream: int = STREAM_SAMPLE
    ) -> RunnerOutput:
        """Compute the chunks' K/V and logits; sample where the chunks ask for it.

        ``stream`` selects the random stream of plain samples (a draft uses its own, so that
        its draws stay independent of the target's). With ``want_probs`` the sampling
        distribution of each sampled non-greedy chunk is returned too.
        """
        if scheduled.is_empty:
            return RunnerOutput(sampled={})
        batch = self.prepare(scheduled)
        hidden = self.model.forward(batch.input_ids, batch.positions, self.kv_cache, batch.meta)
        if batch.logit_rows.numel() == 0:
            return RunnerOutput(sampled={})
        logits = self.model.compute_logits(hidden.index_select(0, batch.logit_rows)).cpu()
        return self._sample(scheduled.chunks, logits, want_probs, stream)

    def prepare(self, scheduled: SchedulerOutput) -> PreparedBatch:
        """Flatten the chunks into model inputs and paged-attention metadata."""
        ids: list[int] = []
        positions: list[Tensor] = []
        slots: list[Tensor] = []
        chunk_meta: list[ChunkAttention] = []
        logit_rows: list[int] = []
        offsets = torch.arange(self.block_size)
        for chunk in scheduled.chunks:
            q_start = len(ids)
            ids.extend(chunk.token_ids)
            start, end = chunk.start_position, chunk.end_position
            table = torch.tensor(chunk.block_table[: -(-end // self.block_size)])
            key_slots = (table[:, None] * self.block_size + offsets).reshape(-1)[:end]
            slots.append(key_slots[start:end])
            q_pos = torch.arange(start, end)
            positions.append(q_pos)
            mask = None
            if end - start > 1:
                mask = (torch.arange(end)[None, :] <= q_pos[:, None]).repeat(self.groups, 1)
                mask = mask.to(self.device)
            chunk_meta.append(ChunkAttention(q_start, len(ids), key_slots.to(self.device), mask))
            if chunk.kind is ChunkKind.VERIFY:
                logit_rows.extend(range(q_start, len(ids)))
            elif chunk.sample:
                logit_rows.append(len(ids) - 1)
        return PreparedBatch(
            input_ids=torch.tensor(ids, device=self.device),
            positions=torch.cat(positions).to(self.device),
            meta=AttentionMetadata(torch.cat(slots).to(self.device), tuple(chunk_meta)),
            logit_rows=torch.tensor(logit_rows, dtype=torch.long, device=self.device),
        )

    def _sample(
        self,
        chunks: tuple[ScheduledChunk, ...],
        logits: Tensor,
        want_probs: bool,
        stream: int,
    ) -> RunnerOutput:
        argmax = logits.argmax(dim=-1).tolist()
        sampled: dict[str, tuple[int, ...]] = {}
        probs_out: dict[str, np.ndarray] = {}
        row = 0
        for chunk in chunks:
            params = chunk.sampling
            if chunk.kind is ChunkKind.VERIFY:
                k = chunk.num_tokens - 1
                drafts = chunk.draft_token_ids
                if params.greedy:
                    tokens = accept_greedy(argmax[row : row + k + 1], drafts)
                else:
                    # The first draft occupies position start + 1; draws are keyed by position.
                    first = chunk.start_position + 1
                    target = processed_probs(
                        logits[row : row + k + 1], params.temperature, params.top_p, params.top_k
                    )
                    q = None if chunk.draft_probs is None else torch.from_numpy(chunk.draft_probs)
                    tokens = accept_rejection(
                        target,
                        q,
                        drafts,
                        accept_uniforms=[
                            uniform(chunk.seed, first + i, STREAM_ACCEPT, 0) for i in range(k)
                        ],
                        residual_uniforms=[
                            uniform(chunk.seed, first + i, STREAM_ACCEPT, 1) for i in range(k)
                        ],
                        bonus_uniform=uniform(chunk.seed, first + k, STREAM_SAMPLE, 0),
                    )
                sampled[chunk.request_id] = tuple(tokens)
                row += k + 1
            elif chunk.sample:
                if params.greedy:
                    sampled[chunk.request_id] = (argmax[row],)
                else:
                    p = processed_probs(logits[row], params.temperature, params.top_p, params.top_k)
                    u = uniform(chunk.seed, chunk.end_position, stream, 0)
                    sampled[chunk.request_id] = (sample_from_probs(p, u),)
                    if want_probs:
                        probs_out[chunk.request_id] = p.numpy()
                row += 1
        return RunnerOutput(
            sampled=sampled, probs=probs_out, logprobs=_logprobs(chunks, logits, sampled)
        )

    # ---- KV pages ----------------------------------------------------------------------------

    def read_block(self, block: int, num_tokens: int) -> bytes:
        """The first ``num_tokens`` positions of ``block`` as page payload bytes.

        Layout ``(layers, 2, num_tokens, kv_heads, head_dim)``, C order, native dtype.
        """
        start = block * self.block_size
        if self._host_bytes is not None:
            # numpy copies the strided slice once, in C order, straight into the bytes object.
            return self._host_bytes[:, :, start : start + num_tokens].tobytes()
        host = self.kv_cache[:, :, start : start + num_tokens].to("cpu")
        return host.view(torch.uint8).numpy().tobytes()

    def write_block(
        self, block: int, payload: bytes, shape: tuple[int, ...], num_tokens: int
    ) -> None:
        """Copy the first ``num_tokens`` positions of a page payload into ``block``."""
        start = block * self.block_size
        if self._host_bytes is not None:
            # numpy wraps the read-only bytes without a copy; one strided copy into the cache.
            item = self.kv_cache.element_size()
            src = np.frombuffer(payload, dtype=np.uint8).reshape(*shape[:-1], shape[-1] * item)
            self._host_bytes[:, :, start : start + num_tokens] = src[:, :, :num_tokens]
            return
        with warnings.catch_warnings():
            # frombuffer warns that bytes are read-only; the tensor is only ever read here.
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.frombuffer(payload, dtype=torch.uint8)
        page = raw.view(self.dtype).view(shape)[:, :, :num_tokens]
        self.kv_cache[:, :, start : start + num_tokens].copy_(page.to(self.device))


def _logprobs(
    chunks: tuple[ScheduledChunk, ...], logits: Tensor, sampled: dict[str, tuple[int, ...]]
) -> dict[str, tuple[TokenLogprob, ...]]:
    """Log probabilities of the sampled tokens of the chunks that ask for them: token ``i`` of
    a chunk was drawn from its ``i``-th logit row (a verification's accepted drafts, then the
    correction or bonus token)."""
    out: dict[str, tuple[TokenLogprob, ...]] = {}
    row = 0
    for chunk in chunks:
        rows = chunk.num_tokens if chunk.kind is ChunkKind.VERIFY else int(chunk.sample)
        want = chunk.sampling.logprobs
        tokens = sampled.get(chunk.request_id, ())
        if want is not None and tokens:
            lp = torch.log_softmax(logits[row : row + len(tokens)].float(), dim=-1)
            chosen = lp[torch.arange(len(tokens)), torch.tensor(tokens)].tolist()
            top_v, top_i = torch.topk(lp, want, dim=-1) if want else (lp[:, :0], lp[:, :0])
            out[chunk.request_id] = tuple(
                TokenLogprob(
                    float(chosen[i]),
                    tuple(
                        zip(map(int, top_i[i].tolist()), map(float, top_v[i].tolist()), strict=True)
                    ),
                )
                for i in range(len(tokens))
            )
        row += rows
    return out
