"""A cluster run: a trace's arrivals, the gateway and the workers on one kernel, with failures.

Arrivals come as one merged stream: the handler for request ``i`` dispatches it and schedules
request ``i + 1``, so the heap holds one arrival at a time. Workers add one event per iteration,
or one per run of pure-decode iterations (see :mod:`lumen.simulator.worker`).

The failure policy (:data:`lumen.planner.policies.POLICIES`) composes planner functions:

- checkpointing policies place a holder for every admitted request
  (:mod:`lumen.simulator.checkpoint`) and stream its KV pages there;
- at a failure (``failures``: time and worker indices) each failed worker stops (its iteration
  in flight is lost, its KV freed, the checkpoints it held for others are gone), every
  unfinished request on it is interrupted with the valid prefix its holder has, and the
  recovery problem is posed and solved by the policy's method
  (:mod:`lumen.simulator.recovery`); routes restore, transfer, recompute or wait;
- the failed worker reloads for the cost model's ``reload_timeline().total_s``; with
  progressive recovery it loads a draft first and assists a survivor while the target weights
  stream in (:mod:`lumen.simulator.progressive`); the gateway sends it nothing meanwhile.

A request whose first token was out keeps its original TTFT. A worker that fails again while
reloading restarts its reload, and the requests waiting for it are interrupted again. Failure
events run before arrivals and iteration ends at the same time.

Planner solve times are not charged to simulated time (the recovery plan takes effect at the
failure instant).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from lumen.planner.builders import pairing_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.policies import check_policy, pair_survivors
from lumen.planner.problems import expected_tokens_per_step
from lumen.planner.result import SolveSettings
from lumen.simulator.checkpoint import CheckpointPlacer, valid_prefixes
from lumen.simulator.gateway import Gateway
from lumen.simulator.kernel import EventHandle, Simulation
from lumen.simulator.metrics import summarize
from lumen.simulator.recovery import Interrupted, plan_recovery, snapshot
from lumen.simulator.results import ClusterOptions, SimulationResult, SimulationSummary
from lumen.simulator.worker import ARRIVAL_PRIORITY, Assist, RequestTable, Worker
from lumen.workload.trace import Trace

__all__ = ["ClusterOptions", "SimulationResult", "SimulationSummary", "simulate"]

# Failures at a given time run before the arrivals and iteration ends of that time: a request
# arriving as its worker fails goes elsewhere, an iteration ending just then is lost.
FAILURE_PRIORITY = -1


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
    options: ClusterOptions | None = None,
) -> SimulationResult:
    """Serve ``trace`` on ``workers`` identical workers, failing them as ``failures`` say.

    Args:
        kv_capacity_tokens: per-worker GPU KV cache in tokens; the cost model's when None.
        seed: recorded with the result; the run itself is deterministic (speculation is
            modelled by its expectation), so runs differ only through their inputs.
        failures: ``(time, worker indices)`` events; the workers fail together at that time.
        policy: failure handling, a key of :data:`lumen.planner.policies.POLICIES`.
        options: cluster and policy parameters (defaults: one worker per node, no budget).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    spec = check_policy(policy)
    opts = options or ClusterOptions()
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
    n = len(arrivals)
    kv_bytes = cost_model.kv_bytes_per_token
    settings = SolveSettings(time_limit_s=opts.planner_time_limit_s, threads=1)
    link = (
        cost_model.deployment.effective_network_bandwidth
        if opts.link_bytes_s is None
        else opts.link_bytes_s
    )
    nodes = [i // opts.workers_per_node for i in range(workers)]
    placer: CheckpointPlacer | None = None
    pool: list[Worker] = []
    if spec.placement is not None and opts.checkpoint_budget_bytes > 0 and workers > 1:
        placer = CheckpointPlacer(
            spec.placement,
            nodes,
            opts.checkpoint_budget_bytes,
            cost_model,
            alpha=opts.alpha,
            require_other_node=opts.holder_outside_node,
        )
        live_placer = placer

        def on_admit(worker: Worker, rid: int) -> bool:
            return live_placer.place(worker, rid, pool) >= 0

        def on_end(worker: Worker, rid: int) -> None:
            live_placer.release(rid)

        pool = [
            Worker(
                i,
                sim,
                cost_model,
                table,
                max_batch_size,
                prefill_chunk_tokens,
                kv_capacity_tokens,
                link_bytes_s=link,
                on_admit=on_admit,
                on_end=on_end,
            )
            for i in range(workers)
        ]
    else:
        pool = [
            Worker(
                i, sim, cost_model, table, max_batch_size, prefill_chunk_tokens, kv_capacity_tokens
            )
            for i in range(workers)
        ]
    gateway = Gateway(pool)
    timeline = cost_model.reload_timeline()
    draft = cost_model.draft_cost_model() if spec.progressive else None
    draft_s = cost_model.draft_load_time() if draft is not None else 0.0
    reload_s = draft_s + timeline.total_s
    assist = (
        Assist(
            opts.speculation_depth,
            expected_tokens_per_step(opts.acceptance_rate, opts.speculation_depth),
            draft,
        )
        if draft is not None
        else None
    )
    interrupted = [False] * n
    recomputed = 0
    restored_tokens = 0
    modes: dict[str, int] = {}
    # Per worker that is down: its timeline events and the requests that wait for it
    # (request id, restored tokens, restore delay).
    back: dict[int, list[EventHandle]] = {}
    waiting_for: dict[int, list[tuple[int, int, float]]] = {}
    assisting: dict[int, int] = {}  # recovering worker -> the survivor it drafts for
    drafts_loaded = 0

    def on_arrival(s: Simulation, rid: int) -> None:
        gateway.dispatch(rid, s.now)
        if rid + 1 < n:
            s.at(arrivals[rid + 1], on_arrival, rid + 1, ARRIVAL_PRIORITY)

    def stop_assist(w: int) -> None:
        survivor = assisting.pop(w, None)
        if survivor is not None and not pool[survivor].down:
            pool[survivor].set_assist(None)

    def on_failure(s: Simulation, failed: list[int]) -> None:
        nonlocal recomputed, restored_tokens, drafts_loaded
        now = s.now
        failed_set = set(failed)
        lost: list[Interrupted] = []
        kv_lost: dict[int, int] = {}
        # Checkpoints survive only on holders that are serving and not failing now.
        dead = failed_set | {w.index for w in pool if w.down}
        for w in failed:
            for drafter, survivor in list(assisting.items()):
                if survivor == w:  # an assisted survivor failed: its draft has nobody to help
                    del assisting[drafter]
            if w in back:  # failed again while reloading: restart the reload
                for handle in back.pop(w):
                    s.cancel(handle)
                stop_assist(w)
                for rid, _, _ in waiting_for.pop(w, []):
                    lost.append(Interrupted(rid, w, table.generated(rid)))
                    kv_lost[rid] = 0
            prefixes = valid_prefixes(pool[w], now) if placer is not None else {}
            for rid, generated, kv in pool[w].fail(now):
                holder = table.holder[rid]
                prefix = prefixes.get(rid, 0) if holder >= 0 and holder not in dead else 0
                lost.append(Interrupted(rid, w, generated, holder if prefix else -1, prefix))
                kv_lost[rid] = kv
            if placer is not None:
                placer.set_down(w, True)
                for rid in list(placer.held_by[w]):
                    home = table.worker[rid]
                    if 0 <= home < workers and not pool[home].down:
                        pool[home].drop_checkpoint(rid)
                    placer.release(rid)
        if placer is not None:
            for r in lost:
                placer.release(r.rid)
        drafting = assist is not None and (not spec.draft_if_worth or draft_pays(failed, now))
        reload_now = reload_s if drafting else timeline.total_s
        for w in failed:
            handles = [s.at(now + reload_now, on_reloaded, w, ARRIVAL_PRIORITY)]
            if drafting:
                handles.append(s.at(now + draft_s + timeline.ssd_to_host_s, on_in_host, w))
            back[w] = handles
        if drafting:
            drafts_ready = s.at(now + draft_s, on_drafts_ready, list(failed))
            for w in failed:
                back[w].append(drafts_ready)
            drafts_loaded += len(failed)
        emitted: dict[int, int] = {}
        for r in lost:
            interrupted[r.rid] = True
            emitted[r.rid] = r.generated
        routes = plan_recovery(
            pool,
            table,
            cost_model,
            failed,
            lost,
            now,
            spec.recovery,
            reload_now,
            prefill_chunk_tokens,
            opts.workers_per_node,
            settings,
        )
        home_of = {r.rid: r.home for r in lost}
        for route in routes:
            rid = route.request_id
            table.resume(rid, emitted[rid], route.restored)
            recomputed += max(0, kv_lost.get(rid, 0) - route.restored)
            restored_tokens += route.restored
            modes[route.mode] = modes.get(route.mode, 0) + 1
            if route.worker is None:  # no plan: wait for its own worker and recompute there
                waiting_for.setdefault(home_of[rid], []).append((rid, 0, 0.0))
            elif route.wait:
                waiting_for.setdefault(route.worker, []).append(
                    (rid, route.restored, route.delay_s)
                )
            else:
                pool[route.worker].enqueue(rid, route.delay_s)

    def draft_pays(failed: list[int], now: float) -> bool:
        """Whether the drafts of ``failed`` are expected to save more decode time on the
        survivors than their load delays the reloads (lumen-optimal's decision)."""
        state = snapshot(pool, table, cost_model, failed, [], now, opts.workers_per_node)
        problem = pairing_problem(
            state, cost_model, failed, opts.acceptance_rate, opts.speculation_depth
        )
        if problem.saved_s.size == 0:
            return False
        best = np.where(np.isfinite(problem.saved_s), problem.saved_s, 0.0).max(axis=1)
        return float(best.sum()) > draft_s * len(failed)

    def on_drafts_ready(s: Simulation, ready: list[int]) -> None:
        assert assist is not None and spec.pairing is not None
        rec = [w for w in ready if w in back and w not in assisting]
        if not rec:
            return
        state = snapshot(pool, table, cost_model, [], [], s.now, opts.workers_per_node)
        taken = set(assisting.values())
        pairs = pair_survivors(
            state,
            cost_model,
            rec,
            taken,
            opts.acceptance_rate,
            opts.speculation_depth,
            spec.pairing,
            settings,
        )
        for w, survivor in pairs:
            assisting[w] = survivor
            pool[survivor].set_assist(assist)

    def on_in_host(s: Simulation, w: int) -> None:
        stop_assist(w)

    def on_reloaded(s: Simulation, w: int) -> None:
        del back[w]
        stop_assist(w)
        worker = pool[w]
        worker.recover()
        if placer is not None:
            placer.set_down(w, False)
        for rid, _, delay in waiting_for.pop(w, []):
            worker.enqueue(rid, delay)
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
    worker_decode = [round(w.decode_tokens) for w in pool]
    summary = SimulationSummary(
        requests=n,
        ttft_s=summarize(ttft),
        tpot_s=summarize(tpot),
        e2e_s=summarize(e2e),
        decode_tokens=sum(worker_decode),
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
        worker_decode_tokens=np.asarray(worker_decode, dtype=np.int64),
        worker_kv_peak_tokens=np.asarray([w.kv_peak_tokens for w in pool], dtype=np.int64),
        interrupted=np.asarray(interrupted, dtype=np.bool_),
        interrupted_requests=sum(interrupted),
        recomputed_tokens=recomputed,
        summary=summary,
        seed=seed,
        policy=policy,
        restored_tokens=restored_tokens,
        restored_bytes=restored_tokens * kv_bytes,
        checkpoint_bytes_sent=round(sum(w.stream.sent_bytes for w in pool)),
        checkpoint_bytes_dropped=round(sum(w.stream.dropped_bytes for w in pool)),
        unplaced_checkpoints=placer.unplaced if placer is not None else 0,
        peak_checkpoint_reserved_bytes=(
            round(max(placer.peak_reserved_bytes)) if placer is not None else 0
        ),
        verify_steps=sum(w.verify_steps for w in pool),
        drafts_loaded=drafts_loaded,
        recovery_modes=dict(sorted(modes.items())),
    )
