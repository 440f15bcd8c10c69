"""Weights: Hugging Face style checkpoint directories and seeded random initialization.

A checkpoint directory holds ``config.json`` and either one ``model.safetensors`` or shards
listed in ``model.safetensors.index.json``, with HF Qwen3 tensor names
(``model.embed_tokens.weight``, ``model.layers.N.self_attn.q_proj.weight``, ...,
``lm_head.weight``). When embeddings are tied, ``lm_head.weight`` is omitted on save and ignored
on load, as HF does.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lumen.executor.engine.config import ModelConfig
from lumen.executor.engine.model import Qwen3ForCausalLM

__all__ = [
    "InMemoryWeights",
    "build_model",
    "expected_shapes",
    "layer_shapes",
    "load_checkpoint",
    "random_layer",
    "random_state_dict",
    "save_checkpoint",
]

_SINGLE_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True, slots=True)
class InMemoryWeights:
    """A configuration with its tensors already in memory (HF names, any dtype)."""

    config: ModelConfig
    tensors: dict[str, torch.Tensor]


def layer_shapes(config: ModelConfig, index: int) -> dict[str, tuple[int, ...]]:
    """HF names and shapes of decoder layer ``index``."""
    h, d, i = config.hidden_size, config.head_dim, config.intermediate_size
    p = f"model.layers.{index}."
    return {
        p + "input_layernorm.weight": (h,),
        p + "self_attn.q_proj.weight": (config.num_attention_heads * d, h),
        p + "self_attn.k_proj.weight": (config.num_key_value_heads * d, h),
        p + "self_attn.v_proj.weight": (config.num_key_value_heads * d, h),
        p + "self_attn.o_proj.weight": (h, config.num_attention_heads * d),
        p + "self_attn.q_norm.weight": (d,),
        p + "self_attn.k_norm.weight": (d,),
        p + "post_attention_layernorm.weight": (h,),
        p + "mlp.gate_proj.weight": (i, h),
        p + "mlp.up_proj.weight": (i, h),
        p + "mlp.down_proj.weight": (h, i),
    }


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``config`` must hold, by HF name."""
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config.vocab_size, config.hidden_size)
    }
    for index in range(config.num_hidden_layers):
        shapes.update(layer_shapes(config, index))
    shapes["model.norm.weight"] = (config.hidden_size,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, config.hidden_size)
    return shapes


def _init(
    name: str, shape: tuple[int, ...], gen: torch.Generator, init_std: float | None
) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape)
    if init_std is not None:
        std = init_std
    elif name == "model.embed_tokens.weight":
        std = 1.0
    elif name == "lm_head.weight":
        # Logits with a standard deviation of about 2: peaked enough that greedy decoding is
        # far from ties, spread enough that sampling still varies.
        std = 2.0 / math.sqrt(shape[1])
    else:
        std = 1.0 / math.sqrt(shape[1])  # fan-in: activations stay of order one
    return torch.randn(shape, generator=gen) * std


def random_layer(
    config: ModelConfig, index: int, gen: torch.Generator, init_std: float | None = None
) -> dict[str, torch.Tensor]:
    """Random float32 tensors of decoder layer ``index``, drawn from ``gen``."""
    return {
        name: _init(name, shape, gen, init_std)
        for name, shape in layer_shapes(config, index).items()
    }


def random_state_dict(
    config: ModelConfig, seed: int = 0, init_std: float | None = None
) -> dict[str, torch.Tensor]:
    """Random float32 weights for ``config``; the same ``seed`` gives the same tensors.

    ``init_std=None`` scales each matrix by its fan-in (see :class:`RandomWeights`); a number
    draws every matrix with that standard deviation, as HF's ``initializer_range`` does.
    """
    gen = torch.Generator().manual_seed(seed)
    return {
        name: _init(name, shape, gen, init_std) for name, shape in expected_shapes(config).items()
    }


def save_checkpoint(
    path: str | os.PathLike[str], config: ModelConfig, tensors: dict[str, torch.Tensor]
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into directory ``path``."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config.to_json(directory / "config.json")
    shapes = expected_shapes(config)
    out = {name: tensors[name].detach().cpu().contiguous() for name in shapes}
    save_file(out, str(directory / _SINGLE_FILE), metadata={"format": "pt"})
    return directory


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a checkpoint directory (single file or sharded) onto the CPU.

    Raises:
        FileNotFoundError: no ``config.json`` or no safetensors file.
    """
    directory = Path(path)
    config = ModelConfig.from_json(directory / "config.json")
    index = directory / _INDEX_FILE
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (directory / _SINGLE_FILE).exists():
        files = [_SINGLE_FILE]
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors file in {directory}")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(str(directory / name), device="cpu"))
    return config, tensors


def build_model(
    config: ModelConfig,
    tensors: dict[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> Qwen3ForCausalLM:
    """Instantiate the model on ``device`` in ``dtype`` from HF-named tensors.

    The module is built on the meta device first, so no time is spent on a throw-away init.

    Raises:
        ValueError: a tensor is missing or has the wrong shape (names listed).
    """
    shapes = expected_shapes(config)
    missing = sorted(name for name in shapes if name not in tensors)
    wrong = sorted(
        f"{name}: {tuple(tensors[name].shape)} != {shape}"
        for name, shape in shapes.items()
        if name in tensors and tuple(tensors[name].shape) != shape
    )
    if missing or wrong:
        raise ValueError(f"checkpoint does not fit the config: missing={missing} wrong={wrong}")
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    if config.tie_word_embeddings:
        # to_empty() materializes parameters one by one; re-tie before loading.
        model.lm_head.weight = model.model.embed_tokens.weight
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, shape in shapes.items():
            params[name].copy_(tensors[name].to(device=device, dtype=dtype).view(shape))
    model.eval()
    model.requires_grad_(False)
    return model
