"""The live workers' calibrated cost model and the simulator's prediction of a live run.

The arithmetic of the cost model and the prediction is checked on a hand-made calibration
(:func:`fake_calibration`, no torch); the measurement itself runs once on small grids.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from lumen.executor.bridge.calibrate import Calibration, CalibrationGrids, worker_engine_config
from lumen.executor.bridge.prediction import (
    CalibratedCostModel,
    LiveSetup,
    cost_model,
    predict,
    workload_trace,
)
from lumen.executor.cluster.launcher import ClusterSpec
from lumen.executor.cluster.loadgen import LoadRequest
from lumen.executor.cluster.run import FailureInjection
from lumen.executor.worker.__main__ import DEFAULT_RANDOM_MODEL
from lumen.planner.costmodel import BatchShape, CostModel, Grid2D
from lumen.simulator.cluster import ClusterOptions, simulate


def fake_calibration(step_s: float = 0.002, load_s: float = 0.5) -> Calibration:
    """A calibration with round numbers: every step ``step_s`` plus 1 us per token."""

    def grid(xs: tuple[float, ...], ys: tuple[float, ...]) -> Grid2D:
        return Grid2D(xs, ys, tuple(tuple(step_s + 1e-6 * x * (1 + y) for y in ys) for x in xs))

    prefill = grid((1.0, 64.0, 512.0), (0.0, 256.0))
    decode = grid((1.0, 16.0, 64.0), (16.0, 256.0))
    return Calibration(
        model=DEFAULT_RANDOM_MODEL,
        draft_model=DEFAULT_RANDOM_MODEL.with_layers(1),
        engine=worker_engine_config(),
        prefill=prefill,
        decode=decode,
        draft_prefill=prefill,
        draft_decode=decode,
        loop_overhead_s=0.001,
        kv_export_s_per_token=1e-6,
        kv_wire_s_per_token=2e-6,
        kv_import_s_per_token=1e-6,
        target_build_s=0.01,
        draft_build_s=0.02,
        target_load_s=load_s,
        process_start_s=2.0,
        acceptance_rate=0.004,
        matmul_flops=1e11,
        memory_bandwidth=1e10,
    )


def _requests(n: int = 12, gap_s: float = 0.25) -> list[LoadRequest]:
    return [
        LoadRequest(gap_s * i, tuple((5 * i + k) % 250 + 1 for k in range(16 + i)), 20)
        for i in range(n)
    ]


def test_cost_model_arithmetic() -> None:
    cal = fake_calibration()
    model = cost_model(cal, LiveSetup(ssd_gbyte_s=1e-4, min_step_s=0.0, restart_after_s=1.5))
    assert isinstance(model, CostModel)
    # Steps: the table's value plus the loop overhead (1 ms).
    assert model.prefill_time(64) == pytest.approx(0.002 + 64e-6 + 0.001)
    assert model.decode_step_time(16, 16 * 16) == pytest.approx(0.002 + 16e-6 * 17 + 0.001)
    assert model.batch_time(BatchShape()) == 0.0
    # KV: import per token to restore; export + wire to transfer.
    assert model.kv_restore_time(100) == pytest.approx(100e-6)
    assert model.kv_transfer_time(100) == pytest.approx(300e-6)
    assert model.kv_bytes_per_token == DEFAULT_RANDOM_MODEL.kv_bytes_per_token("float32")
    # Reload: restart 1.5 s + process start 2 s + read at 1e5 B/s + build, then the load.
    timeline = model.reload_timeline()
    read_s = cal.read_bytes / 1e5
    assert timeline.ssd_to_host_s == pytest.approx(1.5 + 2.0 + read_s + 0.01)
    assert timeline.host_to_gpu_s == pytest.approx(0.5)
    assert model.draft_load_time() == pytest.approx(cal.draft_read_bytes / 1e5 + 0.02)
    assert model.gpu_kv_capacity_tokens() == cal.kv_capacity_tokens > 0
    draft = model.draft_cost_model()
    assert draft is not None and draft.decode_step_time(1, 16) > 0
    with pytest.raises(ValueError, match="non-negative"):
        model.kv_restore_time(-1)


def test_minimum_step_time_is_a_floor() -> None:
    model = cost_model(fake_calibration(), LiveSetup(min_step_s=0.05))
    assert model.decode_step_time(1, 16) == pytest.approx(0.05)
    assert model.prefill_time(1) == pytest.approx(0.05)
    assert model.prefill_time(512, 256) == pytest.approx(0.002 + 512e-6 * 257 + 0.001)
    with pytest.raises(ValueError, match="min_step_s"):
        LiveSetup(min_step_s=-1.0)


def test_workload_trace_sorts_and_shifts() -> None:
    requests = [LoadRequest(2.0, (1, 2, 3), 4), LoadRequest(1.0, (1,), 2)]
    trace, order, shift = workload_trace(requests)
    assert shift == 1.0 and order.tolist() == [1, 0]
    assert trace.arrival_s.tolist() == [0.0, 1.0]
    assert trace.prompt_tokens.tolist() == [1, 3] and trace.output_tokens.tolist() == [2, 4]


@pytest.mark.parametrize("policy", ["stop-and-restart", "fixed-checkpointing", "lumen"])
def test_prediction_of_a_failure(policy: str) -> None:
    cal = fake_calibration()
    requests = _requests()
    spec = ClusterSpec(3, policy, ssd_gbyte_s=1e-4)
    failure = FailureInjection(1.0, (1,), restart_after_s=0.5)
    prediction = predict(requests, spec, failure, cal)
    s = prediction.summary()
    reload = cost_model(cal, LiveSetup(1e-4, 0.0, 0.5)).reload_timeline().total_s
    assert s["requests"] == len(requests) and s["errors"] == 0
    for key in ("ttft_mean_s", "ttft_p99_s", "tpot_mean_s", "window_ttft_mean_s"):
        assert math.isfinite(s[key]) and s[key] > 0, key
    assert s["recovery_s"] >= reload
    if policy == "lumen":  # its restarted worker loads the draft first
        assert s["recovery_s"] == pytest.approx(reload + prediction.cost_model.draft_load_time())
    # The window is the requests arriving between the failure and the end of recovery.
    arrivals = np.asarray([r.arrival_s for r in requests])
    expected = (arrivals >= 1.0) & (arrivals < 1.0 + s["recovery_s"])
    assert prediction.window().tolist() == expected.tolist()
    assert s["window_requests"] == expected.sum() > 0
    free = predict(requests, spec, None, cal).summary()
    assert math.isnan(free["recovery_s"]) and free["window_requests"] == 0
    # Losing a worker for seconds cannot make the run faster.
    assert s["ttft_p99_s"] >= free["ttft_p99_s"]


def test_prediction_rejects_bad_input() -> None:
    cal = fake_calibration()
    with pytest.raises(ValueError, match="no worker"):
        predict(_requests(), ClusterSpec(3), FailureInjection(1.0, (5,)), cal)
    with pytest.raises(ValueError, match="draft"):
        predict(_requests(), ClusterSpec(3, "lumen", draft_weights=None), None, cal)
    with pytest.raises(ValueError, match="at least one"):
        predict([], ClusterSpec(3), None, cal)


def test_import_does_not_need_torch() -> None:
    code = (
        "import sys, lumen.executor.bridge.calibrate, lumen.executor.bridge.prediction;"
        "import lumen.cli.cluster_cmds;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


SMALL = CalibrationGrids(
    prefill_chunk_tokens=(1, 32, 256),
    prefill_context_tokens=(0, 64),
    decode_batch_sizes=(1, 32),
    decode_context_tokens=(16, 64),
    repeats=2,
)


@pytest.fixture(scope="module")
def measured() -> Calibration:
    pytest.importorskip("torch")
    from lumen.executor.bridge.calibrate import calibrate

    return calibrate(SMALL)


def test_calibration_measures_positive_growing_times(measured: Calibration) -> None:
    for grid in (measured.prefill, measured.decode, measured.draft_prefill, measured.draft_decode):
        assert all(v > 0 for row in grid.values for v in row)
    # More work takes longer (by a wide margin, so that timing noise cannot flip it).
    assert measured.prefill(256, 0) > measured.prefill(1, 0)
    assert measured.decode(32, 64) > measured.decode(1, 16)
    for name in (
        "kv_export_s_per_token",
        "kv_wire_s_per_token",
        "kv_import_s_per_token",
        "target_build_s",
        "draft_build_s",
        "target_load_s",
        "process_start_s",
        "matmul_flops",
        "memory_bandwidth",
    ):
        assert getattr(measured, name) > 0, name
    assert measured.loop_overhead_s >= 0 and 0 <= measured.acceptance_rate <= 1
    assert measured.engine == worker_engine_config()
    from lumen.executor.bridge.calibrate import calibrate

    assert calibrate(SMALL) is measured  # cached per process


def test_calibration_measures_with_the_workers_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    import lumen.executor.bridge.calibrate as cal_module
    from lumen.executor.worker.__main__ import CPU_THREADS, build_parser

    seen: list[int] = []

    def measure(grids: CalibrationGrids) -> Calibration:
        seen.append(torch.get_num_threads())
        return fake_calibration()

    monkeypatch.setattr(cal_module, "_measure", measure)
    before = torch.get_num_threads()
    cal_module._calibrate_cached.__wrapped__(SMALL)
    # Measured with a worker's threads, and the caller's setting is restored afterwards.
    assert seen == [CPU_THREADS] and torch.get_num_threads() == before
    args = build_parser().parse_args(["--worker-id", "0", "--weights", "random:0"])
    assert args.cpu_threads == CPU_THREADS == 1


def test_worker_refuses_negative_cpu_threads(capsys: pytest.CaptureFixture[str]) -> None:
    from lumen.executor.worker.__main__ import main

    assert main(["--worker-id", "0", "--weights", "random:0", "--cpu-threads", "-1"]) == 2
    assert "--cpu-threads" in capsys.readouterr().err


def test_simulator_runs_on_the_measured_model(measured: Calibration) -> None:
    model = cost_model(measured, LiveSetup(ssd_gbyte_s=1e-3))
    assert isinstance(model, CalibratedCostModel)
    trace, _, _ = workload_trace(_requests())
    result = simulate(
        trace,
        model,
        3,
        max_batch_size=64,
        prefill_chunk_tokens=512,
        failures=[(1.0, [1])],
        policy="lumen",
        options=ClusterOptions(checkpoint_budget_bytes=1e6),
    )
    assert np.isfinite(result.ttft_s).all() and np.isfinite(result.tpot_s).all()
    assert result.drafts_loaded == 1
