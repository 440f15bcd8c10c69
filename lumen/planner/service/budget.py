"""Sizing a planning problem before building it, and refusing what would not fit.

Posing a problem costs memory and time in proportion to its *cells*: requests x machines for
placement and recovery, recovering x survivors for pairing. Recovery is the exception above
:data:`~lumen.planner.heuristics.recovery.HUGE_CELLS` cells with a heuristic backend: its mode
times are factored by machine class and the greedy works on the classes, so memory grows with
requests + machines; its build time always does. :func:`estimate` counts the cells from the
snapshot alone (no problem is built) and turns them into the bytes and seconds that building
and solving take; the controller refuses a problem whose estimate is above
:class:`ProblemBudget` with :class:`TooLarge` (RESOURCE_EXHAUSTED) instead of letting one call take
the process's memory.

The figures per cell are measured with ``benchmarks/bench_hostile_problem.py`` (peak resident
memory of the service while it builds and solves recovery with the greedy backend: 70 to 90
bytes and 0.4 to 0.6 microseconds per cell on a loaded 2-CPU machine) and rounded up; the
exact backends (CP-SAT, CBC, the matching) keep a model per cell and are charged
:data:`EXACT_FACTOR` times more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lumen.planner.domain import ClusterState
from lumen.planner.heuristics.recovery import HUGE_CELLS
from lumen.planner.service.errors import ServiceError
from lumen.planner.solve import BACKENDS

#: Peak bytes per cell of building and solving with a heuristic backend.
BYTES_PER_CELL = {"placement": 48, "recovery": 96, "pairing": 48}
#: Seconds per cell of building a problem (recovery is charged per request and per machine).
SECONDS_PER_CELL = {"placement": 2e-7, "pairing": 2e-7}
#: Recovery's build time per interrupted request and per machine (10 us and 1 us measured
#: at 16,384 machines x 2,048 requests, rounded up).
RECOVERY_SECONDS_PER_REQUEST = 5e-5
RECOVERY_SECONDS_PER_MACHINE = 5e-6
#: Recovery's peak bytes per request and per machine on machine classes (about 450 measured
#: at 16,384 x 2,048, traced, rounded up).
RECOVERY_CLASSED_BYTES = 1024
#: The exact backends' models cost this many times more per cell than the heuristics.
EXACT_FACTOR = 16
#: Defaults of :class:`ProblemBudget` (``lumen serve --max-problem-mib/--max-problem-seconds``).
DEFAULT_MAX_PROBLEM_BYTES = 1 << 30
DEFAULT_MAX_PROBLEM_SECONDS = 30.0
#: Fixed cost of any problem (arrays per request and per machine, bookkeeping).
BASE_BYTES = 1 << 20


class TooLarge(ServiceError):
    """A problem whose estimated memory or time is above the service's budget
    (RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class ProblemBudget:
    """The most memory and build time one planning call may need (None: unbounded)."""

    max_bytes: int | None = DEFAULT_MAX_PROBLEM_BYTES
    max_seconds: float | None = DEFAULT_MAX_PROBLEM_SECONDS

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes < BASE_BYTES:
            raise ValueError(f"max_bytes must be >= {BASE_BYTES}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError("max_seconds must be > 0")


@dataclass(frozen=True)
class ProblemSize:
    """How big a problem is and what it is estimated to cost."""

    kind: str
    rows: int
    columns: int
    bytes: int
    seconds: float

    @property
    def cells(self) -> int:
        return self.rows * self.columns

    def check(self, budget: ProblemBudget) -> None:
        """Raise :class:`TooLarge` when the estimate is above ``budget``."""
        what = f"{self.kind} problem of {self.rows:,} x {self.columns:,} cells"
        if budget.max_bytes is not None and self.bytes > budget.max_bytes:
            raise TooLarge(
                "",
                f"{what} needs about {self.bytes / 2**20:,.0f} MiB to plan, above the"
                f" service's limit of {budget.max_bytes / 2**20:,.0f} MiB; plan a smaller part"
                " of the cluster (fewer workers or requests per call)",
            )
        if budget.max_seconds is not None and self.seconds > budget.max_seconds:
            raise TooLarge(
                "",
                f"{what} needs about {self.seconds:,.1f} s to pose, above the service's limit"
                f" of {budget.max_seconds:g} s; plan a smaller part of the cluster",
            )


def estimate(kind: str, method: str, rows: int, columns: int) -> ProblemSize:
    """The estimated cost of a ``kind`` problem of ``rows`` x ``columns`` cells solved by
    ``method`` (a backend name; unknown names and ``auto`` are charged as exact)."""
    cells = rows * columns
    info = BACKENDS[kind].get(method)
    heuristic = info is not None and not info.exact
    factor = 1 if heuristic else EXACT_FACTOR
    size = cells * BYTES_PER_CELL[kind] * factor
    if kind != "recovery":
        seconds = cells * SECONDS_PER_CELL[kind]
    else:
        seconds = rows * RECOVERY_SECONDS_PER_REQUEST + columns * RECOVERY_SECONDS_PER_MACHINE
        if heuristic and cells > HUGE_CELLS:
            size = (rows + columns) * RECOVERY_CLASSED_BYTES
    return ProblemSize(
        kind=kind, rows=rows, columns=columns, bytes=BASE_BYTES + size, seconds=seconds
    )


def recovery_cells(state: ClusterState, failed: Sequence[int]) -> tuple[int, int]:
    """(interrupted requests, machines) of the recovery problem for ``failed``, counted
    without building it (see :func:`lumen.planner.builders.recovery_problem`)."""
    failed_set = set(failed)
    survivors = sum(1 for w in state.workers if w.id not in failed_set and w.state.serves_target)
    interrupted = sum(1 for r in state.requests.values() if r.home in failed_set)
    return interrupted, survivors + len(failed_set)


def placement_cells(state: ClusterState, requests: int) -> tuple[int, int]:
    """(requests placed, workers) of a placement problem."""
    return requests, len(state.workers)


def pairing_cells(state: ClusterState, recovering: Sequence[int]) -> tuple[int, int]:
    """(recovering workers, survivors) of the pairing problem."""
    rec = set(recovering)
    survivors = sum(1 for w in state.workers if w.id not in rec and w.state.serves_target)
    return len(rec), survivors


__all__ = [
    "ProblemBudget",
    "ProblemSize",
    "TooLarge",
    "estimate",
    "pairing_cells",
    "placement_cells",
    "recovery_cells",
]
