"""Interface types, KV page validation, configuration files and the lazy package import."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lumen.executor.engine import create_engine, engine_kinds
from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.executor.engine.interface import (
    ROOT_TAG,
    KVLayout,
    KVPage,
    Proposal,
    RequestSpec,
    SamplingParams,
    page_tag,
    page_tags,
)

from .conftest import TINY


def make_page(payload: bytes = bytes(range(64)), end: int = 4) -> KVPage:
    tokens = [5, 6, 7, 8]
    return KVPage.create(
        request_id="r",
        page_index=0,
        start_position=0,
        end_position=end,
        token_tag=page_tag(ROOT_TAG, 0, tokens[:end]),
        dtype="float32",
        shape=(1, 2, end, 1, 2),
        payload=payload[: end * 16],
    )


def test_page_verifies_and_detects_corruption() -> None:
    page = make_page()
    assert page.verify()
    assert page.matches([5, 6, 7, 8, 9], ROOT_TAG)
    assert not page.matches([5, 6, 0, 8, 9], ROOT_TAG)
    assert not page.matches([5, 6, 7], ROOT_TAG)  # the request is shorter than the page
    flipped = bytearray(page.payload)
    flipped[10] ^= 0x01
    assert not replace(page, payload=bytes(flipped)).verify()
    assert not replace(page, payload=page.payload[:-8]).verify()
    assert not replace(page, end_position=3).verify()
    assert not replace(page, page_index=1).verify()  # header covered too


def test_page_wire_format_round_trips() -> None:
    page = make_page()
    wire = page.to_bytes()
    back = KVPage.from_bytes(wire)
    assert back == page and back.verify()
    # A transfer cut short parses but fails verification.
    assert not KVPage.from_bytes(wire[:-5]).verify()
    with pytest.raises(ValueError, match="magic"):
        KVPage.from_bytes(b"nope" + wire[4:])
    with pytest.raises(ValueError, match="header"):
        KVPage.from_bytes(wire[:4] + b"\x03\x00\x00\x00{x}")


def test_page_tags_chain_over_the_whole_prefix() -> None:
    tokens = list(range(10))
    tags = page_tags(tokens, 4)
    assert len(tags) == 3
    assert tags[0] == page_tag(ROOT_TAG, 0, tokens[:4])
    assert tags[2] == page_tag(tags[1], 8, tokens[8:])
    # Same tokens in the last page, different earlier token: different tag.
    other = page_tags([99, *tokens[1:]], 4)
    assert other[2] != tags[2] and other[0] != tags[0]
    assert page_tags(tokens, 4, end=6)[1] == page_tag(tags[0], 4, tokens[4:6])


def test_kv_layout_sizes() -> None:
    layout = KVLayout(block_size=16, num_layers=64, num_kv_heads=8, head_dim=128, dtype="bfloat16")
    assert layout.bytes_per_token == 256 * 1024  # Qwen3-32B, the README's cost-model table
    assert layout.page_shape(3) == (64, 2, 3, 8, 128)


def test_request_and_sampling_validation() -> None:
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError):
        RequestSpec("r", ())
    with pytest.raises(ValueError):
        RequestSpec("", (1,))
    with pytest.raises(ValueError, match="already has"):
        RequestSpec("r", (1,), SamplingParams(max_new_tokens=2), output_token_ids=(3, 4))
    spec = RequestSpec("r", (1, 2), output_token_ids=(3,))
    assert spec.token_ids == (1, 2, 3)
    assert SamplingParams().greedy and not SamplingParams(temperature=0.5).greedy


def test_proposal_checks_probability_rows() -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(ValueError):
        Proposal("r", 3, 1, (1, 2), draft_probs=np.zeros((3, 8), dtype=np.float32))


def test_model_config_round_trips_hf_json(tmp_path: Path) -> None:
    config = replace(TINY, tie_word_embeddings=True, eos_token_id=(3,))
    config.to_json(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "qwen3" and data["eos_token_id"] == 3
    assert ModelConfig.from_json(tmp_path) == config


def test_model_config_reads_a_qwen3_config() -> None:
    # The keys of Qwen3-1.7B's config.json (values as published).
    data = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 6144,
        "max_position_embeddings": 40960,
        "max_window_layers": 28,
        "model_type": "qwen3",
        "num_attention_heads": 16,
        "num_hidden_layers": 28,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }
    config = ModelConfig.from_dict(data)
    assert config.kv_bytes_per_token("bfloat16") == 112 * 1024  # the README's cost-model table
    assert 1.6e9 < config.num_parameters() < 2.1e9
    with pytest.raises(ValueError, match="attention_bias"):
        ModelConfig.from_dict({**data, "attention_bias": True})
    with pytest.raises(ValueError, match="rope_scaling"):
        ModelConfig.from_dict({**data, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="missing"):
        ModelConfig.from_dict({"hidden_size": 8})


def test_engine_config_sizes_the_cache() -> None:
    model = TINY
    assert EngineConfig(num_kv_blocks=7).resolve_num_blocks(model, "float32") == 7
    # 512 bytes per token in float32, 16 tokens per block: 8 KiB blocks.
    assert EngineConfig(kv_cache_bytes=1 << 20).resolve_num_blocks(model, "float32") == 128
    assert EngineConfig(max_num_seqs=2).resolve_num_blocks(model, "float32") == 2 * 32
    with pytest.raises(ValueError):
        EngineConfig(block_size=0)


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, lumen.executor.engine as e; "
        "e.EngineConfig(); e.BlockManager(2, 2); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_engine_kind() -> None:
    assert "torch" in engine_kinds()
    with pytest.raises(ValueError, match="unknown engine kind"):
        create_engine("nope")
