"""Recovery at the gateway: the cluster at failure time, the plan, and where each request resumes.

On a failure the gateway describes the moment as a :class:`ClusterState` (:func:`snapshot`):
every worker with its state (failed, serving, or its recovery stage) and its last reported
load, and every request running on a worker with its token history length, its checkpoint
holder and the valid checkpointed prefix that holder last reported. :class:`RecoveryPlanner`
then gets the plan:

- from the planner service, when one is configured: it reports the snapshot (the failed
  workers marked FAILED) and asks ``PlanRecovery`` with the policy's recovery method;
- when the service cannot answer: locally, ``recovery_problem`` on the same snapshot solved by
  the ``greedy`` backend (the fallback, logged and counted);
- without a planner service: locally with the policy's own method.

:func:`lumen.planner.resume.resumptions` reads the plan, by the same rule as the simulator;
requests the plan leaves out, or all of them when there is no plan, go to the least-loaded
serving worker and recompute.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lumen.executor.gateway.dispatch import WorkerBoard
from lumen.executor.gateway.history import TrackedRequest
from lumen.executor.gateway.planner_link import PlannerLink
from lumen.planner.builders import recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.decisions import RecoveryDecision, recovery_decision
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.planner.plans import RecoveryPlan
from lumen.planner.result import SolveSettings
from lumen.planner.service.client import PlannerClient
from lumen.planner.solve import solve

log = logging.getLogger(__name__)

#: The backend of the local fallback when the planner service is unreachable.
FALLBACK_METHOD = "greedy"


def snapshot(
    board: WorkerBoard,
    cost: CostModel,
    requests: Sequence[TrackedRequest],
    workers_per_node: int = 1,
) -> ClusterState:
    """The cluster as the planner sees it (module docstring); ``requests`` are those running
    on a worker (``worker`` set), interrupted ones included with their failed home."""
    hardware = cost.deployment.hardware.name
    workers: list[Worker] = []
    loads: dict[int, WorkerLoad] = {}
    for k, w in enumerate(board.ids):
        status = board.status(w)
        if not board.is_up(w) or status is None:
            state = WorkerState.FAILED
        else:
            try:
                state = WorkerState(status.stage)
            except ValueError:
                state = WorkerState.RELOADING
        workers.append(Worker(w, k // workers_per_node, hardware, state))
        if status is not None and state is not WorkerState.FAILED:
            loads[w] = WorkerLoad(
                queue_length=status.queue_length,
                waiting_time_s=max(0.0, status.waiting_time_s),
                gpu_kv_used_tokens=status.kv_used_tokens,
                gpu_kv_capacity_tokens=status.kv_capacity_tokens,
                host_budget_bytes=status.host_budget_bytes,
                host_reserved_bytes=status.host_reserved_bytes,
            )
    out: list[Request] = []
    for r in requests:
        if r.worker is None:
            continue
        holder = r.holder if r.holder is not None and r.holder != r.worker else None
        prefix = 0
        if holder is not None:
            status = board.status(holder)
            held = status.checkpoints.get(r.request_id, 0) if status is not None else 0
            prefix = max(0, min(held, r.context_tokens))
        out.append(
            Request(
                r.request_id,
                r.worker,
                len(r.prompt_token_ids),
                min(len(r.history), r.max_tokens),
                r.max_tokens,
                holder,
                prefix,
            )
        )
    return ClusterState.build(workers, out, loads, kv_bytes_per_token=cost.kv_bytes_per_token)


class RecoveryPlanner:
    """Gets the recovery plan from the planner service or locally (module docstring)."""

    def __init__(
        self,
        cost: CostModel,
        method: str,
        link: PlannerLink | None = None,
        time_limit_s: float = 1.0,
        chunk: int = 1024,
    ) -> None:
        self.cost = cost
        self.method = method
        self.link = link
        self.time_limit_s = time_limit_s
        self.chunk = chunk

    def plan(
        self, state: ClusterState, failed: Sequence[int]
    ) -> tuple[RecoveryDecision | None, str]:
        """The decision (None: no plan) and its source: "planner", "fallback" or "local"."""
        if self.link is not None:
            method, limit = self.method, self.time_limit_s

            def ask(client: PlannerClient) -> tuple[RecoveryDecision | None]:
                client.report_cluster_state(state)
                outcome = client.plan_recovery(failed=failed, method=method, time_limit_s=limit)
                return (outcome.plan,)

            got = self.link.call("recovery", ask)
            if got is not None:
                return got[0], "planner"
            log.warning(
                "recovery of worker(s) %s planned locally (%s): the planner service did not answer",
                list(failed),
                FALLBACK_METHOD,
            )
            return self.local(state, failed, FALLBACK_METHOD), "fallback"
        return self.local(state, failed, self.method), "local"

    def local(
        self, state: ClusterState, failed: Sequence[int], method: str
    ) -> RecoveryDecision | None:
        problem = recovery_problem(state, self.cost, failed, chunk=self.chunk)
        result = solve(problem, method, SolveSettings(time_limit_s=self.time_limit_s))
        if not isinstance(result.plan, RecoveryPlan):
            log.warning("no recovery plan (%s): %s", result.termination.value, result.message)
            return None
        return recovery_decision(problem, result.plan)
