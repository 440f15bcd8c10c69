import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_SERVING: _ClassVar[WorkerState]
    WORKER_STATE_FAILED: _ClassVar[WorkerState]
    WORKER_STATE_RELOADING: _ClassVar[WorkerState]
    WORKER_STATE_DRAFT_LOADING: _ClassVar[WorkerState]
    WORKER_STATE_ASSISTING: _ClassVar[WorkerState]
    WORKER_STATE_SWITCHING: _ClassVar[WorkerState]

class Termination(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINATION_UNSPECIFIED: _ClassVar[Termination]
    TERMINATION_OPTIMAL: _ClassVar[Termination]
    TERMINATION_FEASIBLE: _ClassVar[Termination]
    TERMINATION_INFEASIBLE: _ClassVar[Termination]
    TERMINATION_NO_SOLUTION: _ClassVar[Termination]
    TERMINATION_ERROR: _ClassVar[Termination]

class Limit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_UNSPECIFIED: _ClassVar[Limit]
    LIMIT_NONE: _ClassVar[Limit]
    LIMIT_TIME: _ClassVar[Limit]
    LIMIT_CANCELLED: _ClassVar[Limit]
    LIMIT_UNSUPPORTED: _ClassVar[Limit]
    LIMIT_HEURISTIC: _ClassVar[Limit]
    LIMIT_OTHER: _ClassVar[Limit]

class RecoveryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOVERY_MODE_UNSPECIFIED: _ClassVar[RecoveryMode]
    RECOVERY_MODE_RESTORE: _ClassVar[RecoveryMode]
    RECOVERY_MODE_TRANSFER: _ClassVar[RecoveryMode]
    RECOVERY_MODE_RECOMPUTE: _ClassVar[RecoveryMode]
    RECOVERY_MODE_WAIT: _ClassVar[RecoveryMode]
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_SERVING: WorkerState
WORKER_STATE_FAILED: WorkerState
WORKER_STATE_RELOADING: WorkerState
WORKER_STATE_DRAFT_LOADING: WorkerState
WORKER_STATE_ASSISTING: WorkerState
WORKER_STATE_SWITCHING: WorkerState
TERMINATION_UNSPECIFIED: Termination
TERMINATION_OPTIMAL: Termination
TERMINATION_FEASIBLE: Termination
TERMINATION_INFEASIBLE: Termination
TERMINATION_NO_SOLUTION: Termination
TERMINATION_ERROR: Termination
LIMIT_UNSPECIFIED: Limit
LIMIT_NONE: Limit
LIMIT_TIME: Limit
LIMIT_CANCELLED: Limit
LIMIT_UNSUPPORTED: Limit
LIMIT_HEURISTIC: Limit
LIMIT_OTHER: Limit
RECOVERY_MODE_UNSPECIFIED: RecoveryMode
RECOVERY_MODE_RESTORE: RecoveryMode
RECOVERY_MODE_TRANSFER: RecoveryMode
RECOVERY_MODE_RECOMPUTE: RecoveryMode
RECOVERY_MODE_WAIT: RecoveryMode

class Worker(_message.Message):
    __slots__ = ("id", "node", "hardware", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    node: int
    hardware: str
    state: WorkerState
    def __init__(self, id: _Optional[int] = ..., node: _Optional[int] = ..., hardware: _Optional[str] = ..., state: _Optional[_Union[WorkerState, str]] = ...) -> None: ...

class RequestState(_message.Message):
    __slots__ = ("id", "home_worker", "prompt_tokens", "generated_tokens", "max_tokens", "checkpoint_holder", "checkpointed_tokens")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOME_WORKER_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_HOLDER_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    id: int
    home_worker: int
    prompt_tokens: int
    generated_tokens: int
    max_tokens: int
    checkpoint_holder: int
    checkpointed_tokens: int
    def __init__(self, id: _Optional[int] = ..., home_worker: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., checkpoint_holder: _Optional[int] = ..., checkpointed_tokens: _Optional[int] = ...) -> None: ...

class WorkerLoad(_message.Message):
    __slots__ = ("queue_length", "waiting_time_ms", "gpu_kv_used_tokens", "gpu_kv_capacity_tokens", "host_budget_bytes", "host_reserved_bytes")
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WAITING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    GPU_KV_USED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GPU_KV_CAPACITY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HOST_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    queue_length: int
    waiting_time_ms: float
    gpu_kv_used_tokens: int
    gpu_kv_capacity_tokens: int
    host_budget_bytes: int
    host_reserved_bytes: int
    def __init__(self, queue_length: _Optional[int] = ..., waiting_time_ms: _Optional[float] = ..., gpu_kv_used_tokens: _Optional[int] = ..., gpu_kv_capacity_tokens: _Optional[int] = ..., host_budget_bytes: _Optional[int] = ..., host_reserved_bytes: _Optional[int] = ...) -> None: ...

class ClusterState(_message.Message):
    __slots__ = ("workers", "loads", "requests", "kv_bytes_per_token")
    class LoadsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: WorkerLoad
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[WorkerLoad, _Mapping]] = ...) -> None: ...
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    loads: _containers.MessageMap[int, WorkerLoad]
    requests: _containers.RepeatedCompositeFieldContainer[RequestState]
    kv_bytes_per_token: int
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., loads: _Optional[_Mapping[int, WorkerLoad]] = ..., requests: _Optional[_Iterable[_Union[RequestState, _Mapping]]] = ..., kv_bytes_per_token: _Optional[int] = ...) -> None: ...

