"""Failure-time recovery in the simulator, through the planner functions the live system calls.

At a failure the simulator describes the moment as a :class:`ClusterState` (:func:`snapshot`:
the same snapshot the controller builds from worker reports: worker states and nodes, loads,
and each interrupted request's checkpoint holder and valid prefix), poses
:func:`recovery_problem` on it, solves it with the policy's planner method and reads the plan
with :func:`lumen.planner.resume.resumptions`, the rule the live gateway uses too: restore on
the holder, transfer then restore, recompute, or wait for a recovering worker. Only the tail
past the restored prefix is re-prefilled. Policies are named compositions of planner methods
(:data:`lumen.planner.policies.POLICIES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lumen.planner.builders import recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.decisions import recovery_decision
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.planner.plans import RecoveryPlan
from lumen.planner.result import SolveSettings
from lumen.planner.resume import Resumption, resumptions
from lumen.planner.solve import solve
from lumen.simulator.worker import RequestTable, SimWorker

__all__ = ["Interrupted", "plan_recovery", "snapshot"]


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A request stopped by its worker's failure: ``generated`` output tokens were emitted;
    ``holder`` (-1: none) holds its first ``prefix`` context tokens."""

    rid: int
    home: int
    generated: int
    holder: int = -1
    prefix: int = 0


def snapshot(
    pool: Sequence[SimWorker],
    table: RequestTable,
    cost_model: CostModel,
    failed: Sequence[int],
    interrupted: Sequence[Interrupted],
    now: float,
    workers_per_node: int = 1,
) -> ClusterState:
    """The cluster at failure time as the planner sees it.

    Workers failing now are FAILED, earlier failures still reloading are RELOADING, the rest
    SERVING; worker ``i`` is on node ``i // workers_per_node``. Requests: the interrupted ones
    (home = their failed worker, with their holder and valid prefix) and the admitted requests
    of the serving workers; a serving worker's load is its waiting queue, its waiting-time
    estimate and its reserved KV.
    """
    failed_set = set(failed)
    hardware = cost_model.deployment.hardware.name

    def state_of(w: SimWorker) -> WorkerState:
        if w.index in failed_set:
            return WorkerState.FAILED
        return WorkerState.RELOADING if w.down else WorkerState.SERVING

    workers = [Worker(w.index, w.index // workers_per_node, hardware, state_of(w)) for w in pool]
    output = table.output_tokens
    prompt = table.prompt_tokens
    requests = [
        Request(
            r.rid,
            r.home,
            prompt[r.rid],
            r.generated,
            output[r.rid],
            r.holder if r.holder >= 0 and r.prefix > 0 else None,
            r.prefix if r.holder >= 0 else 0,
        )
        for r in interrupted
    ]
    loads: dict[int, WorkerLoad] = {}
    for w in pool:
        if w.down:
            continue
        for rid, generated, _ in w.admitted(now):
            requests.append(Request(rid, w.index, prompt[rid], generated, output[rid]))
        loads[w.index] = WorkerLoad(
            queue_length=w.queue_length,
            waiting_time_s=w.estimated_wait_s(now),
            gpu_kv_used_tokens=w.kv_reserved_tokens,
            gpu_kv_capacity_tokens=w.kv_capacity_tokens,
        )
    return ClusterState.build(
        workers, requests, loads, kv_bytes_per_token=cost_model.kv_bytes_per_token
    )


def plan_recovery(
    pool: Sequence[SimWorker],
    table: RequestTable,
    cost_model: CostModel,
    failed: Sequence[int],
    interrupted: Sequence[Interrupted],
    now: float,
    method: str,
    reload_s: float,
    chunk: int,
    workers_per_node: int = 1,
    settings: SolveSettings | None = None,
) -> list[Resumption]:
    """Where the ``interrupted`` requests of workers ``failed`` at ``now`` resume.

    The recovery problem posed on :func:`snapshot` is solved by the planner ``method`` (the
    policy's) and read by :func:`lumen.planner.resume.resumptions`, the rule the live gateway
    uses too. When the planner finds no plan (no survivor at all, or none with KV room), the
    resumptions name no worker: the caller lets each request wait for its own worker to come
    back and recompute there.
    """
    if not interrupted:
        return []
    state = snapshot(pool, table, cost_model, failed, interrupted, now, workers_per_node)
    problem = recovery_problem(state, cost_model, failed, reload_s=reload_s, chunk=chunk)
    result = solve(problem, method, settings)
    plan = result.plan
    decision = recovery_decision(problem, plan) if isinstance(plan, RecoveryPlan) else None
    alive = [w.index for w in pool if not w.down]
    return resumptions(decision, state, cost_model, [r.rid for r in interrupted], alive, chunk)
