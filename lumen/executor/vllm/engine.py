"""``VllmEngine``: vLLM's ``LLMEngine`` behind LUMEN's engine interface.

The worker (:class:`~lumen.executor.worker.core.WorkerCore`) runs it exactly as the built-in
engine: its loop adds requests, steps, and drains checkpoint pages through
:meth:`VllmEngine.export_kv` to the streamer; a restored request comes in through
:meth:`VllmEngine.import_kv`, whose pages vLLM loads through ``LumenConnector`` before prefilling
only the tail. vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the ``uni``
executor: one GPU per worker), because the connector meets the worker's streamer and store
through the in-process :class:`~lumen.executor.vllm.core.LumenKVBridge`.

Prompts are token ids (``skip_tokenizer_init``) and weights come from a local Hugging Face
folder. Draft assistance is not available on this engine (docs/vllm.md says what vLLM's
``custom_class`` proposer would need): :meth:`propose` raises and :meth:`submit_proposals`
queues nothing. Only importing vLLM happens in :meth:`VllmEngine.load_weights`; everything
else here is testable without it.
"""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.executor.engine.interface import (
    Engine,
    FinishReason,
    KVLayout,
    KVPage,
    ModelRole,
    NoModelLoadedError,
    Proposal,
    RandomWeights,
    RequestOutput,
    RequestSpec,
    StepOutput,
    WeightSource,
)
from lumen.executor.vllm import VLLM_INSTALL_HINT
from lumen.executor.vllm.core import (
    BRIDGE_KEY,
    REQUEST_KEY,
    LumenKVBridge,
    register_bridge,
    unregister_bridge,
)

__all__ = [
    "VllmEngine",
    "VllmMissingError",
    "VllmOptions",
    "engine_kwargs",
    "kv_transfer_kwargs",
    "require_vllm",
    "sampling_kwargs",
]

_BRIDGE_NAMES = itertools.count()


class VllmMissingError(RuntimeError):
    """vLLM is not installed here."""


