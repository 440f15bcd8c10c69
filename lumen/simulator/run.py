"""One simulation of a scenario under one policy and seed: the entry point the CLI, the sweep
and the analysis reports share.

:func:`simulate_scenario` derives everything from the scenario exactly as the live system
would (:mod:`lumen.scenarios.resolve`): the workload for ``workload.seed + seed``, the cost
model, the worker layout and the concrete failure events, and hands them to
:func:`lumen.simulator.cluster.simulate`. ``with_failures=False`` gives the failure-free
reference run of the same seed.
"""

from __future__ import annotations

from lumen.scenarios.resolve import (
    LoadedScenario,
    build_trace,
    resolve_failures,
)
from lumen.simulator.cluster import SimulationResult, simulate
from lumen.workload.trace import Trace

__all__ = ["scenario_trace", "simulate_scenario"]


def scenario_trace(loaded: LoadedScenario, seed: int = 0, num_requests: int | None = None) -> Trace:
    """The workload of ``loaded`` for ``seed``, cut to its first ``num_requests`` when given."""
    trace = build_trace(loaded, seed_offset=seed)
    if num_requests is not None:
        if num_requests < 1:
            raise ValueError(f"num_requests must be >= 1, got {num_requests}")
        trace = trace.truncate(min(num_requests, len(trace)))
    return trace


def simulate_scenario(
    loaded: LoadedScenario,
    policy: str,
    seed: int = 0,
    *,
    with_failures: bool = True,
    num_requests: int | None = None,
) -> SimulationResult:
    """Simulate ``loaded`` under ``policy`` (a :class:`lumen.scenarios.schema.Policy` value).

    Args:
        seed: offset added to the scenario's seeds (workload, sampled failures, simulator).
        with_failures: False for the failure-free reference run.
        num_requests: simulate only the first requests of the workload (tests, quick looks).
    """
    s = loaded.scenario
    trace = scenario_trace(loaded, seed, num_requests)
    failures: list[tuple[float, list[int]]] = []
    if with_failures:
        horizon = float(trace.arrival_s[-1]) if len(trace) else 0.0
        failures = [
            (f.at_s, list(f.workers)) for f in resolve_failures(s, horizon, seed_offset=seed)
        ]
    return simulate(
        trace,
        loaded.cost_model,
        s.cluster.workers,
        max_batch_size=s.cluster.max_batch_size,
        prefill_chunk_tokens=s.cluster.prefill_chunk_tokens,
        seed=s.workload.seed + seed,
        failures=failures,
        policy=str(policy),
    )
