import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lumen.proto.gen.v1 import planner_pb2 as _planner_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecoveryStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOVERY_STAGE_UNSPECIFIED: _ClassVar[RecoveryStage]
    RECOVERY_STAGE_DRAFT_LOADING: _ClassVar[RecoveryStage]
    RECOVERY_STAGE_ASSISTING: _ClassVar[RecoveryStage]
    RECOVERY_STAGE_SWITCHING: _ClassVar[RecoveryStage]
    RECOVERY_STAGE_SERVING: _ClassVar[RecoveryStage]
RECOVERY_STAGE_UNSPECIFIED: RecoveryStage
RECOVERY_STAGE_DRAFT_LOADING: RecoveryStage
RECOVERY_STAGE_ASSISTING: RecoveryStage
RECOVERY_STAGE_SWITCHING: RecoveryStage
RECOVERY_STAGE_SERVING: RecoveryStage

class KVPage(_message.Message):
    __slots__ = ("request_id", "page_index", "start_position", "end_position", "tag", "checksum", "dtype", "shape", "payload", "token_ids", "reserve_bytes", "release")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    END_POSITION_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    RESERVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    page_index: int
    start_position: int
    end_position: int
    tag: bytes
    checksum: int
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    payload: bytes
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    reserve_bytes: int
    release: bool
    def __init__(self, request_id: _Optional[int] = ..., page_index: _Optional[int] = ..., start_position: _Optional[int] = ..., end_position: _Optional[int] = ..., tag: _Optional[bytes] = ..., checksum: _Optional[int] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., payload: _Optional[bytes] = ..., token_ids: _Optional[_Iterable[int]] = ..., reserve_bytes: _Optional[int] = ..., release: _Optional[bool] = ...) -> None: ...

class SubmitRequestRequest(_message.Message):
    __slots__ = ("request_id", "prompt_token_ids", "generated_token_ids", "max_tokens", "checkpoint_holder", "temperature", "seed", "stop_token_ids", "restore_from", "checkpoint_holder_address", "restore_from_address", "top_p", "top_k", "logprobs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_HOLDER_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FROM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_HOLDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    generated_token_ids: _containers.RepeatedScalarFieldContainer[int]
    max_tokens: int
    checkpoint_holder: int
    temperature: float
    seed: int
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    restore_from: int
    checkpoint_holder_address: str
    restore_from_address: str
    top_p: float
    top_k: int
    logprobs: int
    def __init__(self, request_id: _Optional[int] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., generated_token_ids: _Optional[_Iterable[int]] = ..., max_tokens: _Optional[int] = ..., checkpoint_holder: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., restore_from: _Optional[int] = ..., checkpoint_holder_address: _Optional[str] = ..., restore_from_address: _Optional[str] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., logprobs: _Optional[int] = ...) -> None: ...

class TokenLogprob(_message.Message):
    __slots__ = ("logprob", "top_token_ids", "top_logprobs")
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    logprob: float
    top_token_ids: _containers.RepeatedScalarFieldContainer[int]
    top_logprobs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, logprob: _Optional[float] = ..., top_token_ids: _Optional[_Iterable[int]] = ..., top_logprobs: _Optional[_Iterable[float]] = ...) -> None: ...

