"""Benchmarks of the built-in PyTorch engine (prints figures; not part of the test run).

Three measurements:

1. Engine throughput for a ~22 M parameter Qwen3-shaped model at batch 1 and batch 32:
   prefill tokens/s and decode tokens/s (steps without prefill work).
2. KV page export and import throughput (GB/s of payload, checksums and tag checks included),
   next to a plain memory copy of the same bytes and to CRC-32 alone.
3. Speculative decoding speed-up against the per-token acceptance rate, using synthetic
   draft/target pairs (``lumen.executor.engine.pairs``: the target is the draft plus extra layers
   with small output weights; these are NOT real checkpoints).

Run: ``python benchmarks/bench_engine.py [--quick] [--threads N] [--device cpu|cuda]``.
Each timing is the best of ``--repeat`` runs, which filters out noise from other processes.
"""

from __future__ import annotations

import argparse
import platform
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lumen.executor.engine import (
    EngineConfig,
    KVPage,
    ModelConfig,
    RandomWeights,
    RequestSpec,
    SamplingParams,
    page_tags,
)
from lumen.executor.engine.pairs import calibrate_pair
from lumen.executor.engine.speculative import speculative_generate
from lumen.executor.engine.torch_engine import TorchEngine
from lumen.executor.engine.weights import InMemoryWeights

#: ~22 M parameters (tied embeddings): the throughput model.
THROUGHPUT_MODEL = ModelConfig(
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=1024,
    vocab_size=32_000,
    tie_word_embeddings=True,
)

#: Draft of the speculative pairs: one layer; the target adds ``SPEC_EXTRA_LAYERS``.
SPEC_DRAFT = ModelConfig(
    hidden_size=384,
    num_hidden_layers=1,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=1024,
    vocab_size=8_192,
)
SPEC_EXTRA_LAYERS = 11


def best_of(repeat: int, fn: Callable[[], float]) -> float:
    """Smallest of ``repeat`` measurements (seconds)."""
    return min(fn() for _ in range(repeat))


def prompts(count: int, length: int, vocab: int, seed: int) -> list[tuple[int, ...]]:
    gen = np.random.default_rng(seed)
    return [tuple(int(t) for t in gen.integers(0, vocab, length)) for _ in range(count)]


# ---- 1. throughput -------------------------------------------------------------------------------


@dataclass
class Throughput:
    batch: int
    prefill_tok_s: float
    decode_tok_s: float
    decode_ms_per_step: float


def bench_throughput(
    device: str, batch: int, prompt_len: int, new_tokens: int, repeat: int
) -> Throughput:
    engine = TorchEngine(
        EngineConfig(device=device, max_num_seqs=64, max_num_batched_tokens=2048),
        RandomWeights(THROUGHPUT_MODEL, seed=0),
    )
    sampling = SamplingParams(max_new_tokens=new_tokens)
    best = Throughput(batch, 0.0, 0.0, float("inf"))
    for rep in range(repeat):
        for i, prompt in enumerate(prompts(batch, prompt_len, THROUGHPUT_MODEL.vocab_size, rep)):
            engine.add_request(RequestSpec(f"{rep}-{i}", prompt, sampling))
        prefill_time = decode_time = 0.0
        prefill_tokens = decode_tokens = decode_steps = 0
        while engine.has_unfinished():
            start = time.perf_counter()
            step = engine.step()
            _sync(device)
            elapsed = time.perf_counter() - start
            if step.stats.num_prefill_tokens:
                prefill_time += elapsed
                prefill_tokens += step.stats.num_prefill_tokens
            else:
                decode_time += elapsed
                decode_steps += 1
                decode_tokens += sum(len(o.new_token_ids) for o in step.outputs)
        best.prefill_tok_s = max(best.prefill_tok_s, prefill_tokens / prefill_time)
        best.decode_tok_s = max(best.decode_tok_s, decode_tokens / decode_time)
        best.decode_ms_per_step = min(best.decode_ms_per_step, 1000 * decode_time / decode_steps)
    return best


# ---- 2. KV pages ---------------------------------------------------------------------------------


@dataclass
class PageFigures:
    tokens: int
    nbytes: int
    pages: int
    export_gb_s: float
    import_gb_s: float
    memcpy_gb_s: float
    page_memcpy_gb_s: float
    crc32_gb_s: float


