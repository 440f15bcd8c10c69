"""The table cost model: interpolation, agreement with the roofline it samples, JSON round trip."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.planner.costmodel import (
    DEFAULT_TABLE_GRIDS,
    BatchShape,
    CostModel,
    Deployment,
    Grid2D,
    NoDraftModelError,
    RooflineCostModel,
    TableCostModel,
    TableFormatError,
    TableGrids,
    get_hardware_profile,
    get_model_profile,
)

ROOFLINE = RooflineCostModel(
    Deployment(get_model_profile("Llama-3-70B"), get_hardware_profile("A100-80GB"), 4),
    draft=get_model_profile("Llama-3-8B"),
)
TABLE = TableCostModel.profile_from(ROOFLINE)
GRIDS = DEFAULT_TABLE_GRIDS


# --- Grid2D -------------------------------------------------------------------------------


def test_bilinear_inside_clamped_below_extrapolated_above() -> None:
    # f(x, y) = 1 + 2x + 3y + xy sampled at x in {0, 2}, y in {0, 1}.
    grid = Grid2D(xs=(0.0, 2.0), ys=(0.0, 1.0), values=((1.0, 4.0), (5.0, 10.0)))
    assert grid(1.0, 0.5) == pytest.approx(1 + 2 + 1.5 + 0.5)
    assert grid(-5.0, -1.0) == 1.0  # clamped to the smallest grid point
    assert grid(4.0, 0.0) == pytest.approx(9.0)  # 1 + 2 * 4: the last segment continued
    assert grid(4.0, 2.0) == pytest.approx(1 + 8 + 6 + 8)


def test_single_point_axis_is_constant_along_it() -> None:
    grid = Grid2D(xs=(5.0,), ys=(0.0, 10.0), values=((1.0, 3.0),))
    assert grid(0.0, 5.0) == grid(100.0, 5.0) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("xs", "values", "message"),
    [
        ((1.0, 1.0), ((1.0,), (1.0,)), "strictly increasing"),
        ((1.0, 2.0), ((1.0,),), "rows"),
        ((1.0, 2.0), ((1.0,), (-1.0,)), "non-negative"),
        ((), (), "empty"),
    ],
)
def test_bad_grids_are_rejected(
    xs: tuple[float, ...], values: tuple[tuple[float, ...], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Grid2D(xs=xs, ys=(0.0,), values=values)


# --- agreement with the sampled roofline --------------------------------------------------


def test_table_is_a_cost_model() -> None:
    assert isinstance(TABLE, CostModel)
    assert TABLE.deployment == ROOFLINE.deployment


def test_reproduces_the_roofline_at_grid_points() -> None:
    for chunk in GRIDS.prefill_chunk_tokens:
        for context in GRIDS.prefill_context_tokens:
            expected = ROOFLINE.prefill_time(chunk, context)
            assert TABLE.prefill_time(chunk, context) == pytest.approx(expected, rel=1e-12)
            shape = BatchShape.prefill(chunk, context)
            assert TABLE.batch_time(shape) == pytest.approx(expected, rel=1e-9)
    for batch in GRIDS.decode_batch_sizes:
        for per_seq in GRIDS.decode_context_tokens_per_seq:
            expected = ROOFLINE.decode_step_time(batch, batch * per_seq)
            assert TABLE.decode_step_time(batch, batch * per_seq) == pytest.approx(
                expected, rel=1e-12
            )


def _midpoints(axis: tuple[int, ...]) -> list[int]:
    return [(a + b) // 2 for a, b in pairwise(axis)]


def test_stays_close_to_the_roofline_between_grid_points() -> None:
    # The roofline's max() has a kink between grid points, which a linear interpolant cuts
    # across; on the default (roughly doubling) grids that costs at most a few percent.
    for chunk in _midpoints(GRIDS.prefill_chunk_tokens):
        for context in _midpoints(GRIDS.prefill_context_tokens):
            assert TABLE.prefill_time(chunk, context) == pytest.approx(
                ROOFLINE.prefill_time(chunk, context), rel=0.05
            )
    for batch in _midpoints(GRIDS.decode_batch_sizes):
        for per_seq in _midpoints(GRIDS.decode_context_tokens_per_seq):
            assert TABLE.decode_step_time(batch, batch * per_seq) == pytest.approx(
                ROOFLINE.decode_step_time(batch, batch * per_seq), rel=0.05
            )


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.tuples(st.integers(1, 1024), st.integers(0, 8192)), max_size=3),
    contexts=st.lists(st.integers(1, 8192), max_size=48),
    queries=st.sampled_from([1, 5]),
)
def test_mixed_batches_stay_close_to_the_roofline(
    chunks: list[tuple[int, int]], contexts: list[int], queries: int
) -> None:
    shape = BatchShape.build(chunks, contexts, queries)
    expected = ROOFLINE.batch_time(shape)
    assert TABLE.batch_time(shape) == pytest.approx(expected, rel=0.05, abs=1e-12)


def test_extrapolates_past_the_largest_batch() -> None:
    # 1024 sequences is twice the largest profiled batch; decode there is compute-bound and
    # the roofline is linear in tokens, so the continued last segment is accurate.
    expected = ROOFLINE.decode_step_time(1024, 1024 * 256)
    assert TABLE.decode_step_time(1024, 1024 * 256) == pytest.approx(expected, rel=0.05)


@settings(max_examples=200, deadline=None)
@given(
    chunk=st.integers(1, 8192),
    context=st.integers(0, 65536),
    more=st.integers(0, 4096),
    batch=st.integers(1, 1024),
    per_seq=st.integers(0, 65536),
)
def test_times_are_monotone(chunk: int, context: int, more: int, batch: int, per_seq: int) -> None:
    assert TABLE.prefill_time(chunk + more, context) >= TABLE.prefill_time(chunk, context)
    assert TABLE.prefill_time(chunk, context + more) >= TABLE.prefill_time(chunk, context)
    base = TABLE.decode_step_time(batch, batch * per_seq)
    assert TABLE.decode_step_time(batch + 1, (batch + 1) * per_seq) >= base
    assert TABLE.decode_step_time(batch, batch * (per_seq + more)) >= base


def test_data_movement_matches_the_roofline() -> None:
    assert TABLE.reload_timeline() == ROOFLINE.reload_timeline()
    assert TABLE.draft_load_time() == ROOFLINE.draft_load_time()
    assert TABLE.kv_restore_time(777) == ROOFLINE.kv_restore_time(777)
    assert TABLE.kv_transfer_time(777) == ROOFLINE.kv_transfer_time(777)
    assert TABLE.checkpoint_stream_bytes(777) == ROOFLINE.checkpoint_stream_bytes(777)
    assert TABLE.gpu_kv_capacity_tokens() == ROOFLINE.gpu_kv_capacity_tokens()


def test_draft_table_samples_the_draft_roofline() -> None:
    draft_table, draft_roofline = TABLE.draft_cost_model(), ROOFLINE.draft_cost_model()
    assert draft_table is not None and draft_roofline is not None
    assert draft_table.decode_step_time(8, 8 * 1024) == pytest.approx(
        draft_roofline.decode_step_time(8, 8 * 1024)
    )


def test_without_draft() -> None:
    plain = TableCostModel.profile_from(RooflineCostModel(ROOFLINE.deployment), TableGrids())
    assert plain.draft_cost_model() is None
    with pytest.raises(NoDraftModelError):
        plain.draft_load_time()


# --- JSON ---------------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    restored = TableCostModel.from_json(TABLE.to_json())
    assert restored.deployment == TABLE.deployment
    assert restored.prefill_grid == TABLE.prefill_grid
    assert restored.decode_grid == TABLE.decode_grid
    restored_draft, draft = restored.draft_cost_model(), TABLE.draft_cost_model()
    assert restored_draft is not None and draft is not None
    assert restored_draft.decode_grid == draft.decode_grid
    shape = BatchShape.build([(300, 2000)], [500] * 40, 5)
    assert restored.batch_time(shape) == TABLE.batch_time(shape)

    path = tmp_path / "llama70b-a100-tp4.json"
    TABLE.save(path)
    assert TableCostModel.load(path).decode_grid == TABLE.decode_grid


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(TABLE.to_json())
    return document


def test_malformed_json_is_a_format_error() -> None:
    with pytest.raises(TableFormatError, match="invalid cost table"):
        TableCostModel.from_json("{not json")


def test_bad_fields_are_named_by_path() -> None:
    doc = _document()
    doc["prefill"]["chunk_tokens"][1] = doc["prefill"]["chunk_tokens"][0]
    with pytest.raises(TableFormatError, match=r"(?s)prefill.*strictly increasing"):
        TableCostModel.from_json(json.dumps(doc))

    doc = _document()
    doc["decode"]["seconds"].pop()
    with pytest.raises(TableFormatError, match=r"(?s)decode.*rows"):
        TableCostModel.from_json(json.dumps(doc))

    doc = _document()
    doc["deployment"]["tensor_parallel"] = 1
    with pytest.raises(TableFormatError, match="does not fit"):
        TableCostModel.from_json(json.dumps(doc))

    doc = _document()
    doc["deployment"]["model"]["num_layers"] = "many"
    with pytest.raises(TableFormatError, match=r"(?s)deployment\.model\.num_layers"):
        TableCostModel.from_json(json.dumps(doc))

    doc = _document()
    doc["version"] = 2
    with pytest.raises(TableFormatError, match="version"):
        TableCostModel.from_json(json.dumps(doc))


def test_incompatible_draft_in_a_file_is_rejected() -> None:
    doc = _document()
    qwen = json.loads(
        TableCostModel.profile_from(
            RooflineCostModel(
                Deployment(get_model_profile("Qwen3-4B"), get_hardware_profile("A100-80GB"))
            )
        ).to_json()
    )
    doc["draft"] = qwen
    with pytest.raises(TableFormatError, match="family and vocabulary must match"):
        TableCostModel.from_json(json.dumps(doc))
