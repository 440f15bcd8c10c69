"""Plans in cluster ids and solve statuses: what the controller hands to the service boundary.

Solver plans (:mod:`lumen.planner.plans`) speak in problem indices; executors speak in worker and
request ids. The functions here translate a solved problem into *decisions* keyed by ids, and a
:class:`~lumen.planner.result.SolveResult` into a plan-free :class:`Status`. Times are seconds
here, as everywhere in the domain; the wire layer converts to the protocol's milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from lumen.planner.plans import PairingPlan, PlacementPlan, RecoveryPlan
from lumen.planner.problems import RECOVERY_MODES, PairingProblem, RecoveryProblem
from lumen.planner.result import Limit, SolveResult, Termination


@dataclass(frozen=True)
class Status:
    """Outcome and statistics of one solve, without the plan (mirrors ``SolveResult``)."""

    method: str
    termination: Termination
    limit: Limit = Limit.NONE
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    wall_time_s: float = 0.0
    message: str = ""

    @classmethod
    def of(cls, result: SolveResult[object]) -> Status:
        def finite(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        return cls(
            method=result.method,
            termination=result.termination,
            limit=result.limit,
            objective=finite(result.objective),
            bound=finite(result.bound),
            gap=result.gap,
            wall_time_s=result.wall_time_s,
            message=result.message,
        )


@dataclass(frozen=True)
class PlacementDecision:
    """Request id -> id of the worker that holds its KV checkpoint."""

    holder_by_request: Mapping[int, int]

    def __post_init__(self) -> None:
        frozen = MappingProxyType(dict(self.holder_by_request))
        object.__setattr__(self, "holder_by_request", frozen)


@dataclass(frozen=True)
class RecoveryAssignment:
    """Where and how one interrupted request resumes (``mode`` is one of RECOVERY_MODES)."""

    request_id: int
    destination_worker: int
    mode: str
    position: int


@dataclass(frozen=True)
class RecoveryDecision:
    """One assignment per interrupted request and each machine's resume order (request ids)."""

    assignments: tuple[RecoveryAssignment, ...]
    orders: tuple[tuple[int, tuple[int, ...]], ...]

    def destination(self, request_id: int) -> int:
        for a in self.assignments:
            if a.request_id == request_id:
                return a.destination_worker
        raise KeyError(request_id)


@dataclass(frozen=True)
class WorkerPair:
    """A recovering worker drafts for a survivor, saving ``saved_s`` of decode time."""

    recovering_worker: int
    survivor_worker: int
    saved_s: float


@dataclass(frozen=True)
class PairingDecision:
    pairs: tuple[WorkerPair, ...]


Decision = PlacementDecision | RecoveryDecision | PairingDecision
DecisionT = TypeVar("DecisionT", PlacementDecision, RecoveryDecision, PairingDecision)


@dataclass(frozen=True)
class Outcome(Generic[DecisionT]):
    """A status and, when the solve found one, the decision."""

    status: Status
    plan: DecisionT | None


@dataclass(frozen=True)
class Placed:
    """Result of an incremental placement: the holder's id, or None when nothing fits."""

    status: Status
    holder: int | None


@dataclass(frozen=True)
class PlanUpdate:
    """One plan the controller published (the WatchPlans stream)."""

    sequence: int
    created_at_s: float
    state_version: int
    status: Status
    plan: Decision

    @property
    def kind(self) -> str:
        if isinstance(self.plan, PlacementDecision):
            return "placement"
        if isinstance(self.plan, RecoveryDecision):
            return "recovery"
        return "pairing"


def placement_decision(
    plan: PlacementPlan, request_ids: Sequence[int], worker_ids: Sequence[int]
) -> PlacementDecision:
    """Ids of a placement plan over the problem's requests (in order) and workers."""
    return PlacementDecision(
        {rid: worker_ids[j] for rid, j in zip(request_ids, plan.holder.tolist(), strict=True)}
    )


def recovery_decision(problem: RecoveryProblem, plan: RecoveryPlan) -> RecoveryDecision:
    machines = problem.machine_ids.tolist()
    requests = problem.request_ids.tolist()
    position: dict[int, int] = {}
    for order in plan.order:
        for k, i in enumerate(order):
            position[i] = k
    assignments = tuple(
        RecoveryAssignment(
            request_id=requests[i],
            destination_worker=machines[j],
            mode=RECOVERY_MODES[k],
            position=position[i],
        )
        for i, (j, k) in enumerate(zip(plan.machine.tolist(), plan.mode.tolist(), strict=True))
    )
    orders = tuple(
        (machines[j], tuple(requests[i] for i in order)) for j, order in enumerate(plan.order)
    )
    return RecoveryDecision(assignments, orders)


def pairing_decision(problem: PairingProblem, plan: PairingPlan) -> PairingDecision:
    rec = problem.recovering_ids.tolist()
    sur = problem.survivor_ids.tolist()
    return PairingDecision(
        tuple(WorkerPair(rec[r], sur[s], float(problem.saved_s[r, s])) for r, s in plan.pairs)
    )


def status_to_dict(status: Status) -> dict[str, object]:
    """JSON-ready form of a status (times in seconds)."""
    return {
        "method": status.method,
        "termination": status.termination.value,
        "limit": status.limit.value,
        "objective": status.objective,
        "bound": status.bound,
        "gap": status.gap,
        "wall_time_s": status.wall_time_s,
        "message": status.message,
    }


def decision_to_dict(plan: Decision | None) -> dict[str, object] | None:
    """JSON-ready form of a decision (ids; mapping keys as strings, as JSON requires)."""
    if plan is None:
        return None
    if isinstance(plan, PlacementDecision):
        return {"holder_by_request": {str(k): v for k, v in plan.holder_by_request.items()}}
    if isinstance(plan, RecoveryDecision):
        return {
            "assignments": [
                {
                    "request_id": a.request_id,
                    "destination_worker": a.destination_worker,
                    "mode": a.mode,
                    "position": a.position,
                }
                for a in plan.assignments
            ],
            "orders": {str(w): list(ids) for w, ids in plan.orders},
        }
    return {
        "pairs": [
            {
                "recovering_worker": p.recovering_worker,
                "survivor_worker": p.survivor_worker,
                "saved_s": p.saved_s,
            }
            for p in plan.pairs
        ]
    }
