"""The simulated gateway's routing rules (:class:`lumen.simulator.gateway.SimGateway`) on a
hand-made pool, and the scenario's ``readings.gateway`` reaching a run."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from sim_traces import make_trace

from lumen.planner.costmodel import RooflineCostModel
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.cluster import ClusterOptions, simulate
from lumen.simulator.gateway import SimGateway
from lumen.simulator.kernel import Simulation
from lumen.simulator.run import scenario_trace, simulate_scenario
from lumen.simulator.worker import RequestTable, SimWorker

RULES = ("least-waiting", "least-requests", "round-robin")


@pytest.fixture(scope="module")
def cost_model() -> RooflineCostModel:
    return load_scenario("paper-sim-10w-llama3-70b").cost_model


def _pool(
    cost_model: RooflineCostModel, prompts: list[int], workers: int = 3
) -> tuple[Simulation, list[SimWorker]]:
    """``workers`` idle workers and one request per prompt length, none dispatched yet."""
    sim = Simulation()
    n = len(prompts)
    table = RequestTable.create([0.0] * n, prompts, [10] * n)
    return sim, [SimWorker(i, sim, cost_model, table) for i in range(workers)]


def scan_least_waiting(pool: list[SimWorker], now: float) -> SimWorker | None:
    """The ``least-waiting`` choice by a plain scan over every worker's
    :meth:`SimWorker.estimated_wait_s` (the reference the gateway's arrays must agree with):
    the least wait, then the fewest active requests, then the lowest index."""
    best: SimWorker | None = None
    best_wait = best_load = 0.0
    for w in pool:
        if w.down:
            continue
        wait = w.estimated_wait_s(now)
        load = w.active_requests
        if best is None or wait < best_wait or (wait == best_wait and load < best_load):
            best, best_wait, best_load = w, wait, load
    return best


def _loaded(cost_model: RooflineCostModel) -> tuple[Simulation, list[SimWorker]]:
    """Worker 0 holds one long prompt (requests 0), worker 1 two short ones (1, 2), worker 2
    three short ones (3, 4, 5); requests 6 and later are new."""
    sim, pool = _pool(cost_model, [8000, 10, 10, 10, 10, 10, 10, 10, 10])
    for rid, w in enumerate([0, 1, 1, 2, 2, 2]):
        pool[w].enqueue(rid)
    return sim, pool


def test_least_waiting_avoids_the_long_queued_prompt(cost_model: RooflineCostModel) -> None:
    _, pool = _loaded(cost_model)
    gateway = SimGateway(pool)
    assert gateway.rule == "least-waiting"
    # Worker 1 has the fewest queued prompt tokens (20, against 8,000 and 30).
    assert gateway.dispatch(6, 0.0) is pool[1]


def test_least_waiting_breaks_ties_by_requests_then_index(cost_model: RooflineCostModel) -> None:
    _, pool = _pool(cost_model, [10, 10, 10, 10])
    gateway = SimGateway(pool)
    pool[0].enqueue(0, delay=5.0)  # restoring: nothing queued yet, but one request on it
    assert pool[0].estimated_wait_s(0.0) == 0.0 and pool[0].active_requests == 1
    # Workers 1 and 2 tie with worker 0 on waiting and have fewer requests; 1 has the lower
    # index. Then 1 has a prompt queued, so 2 is next, then 0 is the only one waiting 0 s.
    assert [gateway.dispatch(rid, 0.0) for rid in (1, 2, 3)] == [pool[1], pool[2], pool[0]]


def test_least_requests_counts_requests_not_tokens(cost_model: RooflineCostModel) -> None:
    _, pool = _loaded(cost_model)
    gateway = SimGateway(pool, "least-requests")
    # Worker 0 waits longest (8,000 prompt tokens) but has the fewest requests.
    assert gateway.dispatch(6, 0.0) is pool[0]
    # Now workers 0 and 1 both have two: the lowest index wins.
    assert gateway.dispatch(7, 0.0) is pool[0]
    assert gateway.dispatch(8, 0.0) is pool[1]
    assert [w.active_requests for w in pool] == [3, 3, 3]
    assert gateway.dispatched == [2, 1, 0]


def test_round_robin_takes_the_workers_in_turn(cost_model: RooflineCostModel) -> None:
    _, pool = _loaded(cost_model)
    gateway = SimGateway(pool, "round-robin")
    # The load does not matter, only the turn.
    assert gateway.dispatch(6, 0.0) is pool[0]
    assert gateway.dispatch(7, 0.0) is pool[1]
    assert gateway.dispatch(8, 0.0) is pool[2]


def test_round_robin_skips_down_workers_and_keeps_its_cursor(
    cost_model: RooflineCostModel,
) -> None:
    _, pool = _pool(cost_model, [10] * 8)
    gateway = SimGateway(pool, "round-robin")
    assert gateway.dispatch(0, 0.0) is pool[0]
    pool[1].fail(0.0)
    assert gateway.dispatch(1, 0.0) is pool[2]  # 1 is down: its turn goes to 2
    assert gateway.dispatch(2, 0.0) is pool[0]
    assert gateway.dispatch(3, 0.0) is pool[2]
    pool[1].recover()
    assert gateway.dispatch(4, 0.0) is pool[0]
    assert gateway.dispatch(5, 0.0) is pool[1]  # back in the turn
    assert gateway.choose(0.0) is pool[2]  # choosing alone does not move the cursor
    assert gateway.choose(0.0) is pool[2]


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_holds_requests_while_all_are_down(
    cost_model: RooflineCostModel, rule: str
) -> None:
    _, pool = _pool(cost_model, [10] * 4, workers=2)
    gateway = SimGateway(pool, rule)
    for w in pool:
        w.fail(0.0)
    assert gateway.choose(0.0) is None
    assert [gateway.dispatch(rid, 0.0) for rid in range(3)] == [None, None, None]
    assert list(gateway.held) == [0, 1, 2]
    gateway.release(0.0)  # still all down: nothing moves
    assert list(gateway.held) == [0, 1, 2]
    pool[1].recover()
    gateway.release(0.0)
    assert not gateway.held and gateway.dispatched == [0, 3]
    assert pool[1].active_requests == 3


def test_unknown_rule_is_refused(cost_model: RooflineCostModel) -> None:
    _, pool = _pool(cost_model, [10])
    with pytest.raises(ValueError, match="least-waiting, least-requests, round-robin"):
        SimGateway(pool, "random")
    with pytest.raises(ValueError):
        SimGateway([], "round-robin")


def test_each_rule_in_a_cluster_run(cost_model: RooflineCostModel) -> None:
    # One long prompt first, then short ones arriving faster than they finish.
    n = 12
    trace = make_trace([0.01 * i for i in range(n)], [8000] + [50] * (n - 1), [200] * n)
    worker = {
        rule: simulate(trace, cost_model, 3, options=ClusterOptions(gateway=rule)).worker
        for rule in RULES
    }
    assert worker["round-robin"].tolist() == [i % 3 for i in range(n)]
    # Least-waiting keeps the short requests off the worker prefilling the long prompt.
    assert worker["least-waiting"][0] == 0 and 0 not in worker["least-waiting"][1:5].tolist()
    # Least-requests counts that worker's one request like any other.
    counts = np.bincount(worker["least-requests"], minlength=3).tolist()
    assert counts == [4, 4, 4]


def _scenario(tmp_path: Path, rule: str) -> Path:
    path = tmp_path / f"gateway-{rule}.yaml"
    path.write_text(
        f"""name: gateway-{rule}
cluster:
  workers: 3
  hardware: A800-80GB
  tensor_parallel: 2
  model: Qwen3-32B
  checkpoint_budget_gb: 0
workload:
  num_requests: 60
  seed: 0
  synthetic:
    arrivals: poisson
    rate_qps: 20
    prompt_tokens: {{distribution: uniform, low: 10, high: 4000}}
    output_tokens: {{distribution: uniform, low: 1, high: 30}}
policies: [stop-and-restart]
readings: {{gateway: {rule}}}
""",
        encoding="utf-8",
    )
    return path


def test_the_scenario_reading_reaches_the_run(tmp_path: Path) -> None:
    worker: dict[str, list[int]] = {}
    for rule in RULES:
        loaded = load_scenario(_scenario(tmp_path, rule))
        assert loaded.scenario.readings.gateway == rule
        result = simulate_scenario(loaded, "stop-and-restart", with_failures=False)
        direct = simulate(
            scenario_trace(loaded),
            loaded.cost_model,
            3,
            seed=loaded.scenario.workload.seed,
            options=ClusterOptions(gateway=rule),
        )
        assert np.array_equal(result.worker, direct.worker)
        worker[rule] = result.worker.tolist()
    assert worker["round-robin"] == [i % 3 for i in range(60)]
    # Short outputs finish while requests arrive: least-requests leaves the turn order once a
    # worker empties first, and least-waiting follows the prompt lengths from the start.
    assert worker["least-requests"] != worker["round-robin"]
    assert worker["least-waiting"][:4] == [0, 1, 2, 2]
    assert worker["least-waiting"] != worker["least-requests"]


def _random_walk(
    cost_model: RooflineCostModel, seed: int, steps: int = 400
) -> tuple[int, int, int]:
    """Dispatch, restore onto, fail, recover and run a random pool, checking before every
    dispatch (and at random instants inside decode runs) that the gateway's array-backed
    least-waiting choice is the plain scan's. Returns (checks, ties on the least wait, ties
    whose choice the request count decided, not the index)."""
    rng = random.Random(seed)
    sim = Simulation()
    # Few distinct prompt lengths, so queued-token totals (and waits) often tie exactly.
    prompts = [rng.choice([16, 64, 512, 2048]) for _ in range(steps)]
    outputs = [rng.randint(1, 80) for _ in range(steps)]
    table = RequestTable.create([0.0] * steps, prompts, outputs)
    pool = [SimWorker(i, sim, cost_model, table, max_batch_size=4) for i in range(8)]
    gateway = SimGateway(pool)
    checks = ties = load_ties = 0
    for rid in range(steps):
        now = sim.now
        expected = scan_least_waiting(pool, now)
        assert gateway.choose(now) is expected, f"seed {seed}, request {rid}, t={now}"
        scanned = [math.inf if w.down else w.estimated_wait_s(now) for w in pool]
        assert gateway.wait_estimates(now).tolist() == scanned
        checks += 1
        up = [w for w in pool if not w.down]
        least = min((w.estimated_wait_s(now) for w in up), default=None)
        tied = [w for w in up if w.estimated_wait_s(now) == least]
        if len(tied) > 1:
            ties += 1
            load_ties += expected is not tied[0]
        action = rng.random()
        if action < 0.6:
            gateway.dispatch(rid, now)
        elif action < 0.75:  # a restore: one more request on it, its wait unchanged for now
            target = rng.choice(pool)
            if not target.down:
                target.enqueue(rid, delay=rng.uniform(0.0, 0.5))
        elif action < 0.8:
            victim = rng.choice(pool)
            if not victim.down:
                victim.fail(now)
        elif action < 0.85:
            for w in pool:
                if w.down and rng.random() < 0.5:
                    w.recover()
        # Move on, often to an instant inside a worker's pure-decode run.
        sim.run(until=now + rng.choice([0.0, 0.0, 0.001, 0.01, 0.05, 0.3]))
    return checks, ties, load_ties


def test_least_waiting_arrays_choose_as_a_full_scan(cost_model: RooflineCostModel) -> None:
    totals = [0, 0, 0]
    for seed in range(6):
        for k, v in enumerate(_random_walk(cost_model, seed)):
            totals[k] += v
    checks, ties, load_ties = totals
    # The walks must exercise both tie-breaks: some ties went to a worker with fewer
    # requests than the lowest-indexed tied one, others to the lowest index.
    assert checks == 6 * 400 and load_ties > 0 and ties - load_ties > 0
