"""Solver settings in, results out: one termination enum for every backend.

See docs/architecture.md (the planner's four steps).
"""

from __future__ import annotations

import enum
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

PlanT = TypeVar("PlanT")


class Termination(enum.StrEnum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    NO_SOLUTION = "no solution"
    ERROR = "error"


class Limit(enum.StrEnum):
    """Why a solver stopped short of proving optimality (NONE when it did not stop short)."""

    NONE = "none"
    TIME = "time limit"
    CANCELLED = "cancelled"
    UNSUPPORTED = "unsupported instance"
    HEURISTIC = "heuristic (no optimality proof)"
    OTHER = "other"


class NoPlanError(RuntimeError):
    """Asked a result without a solution for its plan."""


@dataclass(frozen=True)
class SolveSettings:
    """Explicit solver settings; no backend reads globals."""

    time_limit_s: float = 10.0
    threads: int = 1
    seed: int = 0
    rel_gap: float = 0.0
    #: A plan to start from (exact backends use it as a hint; heuristics may ignore it).
    warm_start: Any = None
    #: Set by the caller to stop a running solve early (the best plan found is returned).
    cancel: threading.Event | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not 0 <= self.rel_gap < 1:
            raise ValueError(f"rel_gap must be in [0, 1), got {self.rel_gap}")


@dataclass(frozen=True)
class SolveResult(Generic[PlanT]):
    """What a backend returns: status, objective, proven bound, gap, wall time and the plan."""

    method: str
    termination: Termination
    limit: Limit = Limit.NONE
    objective: float | None = None
    bound: float | None = None
    wall_time_s: float = 0.0
    plan: PlanT | None = None
    message: str = ""

    @property
    def has_plan(self) -> bool:
        return self.plan is not None

    @property
    def gap(self) -> float | None:
        """Relative gap |objective - bound| / max(|objective|, 1e-9); None without both."""
        if self.objective is None or self.bound is None:
            return None
        if not (math.isfinite(self.objective) and math.isfinite(self.bound)):
            return None
        return abs(self.objective - self.bound) / max(abs(self.objective), 1e-9)

    def require_plan(self) -> PlanT:
        if self.plan is None:
            raise NoPlanError(
                f"{self.method}: no plan ({self.termination.value}"
                + (f", {self.limit.value}" if self.limit is not Limit.NONE else "")
                + (f": {self.message}" if self.message else "")
                + ")"
            )
        return self.plan

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "termination": self.termination.value,
            "limit": self.limit.value,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "wall_time_s": self.wall_time_s,
            "message": self.message,
        }
