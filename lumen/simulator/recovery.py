"""Failure-time recovery in the simulator, through the planner functions the live system calls.

At a failure the simulator describes the moment as a :class:`ClusterState` (the same snapshot
the controller builds from worker reports), poses :func:`recovery_problem` on it, solves it
with the policy's planner method and reads the destination of each interrupted request off the
:class:`RecoveryPlan`: a survivor takes it now, a recovering machine (wait mode) when its reload
is over. Only Stop-and-Restart is supported so far: no checkpoints, every interrupted request
recomputes its whole context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lumen.planner.builders import recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState, Request, WorkerLoad, WorkerState
from lumen.planner.domain import Worker as DomainWorker
from lumen.planner.plans import RecoveryPlan
from lumen.planner.solve import solve
from lumen.simulator.worker import RequestTable, Worker

__all__ = ["POLICIES", "Interrupted", "RecoveryRoute", "check_policy", "plan_recovery"]

#: Failure-handling policies the simulator implements, with the planner method each one solves
#: the recovery problem with.
POLICIES: dict[str, str] = {"stop-and-restart": "stop-and-restart"}


def check_policy(policy: str) -> str:
    """The planner method of ``policy``; ValueError naming the supported ones otherwise."""
    try:
        return POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unsupported failure policy {policy!r}; supported: {', '.join(sorted(POLICIES))}"
        ) from None


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A request stopped by its worker's failure: ``generated`` output tokens were emitted."""

    rid: int
    home: int
    generated: int


@dataclass(frozen=True, slots=True)
class RecoveryRoute:
    """Where one interrupted request goes: ``worker`` now (``wait`` False) or once its reload
    is over (``wait`` True). Routes come in dispatch order."""

    rid: int
    worker: int
    wait: bool


def snapshot(
    pool: Sequence[Worker],
    table: RequestTable,
    cost_model: CostModel,
    failed: Sequence[int],
    interrupted: Sequence[Interrupted],
    now: float,
) -> ClusterState:
    """The cluster at failure time as the planner sees it.

    Workers failing now are FAILED, earlier failures still reloading are RELOADING, the rest
    SERVING. Requests: the interrupted ones (home = their failed worker, no checkpoint) and the
    admitted requests of the serving workers; a serving worker's load is its waiting queue,
    its waiting-time estimate and its reserved KV.
    """
    failed_set = set(failed)
    hardware = cost_model.deployment.hardware.name

    def state_of(w: Worker) -> WorkerState:
        if w.index in failed_set:
            return WorkerState.FAILED
        return WorkerState.RELOADING if w.down else WorkerState.SERVING

    workers = [DomainWorker(w.index, w.index, hardware, state_of(w)) for w in pool]
    output = table.output_tokens
    prompt = table.prompt_tokens
    requests = [
        Request(r.rid, r.home, prompt[r.rid], r.generated, output[r.rid]) for r in interrupted
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
    pool: Sequence[Worker],
    table: RequestTable,
    cost_model: CostModel,
    failed: Sequence[int],
    interrupted: Sequence[Interrupted],
    now: float,
    policy: str,
    reload_s: float,
    chunk: int,
) -> list[RecoveryRoute]:
    """Routes for the ``interrupted`` requests of workers ``failed`` at ``now``.

    Each machine's requests follow in the plan's order, machines in the problem's order. When
    the planner finds no plan (no survivor at all, or none with KV room), every request waits
    for its own worker to come back.
    """
    if not interrupted:
        return []
    method = check_policy(policy)
    state = snapshot(pool, table, cost_model, failed, interrupted, now)
    problem = recovery_problem(state, cost_model, failed, reload_s=reload_s, chunk=chunk)
    result = solve(problem, method)
    plan = result.plan
    if not isinstance(plan, RecoveryPlan):
        return [RecoveryRoute(r.rid, r.home, True) for r in interrupted]
    routes: list[RecoveryRoute] = []
    machine_ids = problem.machine_ids.tolist()
    request_ids = problem.request_ids.tolist()
    recovering = problem.is_recovering.tolist()
    for j, order in enumerate(plan.order):
        for i in order:
            routes.append(RecoveryRoute(int(request_ids[i]), int(machine_ids[j]), recovering[j]))
    return routes
