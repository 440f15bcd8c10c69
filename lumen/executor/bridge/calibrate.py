"""Measure the live workers' model on this machine (for the simulator's cost model of it).

A live cluster (:mod:`lumen.executor.cluster.launcher`) runs the tiny ``random:SEED`` model of
:data:`~lumen.executor.worker.__main__.DEFAULT_RANDOM_MODEL` on CPU. To predict what such a run
should measure, the simulator needs that model's costs on *this* machine, not an A100's.
:func:`calibrate` measures them with the engine configuration the worker uses (device ``cpu``,
its KV block size and batch limits):

- **iterations**: engine-step seconds of single-chunk prefill on a grid of chunk sizes and cached
  contexts, and of plain decode on a grid of batch sizes and contexts, for the target and for
  the draft (the model a restarted worker assists with), each the median of a few steps;
- **loop overhead**: what the worker's engine loop (:class:`~lumen.executor.worker.loop.
  EngineLoop`: command hand-off, token delivery to the request streams) adds to each step;
- **KV pages**: export, wire round trip (serialize, parse, verify) and import, per token;
- **weights**: building the host copy of random weights and loading it into an engine, for the
  target and the draft, and the start of a worker process (interpreter plus imports);
- **speculation**: how often the draft's greedy token agrees with the target's.

:mod:`lumen.executor.bridge.prediction` turns a :class:`Calibration` into a cost model.
Measuring needs torch (the ``executor`` extra), imported only when :func:`calibrate` runs;
results are cached per process.
"""

from __future__ import annotations

import functools
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.planner.costmodel import Grid2D

if TYPE_CHECKING:
    from lumen.executor.engine.interface import Engine

__all__ = ["CPU_DTYPE", "Calibration", "CalibrationGrids", "calibrate", "worker_engine_config"]

#: The engine's dtype on CPU (``EngineConfig.dtype="auto"``): KV pages and weights in memory.
CPU_DTYPE = "float32"


def worker_engine_config() -> EngineConfig:
    """The engine configuration of a live worker (``python -m lumen.executor.worker`` with the
    launcher's arguments: device cpu, default block size, derived KV blocks)."""
    from lumen.executor.worker.__main__ import build_parser

    args = build_parser().parse_args(["--worker-id", "0", "--weights", "random:0"])
    return EngineConfig(device="cpu", block_size=args.block_size, num_kv_blocks=args.num_kv_blocks)


@dataclass(frozen=True, slots=True)
class CalibrationGrids:
    """Where iteration times are measured, and how many steps each point takes (the median
    counts). Live workloads are short (tens of tokens), so the default grids stay small; the
    table extrapolates linearly past their last points."""

    prefill_chunk_tokens: tuple[int, ...] = (1, 16, 64, 256, 512)
    prefill_context_tokens: tuple[int, ...] = (0, 64, 256)
    decode_batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    decode_context_tokens: tuple[int, ...] = (16, 64, 256)
    repeats: int = 3

    def __post_init__(self) -> None:
        axes = (
            self.prefill_chunk_tokens,
            self.prefill_context_tokens,
            self.decode_batch_sizes,
            self.decode_context_tokens,
        )
        if any(not a or list(a) != sorted(set(a)) for a in axes):
            raise ValueError("calibration grid axes must be non-empty and strictly increasing")
        if self.prefill_chunk_tokens[0] < 1 or self.decode_batch_sizes[0] < 1:
            raise ValueError("prefill chunks and decode batches start at >= 1")
        if self.decode_context_tokens[0] < 1 or self.repeats < 1:
            raise ValueError("decode contexts start at >= 1 and repeats must be >= 1")


