"""Table cost model: iteration times measured on a grid (or sampled from another model).

Two grids hold measured iteration times: single-chunk prefill on ``(chunk_tokens,
context_tokens)`` and plain decode on ``(batch_size, context_tokens_per_seq)``. Lookups are
bilinear inside the grid, *clamped* below the smallest grid point on each axis (an iteration never
gets cheaper than the smallest one profiled) and *linearly extrapolated* above the largest (times
keep growing with tokens, so monotonicity survives past the grid). Data movement, reload and
capacity come from a :class:`Deployment`, exactly as in the roofline model.

Tables are saved as JSON (``to_json`` / ``from_json``), validated by pydantic so that a bad file
fails with the path of the bad field.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from lumen.planner.costmodel.base import BatchShape, CostModel, DeploymentCosts
from lumen.planner.costmodel.deployment import Deployment
from lumen.planner.costmodel.profiles import draft_compatible

__all__ = [
    "DEFAULT_TABLE_GRIDS",
    "Grid2D",
    "TableCostModel",
    "TableFormatError",
    "TableGrids",
]


class TableFormatError(ValueError):
    """A cost table file that cannot be read; the message names the bad field."""


def _locate(axis: tuple[float, ...], x: float) -> tuple[int, float]:
    """Segment ``i`` and weight ``t`` with value = (1 - t) * v[i] + t * v[i + 1]."""
    if len(axis) == 1 or x <= axis[0]:
        return 0, 0.0  # clamp below the grid (t == 0 never touches v[i + 1])
    i = len(axis) - 2 if x >= axis[-1] else bisect_right(axis, x) - 1
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])  # t > 1: extrapolate above


@dataclass(frozen=True, slots=True)
class Grid2D:
    """Values ``values[i][j]`` at ``(xs[i], ys[j])``, interpolated bilinearly (see module doc)."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        for name, axis in (("xs", self.xs), ("ys", self.ys)):
            if not axis:
                raise ValueError(f"grid axis {name} is empty")
            if any(not math.isfinite(a) or a < 0 for a in axis):
                raise ValueError(f"grid axis {name} must be finite and non-negative: {axis}")
            if any(b <= a for a, b in pairwise(axis)):
                raise ValueError(f"grid axis {name} must be strictly increasing: {axis}")
        if len(self.values) != len(self.xs) or any(len(r) != len(self.ys) for r in self.values):
            raise ValueError(
                f"grid values must be {len(self.xs)} rows of {len(self.ys)} (one per xs, ys)"
            )
        if any(not math.isfinite(v) or v < 0 for row in self.values for v in row):
            raise ValueError("grid values must be finite and non-negative")

    def __call__(self, x: float, y: float) -> float:
        """The interpolated value at ``(x, y)``; never negative."""
        i, t = _locate(self.xs, x)
        j, u = _locate(self.ys, y)
        row = self.values[i]
        low = row[j] if u == 0.0 else row[j] + u * (row[j + 1] - row[j])
        if t == 0.0:
            return low
        row = self.values[i + 1]
        high = row[j] if u == 0.0 else row[j] + u * (row[j + 1] - row[j])
        value = low + t * (high - low)
        return value if value > 0.0 else 0.0


@dataclass(frozen=True, slots=True)
class TableGrids:
    """Where :meth:`TableCostModel.profile_from` samples: prefill and decode grid axes."""

    prefill_chunk_tokens: tuple[int, ...] = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096)
    prefill_context_tokens: tuple[int, ...] = (0, 1024, 2048, 4096, 8192, 16384, 32768)
    decode_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    decode_context_tokens_per_seq: tuple[int, ...] = (0, 256, 1024, 2048, 4096, 8192, 32768)

    def __post_init__(self) -> None:
        if self.prefill_chunk_tokens[0] < 1 or self.decode_batch_sizes[0] < 1:
            raise ValueError("prefill chunk and decode batch axes must start at >= 1")


