"""The gRPC servicer of ``lumen.v1.Executor``: a thin adapter over :class:`~.core.WorkerCore`.

Every RPC is proto -> domain (:mod:`~lumen.executor.worker.wire`, which validates and names the
offending field) -> worker -> proto. Errors become status codes in one table,
:data:`STATUS_CODES`; anything else is a bug and becomes INTERNAL without leaking a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from lumen.executor.worker import wire
from lumen.executor.worker.core import PageMessage, WorkerCore
from lumen.executor.worker.errors import InvalidField, NotReady, WorkerStopping
from lumen.executor.worker.store import BudgetExceededError, NotReservedError
from lumen.proto.gen.v1 import executor_pb2 as pb
from lumen.proto.gen.v1 import executor_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "STATUS_CODES", "ExecutorServicer", "add_to_server", "status_code"]

log = logging.getLogger(__name__)

#: Domain error -> status code; the first matching row wins (subclasses before bases).
STATUS_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidField, grpc.StatusCode.INVALID_ARGUMENT),
    (BudgetExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReservedError, grpc.StatusCode.NOT_FOUND),
    (NotReady, grpc.StatusCode.FAILED_PRECONDITION),
    (WorkerStopping, grpc.StatusCode.UNAVAILABLE),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)

Resp = TypeVar("Resp")


def status_code(exc: Exception) -> grpc.StatusCode | None:
    """The status code of a domain error (None: not a domain error, i.e. a bug)."""
    for kind, code in STATUS_CODES:
        if isinstance(exc, kind):
            return code
    return None


def _abort(name: str, context: grpc.ServicerContext, exc: Exception) -> None:
    mapped = status_code(exc)
    if mapped is None:
        log.exception("%s failed", name)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name}: {type(exc).__name__}")
    else:
        context.abort(mapped, str(exc))


class ExecutorServicer(pb_grpc.ExecutorServicer):
    """``lumen.v1.Executor`` over a :class:`WorkerCore`."""

    def __init__(self, worker: WorkerCore) -> None:
        self.worker = worker

    def _call(self, name: str, context: grpc.ServicerContext, fn: Callable[[], Resp]) -> Resp:
        try:
            return fn()
        except Exception as exc:
            _abort(name, context, exc)
            raise  # abort raises; never reached

    def SubmitRequest(
        self, request: pb.SubmitRequestRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TokenChunk]:
        try:
            sub = wire.submission_from_proto(request)
            stream, _ = self.worker.start_request(sub)
            for event in stream.events(alive=context.is_active):
                yield wire.token_event_to_proto(event)
        except Exception as exc:
            _abort("SubmitRequest", context, exc)

    def SendPages(
        self, request_iterator: Iterator[pb.KVPage], context: grpc.ServicerContext
    ) -> pb.SendPagesResponse:
        def messages() -> Iterator[PageMessage]:
            for msg in request_iterator:
                page, tokens = wire.page_from_proto(msg) if wire.is_page(msg) else (None, ())
                yield PageMessage(msg.request_id, page, tokens, msg.reserve_bytes, msg.release)

        def run() -> pb.SendPagesResponse:
            accepted, valid = self.worker.receive_pages(messages())
            return pb.SendPagesResponse(pages_received=accepted, valid_tokens_by_request=valid)

        return self._call("SendPages", context, run)

    def FetchPages(
        self, request: pb.FetchPagesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.KVPage]:
        try:
            end = request.end_position if request.HasField("end_position") else None
            pages = self.worker.fetch_pages(request.request_id, request.start_position, end)
            for page in pages:
                yield wire.page_to_proto(page)
        except Exception as exc:
            _abort("FetchPages", context, exc)

    def ReportLoad(
        self, request: pb.ReportLoadRequest, context: grpc.ServicerContext
    ) -> pb.ReportLoadResponse:
        def run() -> pb.ReportLoadResponse:
            status, held = self.worker.status()
            return wire.status_to_proto(status, held)

        return self._call("ReportLoad", context, run)

    def SetStage(
        self, request: pb.SetStageRequest, context: grpc.ServicerContext
    ) -> pb.SetStageResponse:
        def run() -> pb.SetStageResponse:
            stage = wire.stage_from_proto(request.stage)
            survivor = request.survivor_worker if request.HasField("survivor_worker") else None
            entered = self.worker.set_stage(stage, survivor, request.survivor_address)
            return pb.SetStageResponse(stage=wire.stage_to_proto(entered))

        return self._call("SetStage", context, run)

    def MirrorRequests(
        self, request: pb.MirrorRequestsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.MirrorSnapshot]:
        log.info("worker %d drafts for this worker", request.assistant_worker)
        try:
            encoder = wire.MirrorEncoder()
            for mirror in self.worker.mirror_stream(alive=context.is_active):
                yield encoder.encode(mirror)
        except Exception as exc:
            _abort("MirrorRequests", context, exc)

    def SubmitProposals(
        self, request: pb.SubmitProposalsRequest, context: grpc.ServicerContext
    ) -> pb.SubmitProposalsResponse:
        def run() -> pb.SubmitProposalsResponse:
            queued = self.worker.accept_proposals(wire.proposals_from_proto(request))
            return pb.SubmitProposalsResponse(proposals_queued=queued)

        return self._call("SubmitProposals", context, run)


def add_to_server(servicer: ExecutorServicer, server: Any) -> None:
    """Register the servicer on a ``grpc.Server``."""
    pb_grpc.add_ExecutorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


#: Fully qualified name of the service (health checks and reflection use it).
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Executor"].full_name
