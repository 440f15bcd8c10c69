"""Prometheus metrics of the gateway: latency, queue, failures, recoveries, worker states.

Each gateway owns a private registry (tests run several gateways in one process). The HTTP
server serves it at ``/metrics``; ``--metrics-port`` serves it on a port of its own as well.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lumen.executor.worker.api import STAGES
from lumen.telemetry import MetricsEndpoint

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: Values of ``lumen_gateway_worker_state`` ("up": serving; the others: recovery stages).
WORKER_STATES = ("up", "failed", *(s for s in STAGES if s != "serving"))


class GatewayMetrics(MetricsEndpoint):
    """Counters, gauges and histograms of one gateway."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.ttft = Histogram(
            "lumen_gateway_ttft_seconds",
            "Time to first token (arrival at the gateway to the first token sent)",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "lumen_gateway_tpot_seconds",
            "Time per output token after the first, per finished request",
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "lumen_gateway_e2e_request_latency_seconds",
            "Arrival at the gateway to the last token, per request that was not an error",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "lumen_gateway_prompt_tokens",
            "Prompt tokens of requests that ended (not in error)",
            registry=r,
        )
        self.generation_tokens = Counter(
            "lumen_gateway_generation_tokens", "Output tokens sent to clients", registry=r
        )
        self.http = Counter(
            "lumen_gateway_http_responses",
            "HTTP responses by route and status code",
            ["route", "code"],
            registry=r,
        )
        self.requests = Counter(
            "lumen_gateway_requests", "Requests ended, by outcome", ["outcome"], registry=r
        )
        self.queue = Gauge(
            "lumen_gateway_queue_requests",
            "Requests waiting for a worker (new, or resumed and waiting for their destination)",
            registry=r,
        )
        self.running = Gauge(
            "lumen_gateway_running_requests", "Requests running on a worker", registry=r
        )
        self.worker_queue = Gauge(
            "lumen_gateway_worker_queue_length",
            "Queue length a worker last reported",
            ["worker"],
            registry=r,
        )
        self.failures = Counter(
            "lumen_gateway_worker_failures",
            "Worker failures detected, by reason (timeout, hang, stream)",
            ["reason"],
            registry=r,
        )
        self.suspicions = Counter(
            "lumen_gateway_missed_heartbeats",
            "Heartbeats a worker missed without being declared failed (suspicion)",
            registry=r,
        )
        self.recoveries = Counter(
            "lumen_gateway_recoveries",
            "Recovery plans applied, by where the plan came from (planner, local, fallback)",
            ["source"],
            registry=r,
        )
        self.recovery_seconds = Histogram(
            "lumen_gateway_recovery_seconds",
            "Failure detection to the last interrupted request re-dispatched",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.restores = Counter(
            "lumen_gateway_resumed_requests",
            "Interrupted requests resumed, by mode (restore, transfer, recompute, wait)",
            ["mode"],
            registry=r,
        )
        self.recomputed_tokens = Counter(
            "lumen_gateway_recomputed_tokens",
            "Context tokens resumed requests must prefill again (not covered by a checkpoint)",
            registry=r,
        )
        self.restored_tokens = Counter(
            "lumen_gateway_restored_tokens",
            "Context tokens resumed requests restore from a checkpoint",
            registry=r,
        )
        self.fallbacks = Counter(
            "lumen_gateway_planner_fallbacks",
            "Planner calls that failed and were answered locally, by call",
            ["call"],
            registry=r,
        )
        self.planner_up = Gauge(
            "lumen_gateway_planner_up",
            "1 when the last planner call succeeded (0 also when no planner is configured)",
            registry=r,
        )
        self.recovering = Gauge(
            "lumen_gateway_recovery_in_progress",
            "1 while the gateway is planning or re-dispatching a recovery",
            registry=r,
        )
        self.pairings = Counter(
            "lumen_gateway_pairings",
            "Recovering workers paired with a survivor to draft for, by where the choice came"
            " from (planner, local, rule)",
            ["source"],
            registry=r,
        )
        self.worker_state = Gauge(
            "lumen_gateway_worker_state",
            "1 for a worker's current state: up, failed, or its recovery stage",
            ["worker", "state"],
            registry=r,
        )

    def set_worker_state(self, worker: int, state: str) -> None:
        for s in WORKER_STATES:
            self.worker_state.labels(str(worker), s).set(1.0 if s == state else 0.0)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent), for tests and logs."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else float(got)
