"""Derived numbers of a scenario: what the configuration implies before anything runs.

Used by ``lumen scenario show`` and ``lumen demo``; every number comes from the shared cost
model and the scenario's own workload, so what is shown is what the simulator will use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lumen.scenarios.resolve import (
    LoadedScenario,
    ResolvedFailure,
    build_trace,
    checkpoint_budget_bytes,
    resolve_failures,
)
from lumen.scenarios.schema import Scenario


@dataclass(frozen=True)
class LengthStats:
    mean: float
    p50: float
    p99: float
    max: int

    @classmethod
    def of(cls, values: np.ndarray[Any, Any]) -> LengthStats:
        return cls(
            mean=float(values.mean()),
            p50=float(np.percentile(values, 50)),
            p99=float(np.percentile(values, 99)),
            max=int(values.max()),
        )


@dataclass(frozen=True)
class ScenarioSummary:
    name: str
    description: str
    source: str
    workers: int
    nodes: int
    gpus: int
    model: str
    draft_model: str | None
    hardware: str
    tensor_parallel: int
    kv_bytes_per_token: int
    weight_bytes: int
    draft_weight_bytes: int | None
    gpu_kv_capacity_tokens: int
    reload_ssd_to_host_s: float
    reload_host_to_gpu_s: float
    reload_total_s: float
    draft_load_s: float | None
    checkpoint_budget_bytes: int
    checkpoint_capacity_tokens: int
    checkpoint_stream_bytes_per_s: float
    network_bytes_per_s: float
    ssd_bytes_per_s: float
    host_to_gpu_bytes_per_s: float
    requests: int
    duration_s: float
    rate_qps: float
    prompt_tokens: LengthStats
    output_tokens: LengthStats
    failures: tuple[ResolvedFailure, ...]
    policies: tuple[str, ...]
    compute_efficiency: float
    memory_efficiency: float
    calibration: str
    """How the engine efficiencies were chosen: defaults, or a calibration and its status."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(loaded: LoadedScenario) -> ScenarioSummary:
    """Derive the summary of a loaded scenario (seed offset 0)."""
    s = loaded.scenario
    c = s.cluster
    cm = loaded.cost_model
    trace = build_trace(loaded)
    reload = cm.reload_timeline()
    draft_cm = cm.draft_cost_model()
    budget = checkpoint_budget_bytes(s)
    kv = cm.kv_bytes_per_token
    # Every prompt token and every generated token is checkpointed once: cluster-wide bytes/s.
    tokens_per_s = float(trace.prompt_tokens.sum() + trace.output_tokens.sum()) / max(
        trace.duration_s, 1e-9
    )
    return ScenarioSummary(
        name=s.name,
        description=s.description,
        source=str(loaded.source),
        workers=c.workers,
        nodes=c.nodes,
        gpus=c.workers * c.tensor_parallel,
        model=c.model,
        draft_model=c.draft_model,
        hardware=c.hardware,
        tensor_parallel=c.tensor_parallel,
        kv_bytes_per_token=kv,
        weight_bytes=cm.weight_bytes,
        draft_weight_bytes=None if draft_cm is None else draft_cm.weight_bytes,
        gpu_kv_capacity_tokens=cm.gpu_kv_capacity_tokens(),
        reload_ssd_to_host_s=reload.ssd_to_host_s,
        reload_host_to_gpu_s=reload.host_to_gpu_s,
        reload_total_s=reload.total_s,
        draft_load_s=None if draft_cm is None else cm.draft_load_time(),
        checkpoint_budget_bytes=budget,
        checkpoint_capacity_tokens=budget // kv,
        checkpoint_stream_bytes_per_s=tokens_per_s * kv / c.workers,
        network_bytes_per_s=loaded.deployment.effective_network_bandwidth,
        ssd_bytes_per_s=loaded.deployment.effective_ssd_bandwidth,
        host_to_gpu_bytes_per_s=loaded.deployment.worker_host_to_gpu_bandwidth,
        requests=len(trace),
        duration_s=trace.duration_s,
        rate_qps=trace.mean_rate_qps,
        prompt_tokens=LengthStats.of(trace.prompt_tokens),
        output_tokens=LengthStats.of(trace.output_tokens),
        failures=tuple(resolve_failures(s, horizon_s=trace.duration_s)),
        policies=tuple(p.value for p in s.policies),
        compute_efficiency=cm.efficiency.compute,
        memory_efficiency=cm.efficiency.memory,
        calibration=_calibration(s),
    )


def _calibration(s: Scenario) -> str:
    cal = s.calibration
    if cal is None:
        return "roofline defaults (no calibration)"
    fit = cal.fitted
    fitted = "" if fit is None else f", fitted on {fit.scenario}"
    if cal.apply:
        status = "plausible" if cal.plausible else "implausible, applied by hand"
        return f"calibrated ({status}{fitted}): {cal.source}"
    return (
        f"roofline defaults; a calibration is recorded but not applied"
        f" ({'implausible' if not cal.plausible else 'apply: false'}{fitted}: compute"
        f" {cal.engine.compute_efficiency:.3f}, memory {cal.engine.memory_efficiency:.3f})"
    )
