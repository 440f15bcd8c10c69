"""The wire form of the planner's domain: ``lumen.v1`` messages <-> domain values.

Inbound conversion validates everything a message can get wrong and raises
:class:`~lumen.planner.service.errors.InvalidField` naming the field path
(``state.requests[3].max_tokens``), so that the planner only ever sees consistent domain values.
Besides the domain's own invariants it bounds sizes (workers, requests, context length, byte and
token counts) so that a hostile or buggy caller cannot make one call run for hours. Units change
here: the protocol speaks milliseconds, the domain seconds.

Used by the servicer (inbound requests, outbound plans) and by the client (the reverse).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from lumen.planner.builders import PlacementOptions
from lumen.planner.costmodel.profiles import HARDWARE_PROFILES
from lumen.planner.decisions import (
    Decision,
    PairingDecision,
    PlacementDecision,
    PlanUpdate,
    RecoveryAssignment,
    RecoveryDecision,
    Status,
    WorkerPair,
)
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.planner.problems import RECOVERY_MODES
from lumen.planner.result import Limit, Termination
from lumen.planner.service.errors import InvalidField
from lumen.proto.gen.v1 import planner_pb2 as pb

#: Bounds on one message's contents (beyond them a call is refused, not attempted).
MAX_WORKERS = 8_192
MAX_REQUESTS = 1_000_000
MAX_CONTEXT_TOKENS = 1 << 20  # prompt + max output of one request
MAX_TOKEN_COUNT = 1 << 40  # GPU KV token counts
MAX_BYTES = 1 << 60
MAX_KV_BYTES_PER_TOKEN = 1 << 32
MAX_WAIT_MS = 1e12
MAX_HARDWARE_NAME = 128
MAX_METHOD_NAME = 64
MAX_THREADS = 64
MAX_SEED = 2**31 - 1
MAX_ALPHA = 1e6
MAX_DEPTH = 64

_KNOWN_HARDWARE = frozenset(name.casefold() for name in HARDWARE_PROFILES)
_WORKER_STATES = {
    pb.WORKER_STATE_SERVING: WorkerState.SERVING,
    pb.WORKER_STATE_FAILED: WorkerState.FAILED,
    pb.WORKER_STATE_RELOADING: WorkerState.RELOADING,
    pb.WORKER_STATE_DRAFT_LOADING: WorkerState.DRAFT_LOADING,
    pb.WORKER_STATE_ASSISTING: WorkerState.ASSISTING,
    pb.WORKER_STATE_SWITCHING: WorkerState.SWITCHING,
}
_WORKER_STATES_OUT = {v: k for k, v in _WORKER_STATES.items()}
_TERMINATIONS = {
    Termination.OPTIMAL: pb.TERMINATION_OPTIMAL,
    Termination.FEASIBLE: pb.TERMINATION_FEASIBLE,
    Termination.INFEASIBLE: pb.TERMINATION_INFEASIBLE,
    Termination.NO_SOLUTION: pb.TERMINATION_NO_SOLUTION,
    Termination.ERROR: pb.TERMINATION_ERROR,
}
_TERMINATIONS_IN = {v: k for k, v in _TERMINATIONS.items()}
_LIMITS = {
    Limit.NONE: pb.LIMIT_NONE,
    Limit.TIME: pb.LIMIT_TIME,
    Limit.CANCELLED: pb.LIMIT_CANCELLED,
    Limit.UNSUPPORTED: pb.LIMIT_UNSUPPORTED,
    Limit.HEURISTIC: pb.LIMIT_HEURISTIC,
    Limit.OTHER: pb.LIMIT_OTHER,
}
_LIMITS_IN = {v: k for k, v in _LIMITS.items()}
_MODES = {
    "restore": pb.RECOVERY_MODE_RESTORE,
    "transfer": pb.RECOVERY_MODE_TRANSFER,
    "recompute": pb.RECOVERY_MODE_RECOMPUTE,
    "wait": pb.RECOVERY_MODE_WAIT,
}
_MODES_IN = {v: k for k, v in _MODES.items()}
if set(_MODES) != set(RECOVERY_MODES):  # a new mode needs a wire value first
    raise ImportError(f"recovery modes {RECOVERY_MODES} and the protocol's {sorted(_MODES)} differ")


def _at_most(path: str, value: int, bound: int) -> None:
    if value > bound:
        raise InvalidField(path, f"must be <= {bound}, got {value}")


def _finite(path: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    ok = math.isfinite(value) and low <= value and (value < high if high_open else value <= high)
    if not ok:
        bracket = ")" if high_open else "]"
        raise InvalidField(
            path, f"must be a finite number in [{low:g}, {high:g}{bracket}, got {value}"
        )


# -- inbound ---------------------------------------------------------------------------------------


def worker_from_proto(msg: pb.Worker, path: str) -> Worker:
    if not msg.hardware:
        raise InvalidField(f"{path}.hardware", "must not be empty")
    if len(msg.hardware) > MAX_HARDWARE_NAME:
        raise InvalidField(f"{path}.hardware", f"longer than {MAX_HARDWARE_NAME} characters")
    if msg.hardware.casefold() not in _KNOWN_HARDWARE:
        raise InvalidField(
            f"{path}.hardware",
            f"unknown hardware {msg.hardware!r}; known: {', '.join(sorted(HARDWARE_PROFILES))}",
        )
    state = _WORKER_STATES.get(msg.state)
    if state is None:
        raise InvalidField(
            f"{path}.state", f"must be a WorkerState other than UNSPECIFIED, got {msg.state}"
        )
    return Worker(msg.id, msg.node, msg.hardware, state)


def load_from_proto(msg: pb.WorkerLoad, path: str, *, serving: bool = True) -> WorkerLoad:
    """A worker's load; a serving worker's must have KV capacity (a failed or reloading one
    may report an empty load)."""
    _finite(f"{path}.waiting_time_ms", msg.waiting_time_ms, 0.0, MAX_WAIT_MS)
    for name, bound in (
        ("queue_length", MAX_REQUESTS),
        ("gpu_kv_used_tokens", MAX_TOKEN_COUNT),
        ("gpu_kv_capacity_tokens", MAX_TOKEN_COUNT),
        ("host_budget_bytes", MAX_BYTES),
        ("host_reserved_bytes", MAX_BYTES),
    ):
        _at_most(f"{path}.{name}", getattr(msg, name), bound)
    if serving and msg.gpu_kv_capacity_tokens < 1:
        raise InvalidField(f"{path}.gpu_kv_capacity_tokens", "must be >= 1 for a serving worker")
    if msg.gpu_kv_used_tokens > msg.gpu_kv_capacity_tokens:
        raise InvalidField(
            f"{path}.gpu_kv_used_tokens",
            f"must be <= gpu_kv_capacity_tokens ({msg.gpu_kv_capacity_tokens}),"
            f" got {msg.gpu_kv_used_tokens}",
        )
    if msg.host_reserved_bytes > msg.host_budget_bytes:
        raise InvalidField(
            f"{path}.host_reserved_bytes",
            f"must be <= host_budget_bytes ({msg.host_budget_bytes}),"
            f" got {msg.host_reserved_bytes}",
        )
    return WorkerLoad(
        queue_length=msg.queue_length,
        waiting_time_s=msg.waiting_time_ms / 1e3,
        gpu_kv_used_tokens=msg.gpu_kv_used_tokens,
        gpu_kv_capacity_tokens=msg.gpu_kv_capacity_tokens,
        host_budget_bytes=msg.host_budget_bytes,
        host_reserved_bytes=msg.host_reserved_bytes,
    )


def request_from_proto(msg: pb.RequestState, path: str, *, keep_holder: bool = True) -> Request:
    """A request; with ``keep_holder=False`` its checkpoint fields are ignored (a new request)."""
    if msg.prompt_tokens < 1:
        raise InvalidField(f"{path}.prompt_tokens", "must be >= 1")
    if msg.max_tokens < 1:
        raise InvalidField(f"{path}.max_tokens", "must be >= 1")
    if msg.prompt_tokens + msg.max_tokens > MAX_CONTEXT_TOKENS:
        raise InvalidField(
            f"{path}.max_tokens",
            f"prompt_tokens + max_tokens must be <= {MAX_CONTEXT_TOKENS},"
            f" got {msg.prompt_tokens + msg.max_tokens}",
        )
    if msg.generated_tokens > msg.max_tokens:
        raise InvalidField(f"{path}.generated_tokens", f"must be <= max_tokens ({msg.max_tokens})")
    holder: int | None = None
    checkpointed = 0
    if keep_holder:
        if msg.HasField("checkpoint_holder"):
            holder = msg.checkpoint_holder
            if holder == msg.home_worker:
                raise InvalidField(f"{path}.checkpoint_holder", "must differ from home_worker")
        checkpointed = msg.checkpointed_tokens
        if holder is None and checkpointed:
            raise InvalidField(
                f"{path}.checkpointed_tokens", "must be 0 without a checkpoint_holder"
            )
        context = msg.prompt_tokens + msg.generated_tokens
        if checkpointed > context:
            raise InvalidField(
                f"{path}.checkpointed_tokens",
                f"must be <= prompt_tokens + generated_tokens ({context})",
            )
    return Request(
        id=msg.id,
        home=msg.home_worker,
        prompt_tokens=msg.prompt_tokens,
        generated_tokens=msg.generated_tokens,
        max_tokens=msg.max_tokens,
        checkpoint_holder=holder,
        checkpointed_tokens=checkpointed,
    )


def cluster_state_from_proto(msg: pb.ClusterState, path: str = "state") -> ClusterState:
    """A consistent snapshot, or :class:`InvalidField` naming the first offending field.

    References inside a snapshot (a request's home or holder, a load's worker) that name no
    worker of the same snapshot make the snapshot invalid (INVALID_ARGUMENT), unlike ids given
    outside a snapshot, which the planner looks up (NOT_FOUND)."""
    if not msg.workers:
        raise InvalidField(f"{path}.workers", "at least one worker is needed")
    if len(msg.workers) > MAX_WORKERS:
        raise InvalidField(f"{path}.workers", f"at most {MAX_WORKERS} workers")
    if len(msg.requests) > MAX_REQUESTS:
        raise InvalidField(f"{path}.requests", f"at most {MAX_REQUESTS} requests")
    if not 1 <= msg.kv_bytes_per_token <= MAX_KV_BYTES_PER_TOKEN:
        raise InvalidField(
            f"{path}.kv_bytes_per_token", f"must be in [1, {MAX_KV_BYTES_PER_TOKEN}]"
        )
    workers: list[Worker] = []
    known: set[int] = set()
    for k, w in enumerate(msg.workers):
        if w.id in known:
            raise InvalidField(f"{path}.workers[{k}].id", f"duplicate worker id {w.id}")
        known.add(w.id)
        workers.append(worker_from_proto(w, f"{path}.workers[{k}]"))
    serves = {w.id: w.state.serves_target for w in workers}
    loads: dict[int, WorkerLoad] = {}
    for wid in sorted(msg.loads):
        if wid not in known:
            raise InvalidField(f"{path}.loads[{wid}]", f"unknown worker {wid}")
        loads[wid] = load_from_proto(msg.loads[wid], f"{path}.loads[{wid}]", serving=serves[wid])
    requests: dict[int, Request] = {}
    for k, r in enumerate(msg.requests):
        at = f"{path}.requests[{k}]"
        if r.id in requests:
            raise InvalidField(f"{at}.id", f"duplicate request id {r.id}")
        if r.home_worker not in known:
            raise InvalidField(f"{at}.home_worker", f"unknown worker {r.home_worker}")
        if r.HasField("checkpoint_holder") and r.checkpoint_holder not in known:
            raise InvalidField(f"{at}.checkpoint_holder", f"unknown worker {r.checkpoint_holder}")
        requests[r.id] = request_from_proto(r, at)
    return ClusterState.build(
        workers, requests.values(), loads, kv_bytes_per_token=msg.kv_bytes_per_token
    )


@dataclass(frozen=True)
class SolveChoice:
    """Validated solver options: the method ("" = planner default) and SolveSettings fields
    (``time_limit_s`` None = planner default; the caller's deadline bounds it later)."""

    method: str
    time_limit_s: float | None
    threads: int
    seed: int
    rel_gap: float


def solve_choice_from_proto(
    msg: pb.SolveOptions, max_time_limit_s: float, path: str = "options"
) -> SolveChoice:
    if len(msg.method) > MAX_METHOD_NAME:
        raise InvalidField(f"{path}.method", f"longer than {MAX_METHOD_NAME} characters")
    _finite(f"{path}.time_limit_ms", msg.time_limit_ms, 0.0, max_time_limit_s * 1e3)
    _at_most(f"{path}.threads", msg.threads, MAX_THREADS)
    if not 0 <= msg.seed <= MAX_SEED:
        raise InvalidField(f"{path}.seed", f"must be in [0, {MAX_SEED}], got {msg.seed}")
    _finite(f"{path}.rel_gap", msg.rel_gap, 0.0, 1.0, high_open=True)
    return SolveChoice(
        method=msg.method,
        time_limit_s=msg.time_limit_ms / 1e3 if msg.time_limit_ms > 0 else None,
        threads=max(1, msg.threads),
        seed=msg.seed,
        rel_gap=msg.rel_gap,
    )


def placement_options_from_proto(
    msg: pb.PlacementSettings, base: PlacementOptions, path: str = "settings"
) -> PlacementOptions:
    alpha = base.alpha
    if msg.HasField("alpha"):
        _finite(f"{path}.alpha", msg.alpha, 0.0, MAX_ALPHA)
        alpha = msg.alpha
    require = base.require_other_node and not msg.allow_same_node
    return PlacementOptions(
        alpha=alpha,
        require_other_node=require,
        stream_cap_fraction=base.stream_cap_fraction,
        move_cost_s=base.move_cost_s,
    )


def acceptance_rate_from_proto(msg: pb.PlanPairingRequest) -> float | None:
    if not msg.HasField("acceptance_rate"):
        return None
    _finite("acceptance_rate", msg.acceptance_rate, 0.0, 1.0, high_open=True)
    return msg.acceptance_rate


def depth_from_proto(msg: pb.PlanPairingRequest) -> int | None:
    if not msg.HasField("depth"):
        return None
    if not 1 <= msg.depth <= MAX_DEPTH:
        raise InvalidField("depth", f"must be in [1, {MAX_DEPTH}], got {msg.depth}")
    return msg.depth


def optional_state(msg: Message, field: str = "state") -> ClusterState | None:
    """The request's snapshot, or None when the field is unset (use the planner's view)."""
    if not msg.HasField(field):
        return None
    state: pb.ClusterState = getattr(msg, field)
    return cluster_state_from_proto(state, field)


# -- outbound (servicer) / inbound (client) ------------------------------------------------------


def status_to_proto(status: Status) -> pb.SolveStatus:
    out = pb.SolveStatus(
        method=status.method,
        termination=_TERMINATIONS[status.termination],
        limit=_LIMITS[status.limit],
        wall_time_ms=status.wall_time_s * 1e3,
        message=status.message,
    )
    if status.objective is not None:
        out.objective = status.objective
    if status.bound is not None:
        out.bound = status.bound
    if status.gap is not None:
        out.gap = status.gap
    return out


def status_from_proto(msg: pb.SolveStatus) -> Status:
    return Status(
        method=msg.method,
        termination=_TERMINATIONS_IN.get(msg.termination, Termination.ERROR),
        limit=_LIMITS_IN.get(msg.limit, Limit.OTHER),
        objective=msg.objective if msg.HasField("objective") else None,
        bound=msg.bound if msg.HasField("bound") else None,
        gap=msg.gap if msg.HasField("gap") else None,
        wall_time_s=msg.wall_time_ms / 1e3,
        message=msg.message,
    )


def placement_to_proto(plan: PlacementDecision) -> pb.PlacementPlan:
    return pb.PlacementPlan(holder_by_request=dict(plan.holder_by_request))


def placement_from_proto(msg: pb.PlacementPlan) -> PlacementDecision:
    return PlacementDecision(dict(msg.holder_by_request))


def recovery_to_proto(plan: RecoveryDecision) -> pb.RecoveryPlan:
    return pb.RecoveryPlan(
        assignments=[
            pb.RecoveryAssignment(
                request_id=a.request_id,
                destination_worker=a.destination_worker,
                mode=_MODES[a.mode],
                position=a.position,
            )
            for a in plan.assignments
        ],
        orders=[pb.MachineOrder(worker_id=w, request_ids=list(ids)) for w, ids in plan.orders],
    )


def recovery_from_proto(msg: pb.RecoveryPlan) -> RecoveryDecision:
    return RecoveryDecision(
        tuple(
            RecoveryAssignment(a.request_id, a.destination_worker, _MODES_IN[a.mode], a.position)
            for a in msg.assignments
        ),
        tuple((o.worker_id, tuple(o.request_ids)) for o in msg.orders),
    )


def pairing_to_proto(plan: PairingDecision) -> pb.PairingPlan:
    return pb.PairingPlan(
        pairs=[
            pb.WorkerPair(
                recovering_worker=p.recovering_worker,
                survivor_worker=p.survivor_worker,
                saved_ms=p.saved_s * 1e3,
            )
            for p in plan.pairs
        ]
    )


def pairing_from_proto(msg: pb.PairingPlan) -> PairingDecision:
    return PairingDecision(
        tuple(
            WorkerPair(p.recovering_worker, p.survivor_worker, p.saved_ms / 1e3) for p in msg.pairs
        )
    )


def plan_update_to_proto(update: PlanUpdate) -> pb.PlanUpdate:
    out = pb.PlanUpdate(
        sequence=update.sequence,
        state_version=update.state_version,
        status=status_to_proto(update.status),
    )
    out.created_at.FromNanoseconds(int(update.created_at_s * 1e9))
    plan: Decision = update.plan
    if isinstance(plan, PlacementDecision):
        out.placement.CopyFrom(placement_to_proto(plan))
    elif isinstance(plan, RecoveryDecision):
        out.recovery.CopyFrom(recovery_to_proto(plan))
    else:
        out.pairing.CopyFrom(pairing_to_proto(plan))
    return out


def plan_update_from_proto(msg: pb.PlanUpdate) -> PlanUpdate:
    kind = msg.WhichOneof("plan")
    plan: Decision
    if kind == "placement":
        plan = placement_from_proto(msg.placement)
    elif kind == "recovery":
        plan = recovery_from_proto(msg.recovery)
    elif kind == "pairing":
        plan = pairing_from_proto(msg.pairing)
    else:
        raise ValueError(f"plan update {msg.sequence} carries no plan")
    return PlanUpdate(
        sequence=msg.sequence,
        created_at_s=msg.created_at.ToNanoseconds() / 1e9,
        state_version=msg.state_version,
        status=status_from_proto(msg.status),
        plan=plan,
    )


def request_to_proto(r: Request) -> pb.RequestState:
    out = pb.RequestState(
        id=r.id,
        home_worker=r.home,
        prompt_tokens=r.prompt_tokens,
        generated_tokens=r.generated_tokens,
        max_tokens=r.max_tokens,
        checkpointed_tokens=r.checkpointed_tokens,
    )
    if r.checkpoint_holder is not None:
        out.checkpoint_holder = r.checkpoint_holder
    return out


def load_to_proto(load: WorkerLoad) -> pb.WorkerLoad:
    return pb.WorkerLoad(
        queue_length=load.queue_length,
        waiting_time_ms=load.waiting_time_s * 1e3,
        gpu_kv_used_tokens=load.gpu_kv_used_tokens,
        gpu_kv_capacity_tokens=load.gpu_kv_capacity_tokens,
        host_budget_bytes=load.host_budget_bytes,
        host_reserved_bytes=load.host_reserved_bytes,
    )


def cluster_state_to_proto(state: ClusterState) -> pb.ClusterState:
    return pb.ClusterState(
        workers=[
            pb.Worker(id=w.id, node=w.node, hardware=w.hardware, state=_WORKER_STATES_OUT[w.state])
            for w in state.workers
        ],
        loads=_loads_to_proto(state.loads),
        requests=[request_to_proto(r) for r in state.requests.values()],
        kv_bytes_per_token=state.kv_bytes_per_token,
    )


def _loads_to_proto(loads: Mapping[int, WorkerLoad]) -> dict[int, pb.WorkerLoad]:
    """Loads that say something: an empty load is the same as none on the wire."""
    empty = WorkerLoad()
    return {wid: load_to_proto(load) for wid, load in loads.items() if load != empty}


def ids(values: Iterable[int]) -> list[int]:
    """Repeated id fields as a plain list."""
    return [int(v) for v in values]
