"""A typed Python client of the planner service: domain values in, domain values out.

>>> with PlannerClient("127.0.0.1:50051") as planner:          # doctest: +SKIP
...     planner.report_cluster_state(state)
...     outcome = planner.plan_recovery(failed=[3], method="greedy", time_limit_s=1.0)
...     plan = outcome.plan                                    # RecoveryDecision (ids) or None

Every call has a deadline (``timeout_s``, default the client's) and is retried on UNAVAILABLE
(server restarting, connection refused) with exponential backoff, within the same deadline. Any
other failure raises :class:`PlannerError` with the status code's name and the server's detail,
which names the offending field for bad input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lumen.planner.decisions import (
    Outcome,
    PairingDecision,
    Placed,
    PlacementDecision,
    PlanUpdate,
    RecoveryDecision,
)
from lumen.planner.domain import ClusterState, Request
from lumen.planner.service import wire
from lumen.proto.gen.v1 import planner_pb2 as pb
from lumen.proto.gen.v1 import planner_pb2_grpc as pb_grpc

T = TypeVar("T")

#: Status codes worth another attempt: the server is (re)starting or the connection dropped.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


class PlannerError(Exception):
    """A call that failed: ``code`` is the gRPC status code's name (e.g. "NOT_FOUND")."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def _error(exc: grpc.RpcError) -> PlannerError:
    code = exc.code()
    return PlannerError(code.name if code is not None else "UNKNOWN", exc.details() or "")


