"""Checkpoint export and import: a restored request continues exactly as if never interrupted."""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("torch")

from lumen.executor.engine.interface import KVPage, RequestSpec, SamplingParams
from lumen.executor.engine.torch_engine import TorchEngine

from .conftest import EngineFactory

PROMPT = tuple((5 * j + 11) % 256 for j in range(13))
GREEDY = SamplingParams(max_new_tokens=18)
SAMPLED = SamplingParams(temperature=0.8, top_p=0.95, seed=7, max_new_tokens=18)


def uninterrupted(make_engine: EngineFactory, sampling: SamplingParams) -> list[int]:
    return make_engine(max_num_batched_tokens=5).generate([RequestSpec("r", PROMPT, sampling)])["r"]


def run_until(engine: TorchEngine, spec: RequestSpec, steps: int) -> list[int]:
    """Run ``steps`` steps of a fresh request; return its output so far."""
    engine.add_request(spec)
    out: list[int] = []
    for _ in range(steps):
        for o in engine.step().outputs:
            out.extend(o.new_token_ids)
    return out


def resume(
    make_engine: EngineFactory, spec: RequestSpec, output: list[int], pages: list[KVPage]
) -> tuple[list[int], int]:
    """Import ``pages`` on a fresh engine and finish the request; return (output, restored)."""
    engine = make_engine(max_num_batched_tokens=5)
    resumed = RequestSpec(spec.request_id, spec.prompt_token_ids, spec.sampling, tuple(output))
    restored = engine.import_kv(resumed, pages)
    out = list(output)
    recomputed = 0  # positions computed before the first new token: only the tail
    while engine.has_unfinished():
        step = engine.step()
        if len(out) == len(output):
            recomputed += step.stats.num_prefill_tokens + step.stats.num_decode_seqs
        for o in step.outputs:
            out.extend(o.new_token_ids)
    assert recomputed == len(resumed.token_ids) - restored
    assert engine.num_free_blocks == engine.num_kv_blocks
    return out, restored


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_restore_is_token_identical_at_every_cut(
    make_engine: EngineFactory, sampling: SamplingParams
) -> None:
    want = uninterrupted(make_engine, sampling)
    spec = RequestSpec("r", PROMPT, sampling)
    # Budget 5 puts the first cuts inside the chunked prefill (steps 1 and 2), the rest in decode.
    cuts = 0
    for cut in range(1, len(want) + 3):
        engine = make_engine(max_num_batched_tokens=5)
        output = run_until(engine, spec, cut)
        if len(output) >= sampling.max_new_tokens:
            break
        cuts += 1
        pages = engine.export_kv("r")
        seq = sum(p.num_tokens for p in pages)
        got, restored = resume(make_engine, spec, output, pages)
        assert got == want, f"cut after step {cut}"
        assert restored == min(seq, len(PROMPT) + len(output) - 1)
    assert cuts == len(want) + 1  # three prefill steps, then one cut per decode step


def test_partially_received_last_page_is_dropped(make_engine: EngineFactory) -> None:
    want = uninterrupted(make_engine, SAMPLED)
    spec = RequestSpec("r", PROMPT, SAMPLED)
    for cut in (4, 7, 10):
        engine = make_engine(max_num_batched_tokens=5)
        output = run_until(engine, spec, cut)
        pages = engine.export_kv("r")
        last = pages[-1]
        torn = replace(last, payload=last.payload[: len(last.payload) // 2])
        got, restored = resume(make_engine, spec, output, [*pages[:-1], torn])
        assert got == want
        assert restored == last.start_position


def test_corrupted_page_is_rejected_by_its_checksum(make_engine: EngineFactory) -> None:
    want = uninterrupted(make_engine, GREEDY)
    spec = RequestSpec("r", PROMPT, GREEDY)
    engine = make_engine(max_num_batched_tokens=5)
    output = run_until(engine, spec, 9)
    pages = engine.export_kv("r")
    bad = bytearray(pages[1].payload)
    bad[17] ^= 0x40
    corrupted = replace(pages[1], payload=bytes(bad))
    assert not corrupted.verify()
    got, restored = resume(make_engine, spec, output, [pages[0], corrupted, *pages[2:]])
    assert restored == pages[0].end_position  # nothing after the bad page is used
    assert got == want


def test_incremental_stream_with_stale_and_foreign_pages(make_engine: EngineFactory) -> None:
    """A holder receives pages every few steps (as bytes), keeping the newest copy per index."""
    want = uninterrupted(make_engine, SAMPLED)
    spec = RequestSpec("r", PROMPT, SAMPLED)
    engine = make_engine(max_num_batched_tokens=5)
    engine.add_request(spec)
    held: dict[int, bytes] = {}
    output: list[int] = []
    sent_to = 0
    for step in range(1, 14):
        for o in engine.step().outputs:
            output.extend(o.new_token_ids)
        if step % 3 == 0:
            for page in engine.export_kv("r", from_position=sent_to):
                held[page.page_index] = page.to_bytes()
                sent_to = max(sent_to, page.end_position - page.end_position % 4)
    pages = [KVPage.from_bytes(data) for data in held.values()]
    # Pages of another request and a page claiming other tokens must be ignored.
    other = make_engine()
    run_until(other, RequestSpec("x", (1, 2, 3, 4, 5, 6), SAMPLED), 1)
    pages += other.export_kv("x")
    got, restored = resume(make_engine, spec, output, pages)
    assert got == want
    assert 0 < restored < len(PROMPT) + len(output)


def test_pages_of_different_tokens_do_not_restore(make_engine: EngineFactory) -> None:
    spec = RequestSpec("r", PROMPT, GREEDY)
    engine = make_engine(max_num_batched_tokens=64)
    output = run_until(engine, spec, 3)
    pages = engine.export_kv("r")
    changed = RequestSpec("r", (PROMPT[0], 0, *PROMPT[2:]), GREEDY, tuple(output))
    target = make_engine()
    assert target.import_kv(changed, pages) == 0
    # The request still runs (fully recomputed).
    assert target.has_unfinished()


def test_export_from_position_and_duplicate_request(make_engine: EngineFactory) -> None:
    engine = make_engine(max_num_batched_tokens=64)
    run_until(engine, RequestSpec("r", PROMPT, GREEDY), 2)
    pages = engine.export_kv("r")
    assert [p.start_position for p in pages] == [0, 4, 8, 12]
    assert pages[-1].end_position == len(PROMPT) + 1
    assert [p.page_index for p in engine.export_kv("r", from_position=9)] == [2, 3]
    with pytest.raises(ValueError, match="already exists"):
        engine.import_kv(RequestSpec("r", PROMPT, GREEDY), pages)
