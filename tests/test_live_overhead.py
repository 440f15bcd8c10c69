"""The live request path's overhead model: fitting probes, profiles while a worker starts, and
the prediction of a live run that includes it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_calibrate import fake_calibration

from lumen.executor.bridge.overhead import LiveOverhead, StartProfile
from lumen.executor.bridge.prediction import LiveSetup, cost_model, in_flight, predict
from lumen.executor.cluster.launcher import ClusterSpec
from lumen.executor.cluster.loadgen import LoadRequest
from lumen.executor.cluster.probe import PathProbe, StartProbe
from lumen.executor.cluster.run import FailureInjection


class _Prefill:
    """A cost model whose prefill takes 1 ms plus 0.1 ms per prompt token (all the fit uses)."""

    def prefill_time(self, chunk_tokens: int, context_tokens: int = 0) -> float:
        return 1e-3 + 1e-4 * chunk_tokens


def _probe() -> PathProbe:
    start = StartProbe(
        progressive=False,
        since_spawn_s=(0.05, 0.1, 0.3, 0.9),
        prompt_tokens=(10, 10, 10, 10),
        ttft_s=(0.032, 0.042, 0.022, 0.012),
        serving_s=1.0,
    )
    # Idle probes: 10 ms path each (TTFT minus the 2 ms / 3 ms prefill), one below the engine.
    return PathProbe((10, 20, 10), (0.012, 0.013, 0.001), (start,))


def test_fit_subtracts_the_engine_and_bins_the_start() -> None:
    model = _Prefill()
    fitted = LiveOverhead.fit(_probe(), model, bin_s=0.25)  # type: ignore[arg-type]
    # (10 + 10 + 0) / 3 ms: the path is never negative.
    assert fitted.idle_s == pytest.approx(0.02 / 3)
    profile = fitted.profile(progressive=False)
    assert profile is not None and fitted.profile(progressive=True) is None
    # Bins of 0.25 s up to serving (1.0 s): [35 ms], [20 ms], empty -> 20 ms, [10 ms].
    assert profile.overhead_s == pytest.approx((0.035, 0.02, 0.02, 0.01))
    assert profile.end_s == pytest.approx(1.0)
    assert profile.at(0.0) == pytest.approx(0.035) and profile.at(1.0) is None
    assert profile.at(-0.1) is None
    assert "while a restart starts" in fitted.describe()
    with pytest.raises(ValueError, match="bin_s"):
        LiveOverhead.fit(_probe(), model, bin_s=0.0)  # type: ignore[arg-type]


def test_per_request_uses_the_profile_only_while_a_worker_starts() -> None:
    profile = StartProfile(False, 0.5, (0.05, 0.03), serving_s=1.0)
    overhead = LiveOverhead(0.01, 0.012, (profile,))
    arrivals = [0.0, 2.0, 2.4, 2.6, 3.0, 5.0]
    assert overhead.per_request(arrivals).tolist() == [0.01] * 6
    got = overhead.per_request(arrivals, [(2.0, False)])
    assert got.tolist() == pytest.approx([0.01, 0.05, 0.05, 0.03, 0.01, 0.01])
    # A progressive restart has no profile here: idle everywhere.
    assert overhead.per_request(arrivals, [(2.0, True)]).tolist() == [0.01] * 6


def test_prediction_adds_the_path_to_ttft() -> None:
    cal = fake_calibration()
    # Far apart, so that no request queues behind another: TTFT grows by exactly the path.
    requests = [LoadRequest(2.0 * i, tuple(range(1, 17)), 8) for i in range(6)]
    spec = ClusterSpec(3, "stop-and-restart", ssd_gbyte_s=1e-4)
    bare = predict(requests, spec, None, cal)
    flat = LiveOverhead(0.02, 0.02)
    with_path = predict(requests, spec, None, cal, flat)
    assert with_path.ttft_s == pytest.approx(bare.ttft_s + 0.02)
    assert with_path.arrival_s == pytest.approx(bare.arrival_s)
    assert with_path.tpot_s == pytest.approx(bare.tpot_s)
    # Beside a restart, the requests arriving while it starts pay its profile.
    profile = StartProfile(False, 1.0, (0.2, 0.2, 0.2), serving_s=3.0)
    failure = FailureInjection(3.0, (1,), restart_after_s=0.5)
    slow = predict(requests, spec, failure, cal, LiveOverhead(0.02, 0.02, (profile,)))
    plain = predict(requests, spec, failure, cal, flat)
    # Arrivals 4 and 6 fall in [3.5, 6.5): 0.18 s more path each; others unchanged.
    delta = slow.ttft_s - plain.ttft_s
    assert delta[[2, 3]] == pytest.approx([0.18, 0.18], abs=1e-9)
    assert np.delete(delta, [2, 3]) == pytest.approx(0.0, abs=1e-9)
    assert math.isfinite(slow.summary()["window_ttft_mean_s"])


def test_fit_on_the_calibrated_model() -> None:
    model = cost_model(fake_calibration(), LiveSetup())
    probe = PathProbe((16,), (model.prefill_time(16) + 0.007,))
    assert LiveOverhead.fit(probe, model).idle_s == pytest.approx(0.007)


def test_fit_and_charge_the_path_beside_a_request_in_flight() -> None:
    model = _Prefill()
    # Busy probes: 25 ms and 35 ms of path (TTFT minus the 2 ms prefill): 30 ms on average.
    probe = PathProbe((10,), (0.012,), busy_prompt_tokens=(10, 10), busy_ttft_s=(0.027, 0.037))
    fitted = LiveOverhead.fit(probe, model)  # type: ignore[arg-type]
    assert fitted.busy_s == pytest.approx(0.03) and fitted.busy_excess_s == pytest.approx(0.02)
    assert "30.0 ms beside a request in flight" in fitted.describe()
    got = fitted.per_request([0.0, 1.0, 2.0], busy=[False, True, False])
    assert got.tolist() == pytest.approx([0.01, 0.03, 0.01])
    with pytest.raises(ValueError, match="one flag per request"):
        fitted.per_request([0.0, 1.0], busy=[True])
    # Not probed (or a busy path no slower than the idle one): nothing is charged.
    unprobed = LiveOverhead.fit(_probe(), model)  # type: ignore[arg-type]
    assert unprobed.busy_s is None and unprobed.busy_excess_s == 0.0
    assert LiveOverhead(0.01, 0.01, busy_s=0.005).busy_excess_s == 0.0


def test_in_flight() -> None:
    start = [0.0, 0.01, 1.0, 1.0, 2.0, 3.0]
    end = np.asarray([0.05, 0.02, 1.1, 1.1, 2.01, 3.5])
    # The second starts inside the first; 1.0 and 1.0 start together; 2.0 and 3.0 alone.
    assert in_flight(start, end).tolist() == [False, True, True, True, False, False]
    with pytest.raises(ValueError, match="one value per request"):
        in_flight(start, end[:2])


def test_prediction_charges_the_requests_that_arrive_in_flight() -> None:
    cal = fake_calibration()
    # Two pairs that arrive together, and requests far from any other.
    arrivals = [0.0, 2.0, 2.0, 4.0, 6.0, 6.0, 8.0]
    requests = [LoadRequest(a, tuple(range(1, 17)), 8) for a in arrivals]
    spec = ClusterSpec(3, "stop-and-restart", ssd_gbyte_s=1e-4)
    idle = predict(requests, spec, None, cal, LiveOverhead(0.01, 0.01))
    busy = predict(requests, spec, None, cal, LiveOverhead(0.01, 0.01, busy_s=0.03))
    delta = busy.ttft_s - idle.ttft_s
    assert delta[[1, 2, 4, 5]] == pytest.approx([0.02] * 4, abs=1e-9)
    assert delta[[0, 3, 6]] == pytest.approx([0.0] * 3, abs=1e-9)
    assert busy.tpot_s == pytest.approx(idle.tpot_s)
