"""The paged Qwen3 forward pass against an independent dense reference implementation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

pytest.importorskip("torch")

import torch
from torch import Tensor

from lumen.executor.engine.config import ModelConfig
from lumen.executor.engine.interface import SamplingParams
from lumen.executor.engine.runner import ModelRunner
from lumen.executor.engine.scheduler import (
    ChunkKind,
    ScheduledChunk,
    SchedulerOutput,
)
from lumen.executor.engine.weights import build_model, random_state_dict


def reference_logits(config: ModelConfig, w: dict[str, Tensor], ids: list[int]) -> Tensor:
    """Qwen3 written out step by step after the HF modeling code, in float64, no cache."""
    w = {k: v.double() for k, v in w.items()}
    nh, nkv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    t = len(ids)

    def rms(x: Tensor, weight: Tensor) -> Tensor:
        return weight * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.rms_norm_eps))

    def rope(x: Tensor) -> Tensor:  # x: (t, heads, d)
        inv = 1.0 / config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
        cos, sin = ang.cos(), ang.sin()
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat(
            (x1 * cos[:, None] - x2 * sin[:, None], x2 * cos[:, None] + x1 * sin[:, None]), -1
        )

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(t, nh, d)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(t, nkv, d)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(t, nkv, d)
        q = rope(rms(q, w[p + "self_attn.q_norm.weight"]))
        k = rope(rms(k, w[p + "self_attn.k_norm.weight"]))
        out = torch.empty(t, nh, d, dtype=torch.float64)
        for head in range(nh):
            kv_head = head // (nh // nkv)
            scores = (q[:, head] @ k[:, kv_head].T) / math.sqrt(d)
            scores = scores.masked_fill(~causal, float("-inf"))
            out[:, head] = torch.softmax(scores, -1) @ v[:, kv_head]
        x = x + out.reshape(t, nh * d) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    head_w = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return rms(x, w["model.norm.weight"]) @ head_w.T


def paged_logits(
    config: ModelConfig,
    weights: dict[str, Tensor],
    ids: list[int],
    chunk_sizes: list[int],
    block_table: tuple[int, ...],
) -> Tensor:
    """Logits of every position, computed chunk by chunk through the paged cache."""
    model = build_model(config, weights, torch.device("cpu"), torch.float64)
    runner = ModelRunner(
        model, num_blocks=16, block_size=4, device=torch.device("cpu"), dtype=torch.float64
    )
    rows: list[Tensor] = []
    start = 0
    for size in chunk_sizes:
        chunk = ScheduledChunk(
            request_id="r",
            kind=ChunkKind.VERIFY,  # VERIFY asks for the logits of every position in the chunk
            start_position=start,
            token_ids=tuple(ids[start : start + size]),
            block_table=block_table,
            sample=True,
            sampling=SamplingParams(),
            seed=0,
        )
        batch = runner.prepare(SchedulerOutput(1, (chunk,)))
        with torch.inference_mode():
            hidden = model.forward(batch.input_ids, batch.positions, runner.kv_cache, batch.meta)
            rows.append(model.compute_logits(hidden.index_select(0, batch.logit_rows)))
        start += size
    return torch.cat(rows)


@pytest.mark.parametrize("tied", [False, True])
def test_paged_chunked_forward_matches_reference(tiny_config: ModelConfig, tied: bool) -> None:
    config = replace(tiny_config, tie_word_embeddings=tied)
    weights = random_state_dict(config, seed=3)
    ids = [
        int(i)
        for i in torch.randint(
            0, config.vocab_size, (15,), generator=torch.Generator().manual_seed(1)
        )
    ]
    want = reference_logits(config, weights, ids)
    # Chunks straddle block boundaries; the blocks are scattered over the cache.
    got = paged_logits(config, weights, ids, [5, 1, 4, 3, 2], (9, 2, 14, 0))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_dense_forward_matches_reference(tiny_config: ModelConfig) -> None:
    weights = random_state_dict(tiny_config, seed=4)
    ids = list(range(7, 19))
    model = build_model(tiny_config, weights, torch.device("cpu"), torch.float64)
    with torch.inference_mode():
        got = model.forward_dense(torch.tensor([ids]))[0]
    torch.testing.assert_close(
        got.double(), reference_logits(tiny_config, weights, ids), rtol=1e-9, atol=1e-9
    )


def test_float32_model_is_close_to_float64(tiny_config: ModelConfig) -> None:
    weights = random_state_dict(tiny_config, seed=5)
    ids = list(range(3, 14))
    model = build_model(tiny_config, weights, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        got = model.forward_dense(torch.tensor([ids]))[0]
    torch.testing.assert_close(
        got.double(), reference_logits(tiny_config, weights, ids), rtol=1e-4, atol=1e-4
    )
