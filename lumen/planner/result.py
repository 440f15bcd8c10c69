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

#: Relative tolerance of "bound equals objective" for an OPTIMAL result (exact backends scale
#: to integers and prove their optimum to within a resolution far finer than this).
STATUS_REL_TOL = 1e-5


class Termination(enum.StrEnum):
    """What a result claims (docs/planner.md, "Statuses"): OPTIMAL and INFEASIBLE are proofs
    for the real-valued problem; FEASIBLE is a plan without a proof (its ``limit`` says why);
    NO_SOLUTION is no plan and no proof; ERROR is a failure of the backend itself."""

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

    #: Wall-clock limit of the whole call, model building included (docs/planner.md).
    time_limit_s: float = 10.0
    threads: int = 1
    seed: int = 0
    #: Exact backends may stop once ``|objective - bound| / |objective| <= rel_gap``; such a
    #: result is FEASIBLE (limit OTHER) unless its bound meets its objective.
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


def status_violations(result: SolveResult[Any], maximize: bool = False) -> list[str]:
    """How ``result``'s status, limit, plan, objective and bound contradict each other (empty
    when they are consistent): OPTIMAL has a plan and a bound equal to its objective (within
    :data:`STATUS_REL_TOL`) and no limit; FEASIBLE has a plan, a limit saying why it is not
    optimal and, if any, a bound on the right side of its objective; INFEASIBLE, NO_SOLUTION
    and ERROR have no plan; INFEASIBLE is a proof, so it has no limit either."""
    out: list[str] = []
    has_plan = result.plan is not None
    term = result.termination
    if term in (Termination.OPTIMAL, Termination.FEASIBLE):
        if not has_plan or result.objective is None or not math.isfinite(result.objective):
            out.append(f"{term.value} without a plan and a finite objective")
    elif has_plan or result.objective is not None:
        out.append(f"{term.value} with a plan or an objective")
    if term in (Termination.OPTIMAL, Termination.INFEASIBLE) and result.limit is not Limit.NONE:
        out.append(f"{term.value} (a proof) with limit {result.limit.value!r}")
    if term is Termination.FEASIBLE and result.limit is Limit.NONE:
        out.append("feasible without a limit saying why it is not optimal")
    obj, bound = result.objective, result.bound
    if obj is None or bound is None or not math.isfinite(obj):
        if term is Termination.OPTIMAL and bound is None:
            out.append("optimal without a bound")
        return out
    slack = STATUS_REL_TOL * max(1.0, abs(obj))
    if (bound < obj - slack) if maximize else (bound > obj + slack):
        out.append(f"bound {bound!r} on the wrong side of the objective {obj!r}")
    if term is Termination.OPTIMAL and abs(obj - bound) > slack:
        out.append(f"optimal with bound {bound!r} away from the objective {obj!r}")
    return out
