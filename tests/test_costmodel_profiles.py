"""Model/hardware profiles and deployments: published facts pinned, validation errors clear."""

from __future__ import annotations

import dataclasses

import pytest

from lumen.planner.costmodel import (
    HARDWARE_PROFILES,
    MODEL_PROFILES,
    Deployment,
    ModelProfile,
    UnknownProfileError,
    draft_compatible,
    get_hardware_profile,
    get_model_profile,
)

GiB = 2**30

# KV bytes/token = 2 (K and V) * layers * kv_heads * head_dim * 2 bytes (README, cost model).
KV_BYTES = {
    "Qwen3-32B": 262144,
    "Qwen3-14B": 163840,
    "Qwen3-4B": 147456,
    "Qwen3-1.7B": 114688,
    "Llama-3.1-70B": 327680,
    "Llama-3.1-8B": 131072,
}
# Parameter counts published on the models' Hugging Face cards.
PUBLISHED_PARAMS = {
    "Qwen3-32B": 32.8e9,
    "Qwen3-14B": 14.8e9,
    "Qwen3-4B": 4.02e9,
    "Qwen3-1.7B": 1.72e9,
    "Llama-3.1-70B": 70.6e9,
    "Llama-3.1-8B": 8.03e9,
}
# BF16 checkpoint sizes from the README's cost-model table (SI gigabytes).
DESIGN_WEIGHT_GB = {
    "Qwen3-32B": 65.5,
    "Qwen3-14B": 29.5,
    "Qwen3-4B": 8.0,
    "Qwen3-1.7B": 3.4,
    "Llama-3.1-70B": 141.0,
    "Llama-3.1-8B": 16.1,
}


@pytest.mark.parametrize(("name", "expected"), KV_BYTES.items())
def test_kv_bytes_per_token_is_exact(name: str, expected: int) -> None:
    assert get_model_profile(name).kv_bytes_per_token == expected


@pytest.mark.parametrize(("name", "published"), PUBLISHED_PARAMS.items())
def test_num_parameters_within_one_percent_of_published(name: str, published: float) -> None:
    assert get_model_profile(name).num_parameters == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize(("name", "gigabytes"), DESIGN_WEIGHT_GB.items())
def test_weight_bytes_match_design(name: str, gigabytes: float) -> None:
    profile = get_model_profile(name)
    assert profile.weight_bytes == profile.num_parameters * 2
    # The design table rounds to a tenth of a GB ("141 GB" is 141.1 GB).
    assert profile.weight_bytes / 1e9 == pytest.approx(gigabytes, abs=0.15)


def test_parameter_count_by_hand_for_qwen3_1_7b() -> None:
    p = get_model_profile("Qwen3-1.7B")
    # q, o: 2048 x 2048 (16 heads x 128); k, v: 2048 x 1024; MLP 3 x 2048 x 6144;
    # norms 2 x 2048 + q/k norms 2 x 128; tied embedding 151936 x 2048; final norm 2048.
    per_layer = 2 * 2048 * 2048 + 2 * 2048 * 1024 + 3 * 2048 * 6144 + 2 * 2048 + 2 * 128
    assert p.num_parameters == 151936 * 2048 + 28 * per_layer + 2048
    assert p.linear_params_per_token == 28 * (2 * 2048 * 2048 + 2 * 2048 * 1024 + 3 * 2048 * 6144)


def test_tied_embeddings_are_streamed_untied_input_embedding_is_not() -> None:
    tied, untied = get_model_profile("Qwen3-4B"), get_model_profile("Llama-3.1-8B")
    assert tied.streamed_weight_bytes == tied.weight_bytes
    assert untied.streamed_weight_bytes == untied.weight_bytes - 2 * untied.embedding_params


def test_qk_norm_follows_family_unless_given() -> None:
    qwen = get_model_profile("Qwen3-14B")
    assert qwen.has_qk_norm and not get_model_profile("Llama-3.1-8B").has_qk_norm
    without = dataclasses.replace(qwen, qk_norm=False)
    assert qwen.num_parameters - without.num_parameters == 40 * 2 * 128