@dataclass(frozen=True, slots=True)
class Calibration:
    """What :func:`calibrate` measured (seconds unless named otherwise).

    Attributes:
        model, draft_model: the target and draft architectures measured.
        engine: the engine configuration they ran with.
        prefill, decode: target engine-step seconds on (chunk, context) and (batch, context per
            sequence); ``draft_prefill``, ``draft_decode`` likewise for the draft.
        loop_overhead_s: what the worker's engine loop adds to each step.
        kv_export_s_per_token, kv_wire_s_per_token, kv_import_s_per_token: moving KV pages.
        target_build_s, draft_build_s: random weights into host memory (the draft's includes
            building its engine).
        target_load_s: host weights into the engine (the switch to serving).
        process_start_s: a worker process's interpreter and imports.
        acceptance_rate: share of positions where the draft's greedy token is the target's.
        matmul_flops, memory_bandwidth: the CPU's float32 matmul FLOP/s and copy bytes/s.
        wall_s: how long the calibration took.
    """

    model: ModelConfig
    draft_model: ModelConfig
    engine: EngineConfig
    prefill: Grid2D
    decode: Grid2D
    draft_prefill: Grid2D
    draft_decode: Grid2D
    loop_overhead_s: float
    kv_export_s_per_token: float
    kv_wire_s_per_token: float
    kv_import_s_per_token: float
    target_build_s: float
    draft_build_s: float
    target_load_s: float
    process_start_s: float
    acceptance_rate: float
    matmul_flops: float
    memory_bandwidth: float
    wall_s: float = 0.0

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes one token takes in the engine (all layers, the CPU dtype)."""
        return self.model.kv_bytes_per_token(CPU_DTYPE)

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache a worker's engine holds."""
        return self.engine.resolve_num_blocks(self.model, CPU_DTYPE) * self.engine.block_size

    @property
    def read_bytes(self) -> int:
        """Bytes a target load reads from the emulated SSD."""
        return _read_bytes(self.model)

    @property
    def draft_read_bytes(self) -> int:
        """Bytes a draft load reads from the emulated SSD."""
        return _read_bytes(self.draft_model)


def _read_bytes(model: ModelConfig) -> int:
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.worker.stages import weight_bytes

    return weight_bytes(RandomWeights(model, 0))


def calibrate(grids: CalibrationGrids | None = None) -> Calibration:
    """Measure the live workers' model on this machine (cached per process and grids).

    Raises:
        ImportError: torch is not installed (the ``executor`` extra).
    """
    return _calibrate_cached(grids or CalibrationGrids())


@functools.lru_cache(maxsize=4)
def _calibrate_cached(grids: CalibrationGrids) -> Calibration:
    import torch  # fail here, clearly, without the executor extra

    from lumen.executor.worker.__main__ import CPU_THREADS

    # Measure with the workers' intra-op threads (their --cpu-threads default).
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        return _measure(grids)
    finally:
        torch.set_num_threads(before)


def _measure(grids: CalibrationGrids) -> Calibration:
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.worker.__main__ import DEFAULT_RANDOM_MODEL
    from lumen.executor.worker.stages import load_to_host

    start = time.perf_counter()
    model = DEFAULT_RANDOM_MODEL
    draft_model = model.with_layers(1)  # the worker's --draft-layers default
    config = worker_engine_config()
    process_start = _process_start_s()
    target_build, target_host = _timed(lambda: load_to_host(RandomWeights(model, 0)))
    engine = _engine(config, None)
    target_load, _ = _timed(lambda: engine.load_weights(target_host, "target"))
    draft_build, draft = _timed(
        lambda: _engine(config, load_to_host(RandomWeights(draft_model, 1)), "draft")
    )
    draft.load_weights(load_to_host(RandomWeights(draft_model, 1)), "target")
    rng = np.random.default_rng(0)
    _warm_up(engine, rng, model.vocab_size)
    _warm_up(draft, rng, model.vocab_size)
    prefill = _prefill_grid(engine, grids, rng, model.vocab_size)
    decode = _decode_grid(engine, grids, rng, model.vocab_size)
    draft_prefill = _prefill_grid(draft, grids, rng, model.vocab_size)
    draft_decode = _decode_grid(draft, grids, rng, model.vocab_size)
    export_s, wire_s, import_s = _kv_pages(engine, grids.repeats, rng, model.vocab_size)
    overhead = statistics.median(
        _loop_overhead(engine, rng, model.vocab_size) for _ in range(grids.repeats)
    )
    acceptance = _acceptance(target_host, load_to_host(RandomWeights(draft_model, 1)))
    flops, bandwidth = _machine()
    return Calibration(
        model=model,
        draft_model=draft_model,
        engine=config,
        prefill=prefill,
        decode=decode,
        draft_prefill=draft_prefill,
        draft_decode=draft_decode,
        loop_overhead_s=overhead,
        kv_export_s_per_token=export_s,
        kv_wire_s_per_token=wire_s,
        kv_import_s_per_token=import_s,
        target_build_s=target_build,
        draft_build_s=draft_build,
        target_load_s=target_load,
        process_start_s=process_start,
        acceptance_rate=acceptance,
        matmul_flops=flops,
        memory_bandwidth=bandwidth,
        wall_s=time.perf_counter() - start,
    )


def _engine(config: EngineConfig, weights: Any, role: str = "target") -> Engine:
    from lumen.executor.engine.torch_engine import TorchEngine

    return TorchEngine(config, weights, role)  # type: ignore[arg-type]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def _tokens(rng: np.random.Generator, vocab: int, n: int) -> tuple[int, ...]:
    return tuple(int(t) for t in rng.integers(1, vocab, n))


