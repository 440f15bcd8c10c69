"""gRPC service hygiene shared by the planner service and the worker processes.

Both servers are built the same way: a thread-pool server with message-size limits, the
standard ``grpc.health.v1`` health service (NOT_SERVING until the owner marks it ready) and
server reflection (``grpc.reflection.v1`` and ``v1alpha``), bound insecure or with TLS, and
run until SIGTERM or SIGINT, when the owner stops gracefully.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

__all__ = [
    "NOT_SERVING",
    "REFLECTION_V1",
    "SERVING",
    "Stoppable",
    "add_health_and_reflection",
    "add_reflection_v1",
    "bind",
    "dial_target",
    "new_server",
    "run_until_signal",
]

log = logging.getLogger(__name__)

#: The stable reflection service; grpcio-reflection ships only v1alpha, whose messages are the
#: same on the wire, so its servicer answers both names.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def new_server(
    max_workers: int,
    max_message_bytes: int,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> grpc.Server:
    """A thread-pool server with send/receive size limits and exclusive port binding."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    return grpc.server(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="lumen-rpc"
        ),
        interceptors=list(interceptors),
        options=options,
    )


def add_health_and_reflection(server: grpc.Server, service_name: str) -> health.HealthServicer:
    """Health (NOT_SERVING for the server and ``service_name`` until set) and reflection."""
    health_servicer = health.HealthServicer()
    health_servicer.set("", NOT_SERVING)
    health_servicer.set(service_name, NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (service_name, health.SERVICE_NAME, REFLECTION_V1, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    add_reflection_v1(server, reflection.ReflectionServicer(names))
    return health_servicer


def add_reflection_v1(server: grpc.Server, servicer: reflection.ReflectionServicer) -> None:
    """Serve ``grpc.reflection.v1.ServerReflection`` with the v1alpha servicer."""
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )


def bind(
    server: grpc.Server,
    address: str,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> int:
    """Bind ``address`` (TLS with both a certificate and a key); the bound port, OSError if
    nothing could be bound."""
    if tls_cert is not None and tls_key is not None:
        credentials = grpc.ssl_server_credentials([(tls_key.read_bytes(), tls_cert.read_bytes())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return int(port)


def dial_target(address: str, port: int) -> str:
    """``host:port`` a client on this machine can dial for a server listening on ``address``."""
    host = address.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


class Stoppable(Protocol):
    def start(self) -> None: ...

    def stop(self, grace_s: float | None = None) -> None: ...

    def wait(self, timeout_s: float | None = None) -> bool: ...


def run_until_signal(server: Stoppable, on_ready: Callable[[], None] | None = None) -> None:
    """Start ``server`` and run it until SIGTERM or SIGINT, then stop it gracefully;
    ``on_ready`` runs once it has started."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping gracefully", signum)
        # Stop outside the handler: it waits on in-flight calls.
        threading.Thread(target=server.stop, name="lumen-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        if on_ready is not None:
            on_ready()
        while not server.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
