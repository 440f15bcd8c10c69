"""Problem builders: physical quantities become problem data exactly as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lumen.planner.builders import (
    pairing_problem,
    placement_problem,
    recompute_time,
    recovery_problem,
)
from lumen.planner.costmodel import Deployment, RooflineCostModel
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.scenarios.resolve import load_scenario
from lumen.scenarios.snapshot import steady_state_snapshot


@pytest.fixture(scope="module")
def cost() -> RooflineCostModel:
    from lumen.planner.costmodel import get_model_profile

    dep = Deployment.from_names("Qwen3-14B", "A100-80GB", 1)
    return RooflineCostModel(dep, draft=get_model_profile("Qwen3-1.7B"))


def _state(cost: RooflineCostModel) -> ClusterState:
    kv = cost.kv_bytes_per_token
    workers = [Worker(i, node=i // 2, hardware="A100-80GB") for i in range(4)]
    workers[3] = Worker(3, 1, "A100-80GB", WorkerState.FAILED)
    reqs = [
        Request(0, 0, 2000, 100, 400, checkpoint_holder=2, checkpointed_tokens=2048),
        Request(1, 0, 300, 0, 50),  # no checkpoint
        Request(2, 1, 500, 10, 100, checkpoint_holder=3, checkpointed_tokens=496),  # holder dead
        Request(3, 2, 64, 4, 8, checkpoint_holder=0, checkpointed_tokens=64),
    ]
    loads = {
        i: WorkerLoad(
            queue_length=i,
            waiting_time_s=0.5 * i,
            gpu_kv_used_tokens=1000,
            gpu_kv_capacity_tokens=50_000,
            host_budget_bytes=10**10,
        )
        for i in range(4)
    }
    return ClusterState.build(workers, reqs, loads, kv_bytes_per_token=kv)


def test_recompute_time_sums_chunks(cost: RooflineCostModel) -> None:
    expected = (
        cost.prefill_time(1024, 0) + cost.prefill_time(1024, 1024) + cost.prefill_time(452, 2048)
    )
    assert recompute_time(cost, 2500) == pytest.approx(expected)
    assert recompute_time(cost, 0) == 0.0


def test_placement_problem(cost: RooflineCostModel) -> None:
    st = _state(cost)
    kv = cost.kv_bytes_per_token
    p = placement_problem(st, cost, requests=[st.request(1)])
    assert p.home.tolist() == [0]
    assert p.reserve_bytes[0] == 350 * kv
    assert p.work_s[0] == pytest.approx(cost.kv_restore_time(300))
    assert p.can_hold.tolist() == [True, True, True, False]
    # Budgets are net of the reservations of requests not being placed.
    assert p.budget_bytes[2] == 10**10 - 2400 * kv
    assert p.budget_bytes[0] == 10**10 - 72 * kv
    assert p.wait_s.tolist() == [0.0, 0.5, 1.0, 1.5]


def test_recovery_problem_modes(cost: RooflineCostModel) -> None:
    st = _state(cost).with_worker_state(0, WorkerState.FAILED)
    p = recovery_problem(st, cost, failed=[0, 1], reload_s=60.0)
    # Survivors: 2 (serving); worker 3 is failed and not a survivor; recovering: 0 and 1.
    assert p.machine_ids.tolist() == [2, 0, 1]
    assert p.is_recovering.tolist() == [False, True, True]
    assert p.ready_s.tolist() == [0.0, 60.0, 60.0]
    assert sorted(p.request_ids.tolist()) == [0, 1, 2]
    t = p.mode_time_s
    i0 = p.request_ids.tolist().index(0)
    i2 = p.request_ids.tolist().index(2)
    # Request 0: live holder 2 -> restore there, recompute too; wait on recovering machines.
    assert math.isfinite(t[i0, 0, 0]) and t[i0, 0, 0] < t[i0, 0, 2]
    assert np.isinf(t[i0, 0, 1])  # no transfer to the holder itself
    assert np.isfinite(t[i0, 1:, 3]).all() and np.isinf(t[i0, 1:, :3]).all()
    # Request 2: its holder (3) is dead -> recompute only.
    assert np.isinf(t[i2, 0, :2]).all() and math.isfinite(t[i2, 0, 2])
    assert t[i2, 0, 2] == pytest.approx(recompute_time(cost, 510))


def test_pairing_problem(cost: RooflineCostModel) -> None:
    st = _state(cost)
    p = pairing_problem(st, cost, recovering=[3], acceptance_rate=0.7, depth=4)
    assert p.survivor_ids.tolist() == [0, 1, 2]
    assert (p.saved_s >= 0).all() and (p.saved_s[0] > 0).any()
    assert p.survivor_wait_s.tolist() == [0.0, 0.5, 1.0]


def test_snapshot_is_seeded_and_consistent() -> None:
    loaded = load_scenario("paper-8w-qwen3-14b")
    a = steady_state_snapshot(loaded, seed=1, placement_method="fixed-ring")
    b = steady_state_snapshot(loaded, seed=1, placement_method="fixed-ring")
    assert [r.home for r in a.requests.values()] == [r.home for r in b.requests.values()]
    assert len(a.requests) > 8
    for r in a.requests.values():
        assert r.checkpoint_holder is not None
        assert a.worker(r.checkpoint_holder).node != a.worker(r.home).node
        assert r.checkpointed_tokens <= r.context_tokens
    for w in a.workers:
        assert a.load(w.id).host_reserved_bytes == a.reservation_bytes(w.id)
        assert a.load(w.id).host_reserved_bytes <= a.load(w.id).host_budget_bytes