DEFAULT_TABLE_GRIDS = TableGrids()


class TableCostModel(DeploymentCosts):
    """A cost model that interpolates profiled iteration times.

    Args:
        deployment: the worker the times were measured on (sizes and bandwidths come from it).
        prefill: single-chunk prefill seconds on (chunk_tokens, context_tokens).
        decode: plain decode-step seconds on (batch_size, context_tokens_per_seq).
        draft: the draft model's table, on the same hardware, if any.

    Mixed batches (an approximation): the engine runs the GEMMs of all tokens together and each
    phase's attention separately, so a batch of ``P`` prefill and ``Q`` decode positions costs
    ``prefill(P + Q, c_eq) + decode(Q, c) - decode(Q, 0)``: one prefill lookup for the GEMMs of
    every token (and the prefill attention), plus what the decode context adds on top of a
    context-free decode step (its attention and KV reads). ``c_eq`` is the context at which one
    chunk of that length attends as many query-key pairs as the batch's prefill chunks do, so
    several chunks cost about as much as one chunk of their total length. ``q`` verification
    positions per sequence over ``b`` sequences of context ``c`` are looked up as ``b * q`` plain
    sequences of context ``c / q``: same weight reads, linear FLOPs and KV bytes; only the
    small decode attention FLOPs are under-counted.
    """

    def __init__(
        self,
        deployment: Deployment,
        prefill: Grid2D,
        decode: Grid2D,
        draft: TableCostModel | None = None,
    ) -> None:
        if draft is not None:
            if draft.draft_cost_model() is not None:
                raise ValueError("a draft model's table cannot have a draft of its own")
            if not draft_compatible(deployment.model, draft.deployment.model):
                raise ValueError(
                    f"draft {draft.deployment.model.name} cannot propose for "
                    f"{deployment.model.name}: family and vocabulary must match"
                )
        super().__init__(deployment, None if draft is None else draft.deployment)
        self._prefill = prefill
        self._decode = decode
        self._draft = draft

    @property
    def prefill_grid(self) -> Grid2D:
        """Prefill seconds on (chunk_tokens, context_tokens)."""
        return self._prefill

    @property
    def decode_grid(self) -> Grid2D:
        """Decode-step seconds on (batch_size, context_tokens_per_seq)."""
        return self._decode

    def batch_time(self, shape: BatchShape) -> float:
        """Duration of one engine iteration doing ``shape``'s work (0 for an empty batch)."""
        queries = shape.decode_query_tokens
        decode_s = 0.0
        if queries:
            # Each position looked up as a plain sequence (see the class docstring).
            decode_s = self._decode(queries, shape.decode_context_tokens / queries)
            if not shape.prefill_tokens:
                return decode_s
        elif not shape.prefill_tokens:
            return 0.0
        tokens = shape.prefill_tokens + queries
        context = shape.prefill_attention / tokens - (tokens + 1.0) * 0.5
        prefill_s = self._prefill(tokens, context if context > 0.0 else 0.0)
        if not queries:
            return prefill_s
        mixed = prefill_s + decode_s - self._decode(queries, 0.0)
        return mixed if mixed > decode_s else decode_s

    def prefill_time(self, chunk_tokens: int, context_tokens: int = 0) -> float:
        """One iteration prefilling ``chunk_tokens`` new tokens after ``context_tokens`` cached."""
        return self._prefill(chunk_tokens, context_tokens) if chunk_tokens else 0.0

    def decode_step_time(
        self, batch_size: int, context_tokens: int, query_tokens_per_seq: int = 1
    ) -> float:
        """One decode iteration; ``context_tokens`` is the KV length summed over the batch."""
        if batch_size == 0:
            return 0.0
        queries = batch_size * query_tokens_per_seq
        return self._decode(queries, context_tokens / queries)

    def draft_cost_model(self) -> TableCostModel | None:
        """The draft model's table, or None."""
        return self._draft

    @classmethod
    def profile_from(
        cls, cost_model: CostModel, grids: TableGrids = DEFAULT_TABLE_GRIDS
    ) -> TableCostModel:
        """A table sampled from ``cost_model`` (and its draft) at ``grids``' points."""
        prefill = Grid2D(
            xs=tuple(float(c) for c in grids.prefill_chunk_tokens),
            ys=tuple(float(c) for c in grids.prefill_context_tokens),
            values=tuple(
                tuple(cost_model.prefill_time(chunk, ctx) for ctx in grids.prefill_context_tokens)
                for chunk in grids.prefill_chunk_tokens
            ),
        )
        decode = Grid2D(
            xs=tuple(float(b) for b in grids.decode_batch_sizes),
            ys=tuple(float(c) for c in grids.decode_context_tokens_per_seq),
            values=tuple(
                tuple(
                    cost_model.decode_step_time(batch, batch * ctx)
                    for ctx in grids.decode_context_tokens_per_seq
                )
                for batch in grids.decode_batch_sizes
            ),
        )
        draft_model = cost_model.draft_cost_model()
        draft = None if draft_model is None else cls.profile_from(draft_model, grids)
        return cls(cost_model.deployment, prefill, decode, draft)

    def to_json(self) -> str:
        """The table as a JSON document (see :meth:`from_json`)."""
        return _to_document(self).model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> TableCostModel:
        """A table from :meth:`to_json`'s output.

        Raises:
            TableFormatError: malformed JSON or a field that fails validation (named by path).
        """
        try:
            document = _TableDocument.model_validate_json(text)
        except ValidationError as error:
            raise TableFormatError(f"invalid cost table: {error}") from error
        return _from_document(document)

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TableCostModel:
        """Read a table written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


class _Axes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seconds: list[list[float]]

    def grid(self) -> Grid2D:  # overridden: each subclass names its axes
        raise NotImplementedError

    @model_validator(mode="after")
    def _check_grid(self) -> _Axes:
        self.grid()  # Grid2D's ValueError becomes a ValidationError naming this field
        return self


class _PrefillAxes(_Axes):
    chunk_tokens: list[float]
    context_tokens: list[float]

    def grid(self) -> Grid2D:
        return Grid2D(
            tuple(self.chunk_tokens),
            tuple(self.context_tokens),
            tuple(tuple(r) for r in self.seconds),
        )


class _DecodeAxes(_Axes):
    batch_sizes: list[float]
    context_tokens_per_seq: list[float]

    def grid(self) -> Grid2D:
        return Grid2D(
            tuple(self.batch_sizes),
            tuple(self.context_tokens_per_seq),
            tuple(tuple(r) for r in self.seconds),
        )


class _TableDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["lumen.costmodel.table"] = "lumen.costmodel.table"
    version: Literal[1] = 1
    deployment: Deployment
    prefill: _PrefillAxes
    decode: _DecodeAxes
    draft: _TableDocument | None = None


def _to_document(table: TableCostModel) -> _TableDocument:
    prefill, decode, draft = table.prefill_grid, table.decode_grid, table.draft_cost_model()
    return _TableDocument(
        deployment=table.deployment,
        prefill=_PrefillAxes(
            chunk_tokens=list(prefill.xs),
            context_tokens=list(prefill.ys),
            seconds=[list(r) for r in prefill.values],
        ),
        decode=_DecodeAxes(
            batch_sizes=list(decode.xs),
            context_tokens_per_seq=list(decode.ys),
            seconds=[list(r) for r in decode.values],
        ),
        draft=None if draft is None else _to_document(draft),
    )


def _from_document(document: _TableDocument) -> TableCostModel:
    draft = None if document.draft is None else _from_document(document.draft)
    try:
        return TableCostModel(
            document.deployment, document.prefill.grid(), document.decode.grid(), draft
        )
    except ValueError as error:  # e.g. an incompatible draft
        raise TableFormatError(f"invalid cost table: {error}") from error
