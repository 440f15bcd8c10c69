"""Draft-assisted decoding: expected tokens of a concurrent draft, the progressive reload
timeline under each draft-load reading, and the simulated survivor's assisted step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.planner.costmodel import BatchShape, CostModel, progressive_timeline
from lumen.planner.problems import expected_tokens_per_step
from lumen.planner.speculation import concurrent_tokens_per_step
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.kernel import Simulation
from lumen.simulator.requests import RequestTable
from lumen.simulator.worker import Assist, SimWorker


@pytest.fixture(scope="module")
def cost() -> CostModel:
    return load_scenario("paper-4w-qwen3-32b").cost_model


def test_a_draft_that_cannot_keep_up_helps_nothing() -> None:
    for g in (0.0, 0.5, 1.0):
        assert concurrent_tokens_per_step(0.6, 4, g) == pytest.approx(1.0)


def test_a_perfect_fast_draft_verifies_every_step_but_the_first() -> None:
    # a -> 1 and a draft far ahead: every step verifies K proposals and keeps the lead
    assert concurrent_tokens_per_step(0.999999, 4, 50.0) == pytest.approx(5.0, rel=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(0.0, 0.95),
    depth=st.integers(1, 8),
    g=st.floats(0.0, 40.0),
    more=st.floats(0.0, 10.0),
)
def test_concurrent_tokens_are_bounded_and_grow_with_draft_speed(
    a: float, depth: int, g: float, more: float
) -> None:
    """Never below a plain step, never above a synchronous draft (which always has K fresh
    proposals), and a faster draft never yields fewer tokens."""
    low = concurrent_tokens_per_step(a, depth, g)
    high = concurrent_tokens_per_step(a, depth, g + more)
    assert 1.0 - 1e-9 <= low <= high + 1e-9
    assert high <= expected_tokens_per_step(a, depth) + 1e-9


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="acceptance_rate"):
        concurrent_tokens_per_step(1.0, 4, 2.0)
    with pytest.raises(ValueError, match="depth"):
        concurrent_tokens_per_step(0.5, 0, 2.0)
    with pytest.raises(ValueError, match="draft_tokens_per_step"):
        concurrent_tokens_per_step(0.5, 4, float("nan"))


def test_parallel_draft_load_on_two_drives_leaves_the_target_read_alone(cost: CostModel) -> None:
    target, draft = cost.reload_timeline(), cost.draft_load_timeline()
    parallel = progressive_timeline(cost, parallel=True)
    assert cost.deployment.hardware.ssd_drives == 2
    assert parallel.draft_ready_s == pytest.approx(draft.total_s)
    assert parallel.target_in_host_s == pytest.approx(target.ssd_to_host_s)
    assert parallel.serving_s == pytest.approx(target.total_s)
    serial = progressive_timeline(cost, parallel=False)
    assert serial.draft_ready_s == pytest.approx(draft.total_s)
    assert serial.target_in_host_s == pytest.approx(draft.total_s + target.ssd_to_host_s)
    assert serial.serving_s == pytest.approx(draft.total_s + target.total_s)
    assert parallel.assist_window_s == pytest.approx(target.ssd_to_host_s - draft.total_s)


def test_parallel_draft_load_on_one_drive_shares_it() -> None:
    cost = load_scenario("paper-sim-10w-llama3-70b").cost_model
    assert cost.deployment.hardware.ssd_drives == 1
    target, draft = cost.reload_timeline(), cost.draft_load_timeline()
    t = progressive_timeline(cost, parallel=True)
    assert t.draft_ready_s == pytest.approx(2 * draft.ssd_to_host_s + draft.host_to_gpu_s)
    assert t.target_in_host_s == pytest.approx(target.ssd_to_host_s + draft.ssd_to_host_s)


def _worker(cost: CostModel) -> SimWorker:
    table = RequestTable.create([0.0], [100], [10])
    return SimWorker(0, Simulation(), cost, table, 512, 1024, None)


@pytest.mark.parametrize("prefill", [0, 512])
@pytest.mark.parametrize("batch", [1, 16, 64, 256])
def test_an_assisted_step_is_never_longer_than_a_plain_step_plus_verification(
    cost: CostModel, batch: int, prefill: int
) -> None:
    """Concurrent drafting (the default) charges a survivor's step the K + 1 query positions
    of verification and nothing else; synchronous drafting adds the draft's K proposal steps."""
    draft = cost.draft_cost_model()
    assert draft is not None
    worker = _worker(cost)
    shape = BatchShape(
        prefill_tokens=prefill,
        prefill_attention=prefill * (prefill + 1) // 2,
        prefill_seqs=1 if prefill else 0,
        decode_seqs=batch,
        decode_context_tokens=batch * 1500,
        decode_query_tokens=batch,
    )
    verify_shape = BatchShape(
        prefill_tokens=shape.prefill_tokens,
        prefill_attention=shape.prefill_attention,
        prefill_seqs=shape.prefill_seqs,
        decode_seqs=batch,
        decode_context_tokens=shape.decode_context_tokens,
        decode_query_tokens=batch * 5,
    )
    plain = cost.batch_time(shape)
    verification = cost.batch_time(verify_shape) - plain
    concurrent = Assist(4, expected_tokens_per_step(0.6, 4), draft, 0.6, concurrent=True)
    worker.set_assist(concurrent)
    step, tokens = worker._step_time(shape)
    assert step <= plain + verification + 1e-12
    assert tokens == 1.0 or tokens <= expected_tokens_per_step(0.6, 4)
    synchronous = Assist(4, expected_tokens_per_step(0.6, 4), draft, 0.6, concurrent=False)
    sync_step, _ = worker._verify_time(shape, synchronous)
    proposals = 4 * draft.decode_step_time(batch, batch * 1500)
    assert sync_step == pytest.approx(plain + verification + proposals)
    worker.set_assist(None)
    assert worker._step_time(shape) == (plain, 1.0)


def test_readings_default_to_the_papers_text_and_testbed() -> None:
    """The defaults docs/simulator-model.md documents, the same in a scenario file, in the
    simulator's options and in what a bundled scenario hands the simulator."""
    from lumen.scenarios.schema import ReadingsConfig
    from lumen.simulator.results import ClusterOptions
    from lumen.simulator.run import cluster_options

    defaults = {
        "assist": "concurrent",
        "draft_load": "parallel",
        "assisted_batches": "mixed",
        "gateway": "least-waiting",
    }
    assert ReadingsConfig().model_dump() == defaults
    options = ClusterOptions()
    assert {k: getattr(options, k) for k in defaults} == defaults
    assert options.concurrent_drafts and options.parallel_draft_load
    bundled = cluster_options(load_scenario("paper-4w-qwen3-32b").scenario)
    assert {k: getattr(bundled, k) for k in defaults} == defaults
