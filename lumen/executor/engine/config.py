"""Model and engine configuration for the built-in engine (no torch import).

:class:`ModelConfig` mirrors the keys of a Hugging Face Qwen3 ``config.json`` so that a real
checkpoint directory and a synthetic one look the same; :class:`EngineConfig` holds the serving
knobs (KV block size and count, batch limits, device, dtype).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

__all__ = ["DTYPE_BYTES", "EngineConfig", "ModelConfig"]

#: Bytes per element of the dtypes the engine stores weights and KV in.
DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture of a decoder-only Qwen3 model, named as in Hugging Face ``config.json``.

    Attributes:
        hidden_size: width of the residual stream.
        num_hidden_layers: number of decoder layers.
        num_attention_heads: query heads per layer.
        num_key_value_heads: key/value heads per layer (grouped-query attention); must divide
            ``num_attention_heads``.
        head_dim: width of one attention head (Qwen3 sets it explicitly; it need not equal
            ``hidden_size / num_attention_heads``).
        intermediate_size: width of the SwiGLU MLP.
        vocab_size: number of token ids.
        rms_norm_eps: epsilon of every RMSNorm.
        rope_theta: base of the rotary embedding frequencies.
        tie_word_embeddings: whether ``lm_head`` shares the input embedding matrix.
        max_position_embeddings: longest supported context.
        torch_dtype: dtype the checkpoint was saved in (informational).
        eos_token_id: end-of-sequence token ids, if any.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 40_960
    torch_dtype: str = "float32"
    eos_token_id: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                "ModelConfig.num_key_value_heads must divide num_attention_heads, got "
                f"{self.num_key_value_heads} and {self.num_attention_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError("ModelConfig.rms_norm_eps and rope_theta must be positive")

    @property
    def num_query_groups(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def kv_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """Bytes of K and V one token occupies over all layers in ``dtype``."""
        return (
            2
            * self.num_hidden_layers
            * self.num_key_value_heads
            * self.head_dim
            * DTYPE_BYTES[dtype]
        )

    def num_parameters(self) -> int:
        """Number of weights, counting a tied ``lm_head`` once."""
        h, d = self.hidden_size, self.head_dim
        attn = h * d * (2 * self.num_attention_heads + 2 * self.num_key_value_heads) + 2 * d
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h
        embed = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.num_hidden_layers * per_layer + embed + head + h

    def with_layers(self, num_hidden_layers: int) -> ModelConfig:
        """A copy with a different depth (used to build draft/target pairs)."""
        return replace(self, num_hidden_layers=num_hidden_layers)

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` content of this configuration."""
        data: dict[str, Any] = asdict(self)
        eos = list(self.eos_token_id)
        data["eos_token_id"] = eos[0] if len(eos) == 1 else (eos or None)
        data.update(
            architectures=["Qwen3ForCausalLM"],
            model_type="qwen3",
            hidden_act="silu",
            attention_bias=False,
            attention_dropout=0.0,
            rope_scaling=None,
            use_sliding_window=False,
            use_cache=True,
        )
        return data

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize as ``config.json`` text; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a parsed ``config.json``; unknown keys are ignored.

        Raises:
            ValueError: a key is missing, or the file asks for a feature this engine does not
                implement (attention bias, sliding window, RoPE scaling, a non-SiLU MLP).
        """
        # Features the engine does not implement: refuse them rather than run a wrong model.
        for key in ("attention_bias", "use_sliding_window"):
            if data.get(key):
                raise ValueError(f"config.json: {key}={data[key]!r} is not supported")
        scaling = data.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) != "default":
            raise ValueError(f"config.json: rope_scaling={scaling!r} is not supported")
        act = data.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"config.json: hidden_act={act!r} is not supported (only 'silu')")
        kwargs: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for name in names:
            if name in data and data[name] is not None:
                kwargs[name] = data[name]
        if "head_dim" not in kwargs and "hidden_size" in data and "num_attention_heads" in data:
            kwargs["head_dim"] = data["hidden_size"] // data["num_attention_heads"]
        if "num_key_value_heads" not in kwargs and "num_attention_heads" in data:
            kwargs["num_key_value_heads"] = data["num_attention_heads"]
        eos = kwargs.get("eos_token_id", ())
        kwargs["eos_token_id"] = (eos,) if isinstance(eos, int) else tuple(eos)
        missing = [
            f.name
            for f in fields(cls)
            if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise ValueError(f"config.json: missing keys {sorted(missing)}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, source: str | Path) -> ModelConfig:
        """Read a ``config.json`` file, or a directory that contains one."""
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Serving knobs of the built-in engine.

    Attributes:
        block_size: tokens per KV block; also the size of one exported KV page.
        num_kv_blocks: KV blocks to allocate; ``None`` derives it from ``kv_cache_bytes`` or,
            failing that, from ``max_num_seqs * max_model_len`` capped at 1 GiB.
        kv_cache_bytes: KV memory budget, used when ``num_kv_blocks`` is ``None``.
        max_num_seqs: most requests running in one step.
        max_num_batched_tokens: token budget of one step (chunked prefill splits longer prompts).
        max_model_len: longest context per request; ``None`` uses the model's limit capped at 4096.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"auto"`` (float32 on CPU, bfloat16 on CUDA) or a name in :data:`DTYPE_BYTES`.
        seed: engine seed, mixed into the sampling seed of requests that give none.
    """

    block_size: int = 16
    num_kv_blocks: int | None = None
    kv_cache_bytes: int | None = None
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16", "float64"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"EngineConfig.{name} must be positive, got {value}")
        for name in ("num_kv_blocks", "kv_cache_bytes", "max_model_len"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"EngineConfig.{name} must be positive or None, got {value}")

    def resolve_max_model_len(self, model: ModelConfig) -> int:
        """The context limit in force for ``model``."""
        if self.max_model_len is not None:
            return min(self.max_model_len, model.max_position_embeddings)
        return min(model.max_position_embeddings, 4096)

    def resolve_num_blocks(self, model: ModelConfig, dtype: str) -> int:
        """How many KV blocks to allocate for ``model`` stored in ``dtype``."""
        if self.num_kv_blocks is not None:
            return self.num_kv_blocks
        block_bytes = self.block_size * model.kv_bytes_per_token(dtype)
        if self.kv_cache_bytes is not None:
            return max(1, self.kv_cache_bytes // block_bytes)
        wanted = self.max_num_seqs * math.ceil(self.resolve_max_model_len(model) / self.block_size)
        return max(1, min(wanted, (1 << 30) // block_bytes))
