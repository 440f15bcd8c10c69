"""BatchShape and the roofline cost model: scaling laws, data movement, protocol conformance."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.planner.costmodel import (
    BatchShape,
    CostModel,
    Deployment,
    NoDraftModelError,
    RooflineCostModel,
    RooflineEfficiency,
    get_hardware_profile,
    get_model_profile,
)


def _model(
    target: str, hardware: str, tp: int, draft: str | None = None, **overrides: float
) -> RooflineCostModel:
    deployment = Deployment(
        get_model_profile(target), get_hardware_profile(hardware), tp, **overrides
    )
    return RooflineCostModel(deployment, None if draft is None else get_model_profile(draft))


LLAMA70_A100 = _model("Llama-3-70B", "A100-80GB", 4, "Llama-3-8B")  # the paper's simulation
QWEN32_A800 = _model("Qwen3-32B", "A800-80GB", 2, "Qwen3-4B")  # the paper's testbed


# --- BatchShape ---------------------------------------------------------------------------


def test_build_counts_attended_pairs() -> None:
    shape = BatchShape.build(prefill_chunks=[(4, 10), (2, 0)], decode_contexts=[100, 50])
    # chunk 4 after 10 cached: 4 * 10 + (1 + 2 + 3 + 4); chunk 2 from scratch: 1 + 2.
    assert shape.prefill_attention == 40 + 10 + 3
    assert (shape.prefill_tokens, shape.prefill_seqs) == (6, 2)
    assert (shape.decode_seqs, shape.decode_context_tokens, shape.decode_query_tokens) == (
        2,
        150,
        2,
    )
    assert shape.total_tokens == 8


def test_prefill_context_is_recovered_exactly_for_equal_chunks() -> None:
    shape = BatchShape.build(prefill_chunks=[(256, 1000), (256, 3000)])
    assert shape.prefill_context_tokens == pytest.approx(4000)
    assert BatchShape.prefill(512, 777).prefill_context_tokens == pytest.approx(777)


def test_verification_positions_and_addition() -> None:
    verify = BatchShape.decode(batch_size=3, context_tokens=300, query_tokens_per_seq=5)
    assert verify.decode_query_tokens == 15
    assert verify.decode_attention == pytest.approx(300 * 5)
    both = verify + BatchShape.prefill(10)
    assert both.prefill_tokens == 10 and both.decode_seqs == 3 and both.total_tokens == 25
    assert BatchShape.decode(0, 0).is_empty and BatchShape().is_empty


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prefill_tokens": -1, "prefill_seqs": 1},
        {"prefill_tokens": 5},  # tokens without a chunk
        {"prefill_tokens": 2, "prefill_seqs": 3},
        {"decode_seqs": 2, "decode_query_tokens": 1},
        {"decode_context_tokens": 10},  # context without a sequence
    ],
)
def test_inconsistent_shapes_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="BatchShape"):
        BatchShape(**kwargs)


# --- realistic magnitudes -----------------------------------------------------------------


@pytest.mark.parametrize("model", [LLAMA70_A100, QWEN32_A800])
def test_magnitudes_are_realistic(model: RooflineCostModel) -> None:
    assert isinstance(model, CostModel)
    assert 0.10 <= model.prefill_time(1024) <= 0.25
    assert 0.015 <= model.decode_step_time(1, 1024) <= 0.05
    assert model.decode_step_time(64, 64 * 1024) < 2 * model.decode_step_time(1, 1024)


# --- scaling laws -------------------------------------------------------------------------


def test_prefill_doubles_with_tokens_when_compute_bound() -> None:
    one, two = BatchShape.prefill(1024), BatchShape.prefill(2048)
    b1, b2 = LLAMA70_A100.breakdown(one), LLAMA70_A100.breakdown(two)
    assert b1.compute_bound and b2.compute_bound
    # Causal attention grows quadratically, but is ~1 % of the FLOPs at this length.
    assert b2.flops / b1.flops == pytest.approx(2.0, rel=0.02)
    assert LLAMA70_A100.batch_time(two) / LLAMA70_A100.batch_time(one) == pytest.approx(
        2.0, rel=0.05
    )


def test_small_batch_decode_is_memory_bound_on_weights() -> None:
    one = LLAMA70_A100.decode_step_time(1, 1024)
    two = LLAMA70_A100.decode_step_time(2, 2048)
    assert two == pytest.approx(one, rel=0.01)
    b = LLAMA70_A100.breakdown(BatchShape.decode(1, 1024))
    assert not b.compute_bound
    assert b.gemm_memory_s > 0.75 * b.total_s


def test_large_batch_decode_is_compute_bound() -> None:
    b = LLAMA70_A100.breakdown(BatchShape.decode(512, 512 * 128))
    assert b.compute_bound
    ratio = LLAMA70_A100.decode_step_time(512, 512 * 128) / LLAMA70_A100.decode_step_time(
        256, 256 * 128
    )
    assert ratio > 1.6


def test_verifying_drafts_is_nearly_free_at_small_batch() -> None:
    """Why speculation helps a survivor: K + 1 = 5 positions cost about as much as one."""
    plain = QWEN32_A800.decode_step_time(8, 8 * 2000)
    verify = QWEN32_A800.decode_step_time(8, 8 * 2000, query_tokens_per_seq=5)
    assert plain < verify < 1.1 * plain


def test_more_tensor_parallelism_is_faster() -> None:
    tp1 = _model("Qwen3-14B", "A100-80GB", 1)
    tp2 = _model("Qwen3-14B", "A100-80GB", 2)
    for shape in (BatchShape.prefill(1024, 2048), BatchShape.decode(32, 32 * 1000)):
        assert tp2.batch_time(shape) < 0.75 * tp1.batch_time(shape)
    assert tp1.breakdown(BatchShape.prefill(64)).allreduce_s == 0.0
    assert tp2.breakdown(BatchShape.prefill(64)).allreduce_s > 0.0


def test_empty_work_costs_nothing() -> None:
    assert LLAMA70_A100.batch_time(BatchShape()) == 0.0
    assert LLAMA70_A100.prefill_time(0, 500) == 0.0
    assert LLAMA70_A100.decode_step_time(0, 0) == 0.0


def test_efficiency_scales_compute_bound_time() -> None:
    deployment = LLAMA70_A100.deployment
    slow = RooflineCostModel(deployment, efficiency=RooflineEfficiency(compute=0.325))
    b_fast = LLAMA70_A100.breakdown(BatchShape.prefill(2048))
    b_slow = slow.breakdown(BatchShape.prefill(2048))
    assert b_slow.gemm_compute_s == pytest.approx(2 * b_fast.gemm_compute_s)
    with pytest.raises(ValueError, match="compute must be in"):
        RooflineEfficiency(compute=1.5)


# --- data movement, reload, draft ---------------------------------------------------------


def test_restore_and_transfer_are_linear_in_tokens() -> None:
    kv = QWEN32_A800.kv_bytes_per_token
    assert QWEN32_A800.kv_restore_time(1000) == pytest.approx(1000 * kv / (2 * 26e9))
    assert QWEN32_A800.kv_transfer_time(1000) == pytest.approx(1000 * kv / 1.25e9)
    assert QWEN32_A800.kv_transfer_time(0) == 0.0
    assert QWEN32_A800.checkpoint_stream_bytes(1000) == 1000 * kv
    fast = _model("Qwen3-32B", "A800-80GB", 2, network_bandwidth=12.5e9)
    assert fast.kv_transfer_time(1000) == pytest.approx(QWEN32_A800.kv_transfer_time(1000) / 10)
    with pytest.raises(ValueError, match="non-negative"):
        QWEN32_A800.kv_restore_time(-1)


def test_reload_is_ssd_then_host_to_gpu() -> None:
    timeline = LLAMA70_A100.reload_timeline()
    weights = LLAMA70_A100.weight_bytes
    assert timeline.ssd_to_host_s == pytest.approx(weights / 2e9)  # ~70 s
    assert timeline.host_to_gpu_s == pytest.approx(weights / (4 * 26e9))
    assert timeline.total_s == timeline.ssd_to_host_s + timeline.host_to_gpu_s


def test_draft_loads_in_seconds_on_one_gpu() -> None:
    draft_bytes = get_model_profile("Qwen3-4B").weight_bytes
    expected = draft_bytes / 0.55e9 + draft_bytes / 26e9  # one PM893 drive, then one GPU
    assert QWEN32_A800.draft_load_time() == pytest.approx(expected)
    assert QWEN32_A800.draft_load_time() < QWEN32_A800.reload_timeline().total_s / 5


def test_draft_cost_model_is_the_draft_on_the_same_hardware() -> None:
    draft = QWEN32_A800.draft_cost_model()
    assert isinstance(draft, RooflineCostModel) and isinstance(draft, CostModel)
    assert draft.deployment.model.name == "Qwen3-4B"
    assert draft.deployment.hardware == QWEN32_A800.deployment.hardware
    assert draft.draft_cost_model() is None
    assert draft.decode_step_time(8, 8000) < QWEN32_A800.decode_step_time(8, 8000) / 2
    assert QWEN32_A800.draft_cost_model() is draft  # built once


def test_no_draft_is_a_clear_error() -> None:
    plain = _model("Qwen3-14B", "A800-80GB", 1)
    assert plain.draft_cost_model() is None
    with pytest.raises(NoDraftModelError, match="no draft model configured for Qwen3-14B"):
        plain.draft_load_time()


def test_incompatible_draft_is_rejected() -> None:
    with pytest.raises(ValueError, match="family and vocabulary must match"):
        _model("Llama-3-70B", "A100-80GB", 4, "Qwen3-4B")


def test_capacity_comes_from_the_deployment() -> None:
    assert LLAMA70_A100.gpu_kv_capacity_tokens() == LLAMA70_A100.deployment.gpu_kv_capacity_tokens


# --- properties ---------------------------------------------------------------------------

chunks = st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 32768)), min_size=0, max_size=4)
contexts = st.lists(st.integers(0, 32768), min_size=0, max_size=64)
shapes = st.builds(
    BatchShape.build,
    prefill_chunks=chunks,
    decode_contexts=contexts,
    query_tokens_per_seq=st.integers(1, 5),
)


@settings(max_examples=200, deadline=None)
@given(shape=shapes)
def test_breakdown_adds_up_to_batch_time(shape: BatchShape) -> None:
    for model in (LLAMA70_A100, QWEN32_A800):
        assert model.breakdown(shape).total_s == pytest.approx(model.batch_time(shape), rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(shape=shapes, extra=shapes)
def test_more_work_is_never_cheaper(shape: BatchShape, extra: BatchShape) -> None:
    for model in (LLAMA70_A100, QWEN32_A800):
        assert model.batch_time(shape + extra) >= model.batch_time(shape) * (1 - 1e-12)


@settings(max_examples=200, deadline=None)
@given(
    chunk=st.integers(1, 8192),
    context=st.integers(0, 65536),
    more=st.integers(0, 4096),
    batch=st.integers(1, 512),
    per_seq=st.integers(0, 32768),
    queries=st.integers(1, 5),
)
def test_times_are_monotone(
    chunk: int, context: int, more: int, batch: int, per_seq: int, queries: int
) -> None:
    m = QWEN32_A800
    assert m.prefill_time(chunk + more, context) >= m.prefill_time(chunk, context)
    assert m.prefill_time(chunk, context + more) >= m.prefill_time(chunk, context)
    base = m.decode_step_time(batch, batch * per_seq, queries)
    assert m.decode_step_time(batch + 1, (batch + 1) * per_seq, queries) >= base
    assert m.decode_step_time(batch, batch * (per_seq + more), queries) >= base
    assert m.decode_step_time(batch, batch * per_seq, queries + 1) >= base
    assert m.kv_restore_time(chunk + more) >= m.kv_restore_time(chunk)


@settings(max_examples=200, deadline=None)
@given(
    seqs=st.integers(1, 512),
    context=st.floats(0.0, 4e6, allow_nan=False),
    steps=st.integers(0, 120),
    start=st.floats(0.0, 1e4, allow_nan=False),
    single_gpu=st.booleans(),
)
def test_decode_run_ends_equal_summed_batch_times_bit_for_bit(
    seqs: int, context: float, steps: int, start: float, single_gpu: bool
) -> None:
    model = _model("Llama-3-8B", "A100-80GB", 1) if single_gpu else LLAMA70_A100
    expected = []
    t, ctx = start, context
    for _ in range(steps):
        ctx += seqs * 1.0
        t += model.batch_time(
            BatchShape(decode_seqs=seqs, decode_context_tokens=int(ctx), decode_query_tokens=seqs)
        )
        expected.append(t)
    assert model.decode_run_ends(start, seqs, context, steps) == expected