def _spec(rid: str, prompt: tuple[int, ...], max_new: int) -> Any:
    from lumen.executor.engine.interface import RequestSpec, SamplingParams

    return RequestSpec(rid, prompt, SamplingParams(max_new_tokens=max_new))


def _warm_up(engine: Engine, rng: np.random.Generator, vocab: int) -> None:
    """First steps pay for allocations and kernel selection; keep them out of the grids."""
    budget = engine.engine_config.max_num_batched_tokens
    for i, length in enumerate((40, 40, 40, budget)):
        engine.add_request(_spec(f"warm-{i}", _tokens(rng, vocab, length), 6))
    while engine.has_unfinished():
        engine.step()


def _prefill_grid(
    engine: Engine, grids: CalibrationGrids, rng: np.random.Generator, vocab: int
) -> Grid2D:
    """Median step seconds of one prefill chunk of ``c`` tokens after ``x`` restored ones."""
    budget = engine.engine_config.max_num_batched_tokens
    rows: list[list[float]] = [[] for _ in grids.prefill_chunk_tokens]
    for x in grids.prefill_context_tokens:
        longest = max(grids.prefill_chunk_tokens)
        prompt = _tokens(rng, vocab, x + longest)
        rid = f"prefill-{x}"
        pages = _computed_pages(engine, rid, prompt[:x]) if x else []
        for i, c in enumerate(grids.prefill_chunk_tokens):
            if c > budget:
                raise ValueError(f"prefill chunk {c} exceeds the engine's step budget {budget}")
            times = []
            for _ in range(grids.repeats):
                spec = _spec(rid, prompt[: x + c], 2)
                if pages:
                    engine.import_kv(spec, pages)
                else:
                    engine.add_request(spec)
                times.append(_timed(engine.step)[0])
                engine.abort(rid)
            rows[i].append(statistics.median(times))
    return _grid(grids.prefill_chunk_tokens, grids.prefill_context_tokens, rows)


def _computed_pages(engine: Engine, rid: str, prompt: tuple[int, ...]) -> list[Any]:
    """Prefill ``prompt`` as request ``rid`` and return its KV pages (then drop it)."""
    engine.add_request(_spec(rid, prompt, 2))
    _prefill(engine, len(prompt))
    pages = engine.export_kv(rid)
    engine.abort(rid)
    return pages


