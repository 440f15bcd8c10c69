"""The gateway's connection to the planner service, with a local fallback when it is down.

Every planner call goes through :meth:`PlannerLink.call`. When a call fails (the service is
unreachable, the deadline passed, or it refused the call), the link logs a warning, counts the
fallback in ``lumen_gateway_planner_fallbacks_total{call}`` and returns None so that the caller
answers locally. After a connectivity failure (UNAVAILABLE, DEADLINE_EXCEEDED) the planner is
considered down for ``retry_after_s``: calls in that window fall back at once instead of each
waiting for its deadline; the first call after it tries the service again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from lumen.executor.gateway.metrics import GatewayMetrics
from lumen.planner.service.client import PlannerClient, PlannerError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Status codes that mean the service cannot be reached (as opposed to a refused call).
UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class PlannerLink:
    """A :class:`PlannerClient` with fallback accounting (module docstring)."""

    def __init__(
        self, client: PlannerClient, metrics: GatewayMetrics, retry_after_s: float = 5.0
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        with self._lock:
            return time.monotonic() >= self._down_until

    def call(self, name: str, fn: Callable[[PlannerClient], T]) -> T | None:
        """``fn(client)``, or None (counted and logged) when the planner cannot answer."""
        if not self.available:
            self.metrics.fallbacks.labels(name).inc()
            return None
        try:
            out = fn(self.client)
        except PlannerError as exc:
            self.metrics.fallbacks.labels(name).inc()
            if exc.code in UNREACHABLE:
                with self._lock:
                    self._down_until = time.monotonic() + self.retry_after_s
                self.metrics.planner_up.set(0)
                log.warning(
                    "planner service unreachable (%s); %s falls back to the local greedy policy"
                    " for the next %.1f s",
                    exc,
                    name,
                    self.retry_after_s,
                )
            else:
                log.warning("planner refused %s (%s); answered locally", name, exc)
            return None
        self.metrics.planner_up.set(1)
        return out
