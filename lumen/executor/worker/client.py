"""A typed client of a worker process: :class:`~lumen.executor.worker.api.WorkerAPI` over gRPC.

>>> with ExecutorClient("127.0.0.1:50061", worker_id=1) as worker:     # doctest: +SKIP
...     for event in worker.submit(GenerationRequest(7, (1, 2, 3), max_tokens=16)):
...         print(event.token_ids)

A worker that is dead, unreachable or past the deadline raises
:class:`~lumen.executor.worker.api.WorkerUnavailableError` (the gateway then recovers its requests);
any other failure raises :class:`ExecutorError` with the status code's name and the worker's
detail, which names the offending field for bad input. The same client carries the KV page
operations workers use on each other (:meth:`ExecutorClient.send_pages`,
:meth:`ExecutorClient.fetch_pages`, :meth:`ExecutorClient.release_pages`); :class:`PeerPool`
keeps one client per peer address.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lumen.executor.engine.kv_page import KVPage
from lumen.executor.worker import wire
from lumen.executor.worker.api import (
    GenerationRequest,
    TokenEvent,
    WorkerStatus,
    WorkerUnavailableError,
)
from lumen.proto.gen.v1 import executor_pb2 as pb
from lumen.proto.gen.v1 import executor_pb2_grpc as pb_grpc

__all__ = ["ExecutorClient", "ExecutorError", "PeerPool"]

#: Status codes that mean "this worker is not there": the caller should go elsewhere.
UNAVAILABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class ExecutorError(Exception):
    """A call the worker refused: ``code`` is the gRPC status code's name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def _error(exc: grpc.RpcError, target: str) -> Exception:
    code = exc.code()
    details = exc.details() or ""
    if code in UNAVAILABLE:
        return WorkerUnavailableError(f"worker at {target}: {code.name}: {details}")
    return ExecutorError(code.name if code is not None else "UNKNOWN", details)


class ExecutorClient:
    """Client of one worker's ``lumen.v1.Executor`` (module docstring)."""

    def __init__(self, target: str, worker_id: int = -1, *, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        options = [
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20),
        ]
        self.target = target
        self._worker_id = worker_id
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.ExecutorStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)
        # Status reports (heartbeats) go over a connection of their own, so that they never
        # wait behind token streams or page transfers on the shared one.
        self._control = grpc.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._control_stub = pb_grpc.ExecutorStub(self._control)  # type: ignore[no-untyped-call]

    @property
    def worker_id(self) -> int:
        return self._worker_id

    def close(self) -> None:
        self._channel.close()
        self._control.close()

    def __enter__(self) -> ExecutorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- WorkerAPI -------------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        holder_address: str = "",
        restore_address: str = "",
    ) -> Iterator[TokenEvent]:
        """Run ``request``; yields its token events (the last one finished). The addresses
        name the holder and the restore source when the worker's peer table lacks them."""
        message = wire.submission_to_proto(
            wire.Submission(request, holder_address, restore_address)
        )
        stream = self._stub.SubmitRequest(message)
        try:
            for chunk in stream:
                yield wire.token_event_from_proto(chunk)
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None
        finally:
            stream.cancel()

    def status(self, timeout_s: float = 1.0) -> WorkerStatus:
        return wire.status_from_proto(self.report_load(timeout_s))

    def report_load(self, timeout_s: float | None = None) -> pb.ReportLoadResponse:
        """The raw report (with checkpoint bytes held and the measurement time)."""
        try:
            reply: pb.ReportLoadResponse = self._control_stub.ReportLoad(
                pb.ReportLoadRequest(), timeout=timeout_s or self.timeout_s
            )
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None
        return reply

    def set_stage(
        self, stage: str, survivor: int | None = None, *, survivor_address: str = ""
    ) -> str:
        request = pb.SetStageRequest(
            stage=wire.stage_to_proto(stage), survivor_address=survivor_address
        )
        if survivor is not None:
            request.survivor_worker = survivor
        try:
            reply = self._stub.SetStage(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None
        return wire.stage_from_proto(reply.stage)

    def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """The worker's health status name ("SERVING", "NOT_SERVING", ...)."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s or self.timeout_s
            )
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    # -- KV pages --------------------------------------------------------------------------------

    def send_pages(
        self,
        request_id: int,
        pages: Sequence[tuple[KVPage, tuple[int, ...]]],
        reserve_bytes: int = 0,
    ) -> int:
        """Store checkpoint pages on this worker (the holder), reserving ``reserve_bytes`` for
        the request first when given; returns the request's valid prefix there (tokens)."""
        messages = [wire.page_to_proto(page, tokens) for page, tokens in pages]
        if reserve_bytes:
            if messages:
                messages[0].reserve_bytes = reserve_bytes
            else:
                messages.append(pb.KVPage(request_id=request_id, reserve_bytes=reserve_bytes))
        try:
            reply = self._stub.SendPages(iter(messages), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None
        return int(reply.valid_tokens_by_request.get(request_id, 0))

    def release_pages(self, request_id: int) -> None:
        """Tell this worker (the holder) that the request ended: free its checkpoint."""
        message = pb.KVPage(request_id=request_id, release=True)
        try:
            self._stub.SendPages(iter([message]), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None

    def fetch_pages(
        self,
        request_id: int,
        start: int = 0,
        end: int | None = None,
        timeout_s: float | None = None,
    ) -> list[KVPage]:
        """The valid checkpoint pages of a request held by this worker."""
        request = pb.FetchPagesRequest(request_id=request_id, start_position=start)
        if end is not None:
            request.end_position = end
        try:
            return [
                wire.page_from_proto(msg)[0]
                for msg in self._stub.FetchPages(request, timeout=timeout_s or self.timeout_s)
            ]
        except grpc.RpcError as exc:
            raise _error(exc, self.target) from None


class PeerPool:
    """One :class:`ExecutorClient` per peer address, made on first use (thread-safe)."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[str, ExecutorClient] = {}
        self._lock = threading.Lock()

    def __call__(self, address: str) -> ExecutorClient:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = ExecutorClient(address, timeout_s=self.timeout_s)
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
