"""The planner server: the servicer plus standard gRPC service hygiene (docs/architecture.md).

:func:`create_server` builds everything and binds the port (port 0 picks a free one) and returns
the server with its bound port; :meth:`PlannerServer.start` starts it and :func:`serve` runs it
until SIGTERM or SIGINT. Around the planner service:

- ``grpc.health.v1.Health``: NOT_SERVING from creation until :meth:`PlannerServer.start` has
  started the controller, SERVING while up, NOT_SERVING again before a graceful stop (health
  checks need no token);
- server reflection, ``grpc.reflection.v1`` and ``v1alpha`` (``grpcurl list`` works);
- limits: message size, open WatchPlans streams (below the handler threads, so that health and
  unary calls always find one) and problem size (the controller's budget);
- graceful shutdown: health flips, subscribers' streams end, running solves are cancelled and
  in-flight unary calls get ``grace_s`` to finish;
- optional TLS (server certificate and key) and a bearer-token check;
- Prometheus metrics on an HTTP port (``/metrics``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health

from lumen.grpc_server import (
    SERVING,
    add_health_and_reflection,
    bind,
    dial_target,
    new_server,
    run_until_signal,
)
from lumen.planner.heuristics.recovery_scale import warm_up
from lumen.planner.service.auth import BearerTokenInterceptor
from lumen.planner.service.controller import Controller, ControllerConfig
from lumen.planner.service.metrics import ServiceMetrics
from lumen.planner.service.servicer import SERVICE_NAME, PlannerServicer, add_to_server

log = logging.getLogger(__name__)

#: Default cap on message size: a snapshot of 8,192 workers and 100,000 requests is about 4 MB.
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens; every field has a safe default for tests (localhost, port 0)."""

    address: str = "127.0.0.1:0"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None
    #: Serve Prometheus metrics on this port (0: any free port; None: no HTTP endpoint).
    metrics_port: int | None = None
    #: Host the metrics endpoint binds (None: the host of ``address``).
    metrics_address: str | None = None
    #: Handler threads: bounds concurrent unary calls plus open WatchPlans streams.
    max_workers: int = 64
    #: Open WatchPlans streams allowed (None: half the handler threads); the rest of the
    #: threads stay free for unary calls and health checks.
    max_streams: int | None = None
    #: Largest message received or sent.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_s: float = 5.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        if self.max_workers < 4:
            raise ValueError("max_workers must be >= 4")
        if not 1 <= self.streams <= self.max_workers - 2:
            raise ValueError(
                f"max_streams must be in [1, max_workers - 2] = [1, {self.max_workers - 2}]"
            )
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be >= 1024")

    @property
    def streams(self) -> int:
        """The cap on open WatchPlans streams."""
        return self.max_workers // 2 if self.max_streams is None else self.max_streams

    @property
    def metrics_host(self) -> str:
        """The host ``/metrics`` binds: ``metrics_address``, else the gRPC address's host."""
        if self.metrics_address is not None:
            return self.metrics_address
        host = self.address.rsplit(":", 1)[0] if ":" in self.address else self.address
        return host.strip("[]") or "0.0.0.0"


class PlannerServer:
    """A bound, not yet started planner server (see :func:`create_server`)."""

    def __init__(
        self,
        server: grpc.Server,
        controller: Controller,
        health_servicer: health.HealthServicer,
        metrics: ServiceMetrics,
        port: int,
        config: ServerConfig,
    ) -> None:
        self.grpc_server = server
        self.controller = controller
        self.health = health_servicer
        self.metrics = metrics
        self.port = port
        self.config = config
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def target(self) -> str:
        """``host:port`` a client on this machine can dial."""
        return dial_target(self.config.address, self.port)

    def start(self) -> None:
        """Start serving: :meth:`listen`, then :meth:`mark_ready`."""
        self.listen()
        self.mark_ready()

    def listen(self) -> None:
        """Accept calls (health still says NOT_SERVING) and serve metrics."""
        self.grpc_server.start()
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(
                self.config.metrics_port, self.config.metrics_host
            )

    def mark_ready(self) -> None:
        """Start the controller's background work, then report SERVING."""
        self.controller.start()
        self.health.set("", SERVING)
        self.health.set(SERVICE_NAME, SERVING)
        log.info("planner serving on port %d", self.port)

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop (idempotent): NOT_SERVING first, then streams end, solves are
        cancelled, in-flight calls get ``grace_s`` to finish."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self.health.enter_graceful_shutdown()
            self.controller.stop()
            grace = self.config.grace_s if grace_s is None else grace_s
            self.grpc_server.stop(grace).wait()
            self.metrics.close()
            self._stopped.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until stopped; False on timeout."""
        return self._stopped.wait(timeout_s)


def create_server(
    controller_config: ControllerConfig, config: ServerConfig | None = None
) -> tuple[PlannerServer, int]:
    """Build the planner server and bind its port; returns it (not started) and the port.
    The recovery greedy's compiled loops are loaded (or compiled) first, so that the first
    plan does not wait for them."""
    warm_up()
    config = config or ServerConfig()
    metrics = ServiceMetrics()
    controller = Controller(
        controller_config, on_solve=metrics.observe_solve, on_abandon=metrics.observe_abandoned
    )
    interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
    if config.token and config.tls_cert is None:
        log.warning(
            "a bearer token is required but TLS is off: the token crosses the network in clear"
            " text with every call; use --tls-cert and --tls-key outside a trusted network"
        )
    server = new_server(config.max_workers, config.max_message_bytes, interceptors)
    add_to_server(PlannerServicer(controller, metrics, max_streams=config.streams), server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAME)
    port = bind(server, config.address, config.tls_cert, config.tls_key)
    return PlannerServer(server, controller, health_servicer, metrics, port, config), port


def serve(server: PlannerServer, on_ready: Callable[[], None] | None = None) -> None:
    """Start ``server`` and run it until SIGTERM or SIGINT, then stop it gracefully;
    ``on_ready`` runs once it serves."""
    run_until_signal(server, on_ready)
