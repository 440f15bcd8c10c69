"""Prometheus metrics of one worker: latency, queue, checkpoints, restores, recovery stage.

Each worker owns a :class:`WorkerMetrics` with a private registry (tests run several workers in
one process; the global default registry would refuse the second).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lumen.executor.worker.api import STAGES
from lumen.telemetry import MetricsEndpoint

__all__ = ["WorkerMetrics"]

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class WorkerMetrics(MetricsEndpoint):
    """Counters, gauges and histograms of one worker (``worker`` label on none: one process
    serves one worker; Prometheus adds the instance)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.ttft = Histogram(
            "lumen_worker_ttft_seconds",
            "Time from submission to the first new token",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "lumen_worker_tpot_seconds",
            "Time per output token after the first",
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.queue = Gauge("lumen_worker_queue_length", "Requests waiting for a token", registry=r)
        self.running = Gauge("lumen_worker_running", "Requests generating", registry=r)
        self.steps = Counter("lumen_worker_steps", "Engine steps since start", registry=r)
        self._steps_seen = 0
        self.ckpt_held = Gauge(
            "lumen_worker_checkpoint_held_bytes",
            "Checkpoint page bytes held for other workers",
            registry=r,
        )
        self.ckpt_reserved = Gauge(
            "lumen_worker_checkpoint_reserved_bytes",
            "Checkpoint bytes reserved for other workers",
            registry=r,
        )
        self.ckpt_sent = Counter(
            "lumen_worker_checkpoint_sent_bytes",
            "Checkpoint page bytes sent to holders",
            registry=r,
        )
        self.ckpt_pages_sent = Counter(
            "lumen_worker_checkpoint_sent_pages", "Checkpoint pages sent to holders", registry=r
        )
        self.ckpt_pages_received = Counter(
            "lumen_worker_checkpoint_received_pages",
            "Checkpoint pages received, by outcome",
            ["outcome"],
            registry=r,
        )
        self.restores = Counter(
            "lumen_worker_restores", "Requests resumed from a holder's checkpoint", registry=r
        )
        self.restored_tokens = Counter(
            "lumen_worker_restored_tokens", "Positions restored from checkpoints", registry=r
        )
        self.recomputed_tokens = Counter(
            "lumen_worker_recomputed_tokens",
            "Positions of resumed requests prefilled again (not restored)",
            registry=r,
        )
        self.draft_accepted = Gauge(
            "lumen_worker_draft_accepted_tokens",
            "Draft tokens accepted by this worker's verification (as a survivor)",
            registry=r,
        )
        # KV moved by the vLLM engine's connector (0 on the built-in engine).
        self.connector_loaded_bytes = Gauge(
            "lumen_worker_connector_loaded_bytes",
            "Checkpoint bytes the KV connector wrote into the GPU cache (restores)",
            registry=r,
        )
        self.connector_load_seconds = Gauge(
            "lumen_worker_connector_load_seconds",
            "Seconds the KV connector spent writing restores into the GPU cache",
            registry=r,
        )
        self.connector_restored_tokens = Gauge(
            "lumen_worker_connector_restored_tokens",
            "Positions the KV connector loaded instead of prefilling",
            registry=r,
        )
        self.connector_saved_bytes = Gauge(
            "lumen_worker_connector_saved_bytes",
            "Bytes of KV blocks the KV connector copied to host memory as pages",
            registry=r,
        )
        self.stage = Gauge(
            "lumen_worker_recovery_stage",
            "1 for the recovery stage the worker is in, 0 for the others",
            ["stage"],
            registry=r,
        )
        self.set_stage("serving")

    def set_stage(self, stage: str) -> None:
        for name in STAGES:
            self.stage.labels(name).set(1.0 if name == stage else 0.0)

    def set_steps(self, total: int) -> None:
        """Advance the step counter to ``total`` (the engine loop's count; never goes back)."""
        if total > self._steps_seen:
            self.steps.inc(total - self._steps_seen)
            self._steps_seen = total

    def observe_tokens(self, ttft_s: float | None, tpot_s: float | None) -> None:
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if tpot_s is not None:
            self.tpot.observe(tpot_s)

    def observe_sent(self, pages: int, nbytes: int) -> None:
        self.ckpt_pages_sent.inc(pages)
        self.ckpt_sent.inc(nbytes)
