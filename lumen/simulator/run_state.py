"""The state and event handlers of one cluster run (:class:`ClusterRun`).

:func:`lumen.simulator.cluster.simulate` builds a :class:`ClusterRun` and runs it; what the run
models is described there. The class holds what the run's handlers share: the workers
(``pool``), the request table, the checkpoint placer, the gateway, the workers that are down
with their pending timeline events (``back``) and the requests waiting for them
(``waiting_for``), the drafts still loading (``drafts_due``), the draft pairings
(``assisting``) and the counters the result reports.

Construction builds the workers, the placer and the gateway and schedules nothing;
:meth:`ClusterRun.start` schedules the first arrival and the failures, :meth:`ClusterRun.run`
does that, runs the kernel and returns the :class:`SimulationResult`. Each handler can also be
called on its own (at the simulation's current time), which is how the tests drive them.

The handlers schedule their events by hand (``Simulation.at``) rather than returning
:class:`lumen.simulator.kernel.FollowUp` events: equal times break by scheduling order, and a
follow-up is scheduled only after its handler returns, so it would come after the worker
events the handler scheduled meanwhile (the reloads of a failure come before the recovery's
enqueues, the next arrival after its worker's start); reload events must be cancellable when
the worker fails again; and arrivals are at absolute trace times, which ``now + (t - now)``
does not always reproduce in floating point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from lumen.planner.builders import pairing_problem
from lumen.planner.costmodel import CostModel, progressive_timeline
from lumen.planner.policies import check_policy, pair_survivors
from lumen.planner.problems import expected_tokens_per_step
from lumen.planner.result import SolveSettings
from lumen.simulator.checkpoint import CheckpointPlacer, valid_prefixes
from lumen.simulator.gateway import SimGateway
from lumen.simulator.kernel import EventHandle, Simulation
from lumen.simulator.metrics import summarize
from lumen.simulator.recovery import Interrupted, plan_recovery, snapshot
from lumen.simulator.results import ClusterOptions, SimulationResult, SimulationSummary
from lumen.simulator.worker import ARRIVAL_PRIORITY, Assist, RequestTable, SimWorker
from lumen.workload.trace import Trace

__all__ = ["FAILURE_PRIORITY", "ClusterRun"]

# Failures at a given time run before the arrivals and iteration ends of that time: a request
# arriving as its worker fails goes elsewhere, an iteration ending just then is lost.
FAILURE_PRIORITY = -1


def check_failures(
    failures: Sequence[tuple[float, Sequence[int]]], workers: int
) -> list[tuple[float, list[int]]]:
    """``failures`` checked against ``workers``, each with its sorted, distinct indices."""
    events: list[tuple[float, list[int]]] = []
    for at, ids in failures:
        if not (math.isfinite(at) and at >= 0.0):
            raise ValueError(f"failure time must be finite and >= 0, got {at}")
        bad = [i for i in ids if not 0 <= i < workers]
        if bad:
            raise ValueError(f"failure at {at}: no worker {bad} among {workers}")
        events.append((float(at), sorted(set(ids))))
    return events


class ClusterRun:
    """One run of :func:`lumen.simulator.cluster.simulate` (same arguments), its state and its
    event handlers."""

    def __init__(
        self,
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
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.spec = check_policy(policy)
        self.policy = policy
        self.opts = opts = options or ClusterOptions()
        self.failure_events = check_failures(failures, workers)
        self._started = time.perf_counter()  # wall time counts the construction too
        self._ran = False
        self.seed = seed
        self.workers = workers
        self.cost_model = cost_model
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.sim = Simulation(seed=seed)
        self.arrivals: list[float] = trace.arrival_s.tolist()
        self.table = RequestTable.create(
            self.arrivals, trace.prompt_tokens.tolist(), trace.output_tokens.tolist()
        )
        self.n = len(self.arrivals)
        self.kv_bytes = cost_model.kv_bytes_per_token
        self.settings = SolveSettings(time_limit_s=opts.planner_time_limit_s, threads=1)
        self.link_bytes_s = (
            cost_model.deployment.effective_network_bandwidth
            if opts.link_bytes_s is None
            else opts.link_bytes_s
        )
        self.placer = self._make_placer()
        self.pool = self._make_pool(max_batch_size, prefill_chunk_tokens, kv_capacity_tokens)
        self.gateway = SimGateway(self.pool, opts.gateway)
        self.timeline = cost_model.reload_timeline()
        draft = cost_model.draft_cost_model() if self.spec.progressive else None
        # A progressive reload: drafts ready, target in host memory, serving again.
        self.draft_s = self.in_host_s = 0.0
        self.reload_s = self.timeline.total_s
        self.assist: Assist | None = None
        if draft is not None:
            plan = progressive_timeline(cost_model, parallel=opts.parallel_draft_load)
            self.draft_s, self.in_host_s = plan.draft_ready_s, plan.target_in_host_s
            self.reload_s = plan.serving_s
            self.assist = Assist(
                opts.speculation_depth,
                expected_tokens_per_step(opts.acceptance_rate, opts.speculation_depth),
                draft,
                opts.acceptance_rate,
                concurrent=opts.concurrent_drafts,
                alternate=opts.assisted_batches == "alternate",
            )
        self.interrupted = [False] * self.n
        self.recomputed = 0
        self.restored_tokens = 0
        self.modes: dict[str, int] = {}
        # Per worker that is down: its timeline events and the requests that wait for it
        # (request id, restored tokens, restore delay).
        self.back: dict[int, list[EventHandle]] = {}
        # Per worker whose draft is loading: the drafts-ready event it shares with the workers
        # that failed with it, and that event's list of them (a worker that fails again leaves
        # the list; the event is cancelled only once the list is empty).
        self.drafts_due: dict[int, tuple[EventHandle, list[int]]] = {}
        self.waiting_for: dict[int, list[tuple[int, int, float]]] = {}
        self.assisting: dict[int, int] = {}  # recovering worker -> the survivor it drafts for
        self.drafts_loaded = 0

    # -- construction ----------------------------------------------------------------------

    def _make_placer(self) -> CheckpointPlacer | None:
        """The checkpoint placer of a checkpointing policy with a budget on several workers."""
        opts, rule = self.opts, self.spec.placement
        if rule is None or opts.checkpoint_budget_bytes <= 0 or self.workers <= 1:
            return None
        return CheckpointPlacer(
            rule,
            [i // opts.workers_per_node for i in range(self.workers)],
            opts.checkpoint_budget_bytes,
            self.cost_model,
            alpha=opts.alpha,
            require_other_node=opts.holder_outside_node,
        )

    def _make_pool(
        self, max_batch_size: int, prefill_chunk_tokens: int, kv_capacity_tokens: int | None
    ) -> list[SimWorker]:
        """The workers; with a placer they stream checkpoints and call its hooks."""
        args = (self.sim, self.cost_model, self.table, max_batch_size, prefill_chunk_tokens)
        if self.placer is None:
            return [SimWorker(i, *args, kv_capacity_tokens) for i in range(self.workers)]
        return [
            SimWorker(
                i,
                *args,
                kv_capacity_tokens,
                link_bytes_s=self.link_bytes_s,
                on_admit=self._on_admit,
                on_end=self._on_end,
            )
            for i in range(self.workers)
        ]

    def _on_admit(self, worker: SimWorker, rid: int) -> bool:
        assert self.placer is not None
        return self.placer.place(worker, rid, self.gateway.wait_estimates) >= 0

    def _on_end(self, worker: SimWorker, rid: int) -> None:
        assert self.placer is not None
        self.placer.release(rid)

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Schedule the first arrival and the failures (once)."""
        if self._ran:
            raise RuntimeError("this cluster run was already started")
        self._ran = True
        if self.n:
            self.sim.at(self.arrivals[0], self.on_arrival, 0, ARRIVAL_PRIORITY)
        for at, ids in self.failure_events:
            if ids:
                self.sim.at(at, self.on_failure, ids, FAILURE_PRIORITY)

    def run(self) -> SimulationResult:
        """Start, run every event and return the result."""
        self.start()
        self.sim.run()
        return self.build_result(time.perf_counter() - self._started)

    # -- handlers --------------------------------------------------------------------------

    def on_arrival(self, s: Simulation, rid: int) -> None:
        """Request ``rid`` arrives: dispatch it and schedule the next arrival."""
        self.gateway.dispatch(rid, s.now)
        if rid + 1 < self.n:
            s.at(self.arrivals[rid + 1], self.on_arrival, rid + 1, ARRIVAL_PRIORITY)

    def on_failure(self, s: Simulation, failed: list[int]) -> None:
        """``failed`` workers fail together now: stop them, schedule their reloads (and drafts)
        and route their interrupted requests by the policy's recovery plan."""
        now = s.now
        lost, kv_lost = self._stop_workers(s, failed)
        drafting = self.assist is not None and (
            not self.spec.draft_if_worth or self.draft_pays(failed, now)
        )
        reload_now = self.reload_s if drafting else self.timeline.total_s
        self._schedule_reloads(s, failed, reload_now, drafting)
        self._route(failed, lost, kv_lost, now, reload_now)

    def _stop_workers(
        self, s: Simulation, failed: list[int]
    ) -> tuple[list[Interrupted], dict[int, int]]:
        """Fail each of ``failed``; return the interrupted requests and the KV each lost."""
        now = s.now
        pool, table, placer = self.pool, self.table, self.placer
        lost: list[Interrupted] = []
        kv_lost: dict[int, int] = {}
        # Checkpoints survive only on holders that are serving and not failing now.
        dead = set(failed) | {w.index for w in pool if w.down}
        for w in failed:
            for drafter, survivor in list(self.assisting.items()):
                if survivor == w:  # an assisted survivor failed: its draft has nobody to help
                    del self.assisting[drafter]
            if w in self.back:  # failed again while reloading: restart the reload
                for handle in self.back.pop(w):
                    s.cancel(handle)
                self._leave_drafts(s, w)
                self.stop_assist(w)
                for rid, _, _ in self.waiting_for.pop(w, []):
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
                    if 0 <= home < self.workers and not pool[home].down:
                        pool[home].drop_checkpoint(rid)
                    placer.release(rid)
        if placer is not None:
            for r in lost:
                placer.release(r.rid)
        return lost, kv_lost

    def _schedule_reloads(
        self, s: Simulation, failed: list[int], reload_s: float, drafting: bool
    ) -> None:
        """Schedule each failed worker's reload after ``reload_s`` and, when ``drafting``, its
        switch once the target is in host memory and the pairing once the drafts are loaded."""
        now = s.now
        for w in failed:
            handles = [s.at(now + reload_s, self.on_reloaded, w, ARRIVAL_PRIORITY)]
            if drafting:
                in_host = now + self.in_host_s
                handles.append(s.at(in_host, self.on_in_host, w))
            self.back[w] = handles
        if drafting:
            group = list(failed)
            drafts_ready = s.at(now + self.draft_s, self.on_drafts_ready, group)
            for w in failed:
                self.drafts_due[w] = (drafts_ready, group)
            self.drafts_loaded += len(failed)

    def _leave_drafts(self, s: Simulation, w: int) -> None:
        """Worker ``w`` failed again: take it out of its pending drafts-ready event, which
        stays scheduled for the workers that failed with it (cancelled once none is left)."""
        due = self.drafts_due.pop(w, None)
        if due is None:
            return
        handle, group = due
        group.remove(w)
        if not group:
            s.cancel(handle)

    def _route(
        self,
        failed: list[int],
        lost: list[Interrupted],
        kv_lost: dict[int, int],
        now: float,
        reload_s: float,
    ) -> None:
        """Plan the recovery of ``lost`` and send each request where its route says."""
        emitted: dict[int, int] = {}
        for r in lost:
            self.interrupted[r.rid] = True
            emitted[r.rid] = r.generated
        routes = plan_recovery(
            self.pool,
            self.table,
            self.cost_model,
            failed,
            lost,
            now,
            self.spec.recovery,
            reload_s,
            self.prefill_chunk_tokens,
            self.opts.workers_per_node,
            self.settings,
        )
        home_of = {r.rid: r.home for r in lost}
        for route in routes:
            rid = route.request_id
            self.table.resume(rid, emitted[rid], route.restored)
            self.recomputed += max(0, kv_lost.get(rid, 0) - route.restored)
            self.restored_tokens += route.restored
            self.modes[route.mode] = self.modes.get(route.mode, 0) + 1
            if route.worker is None:  # no plan: wait for its own worker and recompute there
                self.waiting_for.setdefault(home_of[rid], []).append((rid, 0, 0.0))
            elif route.wait:
                entry = (rid, route.restored, route.delay_s)
                self.waiting_for.setdefault(route.worker, []).append(entry)
            else:
                self.pool[route.worker].enqueue(rid, route.delay_s)

    def draft_pays(self, failed: list[int], now: float) -> bool:
        """Whether the drafts of ``failed`` are expected to save more decode time on the
        survivors than their load delays the reloads (lumen-optimal's decision)."""
        opts = self.opts
        state = snapshot(
            self.pool, self.table, self.cost_model, failed, [], now, opts.workers_per_node
        )
        problem = pairing_problem(
            state,
            self.cost_model,
            failed,
            opts.acceptance_rate,
            opts.speculation_depth,
            concurrent=opts.concurrent_drafts,
            parallel_load=opts.parallel_draft_load,
        )
        if problem.saved_s.size == 0:
            return False
        best = np.where(np.isfinite(problem.saved_s), problem.saved_s, 0.0).max(axis=1)
        return float(best.sum()) > (self.reload_s - self.timeline.total_s) * len(failed)

    def on_drafts_ready(self, s: Simulation, ready: list[int]) -> None:
        """The drafts of ``ready`` are loaded: pair those still recovering with survivors."""
        assert self.assist is not None and self.spec.pairing is not None
        for w in ready:
            self.drafts_due.pop(w, None)
        rec = [w for w in ready if w in self.back and w not in self.assisting]
        if not rec:
            return
        opts = self.opts
        state = snapshot(
            self.pool, self.table, self.cost_model, [], [], s.now, opts.workers_per_node
        )
        taken = set(self.assisting.values())
        pairs = pair_survivors(
            state,
            self.cost_model,
            rec,
            taken,
            opts.acceptance_rate,
            opts.speculation_depth,
            self.spec.pairing,
            self.settings,
            concurrent=opts.concurrent_drafts,
            parallel_load=opts.parallel_draft_load,
        )
        for w, survivor in pairs:
            self.assisting[w] = survivor
            self.pool[survivor].set_assist(self.assist)

    def on_in_host(self, s: Simulation, w: int) -> None:
        """Worker ``w``'s target weights are in host memory: it stops drafting."""
        self.stop_assist(w)

    def on_reloaded(self, s: Simulation, w: int) -> None:
        """Worker ``w`` is back: it serves again, takes the requests that waited for it, and
        the gateway dispatches what it held."""
        del self.back[w]
        self.stop_assist(w)
        worker = self.pool[w]
        worker.recover()
        if self.placer is not None:
            self.placer.set_down(w, False)
        for rid, _, delay in self.waiting_for.pop(w, []):
            worker.enqueue(rid, delay)
        self.gateway.release(s.now)

    def stop_assist(self, w: int) -> None:
        """Recovering worker ``w`` stops drafting for its survivor (if it was)."""
        survivor = self.assisting.pop(w, None)
        if survivor is not None and not self.pool[survivor].down:
            self.pool[survivor].set_assist(None)

    # -- result ----------------------------------------------------------------------------

    def build_result(self, wall_s: float) -> SimulationResult:
        """Per-request outcomes and the summary of the run so far (``wall_s``: host time)."""
        pool, table, placer, n = self.pool, self.table, self.placer, self.n
        arrival = np.asarray(self.arrivals, dtype=np.float64)
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
            wall_s=wall_s,
            events=self.sim.events_processed,
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
            interrupted=np.asarray(self.interrupted, dtype=np.bool_),
            interrupted_requests=sum(self.interrupted),
            recomputed_tokens=self.recomputed,
            summary=summary,
            seed=self.seed,
            policy=self.policy,
            restored_tokens=self.restored_tokens,
            restored_bytes=self.restored_tokens * self.kv_bytes,
            checkpoint_bytes_sent=round(sum(w.stream.sent_bytes for w in pool)),
            checkpoint_bytes_dropped=round(sum(w.stream.dropped_bytes for w in pool)),
            unplaced_checkpoints=placer.unplaced if placer is not None else 0,
            peak_checkpoint_reserved_bytes=(
                round(max(placer.peak_reserved_bytes)) if placer is not None else 0
            ),
            verify_steps=sum(w.verify_steps for w in pool),
            drafts_loaded=self.drafts_loaded,
            recovery_modes=dict(sorted(self.modes.items())),
        )
