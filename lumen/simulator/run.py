"""One simulation of a scenario under one policy and seed: the entry point the CLI, the sweep
and the analysis reports share.

:func:`simulate_scenario` derives everything from the scenario exactly as the live system
would (:mod:`lumen.scenarios.resolve`): the workload for ``workload.seed + seed``, the cost
model, the worker layout and the concrete failure events, and hands them to
:func:`lumen.simulator.cluster.simulate`. ``with_failures=False`` gives the failure-free
reference run of the same seed.

Seeds and replayed traces: :func:`lumen.scenarios.resolve.build_trace` replays a trace the
same way for every seed. So that seeds give independent samples for replayed traces too,
:func:`scenario_trace` keeps the trace itself for seed 0 and, for seed > 0, redraws its arrival
times as a Poisson process at the trace's (rescaled) mean rate, as the paper's experiments
arrive, keeping every request's prompt and output lengths (and prefix blocks) in order.
Synthetic workloads are redrawn per seed by ``build_trace`` already.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from lumen.scenarios.resolve import (
    LoadedScenario,
    ResolvedFailure,
    build_trace,
    checkpoint_budget_bytes,
    resolve_failures,
)
from lumen.scenarios.schema import Scenario
from lumen.simulator.cluster import ClusterOptions, SimulationResult, simulate
from lumen.workload.synthetic import poisson_arrivals
from lumen.workload.trace import Trace

__all__ = [
    "cluster_options",
    "poisson_rearrival",
    "scenario_failures",
    "scenario_trace",
    "simulate_scenario",
]


#: Mixed into the arrival generator's seed so redrawn arrivals never share a stream with the
#: failure sampler or the synthetic workload generator of the same seed.
_ARRIVAL_STREAM = 0xA221


def scenario_trace(loaded: LoadedScenario, seed: int = 0, num_requests: int | None = None) -> Trace:
    """The workload of ``loaded`` for ``seed``, cut to its first ``num_requests`` when given.

    A replayed trace keeps its own arrival times for seed 0; any other seed redraws them as a
    Poisson process at the trace's mean rate from ``workload.seed + seed`` (see the module
    docstring). The cut comes after, so a shorter run is a prefix of the full one.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    trace = _full_trace(loaded, seed)
    if num_requests is not None:
        if num_requests < 1:
            raise ValueError(f"num_requests must be >= 1, got {num_requests}")
        trace = trace.truncate(min(num_requests, len(trace)))
    return trace


# Parsing a trace file takes longer than simulating a short run, and an experiment asks for
# the same workload once per policy and run; traces are immutable, so they are shared. The key
# is the scenario's whole content (not its identity), so an edited scenario gets a new trace.
_TRACE_CACHE: OrderedDict[tuple[str, str, int], Trace] = OrderedDict()
_TRACE_CACHE_SIZE = 8


def _full_trace(loaded: LoadedScenario, seed: int) -> Trace:
    key = (str(loaded.source), loaded.scenario.model_dump_json(), seed)
    trace = _TRACE_CACHE.get(key)
    if trace is None:
        trace = build_trace(loaded, seed_offset=seed)
        if loaded.scenario.workload.trace is not None and seed > 0:
            trace = poisson_rearrival(trace, loaded.scenario.workload.seed + seed)
        _TRACE_CACHE[key] = trace
        while len(_TRACE_CACHE) > _TRACE_CACHE_SIZE:
            _TRACE_CACHE.popitem(last=False)
    else:
        _TRACE_CACHE.move_to_end(key)
    return trace


def poisson_rearrival(trace: Trace, seed: int) -> Trace:
    """``trace`` with Poisson arrivals at its mean rate, drawn from ``seed``; lengths unchanged.

    A trace whose mean rate is undefined (one request, or all at t = 0) is returned as is.
    """
    rate = trace.mean_rate_qps
    if not (math.isfinite(rate) and rate > 0):
        return trace
    rng = np.random.default_rng([seed, _ARRIVAL_STREAM])
    return Trace(
        arrival_s=poisson_arrivals(len(trace), rate, rng),
        prompt_tokens=trace.prompt_tokens,
        output_tokens=trace.output_tokens,
        hash_ids=trace.hash_ids,
        source=f"{trace.source} | poisson arrivals({rate:g} qps, seed={seed})",
    )


def scenario_failures(loaded: LoadedScenario, trace: Trace, seed: int = 0) -> list[ResolvedFailure]:
    """The failure events of ``loaded`` for ``seed`` over ``trace`` (sampled failures are drawn
    up to its last arrival unless the scenario gives a horizon)."""
    return resolve_failures(loaded.scenario, trace.duration_s, seed_offset=seed)


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
        failures = [(f.at_s, list(f.workers)) for f in scenario_failures(loaded, trace, seed)]
    return simulate(
        trace,
        loaded.cost_model,
        s.cluster.workers,
        max_batch_size=s.cluster.max_batch_size,
        prefill_chunk_tokens=s.cluster.prefill_chunk_tokens,
        seed=s.workload.seed + seed,
        failures=failures,
        policy=str(policy),
        options=cluster_options(s),
    )


def cluster_options(s: Scenario) -> ClusterOptions:
    """The simulator's cluster and policy parameters of scenario ``s``."""
    c = s.cluster
    return ClusterOptions(
        workers_per_node=c.workers_per_node,
        checkpoint_budget_bytes=float(checkpoint_budget_bytes(s)),
        holder_outside_node=c.holder_outside_node,
        alpha=s.planner.alpha,
        speculation_depth=s.speculation.depth,
        acceptance_rate=s.speculation.acceptance_rate,
        planner_time_limit_s=s.planner.time_limit_s,
        assist=s.readings.assist,
        draft_load=s.readings.draft_load,
        assisted_batches=s.readings.assisted_batches,
        gateway=s.readings.gateway,
    )
