"""Scheduler: chunked prefill, batch limits, preemption and verification, without a model.

An oracle stands in for the model: the "target" token at position ``p`` is ``oracle(p)``, so
every decision of the scheduler can be checked against hand-computed expectations.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.executor.engine.block_manager import BlockManager
from lumen.executor.engine.interface import FinishReason, Proposal, RequestSpec, SamplingParams
from lumen.executor.engine.scheduler import (
    ChunkKind,
    RunnerOutput,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
)


def oracle(position: int) -> int:
    return 100 + position % 50


def oracle_runner(scheduled: SchedulerOutput) -> RunnerOutput:
    sampled: dict[str, tuple[int, ...]] = {}
    for chunk in scheduled.chunks:
        if chunk.kind is ChunkKind.VERIFY:
            out: list[int] = []
            for i, draft in enumerate(chunk.draft_token_ids):
                if draft != oracle(chunk.start_position + 1 + i):
                    break
                out.append(draft)
            out.append(oracle(chunk.start_position + 1 + len(out)))
            sampled[chunk.request_id] = tuple(out)
        elif chunk.sample:
            sampled[chunk.request_id] = (oracle(chunk.end_position),)
    return RunnerOutput(sampled=sampled)


def make(
    *, blocks: int = 64, block_size: int = 4, seqs: int = 8, budget: int = 16, max_len: int = 256
) -> Scheduler:
    return Scheduler(
        SchedulerConfig(max_num_seqs=seqs, max_num_batched_tokens=budget, max_model_len=max_len),
        BlockManager(blocks, block_size),
    )


def spec(rid: str, prompt_len: int, max_new: int = 5, stop: tuple[int, ...] = ()) -> RequestSpec:
    return RequestSpec(
        rid,
        tuple(range(1, prompt_len + 1)),
        SamplingParams(max_new_tokens=max_new, stop_token_ids=stop),
    )


def run(
    sched: Scheduler, max_steps: int = 500
) -> tuple[dict[str, list[int]], list[SchedulerOutput]]:
    outputs: dict[str, list[int]] = {}
    history: list[SchedulerOutput] = []
    for _ in range(max_steps):
        if not sched.has_unfinished():
            break
        scheduled = sched.schedule()
        history.append(scheduled)
        for out in sched.update(scheduled, oracle_runner(scheduled)).outputs:
            outputs.setdefault(out.request_id, []).extend(out.new_token_ids)
    assert not sched.has_unfinished()
    return outputs, history


def test_chunked_prefill_respects_the_token_budget() -> None:
    sched = make(budget=4)
    sched.add(spec("a", 10), seed=0)
    scheduled = sched.schedule()
    (chunk,) = scheduled.chunks
    assert (chunk.kind, chunk.start_position, chunk.num_tokens, chunk.sample) == (
        ChunkKind.PREFILL,
        0,
        4,
        False,
    )
    assert sched.update(scheduled, oracle_runner(scheduled)).outputs == ()
    outputs, history = run(sched)
    assert all(s.num_batched_tokens <= 4 for s in history)
    # Positions 10.. hold oracle tokens: the first sample comes from the last prompt position.
    assert outputs["a"] == [oracle(p) for p in range(10, 15)]
    assert sched.block_manager.num_free_blocks == 64


def test_decodes_share_steps_with_prefill_chunks() -> None:
    sched = make(budget=6)
    sched.add(spec("a", 3, max_new=6), seed=0)
    first = sched.schedule()
    sched.update(first, oracle_runner(first))
    sched.add(spec("b", 12), seed=0)
    second = sched.schedule()
    kinds = [(c.request_id, c.kind, c.num_tokens) for c in second.chunks]
    assert kinds == [("a", ChunkKind.DECODE, 1), ("b", ChunkKind.PREFILL, 5)]


def test_max_num_seqs_limits_the_running_batch() -> None:
    sched = make(seqs=2, budget=64)
    for rid in "abc":
        sched.add(spec(rid, 3, max_new=2), seed=0)
    scheduled = sched.schedule()
    assert [c.request_id for c in scheduled.chunks] == ["a", "b"]
    assert sched.num_waiting == 1
    outputs, history = run(sched)
    assert all(len(s.chunks) <= 2 for s in history)
    assert set(outputs) == {"a", "b", "c"}


def test_stop_token_and_length_finish_requests() -> None:
    sched = make()
    sched.add(spec("a", 3, max_new=10, stop=(oracle(5),)), seed=0)
    sched.add(spec("b", 3, max_new=2), seed=0)
    reasons: dict[str, FinishReason | None] = {}
    while sched.has_unfinished():
        scheduled = sched.schedule()
        for out in sched.update(scheduled, oracle_runner(scheduled)).outputs:
            if out.finished:
                reasons[out.request_id] = out.finish_reason
                assert out.num_output_tokens == {"a": 3, "b": 2}[out.request_id]
    assert reasons == {"a": FinishReason.STOP, "b": FinishReason.LENGTH}


def test_preemption_recomputes_and_keeps_outputs() -> None:
    # 6 blocks of 4 slots cannot hold three requests growing to 14 positions each.
    small = make(blocks=6, budget=32)
    big = make(blocks=64, budget=32)
    for sched in (small, big):
        for rid in "abc":
            sched.add(spec(rid, 6, max_new=8), seed=0)
    want, _ = run(big)
    got, history = run(small)
    assert got == want
    assert any(s.preempted for s in history)
    assert small.block_manager.num_free_blocks == 6
    small.block_manager.check_invariants()


def test_verification_accepts_a_prefix_and_truncates_blocks() -> None:
    sched = make(block_size=2)
    sched.add(spec("a", 4, max_new=10), seed=0)
    scheduled = sched.schedule()
    sched.update(scheduled, oracle_runner(scheduled))  # prefill; token at position 4
    seq = sched.get("a")
    assert seq is not None and seq.num_tokens == 5
    good = [oracle(5), oracle(6)]
    proposal = Proposal("a", base_len=5, last_token_id=seq.token_ids[-1], token_ids=(*good, 7))
    assert sched.add_proposal(proposal)
    scheduled = sched.schedule()
    (chunk,) = scheduled.chunks
    assert chunk.kind is ChunkKind.VERIFY
    assert chunk.token_ids == (oracle(4), *good, 7)
    assert len(chunk.block_table) == 4  # positions 4..7 need blocks 0..3
    update = sched.update(scheduled, oracle_runner(scheduled))
    assert update.num_accepted == 2 and update.num_rejections == 1
    assert update.outputs[0].new_token_ids == (*good, oracle(7))
    assert seq.num_computed == 7  # fed token + 2 accepted drafts
    assert len(sched.block_manager.block_table("a")) == 4


def test_stale_proposals_are_dropped() -> None:
    sched = make()
    sched.add(spec("a", 4), seed=0)
    # Still waiting for its prefill: nothing to verify yet.
    assert not sched.add_proposal(Proposal("a", 4, 4, (1, 2)))
    scheduled = sched.schedule()
    sched.update(scheduled, oracle_runner(scheduled))
    seq = sched.get("a")
    assert seq is not None
    assert not sched.add_proposal(Proposal("a", 4, 4, (1,)))  # history moved on
    assert not sched.add_proposal(Proposal("a", 5, 99, (1,)))  # different last token
    assert not sched.add_proposal(Proposal("zz", 5, 1, (1,)))  # unknown request
    assert sched.add_proposal(Proposal("a", 5, seq.token_ids[-1], (1,)))


def test_verify_and_decode_share_one_step_and_respect_max_new_tokens() -> None:
    sched = make(budget=64)
    sched.add(spec("a", 3, max_new=3), seed=0)
    sched.add(spec("b", 3, max_new=8), seed=0)
    scheduled = sched.schedule()
    sched.update(scheduled, oracle_runner(scheduled))
    a = sched.get("a")
    assert a is not None
    sched.add_proposal(Proposal("a", a.num_tokens, a.token_ids[-1], (oracle(4), oracle(5), 1, 1)))
    scheduled = sched.schedule()
    kinds = {c.request_id: (c.kind, c.num_tokens) for c in scheduled.chunks}
    # "a" has 2 tokens left, so only one draft can be used (plus the target's own token).
    assert kinds == {"a": (ChunkKind.VERIFY, 2), "b": (ChunkKind.DECODE, 1)}
    outputs = sched.update(scheduled, oracle_runner(scheduled)).outputs
    assert {o.request_id: o.new_token_ids for o in outputs} == {
        "a": (oracle(4), oracle(5)),
        "b": (oracle(4),),
    }
    assert outputs[0].finish_reason is FinishReason.LENGTH


def test_abort_frees_blocks_and_unknown_ids_are_ignored() -> None:
    sched = make()
    sched.add(spec("a", 9), seed=0)
    sched.add(spec("b", 9), seed=0)
    scheduled = sched.schedule()
    sched.update(scheduled, oracle_runner(scheduled))
    assert sched.abort("a") and sched.abort("b")
    assert not sched.abort("a")
    assert sched.block_manager.num_free_blocks == 64
    assert not sched.has_unfinished()


def test_add_rejects_impossible_requests() -> None:
    sched = make(blocks=2, block_size=4, max_len=32)
    with pytest.raises(ValueError, match="KV slots"):
        sched.add(spec("a", 6, max_new=8), seed=0)
    with pytest.raises(ValueError, match="max_model_len"):
        sched.add(spec("b", 40), seed=0)
    sched.add(spec("c", 3, max_new=2), seed=0)
    with pytest.raises(ValueError, match="already exists"):
        sched.add(spec("c", 3), seed=0)


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6),
    max_new=st.integers(min_value=1, max_value=10),
    blocks=st.integers(min_value=8, max_value=40),
    budget=st.integers(min_value=1, max_value=24),
    seqs=st.integers(min_value=1, max_value=4),
    propose=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=8),
)
def test_any_schedule_yields_the_oracle_sequence(
    prompts: list[int], max_new: int, blocks: int, budget: int, seqs: int, propose: list[int]
) -> None:
    """Whatever the limits, preemptions and proposals, every request gets the oracle's tokens,
    each step stays within its limits, and every block comes back."""
    sched = make(blocks=blocks, block_size=4, seqs=seqs, budget=budget)
    for i, length in enumerate(prompts):
        sched.add(spec(f"r{i}", length, max_new=max_new), seed=0)
    outputs: dict[str, list[int]] = {}
    for step in range(2000):
        if not sched.has_unfinished():
            break
        # Propose drafts for running requests: right for a few positions, then wrong.
        for i in range(len(prompts)):
            seq = sched.get(f"r{i}")
            if seq is None or seq.num_uncomputed != 1:
                continue
            good = propose[(step + i) % len(propose)]
            drafts = [oracle(seq.num_tokens + j) for j in range(good)] + [0]
            sched.add_proposal(
                Proposal(seq.request_id, seq.num_tokens, seq.token_ids[-1], tuple(drafts))
            )
        scheduled = sched.schedule()
        assert scheduled.num_batched_tokens <= budget
        assert len(scheduled.chunks) <= seqs
        for out in sched.update(scheduled, oracle_runner(scheduled)).outputs:
            outputs.setdefault(out.request_id, []).extend(out.new_token_ids)
        sched.block_manager.check_invariants()
    assert not sched.has_unfinished()
    for i, length in enumerate(prompts):
        assert outputs[f"r{i}"] == [oracle(p) for p in range(length, length + max_new)]
    assert sched.block_manager.num_free_blocks == blocks
