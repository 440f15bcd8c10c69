"""Prometheus metrics of the planner service: RPCs, streams, solves, the view, over HTTP.

Each server owns its :class:`ServiceMetrics` with a private registry (tests and benchmarks run
several servers in one process; the global default registry would refuse the second).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lumen.planner.result import SolveResult
from lumen.telemetry import MetricsEndpoint

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_STREAM_BUCKETS = (0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
_GAP_BUCKETS = (0.0, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServiceMetrics(MetricsEndpoint):
    """Counters and histograms of one planner server."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.rpcs = Counter(
            "lumen_planner_rpcs",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.rpc_latency = Histogram(
            "lumen_planner_rpc_latency_seconds",
            "Unary RPC handling time",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_lifetime = Histogram(
            "lumen_planner_stream_seconds",
            "How long server streams stayed open",
            ["method"],
            buckets=_STREAM_BUCKETS,
            registry=r,
        )
        self.abandoned = Counter(
            "lumen_planner_problems_abandoned",
            "Problems not solved: refused as too large, or building cancelled",
            ["problem", "reason"],
            registry=r,
        )
        self.solves = Counter(
            "lumen_planner_solves",
            "Solves, by problem, backend and termination",
            ["problem", "method", "termination"],
            registry=r,
        )
        self.solve_time = Histogram(
            "lumen_planner_solve_seconds",
            "Solver wall time",
            ["problem", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.gap = Histogram(
            "lumen_planner_solve_gap",
            "Relative optimality gap of solves that report a bound",
            ["problem"],
            buckets=_GAP_BUCKETS,
            registry=r,
        )
        self.state_version = Gauge(
            "lumen_planner_state_version", "Version of the planner's cluster view", registry=r
        )
        self.subscribers = Gauge("lumen_planner_subscribers", "Open WatchPlans streams", registry=r)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpcs.labels(method, code).inc()
        self.rpc_latency.labels(method).observe(seconds)

    def observe_stream(self, method: str, code: str, seconds: float) -> None:
        """A server stream that ended with ``code`` after ``seconds`` open."""
        self.rpcs.labels(method, code).inc()
        self.stream_lifetime.labels(method).observe(seconds)

    def observe_abandoned(self, problem: str, reason: str) -> None:
        self.abandoned.labels(problem, reason).inc()

    def observe_solve(self, problem: str, result: SolveResult[Any]) -> None:
        self.solves.labels(problem, result.method, result.termination.value).inc()
        self.solve_time.labels(problem, result.method).observe(result.wall_time_s)
        gap = result.gap
        if gap is not None:
            self.gap.labels(problem).observe(gap)