def _prefill(engine: Engine, tokens: int) -> None:
    """Step until the one request in ``engine`` has its first token (its prompt is in KV)."""
    for _ in range(tokens // engine.engine_config.max_num_batched_tokens + 2):
        if any(out.new_token_ids for out in engine.step().outputs):
            return
    raise RuntimeError("calibration: a prompt did not finish prefilling")


def _decode_grid(
    engine: Engine, grids: CalibrationGrids, rng: np.random.Generator, vocab: int
) -> Grid2D:
    """Median seconds of a plain decode step of ``b`` sequences of context ``x`` each."""
    budget = engine.engine_config.max_num_batched_tokens
    if max(grids.decode_batch_sizes) > engine.engine_config.max_num_seqs:
        raise ValueError("decode batches exceed the engine's max_num_seqs")
    rows: list[list[float]] = []
    for b in grids.decode_batch_sizes:
        row = []
        for x in grids.decode_context_tokens:
            ids = [f"decode-{b}-{x}-{i}" for i in range(b)]
            # Long enough that nobody finishes while the others are still prefilling.
            prefill_steps = math.ceil(b * x / max(1, budget - b)) + 2  # decodes share it
            for rid in ids:
                engine.add_request(
                    _spec(rid, _tokens(rng, vocab, x), prefill_steps + grids.repeats + 4)
                )
            for _ in range(prefill_steps + 2):  # prefill everything, then time decode steps
                stats = engine.step().stats
                if stats.num_prefill_tokens == 0 and stats.num_decode_seqs == b:
                    break
            else:
                raise RuntimeError(f"decode calibration: batch {b} never decoded together")
            times = []
            for _ in range(grids.repeats):
                elapsed, out = _timed(engine.step)
                if out.stats.num_decode_seqs == b and out.stats.num_prefill_tokens == 0:
                    times.append(elapsed)
            for rid in ids:
                engine.abort(rid)
            row.append(statistics.median(times))
        rows.append(row)
    return _grid(grids.decode_batch_sizes, grids.decode_context_tokens, rows)


def _grid(xs: tuple[int, ...], ys: tuple[int, ...], rows: list[list[float]]) -> Grid2D:
    return Grid2D(
        tuple(float(x) for x in xs),
        tuple(float(y) for y in ys),
        tuple(tuple(row) for row in rows),
    )


def _kv_pages(
    engine: Engine, repeats: int, rng: np.random.Generator, vocab: int, tokens: int = 256
) -> tuple[float, float, float]:
    """Seconds per token to export KV pages, to send them (bytes and back, checksums verified)
    and to import them, on a ``tokens``-token prompt (medians of ``repeats``). Each round
    imports the pages back as the same request, so the next export reads restored KV."""
    from lumen.executor.engine.kv_page import KVPage

    rid = "kv-pages"
    prompt = _tokens(rng, vocab, tokens + 1)
    engine.add_request(_spec(rid, prompt, 4))
    _prefill(engine, len(prompt))
    export, wire, load = [], [], []
    for _ in range(repeats):
        t, pages = _timed(lambda: engine.export_kv(rid))
        export.append(t)

        def round_trip(pages: list[KVPage] = pages) -> list[KVPage]:
            back = [KVPage.from_bytes(p.to_bytes()) for p in pages]
            if not all(p.verify() for p in back):
                raise RuntimeError("a KV page failed its checksum after a round trip")
            return back

        t, back = _timed(round_trip)
        wire.append(t)
        engine.abort(rid)
        t, restored = _timed(functools.partial(engine.import_kv, _spec(rid, prompt, 4), back))
        load.append(t)
        if restored != tokens:
            raise RuntimeError(f"KV import restored {restored} of {tokens} tokens")
    engine.abort(rid)
    n = float(tokens)
    return (
        statistics.median(export) / n,
        statistics.median(wire) / n,
        statistics.median(load) / n,
    )


def _loop_overhead(
    engine: Engine, rng: np.random.Generator, vocab: int, batch: int = 1, tokens: int = 32
) -> float:
    """Seconds the worker's engine loop adds per step: the median gap between one request's
    tokens when ``batch`` requests decode through an :class:`EngineLoop` (read by another
    thread, as the RPC threads do), less the median decode step of the same batch stepped
    directly. A live worker at the rates a CPU cluster serves mostly decodes one or two
    requests at a time, hence the default batch of 1."""
    from lumen.executor.worker.api import GenerationRequest
    from lumen.executor.worker.loop import EngineLoop, to_spec

    prompts = [_tokens(rng, vocab, 16) for _ in range(batch)]
    requests = [GenerationRequest(9000 + i, p, tokens) for i, p in enumerate(prompts)]
    for r in requests:
        engine.add_request(to_spec(r))
    direct = []
    while engine.has_unfinished():
        elapsed, out = _timed(engine.step)
        if out.stats.num_decode_seqs == batch and not out.stats.num_prefill_tokens:
            direct.append(elapsed)
    loop = EngineLoop(engine)
    loop.start()
    try:
        streams = [loop.submit(r)[0] for r in requests]
        arrivals = [time.perf_counter() for _ in streams[-1].events()]
        for stream in streams[:-1]:
            for _ in stream.events():
                pass
    finally:
        loop.stop()
    gaps = np.diff(arrivals)
    if not direct or gaps.size == 0:
        return 0.0
    return max(0.0, float(np.median(gaps)) - statistics.median(direct))


def _acceptance(target: Any, draft: Any) -> float:
    """Greedy agreement of draft and target on random prompts (the acceptance rate of
    speculation with greedy requests)."""
    from lumen.executor.engine.pairs import greedy_agreement, random_prompts

    prompts = random_prompts(target.config.vocab_size, 8, 32, seed=0)
    return greedy_agreement(draft, target, prompts)


def _machine() -> tuple[float, float]:
    """FLOP/s of a float32 matmul and bytes/s of a large memory copy (the CPU's roofs)."""
    import torch

    a = torch.ones(256, 256)
    a @ a
    t, _ = _timed(lambda: [a @ a for _ in range(20)])
    flops = 20 * 2 * 256**3 / max(t, 1e-9)
    big = torch.ones(8 << 20)  # 32 MiB
    big.clone()
    t, _ = _timed(lambda: [big.clone() for _ in range(5)])
    bandwidth = 5 * 2 * big.numel() * 4 / max(t, 1e-9)  # read + write
    return flops, bandwidth


def _process_start_s(repeats: int = 1) -> float:
    """Seconds for a fresh interpreter to import what a worker process imports."""
    code = "import lumen.executor.worker.server, lumen.executor.engine.torch_engine"
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)
