"""Model and hardware profiles: the published facts every cost estimate starts from.

Model numbers are copied from each model's Hugging Face ``config.json``; hardware numbers from the
vendors' data sheets (dense BF16 throughput, HBM bandwidth) and from the paper's testbed and
simulation setup (host<->GPU, network and SSD bandwidths).

Units: bandwidths are SI bytes per second (1 GB/s = 1e9 B/s), compute is FLOP/s, and GPU memory is
in *binary* bytes (80 GiB = 80 * 2**30), because that is what the device reports (an A100-80GB
shows 81920 MiB in ``nvidia-smi``). Weight sizes quoted in the design brief ("65.5 GB") are SI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

__all__ = [
    "HARDWARE_PROFILES",
    "MODEL_PROFILES",
    "HardwareProfile",
    "ModelProfile",
    "UnknownProfileError",
    "draft_compatible",
    "get_hardware_profile",
    "get_model_profile",
]

GiB = 2**30
GB = 1e9
TFLOPS = 1e12


class UnknownProfileError(KeyError):
    """A profile name that is not registered; the message lists the known names."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """Architecture of a decoder-only transformer (Llama / Qwen3 style: GQA, SwiGLU, RMSNorm).

    ``family`` names the tokenizer/architecture lineage used for draft compatibility
    (``"qwen3"``, ``"llama3"``). ``qk_norm`` says whether every layer has RMSNorm weights of size
    ``head_dim`` on queries and keys; ``None`` (the default) means "exactly when the family is
    qwen3", the only family here that has them.
    """

    name: str
    family: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype_bytes: int = 2
    qk_norm: bool | None = None

    def __post_init__(self) -> None:
        for field in (
            "num_layers",
            "hidden_size",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
            "dtype_bytes",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelProfile {self.name!r}: {field} must be a positive int")
        if self.num_attention_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"ModelProfile {self.name!r}: num_attention_heads ({self.num_attention_heads}) "
                f"must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )

    @property
    def has_qk_norm(self) -> bool:
        """Whether the layers carry Qwen3-style q/k RMSNorm weights."""
        return self.family == "qwen3" if self.qk_norm is None else self.qk_norm

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V cache one token occupies across all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def attention_params_per_layer(self) -> int:
        """Weights of the q, k, v and o projections of one layer (no biases in these models)."""
        q_dim = self.num_attention_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        return self.hidden_size * (2 * q_dim + 2 * kv_dim)

    @property
    def mlp_params_per_layer(self) -> int:
        """Weights of the SwiGLU MLP of one layer (gate, up and down projections)."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def norm_params_per_layer(self) -> int:
        """RMSNorm weights of one layer: two hidden-size norms, plus q/k norms for Qwen3."""
        return 2 * self.hidden_size + (2 * self.head_dim if self.has_qk_norm else 0)

    @property
    def linear_params_per_token(self) -> int:
        """Non-embedding matmul weights every token passes through (2 FLOPs each per token)."""
        return self.num_layers * (self.attention_params_per_layer + self.mlp_params_per_layer)

    @property
    def embedding_params(self) -> int:
        """Input embedding table size."""
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Output projection size; it shares storage with the embedding when tied."""
        return self.vocab_size * self.hidden_size

    @property
    def num_parameters(self) -> int:
        """Total stored parameters (counts a tied lm_head once)."""
        per_layer = (
            self.attention_params_per_layer + self.mlp_params_per_layer + self.norm_params_per_layer
        )
        lm_head = 0 if self.tie_word_embeddings else self.lm_head_params
        final_norm = self.hidden_size
        return self.embedding_params + self.num_layers * per_layer + final_norm + lm_head

    @property
    def weight_bytes(self) -> int:
        """Bytes of the full checkpoint in ``dtype_bytes`` precision (what a reload moves)."""
        return self.num_parameters * self.dtype_bytes

    @property
    def streamed_weight_bytes(self) -> int:
        """Weight bytes one forward pass reads from HBM.

        Every matrix is read in full except an untied input embedding, of which only the rows of
        the batch's tokens are gathered (negligible). A tied table is read in full as the lm_head.
        """
        skipped = 0 if self.tie_word_embeddings else self.embedding_params
        return (self.num_parameters - skipped) * self.dtype_bytes


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """One GPU type and the default I/O bandwidths of a worker built from it.

    ``peak_flops``, ``hbm_bandwidth``, ``host_to_gpu_bandwidth`` and ``nvlink_bandwidth``
    (unidirectional) are per GPU; ``network_bandwidth`` is per worker; ``ssd_bandwidth`` is
    the read bandwidth of one of the worker's ``ssd_drives`` drives (a model checkpoint is
    read from one drive; a second drive lets a draft load beside the target).
    """

    name: str
    gpu_memory_bytes: int
    peak_flops: float
    hbm_bandwidth: float
    host_to_gpu_bandwidth: float
    nvlink_bandwidth: float
    network_bandwidth: float
    ssd_bandwidth: float
    ssd_drives: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.ssd_drives, bool) or self.ssd_drives < 1:
            raise ValueError(f"HardwareProfile {self.name!r}: ssd_drives must be >= 1")
        for field in (
            "gpu_memory_bytes",
            "peak_flops",
            "hbm_bandwidth",
            "host_to_gpu_bandwidth",
            "nvlink_bandwidth",
            "network_bandwidth",
            "ssd_bandwidth",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not value > 0:
                raise ValueError(f"HardwareProfile {self.name!r}: {field} must be positive")


def draft_compatible(target: ModelProfile, draft: ModelProfile) -> bool:
    """True when ``draft`` can propose tokens for ``target``: same family and vocabulary."""
    return target.family == draft.family and target.vocab_size == draft.vocab_size


def _qwen3(name: str, hidden: int, layers: int, heads: int, inter: int, tied: bool) -> ModelProfile:
    return ModelProfile(
        name=name,
        family="qwen3",
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=inter,
        vocab_size=151936,
        tie_word_embeddings=tied,
    )


def _llama3(
    name: str,
    hidden: int,
    layers: int,
    heads: int,
    inter: int,
    head_dim: int = 128,
    tied: bool = False,
) -> ModelProfile:
    return ModelProfile(
        name=name,
        family="llama3",
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=8,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=128256,
        tie_word_embeddings=tied,
    )


_MODELS = [
    _qwen3("Qwen3-32B", 5120, 64, 64, 25600, tied=False),
    _qwen3("Qwen3-14B", 5120, 40, 40, 17408, tied=False),
    _qwen3("Qwen3-4B", 2560, 36, 32, 9728, tied=True),
    _qwen3("Qwen3-1.7B", 2048, 28, 16, 6144, tied=True),
    _llama3("Llama-3.1-70B", 8192, 80, 64, 28672),
    _llama3("Llama-3.1-8B", 4096, 32, 32, 14336),
    # Not in the paper; the smallest same-vocabulary draft for the Llama 3 targets.
    _llama3("Llama-3.2-1B", 2048, 16, 32, 8192, head_dim=64, tied=True),
]
# Llama 3 and 3.1 share the architecture (only RoPE scaling and context length differ), and the
# paper and scenario files use both spellings.
_MODEL_ALIASES = {"Llama-3-70B": "Llama-3.1-70B", "Llama-3-8B": "Llama-3.1-8B"}

_models_by_name = {m.name: m for m in _MODELS}
for _alias, _target in _MODEL_ALIASES.items():
    _models_by_name[_alias] = dataclasses.replace(_models_by_name[_target], name=_alias)

MODEL_PROFILES: Mapping[str, ModelProfile] = MappingProxyType(_models_by_name)
"""Registered model profiles by name (aliases included, each carrying its own name)."""

HARDWARE_PROFILES: Mapping[str, HardwareProfile] = MappingProxyType(
    {
        "A100-80GB": HardwareProfile(
            name="A100-80GB",
            gpu_memory_bytes=80 * GiB,
            peak_flops=312 * TFLOPS,
            hbm_bandwidth=2.039e12,
            host_to_gpu_bandwidth=26 * GB,  # PCIe 4.0 x16, measured pinned copy
            nvlink_bandwidth=300 * GB,
            network_bandwidth=1.25 * GB,  # 10 Gb/s
            ssd_bandwidth=2 * GB,
        ),
        # The paper's testbed GPU: A100 compute and HBM with NVLink cut to 400 GB/s bidirectional,
        # on nodes with 10 Gb/s Ethernet and two SATA SSDs (Samsung PM893, 550 MB/s sequential
        # read each): the target's checkpoint on one, the draft's on the other.
        "A800-80GB": HardwareProfile(
            name="A800-80GB",
            gpu_memory_bytes=80 * GiB,
            peak_flops=312 * TFLOPS,
            hbm_bandwidth=2.039e12,
            host_to_gpu_bandwidth=26 * GB,
            nvlink_bandwidth=200 * GB,
            network_bandwidth=1.25 * GB,
            ssd_bandwidth=0.55 * GB,
            ssd_drives=2,
        ),
        "H100-80GB": HardwareProfile(  # SXM5
            name="H100-80GB",
            gpu_memory_bytes=80 * GiB,
            peak_flops=989 * TFLOPS,
            hbm_bandwidth=3.35e12,
            host_to_gpu_bandwidth=50 * GB,  # PCIe 5.0 x16
            nvlink_bandwidth=450 * GB,
            network_bandwidth=25 * GB,  # 200 Gb/s
            ssd_bandwidth=4 * GB,  # NVMe
        ),
        "H200": HardwareProfile(
            name="H200",
            gpu_memory_bytes=141 * GiB,
            peak_flops=989 * TFLOPS,
            hbm_bandwidth=4.8e12,
            host_to_gpu_bandwidth=50 * GB,
            nvlink_bandwidth=450 * GB,
            network_bandwidth=25 * GB,
            ssd_bandwidth=4 * GB,
        ),
    }
)
"""Registered hardware profiles by name."""

_P = TypeVar("_P")


def _lookup(registry: Mapping[str, _P], name: str, kind: str) -> _P:
    if name in registry:
        return registry[name]
    folded = name.casefold()
    for key, value in registry.items():
        if key.casefold() == folded:
            return value
    known = ", ".join(sorted(registry))
    raise UnknownProfileError(f"unknown {kind} profile {name!r}; known: {known}")


def get_model_profile(name: str) -> ModelProfile:
    """The registered model profile called ``name`` (case-insensitive).

    Raises:
        UnknownProfileError: no such profile; the message lists the known names.
    """
    return _lookup(MODEL_PROFILES, name, "model")


def get_hardware_profile(name: str) -> HardwareProfile:
    """The registered hardware profile called ``name`` (case-insensitive).

    Raises:
        UnknownProfileError: no such profile; the message lists the known names.
    """
    return _lookup(HARDWARE_PROFILES, name, "hardware")
