"""A cluster run: a trace's arrivals, the gateway and the workers on one kernel, with failures.

Arrivals come as one merged stream: the handler for request ``i`` dispatches it and schedules
request ``i + 1``, so the heap holds one arrival at a time. Workers add one event per iteration,
or one per run of pure-decode iterations (see :mod:`lumen.simulator.worker`).

Failures (``failures``: time and worker indices) follow the failure policy; the only one so far
is Stop-and-Restart. At a failure each failed worker stops (its iteration in flight is lost,
its KV freed), every unfinished request on it is interrupted, and it reloads for the cost
model's ``reload_timeline().total_s`` before serving again, empty; the gateway sends it nothing
meanwhile. The interrupted requests are routed by the planner (:mod:`lumen.simulator.recovery`)
and re-prefill their whole context (prompt plus output so far) before decoding the rest; a
request whose first token was out keeps its original TTFT. A worker that fails again while
reloading restarts its reload, and the requests waiting for it are interrupted again.
Failure events run before arrivals and iteration ends at the same time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lumen.planner.costmodel import CostModel
from lumen.simulator.gateway import Gateway
from lumen.simulator.kernel import EventHandle, Simulation
from lumen.simulator.metrics import Distribution, summarize
from lumen.simulator.recovery import Interrupted, check_policy, plan_recovery
from lumen.simulator.worker import ARRIVAL_PRIORITY, RequestTable, Worker
from lumen.workload.trace import Trace

__all__ = ["SimulationResult", "SimulationSummary", "simulate"]

# Failures at a given time run before the arrivals and iteration ends of that time: a request
# arriving as its worker fails goes elsewhere, an iteration ending just then is lost.
FAILURE_PRIORITY = -1


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

    Attributes:
        interrupted: per request, whether a failure interrupted it at least once.
        interrupted_requests: how many requests were interrupted (at least once).
        recomputed_tokens: KV tokens lost to failures and computed again (the prompt chunks a
            prefilling request had done; prompt plus output but the newest token for a
            decoding one).
    """

    arrival_s: npt.NDArray[np.float64]
    ttft_s: npt.NDArray[np.float64]
    tpot_s: npt.NDArray[np.float64]
    e2e_s: npt.NDArray[np.float64]
    worker: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    worker_decode_tokens: npt.NDArray[np.int64]
    worker_kv_peak_tokens: npt.NDArray[np.int64]
    interrupted: npt.NDArray[np.bool_]
    interrupted_requests: int
    recomputed_tokens: int
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
    failures: Sequence[tuple[float, Sequence[int]]] = (),
    policy: str = "stop-and-restart",
) -> SimulationResult:
    """Serve ``trace`` on ``workers`` identical workers, failing them as ``failures`` say.

    Args:
        kv_capacity_tokens: per-worker GPU KV cache in tokens; the cost model's when None.
        seed: seeds the kernel's generator (nothing draws from it yet, so runs are identical
            whatever the seed; later policies will).
        failures: ``(time, worker indices)`` events; the workers fail together at that time.
        policy: failure handling; only ``"stop-and-restart"`` so far.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_policy(policy)
    events: list[tuple[float, list[int]]] = []
    for at, ids in failures:
        if not (math.isfinite(at) and at >= 0.0):
            raise ValueError(f"failure time must be finite and >= 0, got {at}")
        bad = [i for i in ids if not 0 <= i < workers]
        if bad:
            raise ValueError(f"failure at {at}: no worker {bad} among {workers}")
        events.append((float(at), sorted(set(ids))))
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
    reload_s = cost_model.reload_timeline().total_s
    interrupted = [False] * n
    recomputed = 0
    # Per worker that is down: its reload's end event and the requests that wait for it.
    back: dict[int, EventHandle] = {}
    waiting_for: dict[int, list[int]] = {}

    def on_arrival(s: Simulation, rid: int) -> None:
        gateway.dispatch(rid, s.now)
        if rid + 1 < n:
            s.at(arrivals[rid + 1], on_arrival, rid + 1, ARRIVAL_PRIORITY)

    def on_failure(s: Simulation, failed: list[int]) -> None:
        nonlocal recomputed
        now = s.now
        lost: list[Interrupted] = []
        for w in failed:
            if w in back:  # failed again while reloading: restart the reload
                s.cancel(back.pop(w))
                lost.extend(
                    Interrupted(rid, w, table.generated(rid)) for rid in waiting_for.pop(w, [])
                )
            for rid, generated, kv_lost in pool[w].fail(now):
                lost.append(Interrupted(rid, w, generated))
                recomputed += kv_lost
            back[w] = s.at(now + reload_s, on_reloaded, w, ARRIVAL_PRIORITY)
        for r in lost:
            interrupted[r.rid] = True
            table.resume(r.rid, r.generated)
        routes = plan_recovery(
            pool, table, cost_model, failed, lost, now, policy, reload_s, prefill_chunk_tokens
        )
        for route in routes:
            if route.wait:
                waiting_for.setdefault(route.worker, []).append(route.rid)
            else:
                pool[route.worker].enqueue(route.rid)

    def on_reloaded(s: Simulation, w: int) -> None:
        del back[w]
        worker = pool[w]
        worker.recover()
        for rid in waiting_for.pop(w, []):
            worker.enqueue(rid)
        gateway.release(s.now)

    if n:
        sim.at(arrivals[0], on_arrival, 0, ARRIVAL_PRIORITY)
    for at, ids in events:
        if ids:
            sim.at(at, on_failure, ids, FAILURE_PRIORITY)
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
        interrupted=np.asarray(interrupted, dtype=np.bool_),
        interrupted_requests=sum(interrupted),
        recomputed_tokens=recomputed,
        summary=summary,
        seed=seed,
    )
