"""One recovery plan, one cluster state: the simulator and the live gateway resume every
interrupted request the same way (destination, waiting or not, restoring or recomputing).

Both read plans through :func:`lumen.planner.resume.resumptions`; this test drives each side's
own execution path (the simulator's ``ClusterRun`` routing, the gateway's failover) on the same
plan, so it fails when either side reads a plan by a rule of its own.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from sim_traces import make_trace

from lumen.executor.gateway import GatewayConfig
from lumen.executor.gateway.dispatch import WorkerBoard
from lumen.executor.gateway.history import TrackedRequest
from lumen.executor.gateway.recovery import RecoveryPlanner, snapshot
from lumen.executor.worker.api import WorkerStatus
from lumen.planner.builders import recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.decisions import RecoveryDecision, recovery_decision
from lumen.planner.domain import ClusterState
from lumen.planner.plans import RecoveryPlan
from lumen.planner.problems import RECOVERY_MODES
from lumen.planner.result import SolveResult, Termination
from lumen.simulator import recovery as sim_recovery
from lumen.simulator.recovery import Interrupted
from lumen.simulator.run_state import ClusterRun

from .conftest import FAST
from .test_failover import FakeHost, failover_on

FAILED, HOLDER = 0, 1
RELOAD_S = 60.0
CHUNK = 1024
#: (prompt tokens, generated tokens, valid prefix on worker 1, planned machine id), one row per
#: request of the failed worker 0; request 6 runs on worker 2 and is not interrupted.
ROWS = [
    (1500, 10, 1504, 1),  # restore on its holder
    (29_990, 10, 29_984, 2),  # transfer: a 30k-token prefix is cheaper to send than recompute
    (1000, 10, 1000, 2),  # recompute on 2: faster there than fetching the prefix
    (1000, 10, 1000, 0),  # wait; fetching 1k tokens is slower than recomputing them
    (29_990, 10, 29_984, 0),  # wait; fetching the 30k-token prefix pays
    (700, 5, 0, 2),  # no checkpoint: recompute
]


@dataclass(frozen=True)
class Executed:
    """What an executor did with one interrupted request."""

    worker: int
    waits: bool
    restores: bool


def gateway_state(cost: CostModel) -> tuple[WorkerBoard, list[TrackedRequest], ClusterState]:
    board = WorkerBoard([0, 1, 2])
    held = {rid: prefix for rid, (_, _, prefix, _) in enumerate(ROWS) if prefix}
    for w in (0, 1, 2):
        checkpoints = held if w == HOLDER else {}
        board.update(WorkerStatus(w, "serving", 0, 0, 0.0, 0, 200_000, 10**12, 0, 5, checkpoints))
        board.set_up(w, True)
    requests: list[TrackedRequest] = []
    for rid, (prompt, generated, prefix, _) in enumerate([*ROWS, (500, 3, 0, 2)]):
        home = FAILED if rid < len(ROWS) else 2
        holder = HOLDER if prefix else None
        r = TrackedRequest(rid, (1,) * prompt, 64, queue.Queue(), worker=home, holder=holder)
        r.history.extend((7,) * generated, generated)
        board.attach(r, home)
        requests.append(r)
    board.set_up(FAILED, False)
    state = snapshot(board, cost, requests)
    board.set_up(FAILED, True)  # the failover finds it up, then dead
    return board, requests, state


def planned(state: ClusterState, cost: CostModel) -> tuple[RecoveryPlan, RecoveryDecision]:
    problem = recovery_problem(state, cost, [FAILED], reload_s=RELOAD_S, chunk=CHUNK)
    machines = problem.machine_ids.tolist()
    rows = problem.request_ids.tolist()
    assignment = np.array([machines.index(ROWS[rid][3]) for rid in rows])
    plan = RecoveryPlan.from_assignment(problem, assignment)
    modes = {rows[i]: RECOVERY_MODES[k] for i, k in enumerate(plan.mode.tolist())}
    assert [modes[rid] for rid in range(len(ROWS))] == [
        "restore",
        "transfer",
        "recompute",
        "wait",
        "wait",
        "recompute",
    ], "the rows no longer exercise every mode"
    return plan, recovery_decision(problem, plan)


class FixedPlanner(RecoveryPlanner):
    def __init__(self, cost: CostModel, decision: RecoveryDecision) -> None:
        super().__init__(cost, "greedy", chunk=CHUNK)
        self.decision = decision

    def plan(
        self, state: ClusterState, failed: Sequence[int]
    ) -> tuple[RecoveryDecision | None, str]:
        return self.decision, "local"


def run_gateway(cost: CostModel, decision: RecoveryDecision) -> dict[int, Executed]:
    board, requests, _ = gateway_state(cost)
    host = FakeHost(board, cost, requests, alive={1, 2})
    with failover_on(host, GatewayConfig(health=FAST), FixedPlanner(cost, decision)) as (f, _, _):
        f.stream_failed(requests[0], 0, FAILED, "connection reset")
    out: dict[int, Executed] = {}
    for p in host.pended:
        assert p.target is not None
        out[p.request.request_id] = Executed(p.target, p.deadline_s > 0, p.restore_from is not None)
    return out


def run_simulator(
    cost: CostModel, state: ClusterState, plan: RecoveryPlan, monkeypatch: pytest.MonkeyPatch
) -> dict[int, Executed]:
    prompts = [prompt for prompt, _, _, _ in ROWS]
    trace = make_trace([0.0] * len(prompts), prompts, [64] * len(prompts))
    run = ClusterRun(trace, cost, workers=3, policy="lumen")
    run.pool[FAILED].fail(0.0)
    # the same state and plan as the gateway's: the simulator reads them by its own path
    monkeypatch.setattr(sim_recovery, "snapshot", lambda *a, **k: state)
    monkeypatch.setattr(
        sim_recovery,
        "solve",
        lambda problem, method, settings=None: SolveResult(method, Termination.FEASIBLE, plan=plan),
    )
    enqueued: dict[int, int] = {}
    for sim_worker in run.pool:
        monkeypatch.setattr(
            sim_worker,
            "enqueue",
            lambda rid, delay, k=sim_worker.index: enqueued.__setitem__(rid, k),
        )
    lost = [
        Interrupted(rid, FAILED, generated, HOLDER if prefix else -1, prefix)
        for rid, (_, generated, prefix, _) in enumerate(ROWS)
    ]
    kv = {r.rid: prompts[r.rid] + r.generated for r in lost}
    run._route([FAILED], lost, kv, 0.0, RELOAD_S)
    restored = run.table.restored
    out = {rid: Executed(w, False, restored[rid] > 0) for rid, w in enqueued.items()}
    for k, waiting in run.waiting_for.items():
        out.update({rid: Executed(k, True, restored[rid] > 0) for rid, _, _ in waiting})
    return out


def test_simulator_and_gateway_resume_a_plan_alike(
    cost: CostModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, state = gateway_state(cost)
    plan, decision = planned(state, cost)
    gateway = run_gateway(cost, decision)
    simulated = run_simulator(cost, state, plan, monkeypatch)
    assert gateway == simulated
    # and what both did is the plan: the destinations, the waits, and restores exactly where
    # the checkpoint pays (the 1k-token wait recomputes, the 30k-token one restores)
    assert {rid: (e.worker, e.waits) for rid, e in gateway.items()} == {
        rid: (row[3], row[3] == FAILED) for rid, row in enumerate(ROWS)
    }
    assert [gateway[rid].restores for rid in range(len(ROWS))] == [
        True,
        True,
        False,
        False,
        True,
        False,
    ]
