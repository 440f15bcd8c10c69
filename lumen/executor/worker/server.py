"""The worker server: the executor servicer plus standard gRPC service hygiene.

See docs/architecture.md (conventions).

:func:`create_server` builds the worker and binds the port (port 0 picks a free one) and returns
the server with its bound port; :meth:`WorkerServer.start` loads the weights and starts serving;
:func:`serve` runs it until SIGTERM or SIGINT. Around the executor service:

- ``grpc.health.v1.Health``: NOT_SERVING from creation until the worker can take calls (after
  the cold-start weight load, or as soon as a staged recovery has begun), SERVING while up,
  NOT_SERVING again before a graceful stop;
- server reflection;
- graceful shutdown: health flips, in-flight calls get ``grace_s``, the engine loop and the
  checkpoint streamer stop;
- Prometheus metrics on an HTTP port (``/metrics``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health

from lumen.executor.engine.interface import Engine, WeightSource
from lumen.executor.worker.assist import AssistLink
from lumen.executor.worker.assist_link import grpc_assist_link
from lumen.executor.worker.client import PeerPool
from lumen.executor.worker.core import WorkerConfig, WorkerCore
from lumen.executor.worker.metrics import WorkerMetrics
from lumen.executor.worker.servicer import SERVICE_NAME, ExecutorServicer, add_to_server
from lumen.grpc_server import (
    SERVING,
    add_health_and_reflection,
    bind,
    dial_target,
    new_server,
    run_until_signal,
)

__all__ = ["ServerConfig", "WorkerServer", "create_server", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens; the defaults suit tests (localhost, port 0)."""

    address: str = "127.0.0.1:0"
    #: Serve Prometheus metrics on this port (0: any free port; None: no HTTP endpoint).
    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"
    #: Handler threads: bounds concurrent calls, token streams included.
    max_workers: int = 64
    max_message_bytes: int = 256 << 20
    grace_s: float = 2.0


class WorkerServer:
    """A bound, not yet started worker server (see :func:`create_server`)."""

    def __init__(
        self,
        server: grpc.Server,
        worker: WorkerCore,
        peers: PeerPool,
        health_servicer: health.HealthServicer,
        port: int,
        config: ServerConfig,
    ) -> None:
        self.grpc_server = server
        self.worker = worker
        self.peers = peers
        self.health = health_servicer
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
        """Accept calls, load the weights (cold start), then report SERVING."""
        self.grpc_server.start()
        if self.config.metrics_port is not None:
            self.metrics_port = self.worker.metrics.serve_http(
                self.config.metrics_port, self.config.metrics_address
            )
        self.worker.start()
        self.health.set("", SERVING)
        self.health.set(SERVICE_NAME, SERVING)
        log.info("worker %d serving on port %d", self.worker.worker_id, self.port)

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop (idempotent): NOT_SERVING first, the engine loop stops, then the other
        calls get ``grace_s`` to finish."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self.health.enter_graceful_shutdown()
            grace = self.config.grace_s if grace_s is None else grace_s
            # The engine stops first: running requests end UNAVAILABLE (the gateway resumes
            # them elsewhere) and their holders keep the checkpoints; cancelling the streams
            # first would read as clients leaving and release them.
            self.worker.stop()
            self.grpc_server.stop(grace).wait()
            self.peers.close()
            self.worker.metrics.close()
            self._stopped.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until stopped; False on timeout."""
        return self._stopped.wait(timeout_s)


def create_server(
    worker_config: WorkerConfig,
    config: ServerConfig | None = None,
    *,
    assist_link: Callable[[int, str], AssistLink] | None = None,
    make_engine: Callable[..., Engine] | None = None,
    to_host: Callable[[WeightSource], Any] | None = None,
) -> tuple[WorkerServer, int]:
    """Build the worker and its server and bind the port; returns it (not started) and the
    port. The weights load in :meth:`WorkerServer.start`. ``assist_link`` reaches a survivor to
    draft for while assisting (see :mod:`~lumen.executor.worker.assist`); by default the
    survivor's own server, over gRPC (:mod:`~lumen.executor.worker.assist_link`).
    ``make_engine`` and ``to_host`` replace the built-in engine (the vLLM worker's)."""
    config = config or ServerConfig()
    if assist_link is None:
        assist_link = grpc_assist_link(worker_config.worker_id)
    peers = PeerPool()
    extra: dict[str, Any] = {"to_host": to_host}
    if make_engine is not None:
        extra["make_engine"] = make_engine
    worker = WorkerCore(worker_config, peers, WorkerMetrics(), assist_link=assist_link, **extra)
    server = new_server(config.max_workers, config.max_message_bytes)
    add_to_server(ExecutorServicer(worker), server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAME)
    port = bind(server, config.address)
    return WorkerServer(server, worker, peers, health_servicer, port, config), port


def serve(server: WorkerServer, on_ready: Callable[[], None] | None = None) -> None:
    """Start ``server`` and run it until SIGTERM or SIGINT, then stop it gracefully;
    ``on_ready`` runs once it serves."""
    run_until_signal(server, on_ready)
