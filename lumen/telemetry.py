"""Prometheus plumbing shared by the planner service, the workers and the gateway.

Each component keeps its metrics in its own registry (so several components, or several tests,
can live in one process) and serves them on an optional HTTP port.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import start_http_server

__all__ = ["MetricsEndpoint"]


class MetricsEndpoint:
    """A metrics registry with its text rendering and an optional ``/metrics`` HTTP server."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._http: Any = None
        self._lock = threading.Lock()

    def render(self) -> str:
        """The text exposition format (what the HTTP endpoint serves)."""
        return generate_latest(self.registry).decode("utf-8")

    def serve_http(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``port`` (0: any free port); returns the bound port."""
        with self._lock:
            if self._http is None:
                self._http, _ = start_http_server(port, address, registry=self.registry)
            return int(self._http.server_port)

    @property
    def bound(self) -> tuple[str, int] | None:
        """(host, port) the HTTP server listens on; None when none was started."""
        with self._lock:
            if self._http is None:
                return None
            host, port = self._http.server_address[:2]
            return str(host), int(port)

    def close(self) -> None:
        """Stop the HTTP server, if one was started."""
        with self._lock:
            if self._http is not None:
                self._http.shutdown()
                self._http.server_close()
                self._http = None
