"""The gateway core: requests in, tokens out, failures detected and recovered in between.

A :class:`Gateway` owns the per-request token histories, a :class:`WorkerBoard` (statuses,
who runs what), a :class:`HealthMonitor`, a :class:`HolderPlacer`, a :class:`RecoveryPlanner`
and, for policies with progressive recovery, a :class:`PairingDriver` that pairs recovering
workers with survivors. Each request waits in the pending list until the dispatch thread
puts it on the least-loaded serving worker (or on the worker its recovery plan names); one
thread per attempt reads the worker's token stream into the request's history and its client's
sink. When a worker fails (no heartbeat, a hang, or a broken stream that a status probe
confirms), every request on it is frozen (its attempt counter bumped, so late tokens of the
old stream are dropped), the recovery plan is made, and each request is put back in the pending
list with its destination, its checkpoint source and its history: the worker continues after
the last token the client got, so the client's stream has no gap and no repeat.

The gateway talks to workers only through :class:`~lumen.executor.worker.api.WorkerAPI`. It is
the :class:`~lumen.executor.gateway.failover.FailoverHost` of its :class:`Failover`.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence

from lumen.executor.gateway.config import GatewayConfig, Pending
from lumen.executor.gateway.dispatch import HolderPlacer, WorkerBoard
from lumen.executor.gateway.failover import Failover
from lumen.executor.gateway.health import HealthMonitor
from lumen.executor.gateway.history import HistoryGapError, StreamItem, TrackedRequest
from lumen.executor.gateway.metrics import GatewayMetrics
from lumen.executor.gateway.pairing import PairingDriver
from lumen.executor.gateway.planner_link import PlannerLink
from lumen.executor.gateway.recovery import RecoveryPlanner
from lumen.executor.gateway.recovery import snapshot as cluster_snapshot
from lumen.executor.worker.api import (
    GenerationRequest,
    TokenEvent,
    TokenLogprob,
    WorkerAPI,
    WorkerStatus,
    WorkerUnavailableError,
)
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState
from lumen.planner.policies import check_policy
from lumen.planner.service.client import PlannerClient

log = logging.getLogger(__name__)


class GatewayError(RuntimeError):
    """A request that could not be completed (gateway stopped, too many resumes, timeout)."""


class Gateway:
    """Dispatch, token histories, failure detection and recovery (module docstring)."""

    def __init__(
        self,
        workers: Sequence[WorkerAPI],
        config: GatewayConfig | None = None,
        *,
        planner: PlannerClient | None = None,
        cost: CostModel | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        if not workers:
            raise ValueError("workers: at least one worker is needed")
        self.config = config or GatewayConfig()
        self.spec = check_policy(self.config.policy)
        if cost is None:
            from lumen.scenarios.resolve import load_scenario

            cost = load_scenario(self.config.scenario).cost_model
        self.cost = cost
        self.metrics = metrics or GatewayMetrics()
        self._workers = {w.worker_id: w for w in workers}
        self.board = WorkerBoard([w.worker_id for w in workers])
        self.link = (
            PlannerLink(planner, self.metrics, self.config.planner_retry_s)
            if planner is not None
            else None
        )
        self.placer = HolderPlacer(
            self.spec.placement,
            self.board,
            cost,
            self.config.workers_per_node,
            self.link,
            report=self._report_state,
        )
        self.recovery = RecoveryPlanner(
            cost,
            self.spec.recovery,
            self.link,
            self.config.recovery_time_limit_s,
            self.config.prefill_chunk_tokens,
        )
        self.monitor = HealthMonitor(
            workers,
            self.config.health,
            busy=lambda w: bool(self.board.requests_on(w)),
            on_status=self._on_status,
            on_failure=lambda w, reason: self.failover.handle_failure(w, reason, newly=True),
            on_return=self._on_return,
            on_suspect=lambda w: self.metrics.suspicions.inc(),
        )
        self.failover = Failover(
            self,
            config=self.config,
            board=self.board,
            monitor=self.monitor,
            placer=self.placer,
            recovery=self.recovery,
            metrics=self.metrics,
        )
        self.pairing = (
            PairingDriver(
                self._workers,
                self.board,
                self.spec.pairing,
                self.snapshot,
                cost,
                self.metrics,
                link=self.link,
                acceptance_rate=self.config.acceptance_rate,
                depth=self.config.speculation_depth,
                interval_s=self.config.health.interval_s,
                time_limit_s=self.config.recovery_time_limit_s,
            )
            if self.spec.pairing is not None
            else None
        )
        self._ids = itertools.count()
        self._active: dict[int, TrackedRequest] = {}
        self._pending: list[Pending] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Poll every worker once, then start the heartbeats and the dispatch thread."""
        for wid, worker in self._workers.items():
            try:
                status = worker.status(timeout_s=self.config.health.timeout_s)
            except Exception as exc:
                log.warning("worker %d is not answering at start: %s", wid, exc)
                self.monitor.mark_failed(wid)
                self.metrics.set_worker_state(wid, "failed")
                continue
            self.board.set_up(wid, True)
            self._on_status(wid, status)
        self.placer.rebuild()
        self.monitor.start()
        if self.pairing is not None:
            self.pairing.start()
        loops = [("lumen-dispatch", self._dispatch_loop)]
        if self.link is not None:
            loops.append(("lumen-report", self._report_loop))
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the threads; requests still running end with an error."""
        self._stop.set()
        self._wake.set()
        self.monitor.stop(timeout_s)
        if self.pairing is not None:
            self.pairing.stop(timeout_s)
        for t in self._threads:
            t.join(timeout_s)
        with self._lock:
            left = list(self._active.values())
        for r in left:
            with r.lock:
                if not r.done:
                    self.finish_locked(r, "error", "the gateway stopped")
        self.metrics.close()

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------------------------

    def submit(
        self,
        prompt_token_ids: Sequence[int],
        max_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int | None = None,
        stop_token_ids: Sequence[int] = (),
        sink: queue.Queue[StreamItem] | None = None,
        index: int = 0,
        top_p: float = 1.0,
        top_k: int = 0,
        logprobs: int | None = None,
    ) -> TrackedRequest:
        """Queue a request; its tokens, then its end, arrive on ``sink`` (new queue if None)."""
        if not prompt_token_ids or max_tokens < 1:
            raise ValueError("a request needs at least one prompt token and max_tokens >= 1")
        with self._lock:
            rid = next(self._ids)
            request = TrackedRequest(
                rid,
                tuple(prompt_token_ids),
                max_tokens,
                sink if sink is not None else queue.Queue(),
                index=index,
                temperature=temperature,
                seed=seed,
                stop_token_ids=tuple(stop_token_ids),
                top_p=top_p,
                top_k=top_k,
                logprobs=logprobs,
            )
            self._active[rid] = request
        self.pend(Pending(request))
        return request

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        max_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int | None = None,
        timeout_s: float = 60.0,
    ) -> Iterator[tuple[int, ...]]:
        """Submit and yield the new tokens as they come (raises :class:`GatewayError`)."""
        request = self.submit(prompt_token_ids, max_tokens, temperature=temperature, seed=seed)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                item = request.sink.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.abort(request)
                raise GatewayError(f"request {request.request_id}: timed out") from None
            if item.token_ids:
                yield item.token_ids
            if item.finish == "error":
                raise GatewayError(item.error)
            if item.finish is not None:
                return

    def abort(self, request: TrackedRequest) -> None:
        """End a request whose client went away."""
        with request.lock:
            if not request.done:
                request.attempt += 1
                self.finish_locked(request, "aborted")

    # -- dispatch --------------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                self._dispatch_pending()
            except Exception:  # keep dispatching; the request stays pending
                log.exception("dispatch failed")
            with self._lock:
                self.metrics.queue.set(len(self._pending))
            self.metrics.running.set(self.board.running())

    def _dispatch_pending(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
        keep: list[Pending] = []
        now = time.monotonic()
        for item in items:
            if item.request.done:
                continue
            if now < item.not_before_s:
                keep.append(item)
                continue
            target = item.target
            cap = self.config.max_streams_per_worker
            worker: int | None = None
            if target is not None and self.board.serving(target):
                worker = None if self.board.full(target, cap) else target
            elif target is None or now >= item.deadline_s:  # a planned wait may be over
                worker = self.board.least_loaded(cap=cap)
            if worker is None:
                keep.append(item)
                continue
            source = item.restore_from
            if source is not None and not self.board.is_up(source):
                source = None  # the holder died since: its checkpoints are gone
            try:
                self._start(item.request, worker, source, item.resumed)
            except Exception as exc:  # a request the worker API refuses ends, visibly
                log.exception("request %d could not be started", item.request.request_id)
                with item.request.lock:
                    if not item.request.done:
                        self.finish_locked(item.request, "error", f"could not start: {exc}")
        if keep:
            with self._lock:
                self._pending = keep + self._pending

    def _start(
        self, request: TrackedRequest, worker: int, restore_from: int | None, resumed: bool
    ) -> None:
        with request.lock:
            if self._complete_locked(request):
                return
        holder = self.placer.choose(request, worker, resumed)
        with request.lock:
            if request.done:
                self.placer.release(request)
                return
            request.worker = worker
            request.holder = holder
            attempt = request.attempt
            spec = GenerationRequest(
                request.request_id,
                request.prompt_token_ids,
                request.max_tokens,
                request.history.ids,
                request.temperature,
                request.seed,
                request.stop_token_ids,
                holder,
                restore_from,
                request.top_p,
                request.top_k,
                request.logprobs,
            )
            self.board.attach(request, worker)
        if not self.board.is_up(worker):  # it failed while we placed: let recovery see it
            self.failover.resume_one(request, attempt, worker)
            return
        t = threading.Thread(
            target=self._run,
            args=(request, attempt, worker, spec),
            name=f"lumen-req-{request.request_id}",
            daemon=True,
        )
        t.start()

    def _run(
        self, request: TrackedRequest, attempt: int, worker: int, spec: GenerationRequest
    ) -> None:
        """Read one attempt's token stream into the request's history and sink."""
        error = "the stream ended before the request finished"
        stream: Iterator[TokenEvent] | None = None
        try:
            stream = self._workers[worker].submit(spec)
            for event in stream:
                with request.lock:
                    if request.attempt != attempt or request.done:
                        return  # taken off this worker: what it sends now is dropped
                    new = request.history.extend(event.token_ids, event.generated_tokens)
                    if new:
                        skip = len(event.token_ids) - len(new)
                        self._sent_locked(request, new, event.logprobs[skip:])
                    if event.finished or self._complete_locked(request):
                        if not request.done:
                            self.finish_locked(request, self._reason(request))
                        return
        except WorkerUnavailableError as exc:
            error = str(exc) or "worker unavailable"
        except HistoryGapError as exc:
            error = str(exc)
        except Exception as exc:  # a refused call, or a broken client: retried with back-off
            error = repr(exc)
            if getattr(exc, "code", None) == "INVALID_ARGUMENT":  # every worker would refuse
                with request.lock:
                    if request.attempt == attempt and not request.done:
                        self.finish_locked(request, "error", f"refused by the worker: {exc}")
                return
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        self.failover.stream_failed(request, attempt, worker, error)

    # -- bookkeeping (callers hold request.lock) -------------------------------------------------

    def _sent_locked(
        self,
        request: TrackedRequest,
        new: tuple[int, ...],
        logprobs: tuple[TokenLogprob, ...] = (),
    ) -> None:
        now = time.monotonic()
        if request.first_token_s is None:
            request.first_token_s = now
            self.metrics.ttft.observe(now - request.arrived_s)
        request.last_token_s = now
        self.metrics.generation_tokens.inc(len(new))
        request.sink.put(StreamItem(request.index, new, logprobs=logprobs))

    def _reason(self, request: TrackedRequest) -> str:
        limit = self.context_limit()
        if len(request.history) >= request.max_tokens:
            return "length"
        if limit is not None and request.context_tokens >= limit:
            return "length"  # the worker stopped at the model's context
        return "stop"

    def context_limit(self) -> int | None:
        """The longest context (prompt and output tokens) a request may reach: the configured
        ``max_model_len``, else the smallest the workers report (None: unknown yet)."""
        if self.config.max_model_len is not None:
            return self.config.max_model_len
        return self.board.max_model_len()

    def _complete_locked(self, request: TrackedRequest) -> bool:
        """Finish a request whose history is already complete (True if it is done)."""
        if request.done:
            return True
        ids = request.history.ids
        if len(ids) >= request.max_tokens or (ids and ids[-1] in request.stop_token_ids):
            self.finish_locked(request, self._reason(request))
            return True
        return False

    # -- what failover needs of the gateway (FailoverHost) --------------------------------------

    def active(self) -> list[TrackedRequest]:
        """The requests not finished yet."""
        with self._lock:
            return list(self._active.values())

    def pend(self, item: Pending) -> None:
        """Put a request in the pending list and wake the dispatcher."""
        with self._lock:
            self._pending.append(item)
        self._wake.set()

    def finish_locked(self, request: TrackedRequest, reason: str, error: str = "") -> None:
        """End a request with ``reason`` (the caller holds ``request.lock``)."""
        request.done = True
        if request.worker is not None:
            self.board.detach(request, request.worker)
        self.placer.release(request)
        with self._lock:
            self._active.pop(request.request_id, None)
        self.metrics.requests.labels(reason).inc()
        first, last, n = request.first_token_s, request.last_token_s, len(request.history)
        if reason in ("stop", "length") and first is not None and last is not None and n > 1:
            self.metrics.tpot.observe((last - first) / (n - 1))
        if reason != "error":
            self.metrics.e2e.observe(time.monotonic() - request.arrived_s)
            self.metrics.prompt_tokens.inc(len(request.prompt_token_ids))
        request.sink.put(StreamItem(request.index, finish=reason, error=error))

    def wake_dispatcher(self) -> None:
        """Let the dispatcher look at the pending list now."""
        self._wake.set()

    def snapshot(self) -> ClusterState:
        """The cluster as the planner sees it, with the requests running on each worker."""
        running = [r for w in self.board.ids for r in self.board.requests_on(w)]
        return cluster_snapshot(self.board, self.cost, running, self.config.workers_per_node)

    def answers(self, worker: int) -> bool:
        """Whether ``worker`` answers a status probe (the monitor's adaptive deadline)."""
        return self.monitor.probe(worker) is not None

    # -- heartbeats ------------------------------------------------------------------------------

    def _on_status(self, worker: int, status: WorkerStatus) -> None:
        self.board.update(status)
        self.metrics.worker_queue.labels(str(worker)).set(status.queue_length)
        if self.board.is_up(worker):
            self.metrics.set_worker_state(
                worker, "up" if status.stage == "serving" else status.stage
            )
        self.placer.update_wait(worker, status.waiting_time_s)
        if self.pairing is not None:
            self.pairing.observe(worker)

    def _on_return(self, worker: int, status: WorkerStatus) -> None:
        log.info("worker %d is back (stage %s)", worker, status.stage)
        self.board.update(status)
        self.board.set_up(worker, True)
        self._on_status(worker, status)
        self.placer.rebuild()
        self._wake.set()

    # -- planner service -------------------------------------------------------------------------

    def _report_state(self) -> None:
        """Send the current cluster state to the planner service (no-op without one)."""
        if self.link is None:
            return
        state = self.snapshot()
        self.link.call("report", lambda client: client.report_cluster_state(state))

    def _report_loop(self) -> None:
        self._report_state()
        while not self._stop.wait(self.config.report_interval_s):
            assert self.link is not None
            if self.link.available:
                try:
                    self._report_state()
                except Exception:
                    log.exception("cluster state report failed")