class SolveOptions(_message.Message):
    __slots__ = ("method", "time_limit_ms", "threads", "seed", "rel_gap")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_MS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REL_GAP_FIELD_NUMBER: _ClassVar[int]
    method: str
    time_limit_ms: float
    threads: int
    seed: int
    rel_gap: float
    def __init__(self, method: _Optional[str] = ..., time_limit_ms: _Optional[float] = ..., threads: _Optional[int] = ..., seed: _Optional[int] = ..., rel_gap: _Optional[float] = ...) -> None: ...

class SolveStatus(_message.Message):
    __slots__ = ("method", "termination", "limit", "objective", "bound", "gap", "wall_time_ms", "message")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    method: str
    termination: Termination
    limit: Limit
    objective: float
    bound: float
    gap: float
    wall_time_ms: float
    message: str
    def __init__(self, method: _Optional[str] = ..., termination: _Optional[_Union[Termination, str]] = ..., limit: _Optional[_Union[Limit, str]] = ..., objective: _Optional[float] = ..., bound: _Optional[float] = ..., gap: _Optional[float] = ..., wall_time_ms: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class PlacementPlan(_message.Message):
    __slots__ = ("holder_by_request",)
    class HolderByRequestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    HOLDER_BY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    holder_by_request: _containers.ScalarMap[int, int]
    def __init__(self, holder_by_request: _Optional[_Mapping[int, int]] = ...) -> None: ...

class RecoveryAssignment(_message.Message):
    __slots__ = ("request_id", "destination_worker", "mode", "position")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_WORKER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    destination_worker: int
    mode: RecoveryMode
    position: int
    def __init__(self, request_id: _Optional[int] = ..., destination_worker: _Optional[int] = ..., mode: _Optional[_Union[RecoveryMode, str]] = ..., position: _Optional[int] = ...) -> None: ...

class MachineOrder(_message.Message):
    __slots__ = ("worker_id", "request_ids")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    request_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, worker_id: _Optional[int] = ..., request_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RecoveryPlan(_message.Message):
    __slots__ = ("assignments", "orders")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[RecoveryAssignment]
    orders: _containers.RepeatedCompositeFieldContainer[MachineOrder]
    def __init__(self, assignments: _Optional[_Iterable[_Union[RecoveryAssignment, _Mapping]]] = ..., orders: _Optional[_Iterable[_Union[MachineOrder, _Mapping]]] = ...) -> None: ...

class WorkerPair(_message.Message):
    __slots__ = ("recovering_worker", "survivor_worker", "saved_ms")
    RECOVERING_WORKER_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_WORKER_FIELD_NUMBER: _ClassVar[int]
    SAVED_MS_FIELD_NUMBER: _ClassVar[int]
    recovering_worker: int
    survivor_worker: int
    saved_ms: float
    def __init__(self, recovering_worker: _Optional[int] = ..., survivor_worker: _Optional[int] = ..., saved_ms: _Optional[float] = ...) -> None: ...

class PairingPlan(_message.Message):
    __slots__ = ("pairs",)
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[WorkerPair]
    def __init__(self, pairs: _Optional[_Iterable[_Union[WorkerPair, _Mapping]]] = ...) -> None: ...

class PlacementSettings(_message.Message):
    __slots__ = ("alpha", "allow_same_node")
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SAME_NODE_FIELD_NUMBER: _ClassVar[int]
    alpha: float
    allow_same_node: bool
    def __init__(self, alpha: _Optional[float] = ..., allow_same_node: _Optional[bool] = ...) -> None: ...

class PlanPlacementRequest(_message.Message):
    __slots__ = ("state", "request_ids", "settings", "options")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    state: ClusterState
    request_ids: _containers.RepeatedScalarFieldContainer[int]
    settings: PlacementSettings
    options: SolveOptions
    def __init__(self, state: _Optional[_Union[ClusterState, _Mapping]] = ..., request_ids: _Optional[_Iterable[int]] = ..., settings: _Optional[_Union[PlacementSettings, _Mapping]] = ..., options: _Optional[_Union[SolveOptions, _Mapping]] = ...) -> None: ...

class PlanPlacementResponse(_message.Message):
    __slots__ = ("status", "plan")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    status: SolveStatus
    plan: PlacementPlan
    def __init__(self, status: _Optional[_Union[SolveStatus, _Mapping]] = ..., plan: _Optional[_Union[PlacementPlan, _Mapping]] = ...) -> None: ...

class PlaceRequestRequest(_message.Message):
    __slots__ = ("request", "settings", "options")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    request: RequestState
    settings: PlacementSettings
    options: SolveOptions
    def __init__(self, request: _Optional[_Union[RequestState, _Mapping]] = ..., settings: _Optional[_Union[PlacementSettings, _Mapping]] = ..., options: _Optional[_Union[SolveOptions, _Mapping]] = ...) -> None: ...

class PlaceRequestResponse(_message.Message):
    __slots__ = ("status", "holder_worker")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_WORKER_FIELD_NUMBER: _ClassVar[int]
    status: SolveStatus
    holder_worker: int
    def __init__(self, status: _Optional[_Union[SolveStatus, _Mapping]] = ..., holder_worker: _Optional[int] = ...) -> None: ...

class PlanRecoveryRequest(_message.Message):
    __slots__ = ("state", "failed_workers", "options")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    state: ClusterState
    failed_workers: _containers.RepeatedScalarFieldContainer[int]
    options: SolveOptions
    def __init__(self, state: _Optional[_Union[ClusterState, _Mapping]] = ..., failed_workers: _Optional[_Iterable[int]] = ..., options: _Optional[_Union[SolveOptions, _Mapping]] = ...) -> None: ...

class PlanRecoveryResponse(_message.Message):
    __slots__ = ("status", "plan")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    status: SolveStatus
    plan: RecoveryPlan
    def __init__(self, status: _Optional[_Union[SolveStatus, _Mapping]] = ..., plan: _Optional[_Union[RecoveryPlan, _Mapping]] = ...) -> None: ...

class PlanPairingRequest(_message.Message):
    __slots__ = ("state", "recovering_workers", "acceptance_rate", "depth", "options")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECOVERING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_RATE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    state: ClusterState
    recovering_workers: _containers.RepeatedScalarFieldContainer[int]
    acceptance_rate: float
    depth: int
    options: SolveOptions
    def __init__(self, state: _Optional[_Union[ClusterState, _Mapping]] = ..., recovering_workers: _Optional[_Iterable[int]] = ..., acceptance_rate: _Optional[float] = ..., depth: _Optional[int] = ..., options: _Optional[_Union[SolveOptions, _Mapping]] = ...) -> None: ...

class PlanPairingResponse(_message.Message):
    __slots__ = ("status", "plan")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    status: SolveStatus
    plan: PairingPlan
    def __init__(self, status: _Optional[_Union[SolveStatus, _Mapping]] = ..., plan: _Optional[_Union[PairingPlan, _Mapping]] = ...) -> None: ...

class ReportClusterStateRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ClusterState
    def __init__(self, state: _Optional[_Union[ClusterState, _Mapping]] = ...) -> None: ...

class ReportClusterStateResponse(_message.Message):
    __slots__ = ("state_version",)
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    state_version: int
    def __init__(self, state_version: _Optional[int] = ...) -> None: ...

class ReportFailureRequest(_message.Message):
    __slots__ = ("failed_workers", "detected_at")
    FAILED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    failed_workers: _containers.RepeatedScalarFieldContainer[int]
    detected_at: _timestamp_pb2.Timestamp
    def __init__(self, failed_workers: _Optional[_Iterable[int]] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportFailureResponse(_message.Message):
    __slots__ = ("state_version",)
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    state_version: int
    def __init__(self, state_version: _Optional[int] = ...) -> None: ...

class WatchPlansRequest(_message.Message):
    __slots__ = ("after_sequence",)
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    def __init__(self, after_sequence: _Optional[int] = ...) -> None: ...

class PlanUpdate(_message.Message):
    __slots__ = ("sequence", "created_at", "state_version", "status", "placement", "recovery", "pairing")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_FIELD_NUMBER: _ClassVar[int]
    PAIRING_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    created_at: _timestamp_pb2.Timestamp
    state_version: int
    status: SolveStatus
    placement: PlacementPlan
    recovery: RecoveryPlan
    pairing: PairingPlan
    def __init__(self, sequence: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_version: _Optional[int] = ..., status: _Optional[_Union[SolveStatus, _Mapping]] = ..., placement: _Optional[_Union[PlacementPlan, _Mapping]] = ..., recovery: _Optional[_Union[RecoveryPlan, _Mapping]] = ..., pairing: _Optional[_Union[PairingPlan, _Mapping]] = ...) -> None: ...
