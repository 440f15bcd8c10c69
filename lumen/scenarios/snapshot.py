"""A steady-state cluster snapshot implied by a scenario, for posing planner problems offline.

``lumen solve`` needs the state of the cluster at the moment of a failure without running the
simulator. This module draws one: per-worker in-flight requests from Little's law (arrival rate
per worker x mean latency, latency from the cost model at the implied batch size), request
lengths resampled from the scenario's workload, progress uniform over each request's output,
checkpoints one 16-token page behind the context, and queues drawn around the mean. Placement of
the checkpoints is itself a planner call (``placement_method``). The simulator replaces all of
this with the real state; the draw is seeded, so a snapshot is reproducible.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lumen.planner.builders import PlacementOptions, placement_problem, recompute_time
from lumen.planner.domain import ClusterState, Request, WorkerLoad
from lumen.planner.result import SolveSettings
from lumen.planner.solve import solve
from lumen.scenarios.resolve import (
    LoadedScenario,
    build_trace,
    build_workers,
    checkpoint_budget_bytes,
)

PAGE_TOKENS = 16


def steady_state_snapshot(
    loaded: LoadedScenario,
    seed: int = 0,
    placement_method: str | None = "lumen",
    time_limit_s: float = 5.0,
) -> ClusterState:
    """Draw a seeded steady-state snapshot of the scenario's cluster.

    Checkpoints are placed with ``placement_method`` (None: no checkpoints at all)."""
    s = loaded.scenario
    cost = loaded.cost_model
    trace = build_trace(loaded)
    rng = np.random.default_rng([s.workload.seed, seed, 0x5A4])
    workers = build_workers(s)
    m = len(workers)
    rate_w = trace.mean_rate_qps / m
    mean_prompt = float(trace.prompt_tokens.mean())
    mean_output = float(trace.output_tokens.mean())
    prefill = recompute_time(cost, max(1, round(mean_prompt)), 0, s.cluster.prefill_chunk_tokens)
    conc = 1.0
    for _ in range(30):  # fixed point of Little's law: c = rate * (prefill + output * step(c))
        batch = max(1, round(conc))
        step = cost.decode_step_time(batch, int(batch * (mean_prompt + mean_output / 2)))
        conc = rate_w * (prefill + mean_output * step)
    capacity = cost.gpu_kv_capacity_tokens()
    kv = cost.kv_bytes_per_token
    budget = checkpoint_budget_bytes(s)
    requests: list[Request] = []
    loads: dict[int, WorkerLoad] = {}
    next_id = 0
    for w in workers:
        count = int(rng.poisson(conc))
        rows = rng.integers(0, len(trace), size=count)
        used = 0
        for row in rows.tolist():
            prompt = int(trace.prompt_tokens[row])
            output = int(trace.output_tokens[row])
            generated = int(rng.integers(0, output))
            ctx = prompt + generated
            if used + ctx > capacity:
                break
            used += ctx
            requests.append(Request(next_id, w.id, prompt, generated, output))
            next_id += 1
        queue = int(rng.poisson(max(0.0, conc * 0.1)))
        loads[w.id] = WorkerLoad(
            queue_length=queue,
            waiting_time_s=queue * prefill * float(rng.uniform(0.5, 1.5)),
            gpu_kv_used_tokens=used,
            gpu_kv_capacity_tokens=capacity,
            host_budget_bytes=budget,
        )
    state = ClusterState.build(workers, requests, loads, kv_bytes_per_token=kv)
    if placement_method is None:
        return state
    return place_checkpoints(state, loaded, placement_method, time_limit_s)


def place_checkpoints(
    state: ClusterState, loaded: LoadedScenario, method: str, time_limit_s: float = 5.0
) -> ClusterState:
    """Assign a holder to every request with ``method`` and mark valid prefixes."""
    if not state.requests:
        return state
    options = PlacementOptions(
        alpha=loaded.scenario.planner.alpha,
        require_other_node=loaded.scenario.cluster.holder_outside_node,
    )
    problem = placement_problem(state, loaded.cost_model, options=options)
    result = solve(problem, method, SolveSettings(time_limit_s=time_limit_s))
    if not result.has_plan:
        return state  # nothing fits: requests stay without checkpoints
    holder = result.require_plan().holder.tolist()
    ids = [w.id for w in state.workers]
    reqs = list(state.requests.values())
    updated = {}
    for r, j in zip(reqs, holder, strict=True):
        prefix = max(0, (r.context_tokens // PAGE_TOKENS - 1) * PAGE_TOKENS)
        updated[r.id] = replace(r, checkpoint_holder=ids[j], checkpointed_tokens=prefix)
    loads = {}
    new_state = ClusterState(state.workers, state.loads, updated, state.kv_bytes_per_token)
    for w in state.workers:
        loads[w.id] = replace(
            state.load(w.id), host_reserved_bytes=new_state.reservation_bytes(w.id)
        )
    return ClusterState(state.workers, loads, updated, state.kv_bytes_per_token)
