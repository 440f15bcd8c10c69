"""Failure-time recovery in the simulator, through the planner functions the live system calls.

At a failure the simulator describes the moment as a :class:`ClusterState` (the same snapshot
the controller builds from worker reports: worker states and nodes, loads, and each
interrupted request's checkpoint holder and valid prefix), poses :func:`recovery_problem` on
it, solves it with the policy's planner method and reads each interrupted request's machine and
mode off the :class:`RecoveryPlan`:

- ``restore``: on its holder, after copying the valid prefix host -> GPU;
- ``transfer``: the prefix is sent to the chosen survivor over the network, then restored;
- ``recompute``: the whole context is prefilled again;
- ``wait``: for the chosen recovering worker, once it serves again (then transferring the
  checkpoint when that is faster than recomputing and the holder is still alive).

Only the tail past the restored prefix is re-prefilled. Policies are named compositions of
planner methods (:data:`POLICIES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lumen.planner.builders import recompute_time, recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState, Request, WorkerLoad, WorkerState
from lumen.planner.domain import Worker as DomainWorker
from lumen.planner.plans import RecoveryPlan
from lumen.planner.problems import RECOVERY_MODES
from lumen.planner.result import SolveSettings
from lumen.planner.solve import solve
from lumen.simulator.worker import RequestTable, Worker

__all__ = [
    "POLICIES",
    "Interrupted",
    "PolicySpec",
    "RecoveryRoute",
    "check_policy",
    "plan_recovery",
    "snapshot",
]

RESTORE, TRANSFER, RECOMPUTE, WAIT = range(len(RECOVERY_MODES))


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A failure-handling policy as planner functions.

    Attributes:
        placement: online checkpoint placement rule (None: no checkpoints).
        recovery: planner method for the recovery problem.
        pairing: planner method for draft pairing (None: no progressive recovery).
        draft_if_worth: load the draft only when the pairing problem posed at the failure
            predicts more decode time saved than the draft load delays the target reload
            (otherwise reload the target straight away); the paper's rule always loads it.
    """

    placement: str | None
    recovery: str
    pairing: str | None
    draft_if_worth: bool = False

    @property
    def checkpoints(self) -> bool:
        return self.placement is not None

    @property
    def progressive(self) -> bool:
        return self.pairing is not None


#: The policies of DESIGN.md (same names as :class:`lumen.scenarios.schema.Policy`).
POLICIES: dict[str, PolicySpec] = {
    "stop-and-restart": PolicySpec(None, "stop-and-restart", None),
    "fixed-checkpointing": PolicySpec("fixed-ring", "restore-on-holder", None),
    "lumen": PolicySpec("lumen", "lumen", "lumen"),
    "lumen-optimal": PolicySpec("greedy", "auto", "auto", draft_if_worth=True),
    "lumen-checkpoint-dispatch": PolicySpec("lumen", "lumen", None),
    "lumen-progressive": PolicySpec(None, "stop-and-restart", "lumen"),
}


def check_policy(policy: str) -> PolicySpec:
    """The planner functions of ``policy``; ValueError naming the supported ones otherwise."""
    try:
        return POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unsupported failure policy {policy!r}; supported: {', '.join(sorted(POLICIES))}"
        ) from None


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A request stopped by its worker's failure: ``generated`` output tokens were emitted;
    ``holder`` (-1: none) holds its first ``prefix`` context tokens."""

    rid: int
    home: int
    generated: int
    holder: int = -1
    prefix: int = 0


@dataclass(frozen=True, slots=True)
class RecoveryRoute:
    """Where one interrupted request goes: ``worker`` now (``wait`` False) or once its reload
    is over (``wait`` True), restoring ``restored`` context tokens after ``delay`` seconds of
    checkpoint transfer and host -> GPU copy. Routes come in dispatch order."""

    rid: int
    worker: int
    wait: bool
    mode: str = "recompute"
    restored: int = 0
    delay: float = 0.0


def snapshot(
    pool: Sequence[Worker],
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

    def state_of(w: Worker) -> WorkerState:
        if w.index in failed_set:
            return WorkerState.FAILED
        return WorkerState.RELOADING if w.down else WorkerState.SERVING

    workers = [
        DomainWorker(w.index, w.index // workers_per_node, hardware, state_of(w)) for w in pool
    ]
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
    pool: Sequence[Worker],
    table: RequestTable,
    cost_model: CostModel,
    failed: Sequence[int],
    interrupted: Sequence[Interrupted],
    now: float,
    policy: str,
    reload_s: float,
    chunk: int,
    workers_per_node: int = 1,
    settings: SolveSettings | None = None,
) -> list[RecoveryRoute]:
    """Routes for the ``interrupted`` requests of workers ``failed`` at ``now``.

    Each machine's requests follow in the plan's order, machines in the problem's order. When
    the planner finds no plan (no survivor at all, or none with KV room), every request waits
    for its own worker to come back and recomputes there.
    """
    if not interrupted:
        return []
    spec = check_policy(policy)
    state = snapshot(pool, table, cost_model, failed, interrupted, now, workers_per_node)
    problem = recovery_problem(state, cost_model, failed, reload_s=reload_s, chunk=chunk)
    result = solve(problem, spec.recovery, settings)
    plan = result.plan
    if not isinstance(plan, RecoveryPlan):
        return [RecoveryRoute(r.rid, r.home, True) for r in interrupted]
    by_id = {r.rid: r for r in interrupted}
    alive = {w.index for w in pool if not w.down}
    routes: list[RecoveryRoute] = []
    machine_ids = problem.machine_ids.tolist()
    request_ids = problem.request_ids.tolist()
    recovering = problem.is_recovering.tolist()
    modes = plan.mode.tolist()
    for j, order in enumerate(plan.order):
        for i in order:
            r = by_id[int(request_ids[i])]
            mode = modes[i]
            restored, delay = 0, 0.0
            if mode == RESTORE:
                restored, delay = r.prefix, cost_model.kv_restore_time(r.prefix)
            elif mode == TRANSFER or (mode == WAIT and r.holder in alive and r.prefix > 0):
                delay = cost_model.kv_transfer_time(r.prefix) + cost_model.kv_restore_time(r.prefix)
                context = table.prompt_tokens[r.rid] + r.generated
                redo = recompute_time(cost_model, context, 0, chunk)
                tail = recompute_time(cost_model, context - r.prefix, r.prefix, chunk)
                if mode == TRANSFER or delay + tail < redo:
                    restored = r.prefix
                    mode = TRANSFER if mode == TRANSFER else WAIT
                else:
                    delay = 0.0
            routes.append(
                RecoveryRoute(
                    r.rid,
                    int(machine_ids[j]),
                    recovering[j],
                    RECOVERY_MODES[mode],
                    restored,
                    delay,
                )
            )
    return routes
