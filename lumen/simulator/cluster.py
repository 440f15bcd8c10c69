"""A failure-free cluster run: a trace's arrivals, the gateway and the workers on one kernel.

Arrivals come as one merged stream: the handler for request ``i`` dispatches it and schedules
request ``i + 1``, so the heap holds one arrival at a time. Workers add one event per iteration,
or one per run of pure-decode iterations (see :mod:`lumen.simulator.worker`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lumen.planner.costmodel import CostModel
from lumen.simulator.gateway import Gateway
from lumen.simulator.kernel import Simulation
from lumen.simulator.metrics import Distribution, summarize
from lumen.simulator.worker import ARRIVAL_PRIORITY, RequestTable, Worker
from lumen.workload.trace import Trace

__all__ = ["SimulationResult", "SimulationSummary", "simulate"]


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    """Headline figures of a run.

    Attributes:
        decode_tokens: output tokens produced (first tokens included).
        prefill_tokens: prompt tokens computed.
        makespan_s: simulated time until the last request finished.
        wall_s: host seconds the simulation took.
        events: kernel events processed.
    """

    requests: int
    ttft_s: Distribution
    tpot_s: Distribution
    e2e_s: Distribution
    decode_tokens: int
    prefill_tokens: int
    makespan_s: float
    wall_s: float
    events: int

    @property
    def decode_tokens_per_wall_s(self) -> float:
        return self.decode_tokens / self.wall_s if self.wall_s > 0 else math.inf


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Per-request outcomes, indexed by request id (the trace order), and their summary.

    ``tpot_s`` is ``(e2e - ttft) / (output_tokens - 1)``, NaN for single-token outputs (they
    are left out of the TPOT summary).
    """

    arrival_s: npt.NDArray[np.float64]
    ttft_s: npt.NDArray[np.float64]
    tpot_s: npt.NDArray[np.float64]
    e2e_s: npt.NDArray[np.float64]
    worker: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    worker_decode_tokens: npt.NDArray[np.int64]
    worker_kv_peak_tokens: npt.NDArray[np.int64]
    summary: SimulationSummary
    seed: int


def simulate(
    trace: Trace,
    cost_model: CostModel,
    workers: int,
    max_batch_size: int = 512,
    prefill_chunk_tokens: int = 1024,
    seed: int = 0,
    kv_capacity_tokens: int | None = None,
) -> SimulationResult:
    """Serve ``trace`` on ``workers`` identical workers without failures.

    Args:
        kv_capacity_tokens: per-worker GPU KV cache in tokens; the cost model's when None.
        seed: seeds the kernel's generator (the failure-free model draws nothing from it yet,
            so runs are identical whatever the seed; later policies will).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    sim = Simulation(seed=seed)
    arrivals: list[float] = trace.arrival_s.tolist()
    table = RequestTable.create(
        arrivals, trace.prompt_tokens.tolist(), trace.output_tokens.tolist()
    )
    pool = [
        Worker(i, sim, cost_model, table, max_batch_size, prefill_chunk_tokens, kv_capacity_tokens)
        for i in range(workers)
    ]
    gateway = Gateway(pool)
    n = len(arrivals)

    def on_arrival(s: Simulation, rid: int) -> None:
        gateway.dispatch(rid, s.now)
        if rid + 1 < n:
            s.at(arrivals[rid + 1], on_arrival, rid + 1, ARRIVAL_PRIORITY)

    sim.at(arrivals[0], on_arrival, 0, ARRIVAL_PRIORITY)
    sim.run()
    wall = time.perf_counter() - start

    arrival = np.asarray(arrivals, dtype=np.float64)
    first = np.asarray(table.first_token_s, dtype=np.float64)
    finish = np.asarray(table.finish_s, dtype=np.float64)
    output = np.asarray(table.output_tokens, dtype=np.int64)
    ttft = first - arrival
    e2e = finish - arrival
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(output > 1, (finish - first) / (output - 1), np.nan)
    summary = SimulationSummary(
        requests=n,
        ttft_s=summarize(ttft),
        tpot_s=summarize(tpot),
        e2e_s=summarize(e2e),
        decode_tokens=sum(w.decode_tokens for w in pool),
        prefill_tokens=sum(w.prefill_tokens for w in pool),
        makespan_s=float(np.nanmax(finish)) if n else 0.0,
        wall_s=wall,
        events=sim.events_processed,
    )
    return SimulationResult(
        arrival_s=arrival,
        ttft_s=ttft,
        tpot_s=np.asarray(tpot, dtype=np.float64),
        e2e_s=e2e,
        worker=np.asarray(table.worker, dtype=np.int64),
        output_tokens=output,
        worker_decode_tokens=np.asarray([w.decode_tokens for w in pool], dtype=np.int64),
        worker_kv_peak_tokens=np.asarray([w.kv_peak_tokens for w in pool], dtype=np.int64),
        summary=summary,
        seed=seed,
    )
