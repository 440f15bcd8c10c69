"""The gRPC servicer of ``lumen.v1.Planner``: a thin adapter (docs/architecture.md, conventions).

Every RPC is proto -> domain (:mod:`lumen.planner.service.wire`, which validates and names the
offending field) -> controller -> proto. Errors become status codes in one table,
:data:`STATUS_CODES`; anything else is a bug and becomes INTERNAL without leaking a traceback.

Every method is registered with raw-bytes deserializers and decodes its request itself (after
the bearer-token interceptor has let the call through): bytes that are no valid message end with
INVALID_ARGUMENT and one log line, never with INTERNAL and a traceback. Open WatchPlans streams
are capped (``max_streams``) below the server's handler threads, so that unary calls and health
checks always find a thread; the stream beyond the cap gets RESOURCE_EXHAUSTED.

Deadlines and cancellation reach the solver and the problem builders: the solve's time limit
is the smaller of the time limit asked for (or the planner's default) and the call's remaining
deadline minus a reserve for building and sending the answer; the call's termination (client
cancel, deadline, disconnect) sets the solve's cancel event, which the exact backends and the
problem builders poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from lumen.planner.domain import DomainError
from lumen.planner.problems import ProblemError
from lumen.planner.result import SolveSettings
from lumen.planner.service import wire
from lumen.planner.service.budget import TooLarge
from lumen.planner.service.controller import Controller
from lumen.planner.service.errors import (
    AlreadyExists,
    InvalidField,
    NotFound,
    NotReady,
    OutOfTime,
)
from lumen.planner.service.metrics import ServiceMetrics
from lumen.proto.gen.v1 import planner_pb2 as pb
from lumen.proto.gen.v1 import planner_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

#: Domain error -> status code; the first matching row wins (subclasses before bases).
STATUS_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidField, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (NotReady, grpc.StatusCode.FAILED_PRECONDITION),
    (OutOfTime, grpc.StatusCode.DEADLINE_EXCEEDED),
    (DomainError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProblemError, grpc.StatusCode.INVALID_ARGUMENT),
)

#: Part of the remaining deadline kept back from the solver for posing the problem and sending
#: the answer: this fraction, and at least DEADLINE_RESERVE_S.
DEADLINE_RESERVE_FRACTION = 0.1
DEADLINE_RESERVE_S = 0.005
#: Below this much solver time a call is answered DEADLINE_EXCEEDED without solving.
MIN_SOLVE_S = 0.001
#: How often an idle WatchPlans stream checks that its caller is still there.
WATCH_POLL_S = 0.25
#: Default cap on open WatchPlans streams.
DEFAULT_MAX_STREAMS = 32

Resp = TypeVar("Resp")


def status_code(exc: Exception) -> grpc.StatusCode | None:
    """The status code of a domain error (None: not a domain error, i.e. a bug)."""
    for kind, code in STATUS_CODES:
        if isinstance(exc, kind):
            return code
    return None


class PlannerServicer(pb_grpc.PlannerServicer):
    """``lumen.v1.Planner`` over a :class:`Controller`."""

    def __init__(
        self,
        controller: Controller,
        metrics: ServiceMetrics | None = None,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        self.controller = controller
        self.metrics = metrics
        self.max_streams = max_streams
        self._streams = 0
        self._streams_lock = threading.Lock()

    def observe(self, name: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count one unary call that ended with ``code``."""
        if self.metrics is not None:
            self.metrics.observe_rpc(name, code.name, seconds)

    # -- plumbing --------------------------------------------------------------------------------

    def _call(self, name: str, context: grpc.ServicerContext, fn: Callable[[], Resp]) -> Resp:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return fn()
        except Exception as exc:
            mapped = status_code(exc)
            code = mapped if mapped is not None else grpc.StatusCode.INTERNAL
            if mapped is None:
                log.exception("%s failed", name)
                details = f"internal error in {name}: {type(exc).__name__}"
            else:
                details = str(exc)
            context.abort(code, details)
            raise  # abort raises; this line is never reached
        finally:
            self.observe(name, code, time.perf_counter() - start)
            if self.metrics is not None:
                self.metrics.state_version.set(self.controller.version)

    def _settings(self, options: pb.SolveOptions, context: grpc.ServicerContext) -> SolveSettings:
        """Solver settings from the call's options, bounded by its deadline, cancelled with it."""
        config = self.controller.config
        choice = wire.solve_choice_from_proto(options, config.max_time_limit_s)
        limit = choice.time_limit_s if choice.time_limit_s is not None else config.time_limit_s
        remaining = context.time_remaining()
        if remaining is not None:
            budget = remaining - max(DEADLINE_RESERVE_S, DEADLINE_RESERVE_FRACTION * remaining)
            if budget < MIN_SOLVE_S:
                raise OutOfTime(f"the call's deadline ({remaining * 1e3:.1f} ms) leaves no time")
            limit = min(limit, budget)
        cancel = threading.Event()
        if not context.add_callback(cancel.set):
            cancel.set()  # the call has already ended
        return SolveSettings(
            time_limit_s=limit,
            threads=choice.threads,
            seed=choice.seed,
            rel_gap=choice.rel_gap,
            cancel=cancel,
        )

    # -- RPCs ------------------------------------------------------------------------------------

    def PlanPlacement(
        self, request: pb.PlanPlacementRequest, context: grpc.ServicerContext
    ) -> pb.PlanPlacementResponse:
        def run() -> pb.PlanPlacementResponse:
            state = wire.optional_state(request)
            options = wire.placement_options_from_proto(
                request.settings, self.controller.config.placement
            )
            settings = self._settings(request.options, context)
            outcome = self.controller.plan_placement(
                state, wire.ids(request.request_ids), options, request.options.method, settings
            )
            out = pb.PlanPlacementResponse(status=wire.status_to_proto(outcome.status))
            if outcome.plan is not None:
                out.plan.CopyFrom(wire.placement_to_proto(outcome.plan))
            return out

        return self._call("PlanPlacement", context, run)

    def PlaceRequest(
        self, request: pb.PlaceRequestRequest, context: grpc.ServicerContext
    ) -> pb.PlaceRequestResponse:
        def run() -> pb.PlaceRequestResponse:
            if not request.HasField("request"):
                raise InvalidField("request", "required")
            new = wire.request_from_proto(request.request, "request", keep_holder=False)
            options = wire.placement_options_from_proto(
                request.settings, self.controller.config.placement
            )
            wire.solve_choice_from_proto(request.options, self.controller.config.max_time_limit_s)
            rule = request.options.method
            placed = self.controller.place_request(
                new, options, "greedy" if rule in ("", "incremental") else rule
            )
            out = pb.PlaceRequestResponse(status=wire.status_to_proto(placed.status))
            if placed.holder is not None:
                out.holder_worker = placed.holder
            return out

        return self._call("PlaceRequest", context, run)

    def PlanRecovery(
        self, request: pb.PlanRecoveryRequest, context: grpc.ServicerContext
    ) -> pb.PlanRecoveryResponse:
        def run() -> pb.PlanRecoveryResponse:
            state = wire.optional_state(request)
            settings = self._settings(request.options, context)
            outcome = self.controller.plan_recovery(
                state, wire.ids(request.failed_workers), request.options.method, settings
            )
            out = pb.PlanRecoveryResponse(status=wire.status_to_proto(outcome.status))
            if outcome.plan is not None:
                out.plan.CopyFrom(wire.recovery_to_proto(outcome.plan))
            return out

        return self._call("PlanRecovery", context, run)

    def PlanPairing(
        self, request: pb.PlanPairingRequest, context: grpc.ServicerContext
    ) -> pb.PlanPairingResponse:
        def run() -> pb.PlanPairingResponse:
            state = wire.optional_state(request)
            acceptance = wire.acceptance_rate_from_proto(request)
            depth = wire.depth_from_proto(request)
            settings = self._settings(request.options, context)
            outcome = self.controller.plan_pairing(
                state,
                wire.ids(request.recovering_workers),
                acceptance,
                depth,
                request.options.method,
                settings,
            )
            out = pb.PlanPairingResponse(status=wire.status_to_proto(outcome.status))
            if outcome.plan is not None:
                out.plan.CopyFrom(wire.pairing_to_proto(outcome.plan))
            return out

        return self._call("PlanPairing", context, run)

    def ReportClusterState(
        self, request: pb.ReportClusterStateRequest, context: grpc.ServicerContext
    ) -> pb.ReportClusterStateResponse:
        def run() -> pb.ReportClusterStateResponse:
            if not request.HasField("state"):
                raise InvalidField("state", "required")
            state = wire.cluster_state_from_proto(request.state)
            return pb.ReportClusterStateResponse(state_version=self.controller.report_state(state))

        return self._call("ReportClusterState", context, run)

    def ReportFailure(
        self, request: pb.ReportFailureRequest, context: grpc.ServicerContext
    ) -> pb.ReportFailureResponse:
        def run() -> pb.ReportFailureResponse:
            version = self.controller.report_failure(wire.ids(request.failed_workers))
            return pb.ReportFailureResponse(state_version=version)

        return self._call("ReportFailure", context, run)

    def WatchPlans(
        self, request: pb.WatchPlansRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PlanUpdate]:
        start = time.perf_counter()
        with self._streams_lock:
            admitted = self._streams < self.max_streams
            if admitted:
                self._streams += 1
        if not admitted:
            self._end_stream(grpc.StatusCode.RESOURCE_EXHAUSTED, start)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many open WatchPlans streams (the service allows {self.max_streams});"
                " retry later or close another stream",
            )
        sub = self.controller.subscribe(request.after_sequence)
        context.add_callback(sub.close)
        if self.metrics is not None:
            self.metrics.subscribers.inc()
        code = grpc.StatusCode.INTERNAL  # until the stream ends one of the known ways
        try:
            while context.is_active():
                update = sub.get(WATCH_POLL_S)
                if update is not None:
                    yield wire.plan_update_to_proto(update)
                elif sub.closed:
                    break
            code = _stream_end(context, sub.overflowed)
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                context.abort(
                    code,
                    "subscriber fell behind the plan stream; resubscribe with after_sequence"
                    " set to the last sequence received",
                )
        finally:
            sub.close()
            with self._streams_lock:
                self._streams -= 1
            if self.metrics is not None:
                self.metrics.subscribers.dec()
            self._end_stream(code, start)

    def _end_stream(self, code: grpc.StatusCode, start: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_stream("WatchPlans", code.name, time.perf_counter() - start)


def _stream_end(context: grpc.ServicerContext, overflowed: bool) -> grpc.StatusCode:
    """How a WatchPlans stream ended: the subscriber fell behind, the caller's deadline passed,
    the caller went away, or the service ended it (a graceful stop: OK)."""
    if overflowed:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if context.is_active():
        return grpc.StatusCode.OK
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def add_to_server(servicer: PlannerServicer, server: Any) -> None:
    """Register the servicer on a ``grpc.Server``: every method takes raw bytes and decodes
    them itself (:func:`_decoding`), so that a malformed message is INVALID_ARGUMENT."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name["Planner"].methods:
        parse = getattr(pb, method.input_type.name).FromString
        serialize = getattr(pb, method.output_type.name).SerializeToString
        behavior = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _decoding_stream(method.name, parse, behavior, servicer),
                response_serializer=serialize,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _decoding(method.name, parse, behavior, servicer),
                response_serializer=serialize,
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _decode(
    name: str,
    parse: Callable[[bytes], Any],
    raw: bytes,
    context: grpc.ServicerContext,
    servicer: PlannerServicer,
) -> Any:
    """The request message, or the call ends with INVALID_ARGUMENT (logged in one line)."""
    start = time.perf_counter()
    try:
        return parse(raw)
    except Exception as exc:  # DecodeError, or a message nested too deep to parse
        reason = f"{type(exc).__name__}: {exc}"[:200]
        log.warning(
            "%s: malformed request of %d bytes from %s (%s)", name, len(raw), context.peer(), reason
        )
        servicer.observe(name, grpc.StatusCode.INVALID_ARGUMENT, time.perf_counter() - start)
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name} message: {reason}"
        )
        raise  # abort raises; never reached


def _decoding(
    name: str,
    parse: Callable[[bytes], Any],
    behavior: Callable[[Any, grpc.ServicerContext], Any],
    servicer: PlannerServicer,
) -> Callable[[bytes, grpc.ServicerContext], Any]:
    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        return behavior(_decode(name, parse, raw, context, servicer), context)

    return handle


def _decoding_stream(
    name: str,
    parse: Callable[[bytes], Any],
    behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
    servicer: PlannerServicer,
) -> Callable[[bytes, grpc.ServicerContext], Iterator[Any]]:
    def handle(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from behavior(_decode(name, parse, raw, context, servicer), context)

    return handle


#: Fully qualified name of the service (health checks and reflection use it).
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Planner"].full_name