def test_aliases_share_the_architecture_and_carry_their_own_name() -> None:
    for alias, target in (("Llama-3-70B", "Llama-3.1-70B"), ("Llama-3-8B", "Llama-3.1-8B")):
        a, t = MODEL_PROFILES[alias], MODEL_PROFILES[target]
        assert a.name == alias
        assert dataclasses.replace(a, name=t.name) == t


def test_registry_keys_are_profile_names() -> None:
    assert all(key == p.name for key, p in MODEL_PROFILES.items())
    assert all(key == p.name for key, p in HARDWARE_PROFILES.items())
    assert set(HARDWARE_PROFILES) == {"A100-80GB", "A800-80GB", "H100-80GB", "H200"}


def test_lookup_is_case_insensitive() -> None:
    assert get_model_profile("qwen3-32b") is MODEL_PROFILES["Qwen3-32B"]
    assert get_hardware_profile("h200") is HARDWARE_PROFILES["H200"]


def test_unknown_profile_lists_known_names() -> None:
    with pytest.raises(UnknownProfileError) as info:
        get_model_profile("GPT-5")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert message.startswith("unknown model profile 'GPT-5'")
    assert "Qwen3-32B" in message and "Llama-3-70B" in message
    with pytest.raises(UnknownProfileError, match="A100-80GB"):
        get_hardware_profile("TPU")


@pytest.mark.parametrize(
    ("target", "draft"),
    [("Qwen3-32B", "Qwen3-4B"), ("Qwen3-14B", "Qwen3-1.7B"), ("Llama-3.1-70B", "Llama-3-8B")],
)
def test_paper_draft_pairs_are_compatible(target: str, draft: str) -> None:
    assert draft_compatible(get_model_profile(target), get_model_profile(draft))


def test_cross_family_or_vocab_draft_is_incompatible() -> None:
    llama, qwen = get_model_profile("Llama-3.1-70B"), get_model_profile("Qwen3-4B")
    assert not draft_compatible(llama, qwen)
    other_vocab = dataclasses.replace(qwen, vocab_size=32000)
    assert not draft_compatible(get_model_profile("Qwen3-32B"), other_vocab)


def test_hardware_numbers() -> None:
    a100, a800 = get_hardware_profile("A100-80GB"), get_hardware_profile("A800-80GB")
    assert a100.gpu_memory_bytes == 80 * GiB
    assert a100.peak_flops == 312e12 and a100.hbm_bandwidth == 2.039e12
    assert a100.host_to_gpu_bandwidth == 26e9 and a100.ssd_bandwidth == 2e9
    assert a100.network_bandwidth == 1.25e9  # 10 Gb/s
    assert (a800.peak_flops, a800.hbm_bandwidth) == (a100.peak_flops, a100.hbm_bandwidth)
    assert a800.nvlink_bandwidth == 200e9 < a100.nvlink_bandwidth
    # the testbed's two Samsung PM893 SATA drives, 550 MB/s each: target on one, draft on the other
    assert (a800.ssd_bandwidth, a800.ssd_drives, a100.ssd_drives) == (0.55e9, 2, 1)
    h100, h200 = get_hardware_profile("H100-80GB"), get_hardware_profile("H200")
    assert h100.peak_flops == h200.peak_flops == 989e12
    assert (h100.hbm_bandwidth, h200.hbm_bandwidth) == (3.35e12, 4.8e12)
    assert h200.gpu_memory_bytes == 141 * GiB


def test_model_profile_rejects_bad_shapes() -> None:
    base = get_model_profile("Qwen3-4B")
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        dataclasses.replace(base, num_layers=0)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        dataclasses.replace(base, num_kv_heads=5)


def _deployment(model: str, hardware: str, tp: int = 1, **kwargs: float) -> Deployment:
    return Deployment(get_model_profile(model), get_hardware_profile(hardware), tp, **kwargs)


