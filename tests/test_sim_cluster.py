"""The failure-free cluster simulation: hand-checked timings, conservation, KV limits, dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sim_traces import make_trace, random_trace

from lumen.planner.costmodel import BatchShape, RooflineCostModel
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.cluster import SimulationResult, simulate
from lumen.workload.trace import Trace


@pytest.fixture(scope="module")
def cost_model() -> RooflineCostModel:
    return load_scenario("paper-sim-10w-llama3-70b").cost_model


def test_one_request_prefill_chunks_then_decode_steps(cost_model: RooflineCostModel) -> None:
    # 2500 prompt tokens in chunks of 1024 + 1024 + 452, then 3 decode steps for 4 outputs.
    r = simulate(make_trace([0.0], [2500], [4]), cost_model, workers=1)
    ttft = (
        cost_model.prefill_time(1024, 0)
        + cost_model.prefill_time(1024, 1024)
        + cost_model.prefill_time(452, 2048)
    )
    decode = [cost_model.decode_step_time(1, 2500 + d) for d in range(3)]
    assert r.ttft_s[0] == pytest.approx(ttft, rel=1e-12)
    assert r.e2e_s[0] == pytest.approx(ttft + sum(decode), rel=1e-12)
    assert r.tpot_s[0] == pytest.approx(sum(decode) / 3, rel=1e-12)
    assert r.summary.decode_tokens == 4
    assert r.summary.prefill_tokens == 2500


def test_single_token_output_has_no_tpot(cost_model: RooflineCostModel) -> None:
    r = simulate(make_trace([0.0], [100], [1]), cost_model, workers=1)
    assert r.e2e_s[0] == r.ttft_s[0] == pytest.approx(cost_model.prefill_time(100))
    assert math.isnan(r.tpot_s[0])


def test_simultaneous_requests_share_iterations(cost_model: RooflineCostModel) -> None:
    r = simulate(make_trace([0.0, 0.0], [300, 500], [3, 3]), cost_model, workers=1)
    first = cost_model.batch_time(BatchShape.build(prefill_chunks=[(300, 0), (500, 0)]))
    step = [cost_model.decode_step_time(2, 800 + 2 * d) for d in range(2)]
    np.testing.assert_allclose(r.ttft_s, [first, first], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [first + sum(step)] * 2, rtol=1e-12)


def test_request_arriving_mid_decode_joins_at_next_boundary(cost_model: RooflineCostModel) -> None:
    prefill = cost_model.prefill_time(200)
    step = cost_model.decode_step_time(1, 200)
    # Arrives halfway through the first decode step of request 0.
    r = simulate(make_trace([0.0, prefill + step / 2], [200, 100], [50, 2]), cost_model, workers=1)
    joined = cost_model.batch_time(
        BatchShape.build(prefill_chunks=[(100, 0)], decode_contexts=[201])
    )
    assert r.ttft_s[1] == pytest.approx(prefill + step + joined - (prefill + step / 2), rel=1e-12)
    assert r.summary.decode_tokens == 52


def _check_conservation(r: SimulationResult, trace: Trace) -> None:
    assert np.all(np.isfinite(r.ttft_s)) and np.all(np.isfinite(r.e2e_s))
    assert np.all(r.ttft_s > 0) and np.all(r.e2e_s >= r.ttft_s)
    assert r.summary.decode_tokens == int(trace.output_tokens.sum())
    assert r.summary.prefill_tokens == int(trace.prompt_tokens.sum())
    assert int(r.worker_decode_tokens.sum()) == r.summary.decode_tokens
    assert np.all(r.worker >= 0)


def test_every_request_finishes_once_with_all_tokens(cost_model: RooflineCostModel) -> None:
    trace = random_trace(3000, rate=20.0, seed=1)
    r = simulate(trace, cost_model, workers=3)
    _check_conservation(r, trace)
    assert r.summary.events < 20 * len(trace)  # decode runs are batched into few events


def test_same_seed_same_arrays(cost_model: RooflineCostModel) -> None:
    trace = random_trace(1500, rate=15.0, seed=2)
    a = simulate(trace, cost_model, workers=2, seed=7)
    b = simulate(trace, cost_model, workers=2, seed=7)
    for name in ("ttft_s", "tpot_s", "e2e_s", "worker"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.summary.events == b.summary.events


def test_least_waiting_dispatch_balances_identical_workers(cost_model: RooflineCostModel) -> None:
    burst = simulate(make_trace([0.0] * 8, [500] * 8, [10] * 8), cost_model, workers=4)
    assert np.bincount(burst.worker).tolist() == [2, 2, 2, 2]
    r = simulate(random_trace(4000, rate=30.0, seed=3), cost_model, workers=4)
    counts = np.bincount(r.worker, minlength=4)
    assert counts.min() > 0.8 * counts.max()


def test_kv_capacity_is_never_exceeded_and_requests_wait(cost_model: RooflineCostModel) -> None:
    # Each request reserves 1000 + 100 tokens: only two fit in 2500.
    trace = make_trace([0.0] * 5, [1000] * 5, [100] * 5)
    r = simulate(trace, cost_model, workers=1, kv_capacity_tokens=2500)
    _check_conservation(r, trace)
    assert r.worker_kv_peak_tokens[0] == 2200
    order = np.argsort(r.ttft_s, kind="stable")
    assert order.tolist() == [0, 1, 2, 3, 4]
    # Requests 2.. start only after 0 and 1 have finished.
    assert r.ttft_s[2] > r.e2e_s[0]
    unlimited = simulate(trace, cost_model, workers=1)
    assert unlimited.worker_kv_peak_tokens[0] == 5500
    assert r.summary.e2e_s.mean > unlimited.summary.e2e_s.mean


def test_request_larger_than_kv_cache_is_rejected(cost_model: RooflineCostModel) -> None:
    with pytest.raises(ValueError, match="KV tokens"):
        simulate(make_trace([0.0], [1000], [100]), cost_model, workers=1, kv_capacity_tokens=500)


def test_batch_size_limit(cost_model: RooflineCostModel) -> None:
    trace = make_trace([0.0] * 3, [10] * 3, [20] * 3)
    r = simulate(trace, cost_model, workers=1, max_batch_size=2)
    _check_conservation(r, trace)
    assert r.ttft_s[2] >= r.e2e_s[0]