class TokenChunk(_message.Message):
    __slots__ = ("request_id", "token_ids", "generated_tokens", "finished", "logprobs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    generated_tokens: int
    finished: bool
    logprobs: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    def __init__(self, request_id: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., generated_tokens: _Optional[int] = ..., finished: _Optional[bool] = ..., logprobs: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ...) -> None: ...

class SendPagesResponse(_message.Message):
    __slots__ = ("pages_received", "valid_tokens_by_request")
    class ValidTokensByRequestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    PAGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    VALID_TOKENS_BY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    pages_received: int
    valid_tokens_by_request: _containers.ScalarMap[int, int]
    def __init__(self, pages_received: _Optional[int] = ..., valid_tokens_by_request: _Optional[_Mapping[int, int]] = ...) -> None: ...

class FetchPagesRequest(_message.Message):
    __slots__ = ("request_id", "start_position", "end_position")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    END_POSITION_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    start_position: int
    end_position: int
    def __init__(self, request_id: _Optional[int] = ..., start_position: _Optional[int] = ..., end_position: _Optional[int] = ...) -> None: ...

class ReportLoadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReportLoadResponse(_message.Message):
    __slots__ = ("worker_id", "load", "measured_at", "stage", "running_requests", "steps", "checkpointed_tokens_by_request", "host_held_bytes", "max_model_len")
    class CheckpointedTokensByRequestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTED_TOKENS_BY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    HOST_HELD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    load: _planner_pb2.WorkerLoad
    measured_at: _timestamp_pb2.Timestamp
    stage: RecoveryStage
    running_requests: int
    steps: int
    checkpointed_tokens_by_request: _containers.ScalarMap[int, int]
    host_held_bytes: int
    max_model_len: int
    def __init__(self, worker_id: _Optional[int] = ..., load: _Optional[_Union[_planner_pb2.WorkerLoad, _Mapping]] = ..., measured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage: _Optional[_Union[RecoveryStage, str]] = ..., running_requests: _Optional[int] = ..., steps: _Optional[int] = ..., checkpointed_tokens_by_request: _Optional[_Mapping[int, int]] = ..., host_held_bytes: _Optional[int] = ..., max_model_len: _Optional[int] = ...) -> None: ...

class SetStageRequest(_message.Message):
    __slots__ = ("stage", "survivor_worker", "survivor_address")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_WORKER_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    stage: RecoveryStage
    survivor_worker: int
    survivor_address: str
    def __init__(self, stage: _Optional[_Union[RecoveryStage, str]] = ..., survivor_worker: _Optional[int] = ..., survivor_address: _Optional[str] = ...) -> None: ...

class SetStageResponse(_message.Message):
    __slots__ = ("stage",)
    STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: RecoveryStage
    def __init__(self, stage: _Optional[_Union[RecoveryStage, str]] = ...) -> None: ...

class MirrorRequestsRequest(_message.Message):
    __slots__ = ("assistant_worker",)
    ASSISTANT_WORKER_FIELD_NUMBER: _ClassVar[int]
    assistant_worker: int
    def __init__(self, assistant_worker: _Optional[int] = ...) -> None: ...

class MirroredRequest(_message.Message):
    __slots__ = ("request_id", "output_offset_tokens", "output_token_ids", "prompt_token_ids", "max_tokens", "stop_token_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_OFFSET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    output_offset_tokens: int
    output_token_ids: _containers.RepeatedScalarFieldContainer[int]
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    max_tokens: int
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[int] = ..., output_offset_tokens: _Optional[int] = ..., output_token_ids: _Optional[_Iterable[int]] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., max_tokens: _Optional[int] = ..., stop_token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class MirrorSnapshot(_message.Message):
    __slots__ = ("steps", "requests")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    steps: int
    requests: _containers.RepeatedCompositeFieldContainer[MirroredRequest]
    def __init__(self, steps: _Optional[int] = ..., requests: _Optional[_Iterable[_Union[MirroredRequest, _Mapping]]] = ...) -> None: ...

class DraftProposal(_message.Message):
    __slots__ = ("request_id", "history_tokens", "last_token_id", "token_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LAST_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    history_tokens: int
    last_token_id: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[int] = ..., history_tokens: _Optional[int] = ..., last_token_id: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SubmitProposalsRequest(_message.Message):
    __slots__ = ("assistant_worker", "proposals")
    ASSISTANT_WORKER_FIELD_NUMBER: _ClassVar[int]
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    assistant_worker: int
    proposals: _containers.RepeatedCompositeFieldContainer[DraftProposal]
    def __init__(self, assistant_worker: _Optional[int] = ..., proposals: _Optional[_Iterable[_Union[DraftProposal, _Mapping]]] = ...) -> None: ...

class SubmitProposalsResponse(_message.Message):
    __slots__ = ("proposals_queued",)
    PROPOSALS_QUEUED_FIELD_NUMBER: _ClassVar[int]
    proposals_queued: int
    def __init__(self, proposals_queued: _Optional[int] = ...) -> None: ...