def require_vllm() -> None:
    """Raise :class:`VllmMissingError` with the install hint unless vLLM imports."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise VllmMissingError(
            f"--engine vllm needs vLLM, which is not installed ({exc}); "
            f"install it with: {VLLM_INSTALL_HINT}"
        ) from None


class VllmOptions:
    """vLLM knobs beyond :class:`EngineConfig` (GPU memory share, eager mode)."""

    def __init__(
        self,
        gpu_memory_utilization: float = 0.85,
        enforce_eager: bool = True,
        dtype: str = "auto",
    ) -> None:
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enforce_eager = enforce_eager
        self.dtype = dtype


def kv_transfer_kwargs(bridge_name: str) -> dict[str, Any]:
    """``KVTransferConfig`` fields that plug ``LumenConnector`` into vLLM."""
    return {
        "kv_connector": "LumenConnector",
        "kv_connector_module_path": "lumen.executor.vllm.connector",
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {BRIDGE_KEY: bridge_name},
    }


def engine_kwargs(
    model_dir: str, config: EngineConfig, model: ModelConfig, options: VllmOptions
) -> dict[str, Any]:
    """``EngineArgs`` of a LUMEN vLLM worker (without ``kv_transfer_config``)."""
    kwargs: dict[str, Any] = {
        "model": model_dir,
        "skip_tokenizer_init": True,
        "block_size": config.block_size,
        "max_num_seqs": config.max_num_seqs,
        "max_model_len": config.resolve_max_model_len(model),
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "enforce_eager": options.enforce_eager,
        "dtype": kv_dtype(config, options),
        "seed": config.seed,
        "distributed_executor_backend": "uni",
        "tensor_parallel_size": 1,
    }
    if config.num_kv_blocks is not None:
        kwargs["num_gpu_blocks_override"] = config.num_kv_blocks
    return kwargs


def kv_dtype(config: EngineConfig, options: VllmOptions) -> str:
    """The dtype vLLM computes (and stores KV) in: the option, else the config, else bf16."""
    if options.dtype != "auto":
        return options.dtype
    return "bfloat16" if config.dtype == "auto" else config.dtype


def sampling_kwargs(spec: RequestSpec) -> dict[str, Any]:
    """``SamplingParams`` of a request: the remaining tokens, LUMEN's id for the connector,
    only explicit stop tokens (no EOS), token-id output in deltas."""
    s = spec.sampling
    return {
        "max_tokens": s.max_new_tokens - len(spec.output_token_ids),
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stop_token_ids": list(s.stop_token_ids),
        "ignore_eos": True,
        "detokenize": False,
        "extra_args": {"kv_transfer_params": {REQUEST_KEY: spec.request_id}},
    }


def finish_reason(text: str | None) -> FinishReason | None:
    """LUMEN's finish reason of vLLM's (``stop``, ``length``, ``abort``; others end as stop)."""
    if text is None:
        return None
    if text == "length":
        return FinishReason.LENGTH
    if text == "abort":
        return FinishReason.ABORT
    return FinishReason.STOP


class VllmEngine(Engine):
    """vLLM behind :class:`~lumen.executor.engine.interface.Engine` (module docstring)."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        weights: WeightSource | None = None,
        role: ModelRole = "target",
        options: VllmOptions | None = None,
    ) -> None:
        self._config = config or EngineConfig()
        self._options = options or VllmOptions()
        self._llm: Any = None
        self._model: ModelConfig | None = None
        self._bridge: LumenKVBridge | None = None
        self._bridge_name = f"lumen-{os.getpid()}-{next(_BRIDGE_NAMES)}"
        self._outputs: dict[str, int] = {}  # request id -> output tokens so far
        self._context: dict[str, int] = {}  # request id -> positions (prompt + output)
        if weights is not None:
            self.load_weights(weights, role)

    # ---- state -------------------------------------------------------------------------------

    @property
    def role(self) -> ModelRole | None:
        return "target" if self._llm is not None else None

    @property
    def model_config(self) -> ModelConfig:
        if self._model is None:
            raise NoModelLoadedError("no model loaded")
        return self._model

    @property
    def engine_config(self) -> EngineConfig:
        return self._config

    @property
    def kv_layout(self) -> KVLayout:
        if self._bridge is None:
            raise NoModelLoadedError("no model loaded")
        return self._bridge.layout

    @property
    def bridge(self) -> LumenKVBridge | None:
        return self._bridge

    @property
    def num_kv_blocks(self) -> int:
        """vLLM's GPU KV blocks (what the worker reports as its KV capacity; 0 unloaded)."""
        if self._llm is None:
            return 0
        cache = getattr(getattr(self._llm, "vllm_config", None), "cache_config", None)
        blocks = getattr(cache, "num_gpu_blocks", None) or self._config.num_kv_blocks
        return int(blocks or 0)

    @property
    def num_free_blocks(self) -> int:
        """An estimate of vLLM's free blocks: capacity less the blocks the requests here cover
        (vLLM's prefix sharing and preemptions are not seen, so it errs towards "full")."""
        size = self._config.block_size
        used = sum(-(-positions // size) for positions in self._context.values())
        return max(0, self.num_kv_blocks - used)

    # ---- weights -----------------------------------------------------------------------------

    def load_weights(self, source: WeightSource, role: ModelRole = "target") -> None:
        if role != "target":
            raise NotImplementedError("draft models do not run on the vLLM engine (docs/vllm.md)")
        if isinstance(source, RandomWeights) or not Path(str(source)).is_dir():
            raise ValueError(f"vLLM loads a Hugging Face folder; got {source!r}")
        # Before vLLM reads its environment: the engine core runs in this process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        require_vllm()
        self.unload()
        model_dir = str(source)
        model = ModelConfig.from_json(Path(model_dir) / "config.json")
        layout = KVLayout(
            block_size=self._config.block_size,
            num_layers=model.num_hidden_layers,
            num_kv_heads=model.num_key_value_heads,
            head_dim=model.head_dim,
            dtype=kv_dtype(self._config, self._options),
        )
        self._bridge = LumenKVBridge(layout)
        register_bridge(self._bridge_name, self._bridge)
        from vllm import EngineArgs, LLMEngine
        from vllm.config import KVTransferConfig

        args = EngineArgs(
            **engine_kwargs(model_dir, self._config, model, self._options),
            kv_transfer_config=KVTransferConfig(**kv_transfer_kwargs(self._bridge_name)),
        )
        self._llm = LLMEngine.from_engine_args(args)
        self._model = model

    def unload(self) -> None:
        if self._llm is not None:
            for rid in list(self._outputs):
                self.abort(rid)
            self._llm = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover - torch comes with vLLM
                pass
        unregister_bridge(self._bridge_name)
        self._bridge = None
        self._model = None

    # ---- requests ----------------------------------------------------------------------------

    def _engine(self) -> Any:
        if self._llm is None:
            raise NoModelLoadedError("no model loaded")
        return self._llm

    def add_request(self, spec: RequestSpec) -> None:
        llm = self._engine()
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(**sampling_kwargs(spec), output_kind=RequestOutputKind.DELTA)
        prompt = TokensPrompt(prompt_token_ids=list(spec.token_ids))
        llm.add_request(spec.request_id, prompt, params)
        self._outputs[spec.request_id] = len(spec.output_token_ids)
        self._context[spec.request_id] = len(spec.token_ids)

    def abort(self, request_id: str) -> None:
        if self._llm is not None and request_id in self._outputs:
            self._llm.abort_request([request_id])
        self._outputs.pop(request_id, None)
        self._context.pop(request_id, None)
        if self._bridge is not None:
            self._bridge.finish(request_id)

    def step(self) -> StepOutput:
        results: list[RequestOutput] = []
        for out in self._engine().step():
            rid = str(out.request_id)
            if rid not in self._outputs:
                continue
            completion = out.outputs[0] if out.outputs else None
            new = tuple(int(t) for t in completion.token_ids) if completion is not None else ()
            self._outputs[rid] += len(new)
            self._context[rid] += len(new)
            reason = finish_reason(completion.finish_reason if completion is not None else None)
            if out.finished and reason is None:
                reason = FinishReason.STOP
            results.append(RequestOutput(rid, new, self._outputs[rid], reason))
            if reason is not None:
                del self._outputs[rid]
                del self._context[rid]
        return StepOutput(tuple(results))

    def has_unfinished(self) -> bool:
        return self._llm is not None and bool(self._llm.has_unfinished_requests())

    # ---- KV pages ----------------------------------------------------------------------------

    def checkpoint_request(self, request_id: str, saving: bool) -> None:
        """Copy the request's KV out for checkpoints or not (the engine loop calls this before
        adding a request: only requests with a holder are copied)."""
        if self._bridge is not None:
            self._bridge.set_saving(request_id, saving)

    def export_kv(self, request_id: str, from_position: int = 0) -> list[KVPage]:
        """Whole pages ``LumenConnector`` copied out of vLLM for the request (ending after
        ``from_position``)."""
        if self._bridge is None:
            return []
        return self._bridge.take_saved(request_id, from_position)

    def import_kv(self, spec: RequestSpec, pages: Iterable[KVPage]) -> int:
        """Offer the pages to the connector and queue the request: vLLM loads the valid
        whole-block prefix (below the request's length) and prefills the tail."""
        if self._bridge is None:
            raise NoModelLoadedError("no model loaded")
        restored = self._bridge.offer_restore(spec.request_id, spec.token_ids, pages)
        self.add_request(spec)
        return restored

    # ---- speculative decoding ----------------------------------------------------------------

    def propose(self, specs: Sequence[RequestSpec], k: int) -> list[Proposal]:
        raise NotImplementedError("the vLLM engine cannot draft (docs/vllm.md)")

    def submit_proposals(self, proposals: Iterable[Proposal]) -> int:
        return 0  # no external proposals on vLLM (docs/vllm.md): nothing is queued
