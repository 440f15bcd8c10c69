"""The built-in PyTorch engine: scheduler + block manager + model runner behind :class:`Engine`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from lumen.executor.engine.block_manager import BlockManager
from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.executor.engine.interface import (
    ROOT_TAG,
    Engine,
    KVLayout,
    KVPage,
    ModelRole,
    NoModelLoadedError,
    Proposal,
    RandomWeights,
    RequestSpec,
    SamplingParams,
    StepOutput,
    StepStats,
    UnknownRequestError,
    WeightSource,
    page_tags,
)
from lumen.executor.engine.model import Qwen3ForCausalLM
from lumen.executor.engine.runner import ModelRunner
from lumen.executor.engine.sampling import derive_seed
from lumen.executor.engine.scheduler import ChunkKind, Scheduler, SchedulerConfig
from lumen.executor.engine.speculative import DraftProposer
from lumen.executor.engine.weights import (
    InMemoryWeights,
    build_model,
    load_checkpoint,
    random_state_dict,
)

__all__ = ["TorchEngine", "resolve_device", "resolve_dtype"]

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> tuple[str, torch.dtype]:
    """``"auto"`` is float32 on CPU (exact and deterministic) and bfloat16 on CUDA."""
    if name == "auto":
        name = "bfloat16" if device.type == "cuda" else "float32"
    return name, _DTYPES[name]


@dataclass(eq=False)
class _Loaded:
    role: ModelRole
    config: ModelConfig
    model: Qwen3ForCausalLM
    blocks: BlockManager
    runner: ModelRunner
    scheduler: Scheduler
    proposer: DraftProposer


class TorchEngine(Engine):
    """Qwen3 on CPU or CUDA with a paged KV cache, chunked prefill and speculative decoding.

    Example::

        engine = TorchEngine(EngineConfig(), RandomWeights(model_config, seed=0))
        tokens = engine.generate([RequestSpec("r1", (1, 2, 3))])["r1"]
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        weights: WeightSource | InMemoryWeights | None = None,
        role: ModelRole = "target",
    ) -> None:
        self._config = config or EngineConfig()
        self._device = resolve_device(self._config.device)
        self._dtype_name, self._dtype = resolve_dtype(self._config.dtype, self._device)
        self._loaded: _Loaded | None = None
        if weights is not None:
            self.load_weights(weights, role)

    # ---- properties --------------------------------------------------------------------------

    @property
    def role(self) -> ModelRole | None:
        return None if self._loaded is None else self._loaded.role

    @property
    def model_config(self) -> ModelConfig:
        return self._state().config

    @property
    def engine_config(self) -> EngineConfig:
        return self._config

    @property
    def device(self) -> torch.device:
        """Where the model and KV cache live."""
        return self._device

    @property
    def kv_layout(self) -> KVLayout:
        config = self._state().config
        return KVLayout(
            block_size=self._config.block_size,
            num_layers=config.num_hidden_layers,
            num_kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            dtype=self._dtype_name,
        )

    @property
    def num_free_blocks(self) -> int:
        """Free KV blocks (for tests and load reports)."""
        return self._state().blocks.num_free_blocks

    @property
    def num_kv_blocks(self) -> int:
        """KV blocks in the cache."""
        return self._state().blocks.num_blocks

    # ---- weights -----------------------------------------------------------------------------

    def load_weights(
        self, source: WeightSource | InMemoryWeights, role: ModelRole = "target"
    ) -> None:
        if role not in ("target", "draft"):
            raise ValueError(f"role must be 'target' or 'draft', got {role!r}")
        self.unload()
        if isinstance(source, RandomWeights):
            config = source.config
            tensors = random_state_dict(config, source.seed, source.init_std)
        elif isinstance(source, InMemoryWeights):
            config, tensors = source.config, source.tensors
        else:
            config, tensors = load_checkpoint(source)
        model = build_model(config, tensors, self._device, self._dtype)
        max_model_len = self._config.resolve_max_model_len(config)
        blocks = BlockManager(
            self._config.resolve_num_blocks(config, self._dtype_name), self._config.block_size
        )
        runner = ModelRunner(model, blocks.num_blocks, blocks.block_size, self._device, self._dtype)
        scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=self._config.max_num_seqs,
                max_num_batched_tokens=self._config.max_num_batched_tokens,
                max_model_len=max_model_len,
            ),
            blocks,
        )
        proposer = DraftProposer(
            runner,
            blocks,
            max_num_batched_tokens=self._config.max_num_batched_tokens,
            max_model_len=max_model_len,
            seed_of=self._seed_of,
        )
        self._loaded = _Loaded(role, config, model, blocks, runner, scheduler, proposer)

    def unload(self) -> None:
        self._loaded = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- serving -----------------------------------------------------------------------------

    def add_request(self, spec: RequestSpec) -> None:
        state = self._state()
        state.scheduler.add(spec, self._seed_of(spec.request_id, spec.sampling))

    def abort(self, request_id: str) -> None:
        if self._loaded is None:
            return
        self._loaded.scheduler.abort(request_id)
        self._loaded.proposer.drop(request_id)

    def has_unfinished(self) -> bool:
        return self._loaded is not None and self._loaded.scheduler.has_unfinished()

    def step(self) -> StepOutput:
        state = self._state()
        scheduled = state.scheduler.schedule()
        if scheduled.is_empty:
            return StepOutput(stats=StepStats(num_preempted=len(scheduled.preempted)))
        result = state.runner.execute(scheduled)
        update = state.scheduler.update(scheduled, result)
        chunks = scheduled.chunks
        stats = StepStats(
            num_prefill_tokens=sum(c.num_tokens for c in chunks if c.kind is ChunkKind.PREFILL),
            num_prefill_seqs=sum(1 for c in chunks if c.kind is ChunkKind.PREFILL),
            num_decode_seqs=sum(1 for c in chunks if c.kind is ChunkKind.DECODE),
            num_verify_seqs=sum(1 for c in chunks if c.kind is ChunkKind.VERIFY),
            num_draft_tokens=sum(c.num_tokens - 1 for c in chunks if c.kind is ChunkKind.VERIFY),
            num_accepted_tokens=update.num_accepted,
            num_rejections=update.num_rejections,
            num_preempted=len(scheduled.preempted),
        )
        return StepOutput(update.outputs, stats)

    # ---- speculative decoding ----------------------------------------------------------------

    def propose(self, specs: Sequence[RequestSpec], k: int) -> list[Proposal]:
        state = self._state()
        if state.role != "draft":
            raise NoModelLoadedError("propose() needs weights loaded for the 'draft' role")
        return state.proposer.propose(specs, k)

    def submit_proposals(self, proposals: Iterable[Proposal]) -> int:
        state = self._state()
        if state.role != "target":
            raise NoModelLoadedError("submit_proposals() needs weights loaded as 'target'")
        return sum(1 for p in proposals if state.scheduler.add_proposal(p))

    # ---- KV export and import ----------------------------------------------------------------

    def export_kv(self, request_id: str, from_position: int = 0) -> list[KVPage]:
        state = self._state()
        seq = state.scheduler.get(request_id)
        if seq is None:
            raise UnknownRequestError(request_id)
        layout = self.kv_layout
        size = layout.block_size
        computed = seq.num_computed
        table = state.blocks.block_table(request_id)
        tags = page_tags(seq.token_ids, size, computed)
        pages: list[KVPage] = []
        for index, tag in enumerate(tags):
            start = index * size
            end = min(start + size, computed)
            if end <= from_position:
                continue
            pages.append(
                KVPage.create(
                    request_id=request_id,
                    page_index=index,
                    start_position=start,
                    end_position=end,
                    token_tag=tag,
                    dtype=layout.dtype,
                    shape=layout.page_shape(end - start),
                    payload=state.runner.read_block(table[index], end - start),
                )
            )
        return pages

    def import_kv(self, spec: RequestSpec, pages: Iterable[KVPage]) -> int:
        state = self._state()
        if state.scheduler.get(spec.request_id) is not None:
            raise ValueError(f"request {spec.request_id!r} already exists")
        chain = self.valid_prefix(spec, pages)
        tokens = spec.token_ids
        # At least the last token is recomputed: its logits choose the next token.
        restored = min(chain[-1].end_position if chain else 0, len(tokens) - 1)
        if restored and not state.blocks.can_allocate(spec.request_id, restored):
            restored = 0  # no room: fall back to a full recompute rather than fail
        try:
            table = state.blocks.allocate(spec.request_id, restored)
            for page in chain:
                n = min(page.end_position, restored) - page.start_position
                if n > 0:
                    state.runner.write_block(table[page.page_index], page.payload, page.shape, n)
            state.scheduler.add(
                spec, self._seed_of(spec.request_id, spec.sampling), num_computed=restored
            )
        except Exception:
            state.blocks.free(spec.request_id)
            raise
        return restored

    def valid_prefix(self, spec: RequestSpec, pages: Iterable[KVPage]) -> list[KVPage]:
        """The longest contiguous chain of valid pages from position 0 for ``spec``.

        A page qualifies when it belongs to the request, starts on its block boundary, has this
        engine's layout, passes :meth:`KVPage.verify` and its tag matches the request's tokens.
        Of several copies of one page, the longest valid one wins; a partial page ends the chain.
        """
        layout = self.kv_layout
        size = layout.block_size
        tokens = spec.token_ids
        by_index: dict[int, list[KVPage]] = {}
        for page in pages:
            by_index.setdefault(page.page_index, []).append(page)
        chain: list[KVPage] = []
        prev = ROOT_TAG
        index = 0
        while index in by_index:
            best: KVPage | None = None
            for page in by_index[index]:
                if (
                    page.request_id == spec.request_id
                    and page.start_position == index * size
                    and page.start_position < page.end_position <= page.start_position + size
                    and page.dtype == layout.dtype
                    and page.shape == layout.page_shape(page.num_tokens)
                    and page.verify()
                    and page.matches(tokens, prev)
                    and (best is None or page.end_position > best.end_position)
                ):
                    best = page
            if best is None:
                break
            chain.append(best)
            prev = best.token_tag
            if best.end_position < (index + 1) * size:
                break
            index += 1
        return chain

    # ---- helpers -----------------------------------------------------------------------------

    def _state(self) -> _Loaded:
        if self._loaded is None:
            raise NoModelLoadedError("no weights loaded; call load_weights() first")
        return self._loaded

    def _seed_of(self, request_id: str, sampling: SamplingParams) -> int:
        if sampling.seed is not None:
            return sampling.seed
        return derive_seed(request_id, self._config.seed)
