"""The assist link over gRPC: a recovering worker's draft reaches its survivor in another process.

:class:`GrpcAssistLink` implements :class:`~lumen.executor.worker.assist.AssistLink` against the
survivor's ``lumen.v1.Executor``:

- ``MirrorRequests`` (server streaming) is read on a thread of its own: after each survivor
  step it carries the survivor's greedy requests past their prefill, each history in full once
  and then only its new tokens (:class:`~lumen.executor.worker.wire.MirrorDecoder` rebuilds
  them); :meth:`GrpcAssistLink.mirrored_requests` returns the newest snapshot, waiting briefly
  for one newer than the last it returned;
- ``SubmitProposals`` (unary, with a deadline) hands one round of proposals to the survivor,
  which verifies them inside its next step and drops stale ones.

When the stream breaks (the survivor died or is stopping) :meth:`mirrored_requests` raises
:class:`~lumen.executor.worker.api.WorkerUnavailableError` and the assistant stops: the survivor
never depends on its draft. :func:`grpc_assist_link` is the factory the worker server uses by
default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import grpc

from lumen.executor.engine.interface import Proposal
from lumen.executor.worker import wire
from lumen.executor.worker.api import WorkerUnavailableError
from lumen.executor.worker.assist import AssistLink, Mirror
from lumen.proto.gen.v1 import executor_pb2 as pb
from lumen.proto.gen.v1 import executor_pb2_grpc as pb_grpc

__all__ = ["GrpcAssistLink", "grpc_assist_link"]

log = logging.getLogger(__name__)


class GrpcAssistLink:
    """An :class:`AssistLink` to the survivor at ``address`` (module docstring).

    Args:
        address: the survivor's ``host:port``.
        assistant_worker: this (recovering) worker's id, for the survivor's logs.
        timeout_s: deadline of each SubmitProposals call.
        wait_s: how long :meth:`mirrored_requests` waits for a snapshot newer than the last.
    """

    def __init__(
        self, address: str, assistant_worker: int, timeout_s: float = 2.0, wait_s: float = 0.05
    ) -> None:
        self.address = address
        self.assistant_worker = assistant_worker
        self.timeout_s = timeout_s
        self.wait_s = wait_s
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.ExecutorStub(self._channel)  # type: ignore[no-untyped-call]
        self._cond = threading.Condition()
        self._latest = Mirror(-1, ())
        self._returned = -1
        self._error: str = ""
        self._closed = False
        self._stream = self._stub.MirrorRequests(
            pb.MirrorRequestsRequest(assistant_worker=assistant_worker)
        )
        self._reader = threading.Thread(target=self._read, name="lumen-mirror", daemon=True)
        self._reader.start()

    def mirrored_requests(self) -> Mirror:
        """The survivor's newest snapshot (raises WorkerUnavailableError once the stream broke)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._error or self._latest.steps != self._returned, self.wait_s
            )
            if self._error:
                raise WorkerUnavailableError(self._error)
            self._returned = self._latest.steps
            return self._latest

    def accept_proposals(self, proposals: Sequence[Proposal]) -> int:
        """Send one round of proposals; returns how many the survivor queued."""
        if not proposals:
            return 0
        message = wire.proposals_to_proto(proposals, self.assistant_worker)
        try:
            reply = self._stub.SubmitProposals(message, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise WorkerUnavailableError(
                f"survivor at {self.address}: {exc.code()}: {exc.details()}"
            ) from None
        return int(reply.proposals_queued)

    def close(self) -> None:
        """Stop reading and release the connection (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._stream.cancel()
        self._channel.close()

    def _read(self) -> None:
        decoder = wire.MirrorDecoder()
        error = "the survivor ended the mirror stream"
        try:
            for msg in self._stream:
                mirror = decoder.decode(msg)
                with self._cond:
                    self._latest = mirror
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            error = f"survivor at {self.address}: {exc.code()}: {exc.details()}"
        except Exception as exc:  # a malformed stream: stop assisting rather than guess
            error = f"survivor at {self.address}: bad mirror stream: {exc}"
        with self._cond:
            if not self._closed:
                log.warning("assist link closed: %s", error)
            self._error = error
            self._cond.notify_all()


def grpc_assist_link(
    assistant_worker: int, timeout_s: float = 2.0
) -> Callable[[int, str], AssistLink]:
    """The worker's default link factory: ``(survivor id, its address) -> GrpcAssistLink``."""

    def make(survivor: int, address: str) -> AssistLink:
        if not address:
            raise ValueError(f"no address for survivor {survivor}")
        return GrpcAssistLink(address, assistant_worker, timeout_s)

    return make