def bench_pages(device: str, tokens: int, repeat: int) -> PageFigures:
    config = EngineConfig(
        device=device, block_size=16, num_kv_blocks=2 * tokens // 16 + 8, max_model_len=tokens + 64
    )
    engine = TorchEngine(config, RandomWeights(THROUGHPUT_MODEL, seed=0))
    layout = engine.kv_layout
    (token_ids,) = prompts(1, tokens + 1, THROUGHPUT_MODEL.vocab_size, seed=1)
    spec = RequestSpec("kv", token_ids, SamplingParams(max_new_tokens=4))
    # Synthetic pages with random payload: import measures the restore path without a prefill.
    gen = np.random.default_rng(0)
    source: list[KVPage] = []
    for index, tag in enumerate(page_tags(token_ids, layout.block_size, tokens)):
        start = index * layout.block_size
        n = min(layout.block_size, tokens - start)
        shape = layout.page_shape(n)
        payload = gen.standard_normal(int(np.prod(shape)), dtype=np.float32).tobytes()
        source.append(
            KVPage.create(
                request_id="kv",
                page_index=index,
                start_position=start,
                end_position=start + n,
                token_tag=tag,
                dtype=layout.dtype,
                shape=shape,
                payload=payload,
            )
        )
    nbytes = sum(len(p.payload) for p in source)

    def do_import() -> float:
        engine.abort("kv")
        start = time.perf_counter()
        restored = engine.import_kv(spec, source)
        _sync(device)
        elapsed = time.perf_counter() - start
        if restored != tokens:
            raise RuntimeError(f"restored {restored} of {tokens} positions")
        return elapsed

    import_s = best_of(repeat, do_import)

    exported: list[KVPage] = []

    def do_export() -> float:
        start = time.perf_counter()
        exported[:] = engine.export_kv("kv")
        return time.perf_counter() - start

    export_s = best_of(repeat, do_export)
    if [p.payload for p in exported] != [p.payload for p in source]:
        raise RuntimeError("exported pages differ from the imported ones")

    flat = np.frombuffer(b"".join(p.payload for p in source), dtype=np.uint8)
    dst = np.empty_like(flat)

    def do_memcpy() -> float:
        start = time.perf_counter()
        np.copyto(dst, flat)
        return time.perf_counter() - start

    def do_page_memcpy() -> float:
        # Same bytes, page-sized objects: what any per-page copy into Python bytes costs.
        start = time.perf_counter()
        copies = [bytes(bytearray(p.payload)) for p in source]
        elapsed = time.perf_counter() - start
        del copies
        return elapsed

    def do_crc() -> float:
        start = time.perf_counter()
        for p in source:
            zlib.crc32(p.payload)
        return time.perf_counter() - start

    return PageFigures(
        tokens=tokens,
        nbytes=nbytes,
        pages=len(source),
        export_gb_s=nbytes / export_s / 1e9,
        import_gb_s=nbytes / import_s / 1e9,
        memcpy_gb_s=nbytes / best_of(repeat, do_memcpy) / 1e9,
        page_memcpy_gb_s=nbytes / best_of(repeat, do_page_memcpy) / 1e9,
        crc32_gb_s=nbytes / best_of(repeat, do_crc) / 1e9,
    )


# ---- 3. speculative decoding ---------------------------------------------------------------------


@dataclass
class SpecFigures:
    requested: float
    calibrated: float
    acceptance: float
    tokens_per_verify: float
    target_tok_s: float
    spec_tok_s: float
    identical: bool

    @property
    def speedup(self) -> float:
        return self.spec_tok_s / self.target_tok_s


def _engine(device: str, weights: InMemoryWeights, role: str) -> TorchEngine:
    config = EngineConfig(device=device, max_num_seqs=64, max_num_batched_tokens=1024)
    return TorchEngine(config, weights, "draft" if role == "draft" else "target")


def bench_speculative(
    device: str, agreement: float, batch: int, new_tokens: int, k: int, repeat: int
) -> SpecFigures:
    pair = calibrate_pair(
        SPEC_DRAFT,
        agreement=agreement,
        extra_layers=SPEC_EXTRA_LAYERS,
        num_prompts=8,
        prompt_len=64,
    )
    sampling = SamplingParams(max_new_tokens=new_tokens)
    specs = [
        RequestSpec(f"s{i}", p, sampling)
        for i, p in enumerate(prompts(batch, 32, SPEC_DRAFT.vocab_size, seed=5))
    ]
    total = batch * new_tokens
    want: dict[str, list[int]] = {}

    def target_only() -> float:
        engine = _engine(device, pair.target, "target")
        start = time.perf_counter()
        want.update(engine.generate(specs))
        _sync(device)
        return time.perf_counter() - start

    target_s = best_of(repeat, target_only)
    runs = []

    def speculative() -> float:
        target = _engine(device, pair.target, "target")
        draft = _engine(device, pair.draft, "draft")
        start = time.perf_counter()
        runs.append(speculative_generate(target, draft, specs, k))
        _sync(device)
        return time.perf_counter() - start

    spec_s = best_of(repeat, speculative)
    run = runs[-1]
    return SpecFigures(
        requested=agreement,
        calibrated=pair.agreement or 0.0,
        acceptance=run.acceptance_rate,
        tokens_per_verify=run.tokens_per_verification,
        target_tok_s=total / target_s,
        spec_tok_s=total / spec_s,
        identical=run.outputs == want,
    )