class PlannerClient:
    """Client of ``lumen.v1.Planner`` (module docstring)."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        tls: bool = False,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.05,
    ) -> None:
        """``tls`` (implied by ``root_certificates``) dials with TLS, trusting
        ``root_certificates`` (PEM) or the system roots."""
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        options = [
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20),
        ]
        if tls or root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.PlannerStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PlannerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _call(self, method: Callable[..., T], request: Any, timeout_s: float | None) -> T:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PlannerError("DEADLINE_EXCEEDED", "client deadline passed while retrying")
            try:
                return method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt >= self.retries:
                    raise _error(exc) from None
            pause = min(self.backoff_s * 2**attempt, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            attempt += 1

    @staticmethod
    def _options(method: str, time_limit_s: float | None, seed: int) -> pb.SolveOptions:
        return pb.SolveOptions(method=method, time_limit_ms=(time_limit_s or 0.0) * 1e3, seed=seed)

    def _timeout(self, timeout_s: float | None, time_limit_s: float | None) -> float:
        """The call's deadline: given, or the solver's limit plus a second, or the default."""
        if timeout_s is not None:
            return timeout_s
        if time_limit_s is not None:
            return max(self.timeout_s, time_limit_s + 1.0)
        return self.timeout_s

    @staticmethod
    def _settings(alpha: float | None, allow_same_node: bool) -> pb.PlacementSettings:
        settings = pb.PlacementSettings(allow_same_node=allow_same_node)
        if alpha is not None:
            settings.alpha = alpha
        return settings

    # -- calls -----------------------------------------------------------------------------------

    def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """The server's health status name ("SERVING", "NOT_SERVING", ...)."""
        reply = self._call(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout_s
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def report_cluster_state(self, state: ClusterState, timeout_s: float | None = None) -> int:
        """Replace the planner's view; returns the state version it assigned."""
        request = pb.ReportClusterStateRequest(state=wire.cluster_state_to_proto(state))
        reply = self._call(self._stub.ReportClusterState, request, timeout_s)
        return int(reply.state_version)

    def report_failure(self, workers: Sequence[int], timeout_s: float | None = None) -> int:
        """Report failed workers; the recovery and pairing plans follow on :meth:`watch_plans`."""
        request = pb.ReportFailureRequest(failed_workers=list(workers))
        request.detected_at.GetCurrentTime()
        reply = self._call(self._stub.ReportFailure, request, timeout_s)
        return int(reply.state_version)

    def plan_placement(
        self,
        state: ClusterState | None = None,
        request_ids: Sequence[int] = (),
        *,
        alpha: float | None = None,
        allow_same_node: bool = False,
        method: str = "",
        time_limit_s: float | None = None,
        seed: int = 0,
        timeout_s: float | None = None,
    ) -> Outcome[PlacementDecision]:
        request = pb.PlanPlacementRequest(
            request_ids=list(request_ids),
            settings=self._settings(alpha, allow_same_node),
            options=self._options(method, time_limit_s, seed),
        )
        if state is not None:
            request.state.CopyFrom(wire.cluster_state_to_proto(state))
        reply = self._call(
            self._stub.PlanPlacement, request, self._timeout(timeout_s, time_limit_s)
        )
        plan = wire.placement_from_proto(reply.plan) if reply.HasField("plan") else None
        return Outcome(wire.status_from_proto(reply.status), plan)

    def place_request(
        self,
        request: Request,
        *,
        alpha: float | None = None,
        allow_same_node: bool = False,
        rule: str = "",
        timeout_s: float | None = None,
    ) -> Placed:
        """Place one new request incrementally (``rule``: "greedy", the default, "lumen" or
        "fixed-ring"); ``Placed.holder`` is None when nothing fits."""
        message = pb.PlaceRequestRequest(
            request=wire.request_to_proto(request),
            settings=self._settings(alpha, allow_same_node),
            options=pb.SolveOptions(method=rule),
        )
        reply = self._call(self._stub.PlaceRequest, message, timeout_s)
        holder = reply.holder_worker if reply.HasField("holder_worker") else None
        return Placed(wire.status_from_proto(reply.status), holder)

    def plan_recovery(
        self,
        state: ClusterState | None = None,
        failed: Sequence[int] = (),
        *,
        method: str = "",
        time_limit_s: float | None = None,
        seed: int = 0,
        timeout_s: float | None = None,
    ) -> Outcome[RecoveryDecision]:
        request = pb.PlanRecoveryRequest(
            failed_workers=list(failed), options=self._options(method, time_limit_s, seed)
        )
        if state is not None:
            request.state.CopyFrom(wire.cluster_state_to_proto(state))
        reply = self._call(self._stub.PlanRecovery, request, self._timeout(timeout_s, time_limit_s))
        plan = wire.recovery_from_proto(reply.plan) if reply.HasField("plan") else None
        return Outcome(wire.status_from_proto(reply.status), plan)

    def plan_pairing(
        self,
        state: ClusterState | None = None,
        recovering: Sequence[int] = (),
        *,
        acceptance_rate: float | None = None,
        depth: int | None = None,
        method: str = "",
        time_limit_s: float | None = None,
        seed: int = 0,
        timeout_s: float | None = None,
    ) -> Outcome[PairingDecision]:
        request = pb.PlanPairingRequest(
            recovering_workers=list(recovering), options=self._options(method, time_limit_s, seed)
        )
        if acceptance_rate is not None:
            request.acceptance_rate = acceptance_rate
        if depth is not None:
            request.depth = depth
        if state is not None:
            request.state.CopyFrom(wire.cluster_state_to_proto(state))
        reply = self._call(self._stub.PlanPairing, request, self._timeout(timeout_s, time_limit_s))
        plan = wire.pairing_from_proto(reply.plan) if reply.HasField("plan") else None
        return Outcome(wire.status_from_proto(reply.status), plan)

    def watch_plans(
        self, after_sequence: int = 0, timeout_s: float | None = None
    ) -> Iterator[PlanUpdate]:
        """Plans as the planner publishes them (after buffered ones above ``after_sequence``).
        ``timeout_s`` None streams until the server ends it; closing the iterator cancels."""
        stream = self._stub.WatchPlans(
            pb.WatchPlansRequest(after_sequence=after_sequence),
            timeout=timeout_s,
            metadata=self._metadata,
        )
        try:
            for update in stream:
                yield wire.plan_update_from_proto(update)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise _error(exc) from None
        finally:
            stream.cancel()
