"""A decoder-only transformer of the Qwen3 architecture over a paged KV cache.

Module and parameter names follow Hugging Face's ``Qwen3ForCausalLM`` so that a checkpoint's
tensor names map one to one onto ``state_dict()`` keys. The forward pass runs over a *flat* batch:
the tokens of every scheduled chunk concatenated, each with its position, plus
:class:`AttentionMetadata` saying where each token's K/V is written and which cache slots each
chunk attends to. Attention gathers a chunk's keys and values from the cache and runs one
``scaled_dot_product_attention`` call per chunk: simple, correct, and independent of what else
is in the batch, which keeps batched results equal to unbatched ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lumen.executor.engine.config import ModelConfig

__all__ = [
    "AttentionMetadata",
    "ChunkAttention",
    "Qwen3ForCausalLM",
    "RMSNorm",
    "apply_rope",
    "rope_cos_sin",
]


@dataclass(frozen=True, slots=True)
class ChunkAttention:
    """Attention inputs of one chunk of the flat batch.

    Attributes:
        q_start: first row of the chunk in the flat batch.
        q_end: one past its last row.
        key_slots: cache slots of positions ``0..context_len-1`` of the request, in order.
        mask: ``(num_query_groups * q_len, context_len)`` causal mask, True where a query may
            attend (query rows repeated once per query head sharing a KV head); ``None`` when
            the chunk has one query, which may attend to everything.
    """

    q_start: int
    q_end: int
    key_slots: Tensor
    mask: Tensor | None


@dataclass(frozen=True, slots=True)
class AttentionMetadata:
    """Where the flat batch writes K/V (``slot_mapping``, one slot per token) and reads it."""

    slot_mapping: Tensor
    chunks: tuple[ChunkAttention, ...]


class RMSNorm(nn.Module):
    """Root-mean-square norm; low-precision inputs are normalized in float32 as in HF."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Rotary ``cos`` and ``sin`` of shape ``(len(positions), head_dim)``.

    Angles are computed in float32 like HF's default rotary embedding (float64 for a float64
    model), then cast.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).to(work)
    inv_freq = 1.0 / (theta ** (exponent / head_dim))
    freqs = positions.to(work)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` of shape ``(..., tokens, heads, head_dim)`` (HF ``rotate_half`` convention).

    ``cos`` and ``sin`` are ``(tokens, head_dim)`` and broadcast over the leading dimensions.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


class Qwen3Attention(nn.Module):
    """Grouped-query attention with per-head RMSNorm on queries and keys."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = d
        self.scale = d**-0.5
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=False)
        self.q_norm = RMSNorm(d, config.rms_norm_eps)
        self.k_norm = RMSNorm(d, config.rms_norm_eps)

    def _qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lead = x.shape[:-1]
        q = F.linear(x, self.q_proj.weight).view(*lead, self.num_heads, self.head_dim)
        k = F.linear(x, self.k_proj.weight).view(*lead, self.num_kv_heads, self.head_dim)
        v = F.linear(x, self.v_proj.weight).view(*lead, self.num_kv_heads, self.head_dim)
        q, k = self.q_norm.forward(q), self.k_norm.forward(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, kv: Tensor, meta: AttentionMetadata
    ) -> Tensor:
        """Paged attention over a flat batch ``x`` of shape ``(tokens, hidden)``.

        ``kv`` is this layer's cache, ``(2, num_slots, num_kv_heads, head_dim)``.
        """
        q, k, v = self._qkv(x, cos, sin)
        # Write first: a chunk's queries attend to the chunk's own keys as well.
        kv[0].index_copy_(0, meta.slot_mapping, k)
        kv[1].index_copy_(0, meta.slot_mapping, v)
        groups = self.num_heads // self.num_kv_heads
        outs: list[Tensor] = []
        for chunk in meta.chunks:
            q_len = chunk.q_end - chunk.q_start
            # (q_len, heads, d) -> (kv_heads, groups * q_len, d): the query heads that share a
            # KV head become extra query rows, so K and V are never copied per head.
            qs = (
                q[chunk.q_start : chunk.q_end]
                .view(q_len, self.num_kv_heads, groups, self.head_dim)
                .permute(1, 2, 0, 3)
                .reshape(self.num_kv_heads, groups * q_len, self.head_dim)
            )
            ks = kv[0].index_select(0, chunk.key_slots).transpose(0, 1)
            vs = kv[1].index_select(0, chunk.key_slots).transpose(0, 1)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=chunk.mask, scale=self.scale)
            outs.append(
                o.view(self.num_kv_heads, groups, q_len, self.head_dim)
                .permute(2, 0, 1, 3)
                .reshape(q_len, self.num_heads * self.head_dim)
            )
        attn = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        return F.linear(attn, self.o_proj.weight)

    def forward_dense(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Causal attention over ``(batch, seq, hidden)`` without a cache."""
        q, k, v = self._qkv(x, cos, sin)
        groups = self.num_heads // self.num_kv_heads
        q = q.transpose(1, 2)
        k = k.transpose(1, 2).repeat_interleave(groups, dim=1)
        v = v.transpose(1, 2).repeat_interleave(groups, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return F.linear(o.transpose(1, 2).flatten(2), self.o_proj.weight)


class Qwen3MLP(nn.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = F.silu(F.linear(x, self.gate_proj.weight))
        return F.linear(gate * F.linear(x, self.up_proj.weight), self.down_proj.weight)


class Qwen3DecoderLayer(nn.Module):
    """Pre-norm residual block: attention, then MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Qwen3Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Qwen3MLP(config)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, kv: Tensor, meta: AttentionMetadata
    ) -> Tensor:
        x = x + self.self_attn.forward(self.input_layernorm.forward(x), cos, sin, kv, meta)
        return x + self.mlp.forward(self.post_attention_layernorm.forward(x))

    def forward_dense(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.self_attn.forward_dense(self.input_layernorm.forward(x), cos, sin)
        return x + self.mlp.forward(self.post_attention_layernorm.forward(x))


class Qwen3Model(nn.Module):
    """Embedding, decoder layers and the final norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Qwen3DecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def decoder_layers(self) -> list[Qwen3DecoderLayer]:
        """The layers, typed."""
        return [layer for layer in self.layers if isinstance(layer, Qwen3DecoderLayer)]


class Qwen3ForCausalLM(nn.Module):
    """Qwen3 with a language-model head; ``lm_head`` shares the embedding when tied."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Qwen3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self, input_ids: Tensor, positions: Tensor, kv_cache: Tensor, meta: AttentionMetadata
    ) -> Tensor:
        """Hidden states ``(tokens, hidden)`` of a flat batch (before the final norm).

        ``kv_cache`` has shape ``(layers, 2, num_slots, num_kv_heads, head_dim)``.
        """
        x = F.embedding(input_ids, self.model.embed_tokens.weight)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for index, layer in enumerate(self.model.decoder_layers()):
            x = layer.forward(x, cos, sin, kv_cache[index], meta)
        return x

    def compute_logits(self, hidden: Tensor) -> Tensor:
        """Logits of selected hidden rows, at least float32 (norm and head on those rows only)."""
        logits = F.linear(self.model.norm.forward(hidden), self.lm_head.weight)
        return logits if logits.dtype == torch.float64 else logits.float()

    def forward_dense(self, input_ids: Tensor) -> Tensor:
        """Logits ``(batch, seq, vocab)`` of equal-length sequences, no cache (for analysis)."""
        x = F.embedding(input_ids, self.model.embed_tokens.weight)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.model.decoder_layers():
            x = layer.forward_dense(x, cos, sin)
        return self.compute_logits(x)