# ---- main ----------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (best is kept)")
    parser.add_argument("--k", type=int, default=4, help="draft tokens per verification")
    args = parser.parse_args()
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    repeat = args.repeat or (1 if args.quick else 3)
    torch.manual_seed(0)

    print(
        f"# LUMEN engine benchmark  torch {torch.__version__}  device {device}  "
        f"threads {torch.get_num_threads()}  {platform.processor() or platform.machine()}"
    )
    params = THROUGHPUT_MODEL.num_parameters()
    print(
        f"\n## 1. Throughput: hidden {THROUGHPUT_MODEL.hidden_size}, "
        f"{THROUGHPUT_MODEL.num_hidden_layers} layers, vocab {THROUGHPUT_MODEL.vocab_size}, "
        f"{params / 1e6:.1f} M parameters, float32, greedy, prompt 64"
    )
    print(f"{'batch':>5} {'prefill tok/s':>14} {'decode tok/s':>13} {'ms/decode step':>15}")
    new_tokens = 16 if args.quick else 64
    for batch in (1, 32):
        t = bench_throughput(device, batch, 64, new_tokens, repeat)
        print(
            f"{t.batch:>5} {t.prefill_tok_s:>14.0f} {t.decode_tok_s:>13.1f} "
            f"{t.decode_ms_per_step:>15.2f}"
        )

    tokens = 1024 if args.quick else 4096
    pages = bench_pages(device, tokens, repeat)
    print(
        f"\n## 2. KV pages: {pages.tokens} tokens, {pages.pages} pages of 16, "
        f"{pages.nbytes / 2**20:.1f} MiB ({THROUGHPUT_MODEL.kv_bytes_per_token('float32')} B/token)"
    )
    print(f"{'operation':<46} {'GB/s':>7}")
    for name, value in (
        ("export_kv (cache -> pages, tags + CRC-32)", pages.export_gb_s),
        ("import_kv (pages -> cache, verify + tags)", pages.import_gb_s),
        ("memcpy, one buffer (np.copyto)", pages.memcpy_gb_s),
        ("memcpy, per page into new bytes", pages.page_memcpy_gb_s),
        ("CRC-32 alone (zlib)", pages.crc32_gb_s),
    ):
        print(f"{name:<46} {value:>7.2f}")

    agreements = (0.7, 0.9) if args.quick else (0.5, 0.7, 0.8, 0.9, 0.95, 1.0)
    batches = (1,) if args.quick else (1, 8)
    spec_tokens = 32 if args.quick else 96
    print(
        f"\n## 3. Speculative decoding, K={args.k}, greedy, {spec_tokens} new tokens per request\n"
        f"Synthetic pair: draft {SPEC_DRAFT.num_hidden_layers} layer "
        f"({SPEC_DRAFT.num_parameters() / 1e6:.1f} M), target +{SPEC_EXTRA_LAYERS} layers "
        f"({SPEC_DRAFT.with_layers(1 + SPEC_EXTRA_LAYERS).num_parameters() / 1e6:.1f} M), "
        f"vocab {SPEC_DRAFT.vocab_size}. Not real checkpoints (see pairs.py)."
    )
    print(
        f"{'batch':>5} {'agree(calib)':>12} {'acceptance':>10} {'tok/verify':>10} "
        f"{'target tok/s':>12} {'spec tok/s':>10} {'speed-up':>8} {'exact':>5}"
    )
    for batch in batches:
        for agreement in agreements:
            s = bench_speculative(device, agreement, batch, spec_tokens, args.k, repeat)
            print(
                f"{batch:>5} {s.calibrated:>12.2f} {s.acceptance:>10.2f} "
                f"{s.tokens_per_verify:>10.2f} {s.target_tok_s:>12.1f} {s.spec_tok_s:>10.1f} "
                f"{s.speedup:>7.2f}x {s.identical!s:>5}"
            )


if __name__ == "__main__":
    main()