def test_kv_capacity_formula() -> None:
    d = _deployment("Llama-3-70B", "A100-80GB", 4)
    total = 4 * 80 * GiB
    expected = (0.9 * total - d.model.weight_bytes - 0.02 * total) // 327680
    assert d.gpu_kv_capacity_tokens == int(expected)
    assert 400_000 < d.gpu_kv_capacity_tokens < 550_000  # vLLM reports ~0.5 M tokens here


def test_seventy_b_does_not_fit_on_one_a100() -> None:
    with pytest.raises(ValueError, match=r"Llama-3.1-70B does not fit on 1 x A100-80GB"):
        _deployment("Llama-3.1-70B", "A100-80GB", 1)
    assert _deployment("Llama-3.1-70B", "A100-80GB", 2).gpu_kv_capacity_tokens > 10_000


def test_weights_that_fit_but_leave_no_kv_room_are_rejected() -> None:
    with pytest.raises(ValueError, match="no room for the KV cache"):
        _deployment("Qwen3-32B", "A100-80GB", 1, gpu_memory_utilization=0.78)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tensor_parallel": 0}, "tensor_parallel must be an int >= 1"),
        ({"tensor_parallel": 3}, "must divide Qwen3-14B's 40 attention heads"),
        ({"tensor_parallel": 5}, "multiple of Qwen3-14B's 8 KV heads"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be in"),
        ({"activation_reserve_fraction": 0.95}, "activation_reserve_fraction"),
        ({"network_bandwidth": 0.0}, "network_bandwidth must be positive"),
        ({"ssd_bandwidth": -1.0}, "ssd_bandwidth must be positive"),
    ],
)
def test_deployment_validation(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, object] = {
        "model": get_model_profile("Qwen3-14B"),
        "hardware": get_hardware_profile("H200"),
    }
    with pytest.raises(ValueError, match=message):
        Deployment(**args, **kwargs)  # type: ignore[arg-type]


def test_overrides_replace_hardware_defaults() -> None:
    plain = _deployment("Qwen3-14B", "A800-80GB", 2)
    assert plain.effective_network_bandwidth == 1.25e9
    assert plain.effective_ssd_bandwidth == 0.55e9
    assert plain.worker_host_to_gpu_bandwidth == 2 * 26e9
    tuned = _deployment(
        "Qwen3-14B",
        "A800-80GB",
        2,
        network_bandwidth=3e9,
        ssd_bandwidth=1e9,
        host_to_gpu_bandwidth=20e9,
    )
    assert tuned.effective_network_bandwidth == 3e9
    assert tuned.effective_ssd_bandwidth == 1e9
    assert tuned.effective_host_to_gpu_bandwidth == 20e9
    assert tuned.worker_host_to_gpu_bandwidth == 40e9


def test_with_model_keeps_hardware_and_overrides() -> None:
    target = _deployment("Qwen3-32B", "A800-80GB", 2, ssd_bandwidth=1e9)
    draft = target.with_model(get_model_profile("Qwen3-4B"), tensor_parallel=1)
    assert draft.hardware == target.hardware
    assert draft.effective_ssd_bandwidth == 1e9
    assert draft.tensor_parallel == 1
    assert isinstance(draft.model, ModelProfile) and draft.model.name == "Qwen3-4B"


def test_from_names_looks_up_registered_profiles() -> None:
    d = Deployment.from_names("llama-3-70b", "A100-80GB", 4, ssd_bandwidth=1e9)
    assert d == _deployment("Llama-3-70B", "A100-80GB", 4, ssd_bandwidth=1e9)
    with pytest.raises(UnknownProfileError):
        Deployment.from_names("Llama-3-70B", "B200", 4)


def test_llama_3_2_1b_is_a_llama_draft() -> None:
    small = get_model_profile("Llama-3.2-1B")
    assert small.kv_bytes_per_token == 2 * 16 * 8 * 64 * 2
    assert small.num_parameters == pytest.approx(1.24e9, rel=0.01)
    assert draft_compatible(get_model_profile("Llama-3.1-70B"), small)
