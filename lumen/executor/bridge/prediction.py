"""The simulator's prediction of a live cluster run, from the workers' calibrated costs.

:func:`cost_model` combines a :class:`~lumen.executor.bridge.calibrate.Calibration` (the workers'
model measured on this machine) with how the cluster runs its workers (:class:`LiveSetup`: emulated
SSD bandwidth, minimum step time, restart delay) into a :class:`CalibratedCostModel`, which
satisfies :class:`~lumen.planner.costmodel.CostModel`: iteration times are interpolated from the
measured grids by :class:`~lumen.planner.costmodel.TableCostModel`, plus the loop overhead and at
least the minimum step time; KV restore is the measured page import, KV transfer the export and the
wire round trip (the restore follows it); the reload is the restart delay, the process start, the
emulated read and the measured build, then the engine load.

:func:`predict` takes what a live run takes (the workload's :class:`LoadRequest` list, the
:class:`ClusterSpec` and the :class:`FailureInjection`) and the calibration, builds the
simulator's :class:`Trace` from the workload (arrivals, prompt lengths, output lengths: the tiny
model has no end-of-sequence token, so every request generates ``max_tokens``) and runs
:func:`lumen.simulator.cluster.simulate` with the cluster's size, batching limits, checkpoint
budget and policy. The failed workers are down from the SIGKILL until the calibrated reload ends
(plus the draft's load when the simulated policy loads one); that is the predicted recovery time,
the quantity the live run measures from the SIGKILL until the workers report ``serving``.

:meth:`Prediction.summary` has the keys of :meth:`PolicyRun.summary
<lumen.executor.cluster.run.PolicyRun.summary>`, and its window is defined the same way: the
requests that arrived between the failure and the end of recovery.

With a :class:`~lumen.executor.bridge.overhead.LiveOverhead` (measured by probing the live
cluster without a failure), each request reaches the simulated cluster its request-path overhead
late (the gateway's HTTP and gRPC hops, larger while a restarted worker process starts beside it,
and while another request is in flight: a first simulated pass says which requests overlap) and
its TTFT includes it. Still not modelled: the detection of a failure and the re-dispatch of
interrupted requests (and of a request sent to the killed worker before the gateway noticed),
and what a restarted worker's assisting stage costs the survivor it drafts for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from lumen.executor.bridge.calibrate import CPU_DTYPE, Calibration
from lumen.executor.bridge.overhead import LiveOverhead
from lumen.executor.cluster.launcher import ClusterSpec
from lumen.executor.cluster.loadgen import LoadRequest
from lumen.executor.cluster.run import FailureInjection
from lumen.executor.engine.config import DTYPE_BYTES, ModelConfig
from lumen.planner.costmodel import (
    BatchShape,
    Deployment,
    Grid2D,
    HardwareProfile,
    ModelProfile,
    ReloadTimeline,
    TableCostModel,
)
from lumen.planner.policies import POLICIES
from lumen.simulator.cluster import ClusterOptions, SimulationResult, simulate
from lumen.workload.trace import Trace

__all__ = [
    "CalibratedCostModel",
    "LiveSetup",
    "Prediction",
    "cost_model",
    "in_flight",
    "predict",
    "workload_trace",
]

#: Draft tokens a live assisting worker proposes per round (the worker's ``assist.DEFAULT_K``).
SPECULATION_DEPTH = 4


@dataclass(frozen=True, slots=True)
class LiveSetup:
    """How the live cluster runs its workers, beyond the model.

    Attributes:
        ssd_gbyte_s: emulated storage bandwidth of weight loads (None: unthrottled).
        min_step_s: emulated minimum engine step time.
        restart_after_s: delay between the SIGKILL and starting the worker again.
    """

    ssd_gbyte_s: float | None = None
    min_step_s: float = 0.0
    restart_after_s: float = 0.0

    def __post_init__(self) -> None:
        if self.ssd_gbyte_s is not None and not self.ssd_gbyte_s > 0:
            raise ValueError(f"ssd_gbyte_s must be > 0, got {self.ssd_gbyte_s}")
        if not (self.min_step_s >= 0 and self.restart_after_s >= 0):
            raise ValueError("min_step_s and restart_after_s must be >= 0")


class CalibratedCostModel:
    """The live workers' costs (a :class:`~lumen.planner.costmodel.CostModel`; module doc).

    Args:
        calibration: the measurements.
        setup: how the workers run (reload, minimum step time).
    """

    def __init__(self, calibration: Calibration, setup: LiveSetup) -> None:
        self._cal = calibration
        self._setup = setup
        floor = setup.min_step_s
        overhead = calibration.loop_overhead_s
        target = _profile("lumen-random", calibration.model)
        draft = _profile("lumen-random-draft", calibration.draft_model)
        self._deployment = _deployment(calibration, target)
        draft_table = TableCostModel(
            self._deployment.with_model(draft),
            _step_grid(calibration.draft_prefill, overhead, floor),
            _step_grid(calibration.draft_decode, overhead, floor),
        )
        self._table = TableCostModel(
            self._deployment,
            _step_grid(calibration.prefill, overhead, floor),
            _step_grid(calibration.decode, overhead, floor),
            draft_table,
        )
        # The restart delay and the process start come first whatever is loaded, so they are
        # charged to the target's SSD -> host phase: with a draft the simulator runs the draft
        # load before that phase, so its draft is up that much earlier than the live one (the
        # reload's end is the same).
        start = setup.restart_after_s + calibration.process_start_s
        self._draft_load_s = self._read_s(calibration.draft_read_bytes) + calibration.draft_build_s
        to_host = start + self._read_s(calibration.read_bytes) + calibration.target_build_s
        self._timeline = ReloadTimeline(to_host, calibration.target_load_s)

    def _read_s(self, size: int) -> float:
        rate = self._setup.ssd_gbyte_s
        return 0.0 if rate is None else size / (rate * 1e9)

    @property
    def calibration(self) -> Calibration:
        """The measurements behind this model."""
        return self._cal

    @property
    def setup(self) -> LiveSetup:
        """How the modelled workers run."""
        return self._setup

    @property
    def table(self) -> TableCostModel:
        """The iteration-time table (target, with the draft's)."""
        return self._table

    @property
    def deployment(self) -> Deployment:
        """One CPU worker of the tiny model; its bandwidths are the measured ones."""
        return self._deployment

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes per token in the engine."""
        return self._cal.kv_bytes_per_token

    @property
    def weight_bytes(self) -> int:
        """Bytes a target load reads."""
        return self._cal.read_bytes

    def batch_time(self, shape: BatchShape) -> float:
        """One engine step doing ``shape``'s work, loop overhead and minimum step included."""
        return self._table.batch_time(shape)

    def prefill_time(self, chunk_tokens: int, context_tokens: int = 0) -> float:
        """One step prefilling ``chunk_tokens`` after ``context_tokens`` cached ones."""
        return self._table.prefill_time(chunk_tokens, context_tokens)

    def decode_step_time(
        self, batch_size: int, context_tokens: int, query_tokens_per_seq: int = 1
    ) -> float:
        """One decode step; ``context_tokens`` is summed over the batch."""
        return self._table.decode_step_time(batch_size, context_tokens, query_tokens_per_seq)

    def kv_restore_time(self, tokens: int) -> float:
        """Importing ``tokens`` tokens of KV pages into the engine."""
        _check(tokens)
        return tokens * self._cal.kv_import_s_per_token

    def kv_transfer_time(self, tokens: int) -> float:
        """Exporting, sending (serialize, parse, verify) ``tokens`` tokens of KV pages."""
        _check(tokens)
        return tokens * (self._cal.kv_export_s_per_token + self._cal.kv_wire_s_per_token)

    def reload_timeline(self) -> ReloadTimeline:
        """From the SIGKILL until the target serves: restart delay, process start, emulated
        read and host copy, then the engine load (a draft's load comes on top)."""
        return self._timeline

    def draft_load_time(self) -> float:
        """Emulated read and build of the draft (its engine included)."""
        return self._draft_load_s

    def draft_load_timeline(self) -> ReloadTimeline:
        """The draft's load as one phase (the build is not split from the read)."""
        return ReloadTimeline(self._draft_load_s, 0.0)

    def checkpoint_stream_bytes(self, tokens: int) -> int:
        """Bytes of KV pages streamed to a holder for ``tokens`` tokens."""
        _check(tokens)
        return tokens * self.kv_bytes_per_token

    def gpu_kv_capacity_tokens(self) -> int:
        """Tokens of KV cache one worker's engine holds."""
        return self._cal.kv_capacity_tokens

    def draft_cost_model(self) -> TableCostModel | None:
        """The draft's iteration times (its proposal steps)."""
        return self._table.draft_cost_model()


def cost_model(calibration: Calibration, setup: LiveSetup | None = None) -> CalibratedCostModel:
    """The cost model of live workers run as ``setup`` says, from ``calibration``."""
    return CalibratedCostModel(calibration, setup or LiveSetup())


def _check(tokens: int) -> None:
    if tokens < 0:
        raise ValueError(f"token count must be non-negative, got {tokens}")


def _step_grid(grid: Grid2D, overhead_s: float, floor_s: float) -> Grid2D:
    """Engine-step seconds as the loop runs them: plus its overhead, at least ``floor_s``."""
    values = tuple(tuple(max(floor_s, v + overhead_s) for v in row) for row in grid.values)
    return Grid2D(grid.xs, grid.ys, values)


def _profile(name: str, model: ModelConfig) -> ModelProfile:
    return ModelProfile(
        name=name,
        family="qwen3",
        num_layers=model.num_hidden_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_kv_heads=model.num_key_value_heads,
        head_dim=model.head_dim,
        intermediate_size=model.intermediate_size,
        vocab_size=model.vocab_size,
        tie_word_embeddings=model.tie_word_embeddings,
        dtype_bytes=DTYPE_BYTES[CPU_DTYPE],
        qk_norm=True,
    )


def _deployment(cal: Calibration, model: ModelProfile) -> Deployment:
    """A worker on "the CPU of this machine", every bandwidth from a measurement: memory
    copies for HBM, the page import for host->device, the page wire round trip for the
    network; the memory holds the weights and the engine's KV cache."""
    kv = cal.kv_bytes_per_token
    import_bw = kv / max(cal.kv_import_s_per_token, 1e-12)
    wire_bw = kv / max(cal.kv_export_s_per_token + cal.kv_wire_s_per_token, 1e-12)
    utilization, reserve = 0.9, 0.02
    memory = math.ceil(
        (model.weight_bytes + cal.kv_capacity_tokens * kv) / (utilization - reserve) + 1
    )
    hardware = HardwareProfile(
        name="cpu",
        gpu_memory_bytes=memory,
        peak_flops=cal.matmul_flops,
        hbm_bandwidth=cal.memory_bandwidth,
        host_to_gpu_bandwidth=import_bw,
        nvlink_bandwidth=cal.memory_bandwidth,
        network_bandwidth=wire_bw,
        ssd_bandwidth=cal.memory_bandwidth,
    )
    return Deployment(
        model, hardware, 1, gpu_memory_utilization=utilization, activation_reserve_fraction=reserve
    )


@dataclass(frozen=True, slots=True)
class Prediction:
    """One policy's simulated run of a live workload.

    Attributes:
        arrival_s: per request (workload order), its arrival after the start of the run.
        failure: the failure simulated (None: a failure-free run).
        recovery_s: from the failure until the failed workers serve again (NaN without one).
        result: the simulation itself (per request in workload order).
        cost_model: the calibrated cost model it ran on.
    """

    policy: str
    arrival_s: npt.NDArray[np.float64]
    ttft_s: npt.NDArray[np.float64]
    tpot_s: npt.NDArray[np.float64]
    failure: FailureInjection | None
    recovery_s: float
    result: SimulationResult
    cost_model: CalibratedCostModel

    def window(self) -> npt.NDArray[np.bool_]:
        """Per request: arrived while the failed workers were down or recovering."""
        if self.failure is None:
            return np.zeros(self.arrival_s.shape, np.bool_)
        end = self.failure.at_s + self.recovery_s
        return np.asarray(
            (self.arrival_s >= self.failure.at_s) & (self.arrival_s < end), dtype=np.bool_
        )

    def summary(self) -> dict[str, float]:
        """The figures of :meth:`PolicyRun.summary`, simulated (no request is ever lost)."""
        w = self.window()
        return {
            "requests": float(len(self.ttft_s)),
            "errors": 0.0,
            "ttft_mean_s": _mean(self.ttft_s),
            "ttft_p99_s": _p99(self.ttft_s),
            "tpot_mean_s": _mean(self.tpot_s),
            "tpot_p99_s": _p99(self.tpot_s),
            "window_requests": float(w.sum()),
            "window_ttft_mean_s": _mean(self.ttft_s[w]),
            "window_tpot_mean_s": _mean(self.tpot_s[w]),
            "recovery_s": self.recovery_s,
        }


def _mean(a: npt.NDArray[np.float64]) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _p99(a: npt.NDArray[np.float64]) -> float:
    a = a[np.isfinite(a)]
    return float(np.percentile(a, 99)) if a.size else math.nan


def workload_trace(requests: Sequence[LoadRequest]) -> tuple[Trace, npt.NDArray[np.intp], float]:
    """The simulator's trace of ``requests``: sorted by arrival and shifted so that the first
    arrives at 0. Returns it with the order (trace index -> workload index) and the shift."""
    if not requests:
        raise ValueError("a prediction needs at least one request")
    arrival = np.asarray([r.arrival_s for r in requests], dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    shift = float(arrival[order[0]])
    trace = Trace(
        arrival_s=arrival[order] - shift,
        prompt_tokens=np.asarray([len(requests[i].prompt_token_ids) for i in order], np.int64),
        output_tokens=np.asarray([requests[i].max_tokens for i in order], np.int64),
        source="live workload",
    )
    return trace, order, shift


def predict(
    requests: Sequence[LoadRequest],
    spec: ClusterSpec,
    failure: FailureInjection | None,
    calibration: Calibration,
    overhead: LiveOverhead | None = None,
) -> Prediction:
    """Simulate ``requests`` on the cluster of ``spec`` with ``failure`` (module docstring);
    with ``overhead``, each request reaches the simulated cluster its path overhead late and
    its TTFT includes it. When the overhead says what a request in flight adds to another's
    path, a first pass finds the requests that arrive while another is in flight (on the
    simulated run) and a second pass charges them."""
    if failure is not None and not all(0 <= w < spec.workers for w in failure.workers):
        raise ValueError(f"failure: no worker {list(failure.workers)} among {spec.workers}")
    if _needs_draft(spec.policy) and spec.draft_weights is None:
        raise ValueError(f"policy {spec.policy} recovers with a draft; the cluster has none")
    setup = LiveSetup(
        ssd_gbyte_s=spec.ssd_gbyte_s,
        min_step_s=spec.min_step_s,
        restart_after_s=0.0 if failure is None else failure.restart_after_s,
    )
    model = cost_model(calibration, setup)
    arrival = np.asarray([r.arrival_s for r in requests], dtype=np.float64)
    path = _path_overhead(requests, spec, failure, overhead)
    result, back = _simulate(requests, path, spec, failure, calibration, model)
    if overhead is not None and overhead.busy_excess_s > 0:
        busy = in_flight(arrival, arrival + path + result.e2e_s[back])
        path = _path_overhead(requests, spec, failure, overhead, busy)
        result, back = _simulate(requests, path, spec, failure, calibration, model)
    recovery = math.nan
    if failure is not None:
        recovery = model.reload_timeline().total_s
        if result.drafts_loaded:
            recovery += model.draft_load_time()
    return Prediction(
        policy=spec.policy,
        arrival_s=arrival,
        ttft_s=np.asarray(result.ttft_s[back] + path, dtype=np.float64),
        tpot_s=np.asarray(result.tpot_s[back], dtype=np.float64),
        failure=failure,
        recovery_s=recovery,
        result=result,
        cost_model=model,
    )


def in_flight(
    start_s: Sequence[float] | npt.NDArray[np.float64], end_s: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Per request, whether it starts while another one is in flight (started at or before
    it and not ended yet)."""
    start = np.asarray(start_s, dtype=np.float64)
    end = np.asarray(end_s, dtype=np.float64)
    if start.shape != end.shape:
        raise ValueError("start_s and end_s need one value per request")
    inside = (start[None, :] <= start[:, None]) & (start[:, None] < end[None, :])
    np.fill_diagonal(inside, False)
    return np.asarray(inside.any(axis=1), dtype=np.bool_)


def _simulate(
    requests: Sequence[LoadRequest],
    path: npt.NDArray[np.float64],
    spec: ClusterSpec,
    failure: FailureInjection | None,
    calibration: Calibration,
    model: CalibratedCostModel,
) -> tuple[SimulationResult, npt.NDArray[np.intp]]:
    """The simulated run, each request ``path`` late (in trace order), and the index that
    puts its per-request arrays back in workload order."""
    trace, order, shift = workload_trace(
        [replace(r, arrival_s=r.arrival_s + float(o)) for r, o in zip(requests, path, strict=True)]
    )
    options = ClusterOptions(
        workers_per_node=1,
        checkpoint_budget_bytes=float(spec.checkpoint_budget_bytes),
        speculation_depth=SPECULATION_DEPTH,
        acceptance_rate=min(max(calibration.acceptance_rate, 0.0), 0.99),
        # A live restart loads the draft first, then the target; its survivors never wait for
        # proposals (stale ones are dropped).
        assist="concurrent",
        draft_load="serial",
    )
    failures = [] if failure is None else [(max(0.0, failure.at_s - shift), failure.workers)]
    result = simulate(
        trace,
        model,
        spec.workers,
        max_batch_size=calibration.engine.max_num_seqs,
        prefill_chunk_tokens=calibration.engine.max_num_batched_tokens,
        failures=failures,
        policy=spec.policy,
        options=options,
    )
    back = np.empty_like(order)
    back[order] = np.arange(order.size)
    return result, back


def _path_overhead(
    requests: Sequence[LoadRequest],
    spec: ClusterSpec,
    failure: FailureInjection | None,
    overhead: LiveOverhead | None,
    busy: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float64]:
    """Per request, the live path's overhead (zeros without a model of it); the restarted
    workers start ``restart_after_s`` after the failure, staged as the policy restarts;
    ``busy`` marks the requests that arrive while another is in flight."""
    if overhead is None:
        return np.zeros(len(requests), dtype=np.float64)
    restarts = []
    if failure is not None:
        restarts = [(failure.at_s + failure.restart_after_s, spec.progressive)]
    flags = None if busy is None else [bool(b) for b in busy]
    return overhead.per_request([r.arrival_s for r in requests], restarts, flags)


def _needs_draft(policy: str) -> bool:
    return POLICIES[policy].progressive
