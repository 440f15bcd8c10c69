"""Weights: safetensors checkpoints with HF names round-trip exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch

safetensors_torch = pytest.importorskip("safetensors.torch")

from lumen.executor.engine.config import ModelConfig  # noqa: E402
from lumen.executor.engine.interface import RandomWeights, RequestSpec, SamplingParams  # noqa: E402
from lumen.executor.engine.weights import (  # noqa: E402
    build_model,
    expected_shapes,
    load_checkpoint,
    random_state_dict,
    save_checkpoint,
)

from .conftest import EngineFactory  # noqa: E402

SPECS = [
    RequestSpec("g", (3, 1, 4, 1, 5), SamplingParams(max_new_tokens=10)),
    RequestSpec("s", (9, 2, 6), SamplingParams(temperature=1.0, seed=4, max_new_tokens=10)),
]


def test_safetensors_round_trip(
    tmp_path: Path, tiny_config: ModelConfig, make_engine: EngineFactory
) -> None:
    tensors = random_state_dict(tiny_config, seed=11)
    save_checkpoint(tmp_path, tiny_config, tensors)
    config, loaded = load_checkpoint(tmp_path)
    assert config == tiny_config
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name
    from_disk = make_engine(weights=str(tmp_path)).generate(SPECS)
    from_seed = make_engine(weights=RandomWeights(tiny_config, seed=11)).generate(SPECS)
    assert from_disk == from_seed


def test_hf_tensor_names(tiny_config: ModelConfig) -> None:
    names = set(expected_shapes(tiny_config))
    assert "model.embed_tokens.weight" in names and "lm_head.weight" in names
    for suffix in (
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "self_attn.q_norm.weight",
        "self_attn.k_norm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
    ):
        assert f"model.layers.1.{suffix}" in names
    assert "model.norm.weight" in names
    model = build_model(
        tiny_config, random_state_dict(tiny_config), torch.device("cpu"), torch.float32
    )
    assert set(model.state_dict()) == names


def test_tied_embeddings_omit_lm_head(tmp_path: Path, tiny_config: ModelConfig) -> None:
    config = ModelConfig.from_dict({**tiny_config.to_dict(), "tie_word_embeddings": True})
    tensors = random_state_dict(config, seed=2)
    save_checkpoint(tmp_path, config, tensors)
    _, loaded = load_checkpoint(tmp_path)
    assert "lm_head.weight" not in loaded
    model = build_model(config, loaded, torch.device("cpu"), torch.float32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, tensors["model.embed_tokens.weight"])


def test_sharded_bfloat16_checkpoint(tmp_path: Path, tiny_config: ModelConfig) -> None:
    """HF's sharded layout (index + several files), stored in bfloat16, loads and upcasts."""
    tensors = {k: v.to(torch.bfloat16) for k, v in random_state_dict(tiny_config, seed=5).items()}
    names = sorted(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map = {}
    for file, keys in shards.items():
        safetensors_torch.save_file({k: tensors[k] for k in keys}, str(tmp_path / file))
        weight_map.update(dict.fromkeys(keys, file))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    tiny_config.to_json(tmp_path / "config.json")
    _, loaded = load_checkpoint(tmp_path)
    model = build_model(tiny_config, loaded, torch.device("cpu"), torch.float32)
    assert torch.equal(model.model.norm.weight, tensors["model.norm.weight"].float())


def test_mismatched_checkpoint_is_rejected(tiny_config: ModelConfig) -> None:
    tensors = random_state_dict(tiny_config)
    del tensors["model.layers.0.mlp.up_proj.weight"]
    tensors["model.norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"missing=\['model.layers.0.mlp.up_proj.weight'\]"):
        build_model(tiny_config, tensors, torch.device("cpu"), torch.float32)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(Path("/nonexistent-lumen-checkpoint"))
