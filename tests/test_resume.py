"""The plan-reading rule (lumen/planner/resume.py) and the policies (lumen/planner/policies.py)."""

from __future__ import annotations

import pytest

from lumen.planner.builders import recompute_time, recovery_problem
from lumen.planner.costmodel import DEFAULT_EFFICIENCY, CostModel
from lumen.planner.decisions import RecoveryAssignment, RecoveryDecision
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.planner.policies import POLICIES, Policy, check_policy
from lumen.planner.resume import Resumption, resumptions
from lumen.scenarios.resolve import build_cost_model, load_scenario
from lumen.scenarios.schema import Policy as SchemaPolicy


@pytest.fixture(scope="module")
def cost() -> CostModel:
    # The roofline defaults, not the scenario's calibrated engine: the hand-picked request sizes
    # below sit on either side of the transfer-or-recompute break-even of this engine.
    return build_cost_model(load_scenario("paper-4w-qwen3-32b").scenario, DEFAULT_EFFICIENCY)


def state_of(requests: list[Request]) -> ClusterState:
    """Worker 0 failed; 1 and 2 serve; 3 failed earlier and reloads."""
    states = [WorkerState.FAILED, WorkerState.SERVING, WorkerState.SERVING, WorkerState.RELOADING]
    workers = [Worker(k, k, "a800-80g", s) for k, s in enumerate(states)]
    loads = {k: WorkerLoad(gpu_kv_capacity_tokens=100_000) for k in (1, 2)}
    return ClusterState.build(workers, requests, loads, kv_bytes_per_token=262_144)


def one(decision_mode: str, destination: int, request: Request) -> RecoveryDecision:
    return RecoveryDecision(
        (RecoveryAssignment(request.id, destination, decision_mode, 0),),
        ((destination, (request.id,)),),
    )


def test_restore_and_transfer_restore_the_live_holders_prefix(cost: CostModel) -> None:
    r = Request(7, 0, 4000, 500, 1000, checkpoint_holder=1, checkpointed_tokens=4096)
    state = state_of([r])
    got = resumptions(one("restore", 1, r), state, cost, [7], alive=[1, 2])
    assert got == [Resumption(7, 1, "restore", 1, 4096, cost.kv_restore_time(4096))]
    got = resumptions(one("transfer", 2, r), state, cost, [7], alive=[1, 2])
    delay = cost.kv_transfer_time(4096) + cost.kv_restore_time(4096)
    assert got == [Resumption(7, 2, "transfer", 1, 4096, delay)]
    # the holder died after the plan was made: nothing to restore, the whole context recomputes
    got = resumptions(one("transfer", 2, r), state, cost, [7], alive=[2])
    assert got == [Resumption(7, 2, "transfer")]
    assert resumptions(one("recompute", 2, r), state, cost, [7], alive=[1, 2]) == [
        Resumption(7, 2, "recompute")
    ]


def test_wait_restores_only_when_that_beats_recomputing(cost: CostModel) -> None:
    """The rule prices wait mode as the recovery problem does: min(recompute, transfer)."""
    long = Request(1, 0, 29_900, 100, 1000, checkpoint_holder=1, checkpointed_tokens=30_000)
    mid = Request(2, 0, 8000, 100, 1000, checkpoint_holder=1, checkpointed_tokens=8000)
    state = state_of([long, mid])
    for r in (long, mid):
        ctx, prefix = r.context_tokens, r.checkpointed_tokens
        full = recompute_time(cost, ctx, 0, 1024)
        via = (
            cost.kv_transfer_time(prefix)
            + cost.kv_restore_time(prefix)
            + recompute_time(cost, ctx - prefix, prefix, 1024)
        )
        (got,) = resumptions(one("wait", 0, r), state, cost, [r.id], alive=[1, 2])
        assert got.wait and got.worker == 0 and got.mode == "wait"
        assert (got.restored > 0) == (via < full), (r.id, via, full)
        # the problem's wait price is the cheaper of the two readings
        problem = recovery_problem(state, cost, [0], chunk=1024)
        i = problem.request_ids.tolist().index(r.id)
        j = problem.machine_ids.tolist().index(0)
        assert problem.mode_time_s[i, j, 3] == pytest.approx(min(full, via))
    # over 10 Gb/s the 30k-token prefix is worth fetching; the 8k one is faster to recompute
    assert [g.restored for g in resumptions(one("wait", 0, long), state, cost, [1], [1])] == [
        30_000
    ]
    assert [g.restored for g in resumptions(one("wait", 0, mid), state, cost, [2], [1])] == [0]


def test_plan_order_first_then_uncovered_requests(cost: CostModel) -> None:
    reqs = [Request(k, 0, 100, 1, 10) for k in range(4)]
    state = state_of(reqs)
    decision = RecoveryDecision(
        (
            RecoveryAssignment(2, 1, "recompute", 0),
            RecoveryAssignment(0, 1, "recompute", 1),
            RecoveryAssignment(3, 2, "recompute", 0),
        ),
        ((1, (2, 0)), (2, (3,)), (3, ())),
    )
    got = resumptions(decision, state, cost, [0, 1, 2, 3], alive=[1, 2])
    assert [(g.request_id, g.worker) for g in got] == [(2, 1), (0, 1), (3, 2), (1, None)]
    assert resumptions(None, state, cost, [3, 1], alive=[1, 2]) == [
        Resumption(3, None),
        Resumption(1, None),
    ]


def test_every_policy_name_is_defined_once_and_has_planner_functions() -> None:
    assert SchemaPolicy is Policy
    assert set(POLICIES) == {p.value for p in Policy}
    assert check_policy("lumen").pairing == "lumen"
    with pytest.raises(ValueError, match="supported: fixed-checkpointing"):
        check_policy("dejavu")
    with pytest.raises(TypeError):
        POLICIES["mine"] = POLICIES["lumen"]  # type: ignore[index]
