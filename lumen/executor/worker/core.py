"""The worker: engine loop, checkpoint store, streamer, stage machine and peers, in domain terms.

The gRPC servicer is a thin adapter over :class:`WorkerCore` (docs/architecture.md): every
RPC converts its message (:mod:`~lumen.executor.worker.wire`) and calls one method here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lumen.executor.engine.config import EngineConfig
from lumen.executor.engine.interface import Engine, KVPage, Proposal, WeightSource
from lumen.executor.worker.api import TokenEvent, WorkerStatus
from lumen.executor.worker.assist import AssistLink, Mirror
from lumen.executor.worker.errors import InvalidField, NotReady, WorkerStopping
from lumen.executor.worker.loop import EngineLoop, RequestStream, engine_request_id
from lumen.executor.worker.metrics import WorkerMetrics
from lumen.executor.worker.stages import StageMachine
from lumen.executor.worker.store import CheckpointStore, PageOutcome
from lumen.executor.worker.streamer import CheckpointStreamer, PagePeer
from lumen.executor.worker.wire import Submission

__all__ = ["PageMessage", "WorkerConfig", "WorkerCore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process is started with.

    Attributes:
        worker_id: this worker's id in the cluster.
        weights: the target model (checkpoint directory or random weights).
        draft_weights: the draft model for staged recovery (None: cannot assist).
        engine: the engine's serving knobs (both target and draft engines).
        checkpoint_budget_bytes: host memory for checkpoints held for other workers.
        ssd_gbyte_s: emulated storage bandwidth of weight loads (None: unthrottled).
        peers: worker id -> address, to reach holders named only by id.
        start_stage: "serving" (load the target and serve) or "draft-loading" (a restarted
            worker that recovers in stages; without a draft it goes straight to switching).
        min_step_s: minimum duration of an engine step (emulates a slower device).
        fetch_timeout_s: deadline of a checkpoint fetch from a holder before falling back to
            recomputing.
        auto_switch: a recovering worker enters switching by itself once the target is in
            host memory (False: only when told, which tests use to hold it in assisting).
    """

    worker_id: int
    weights: WeightSource
    draft_weights: WeightSource | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint_budget_bytes: int = 1 << 30
    ssd_gbyte_s: float | None = None
    peers: Mapping[int, str] = field(default_factory=dict)
    start_stage: str = "serving"
    min_step_s: float = 0.0
    fetch_timeout_s: float = 10.0
    auto_switch: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_budget_bytes < 0:
            raise ValueError("checkpoint_budget_bytes must be >= 0")
        if self.ssd_gbyte_s is not None and not (
            math.isfinite(self.ssd_gbyte_s) and self.ssd_gbyte_s > 0
        ):
            raise ValueError("ssd_gbyte_s must be a positive number")
        if self.start_stage not in ("serving", "draft-loading"):
            raise ValueError("start_stage must be 'serving' or 'draft-loading'")


@dataclass(frozen=True, slots=True)
class PageMessage:
    """One SendPages message: a page with its token ids and/or control fields."""

    request_id: int
    page: KVPage | None = None
    token_ids: tuple[int, ...] = ()
    reserve_bytes: int = 0
    release: bool = False


def _torch_engine(config: EngineConfig, weights: Any = None, role: str = "target") -> Engine:
    from lumen.executor.engine.torch_engine import TorchEngine

    return TorchEngine(config, weights, role)  # type: ignore[arg-type]


class WorkerCore:
    """One worker (module docstring). ``peer(address)`` gives another worker's page API."""

    def __init__(
        self,
        config: WorkerConfig,
        peer: Callable[[str], PagePeer],
        metrics: WorkerMetrics | None = None,
        make_engine: Callable[..., Engine] = _torch_engine,
        assist_link: Callable[[int, str], AssistLink] | None = None,
        to_host: Callable[[WeightSource], Any] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or WorkerMetrics()
        self._peer = peer
        self.store = CheckpointStore(config.checkpoint_budget_bytes)
        self.streamer = CheckpointStreamer(peer, on_sent=self.metrics.observe_sent)
        self.loop = EngineLoop(
            make_engine(config.engine),
            self.streamer,
            min_step_s=config.min_step_s,
            on_token=lambda _e, ttft, tpot: self.metrics.observe_tokens(ttft, tpot),
        )
        self.stages = StageMachine(
            self.loop,
            config.weights,
            config.draft_weights,
            lambda host: make_engine(config.engine, host, "draft"),
            ssd_gbyte_s=config.ssd_gbyte_s,
            on_stage=self.metrics.set_stage,
            assist_link=assist_link,
            auto_switch=config.auto_switch,
            to_host=to_host,
        )

    @property
    def worker_id(self) -> int:
        return self.config.worker_id

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads and load weights (blocks until a cold start can serve)."""
        self.streamer.start()
        self.loop.start()
        if self.config.start_stage == "draft-loading":
            # Without a draft there is nothing to assist with: reload the target right away.
            first = "draft-loading" if self.config.draft_weights is not None else "switching"
            self.stages.set(first)
        else:
            self.stages.load_initial()

    def stop(self) -> None:
        self.stages.stop()
        self.loop.stop()
        self.streamer.stop()

    # ---- requests ----------------------------------------------------------------------------

    def address_of(self, worker: int, given: str, path: str) -> str:
        """A peer's address: given in the call, else from the peer table."""
        if given:
            return given
        address = self.config.peers.get(worker)
        if address is None:
            raise InvalidField(
                path, f"unknown worker {worker}: give its address or add it to the peers"
            )
        return address

    def submit(self, sub: Submission) -> Iterator[TokenEvent]:
        """Start a request (restoring a checkpointed prefix when asked); returns its events."""
        stream, _ = self.start_request(sub)
        return stream.events()

    def start_request(self, sub: Submission) -> tuple[RequestStream, int]:
        """Like :meth:`submit`, returning the loop's stream and the positions restored."""
        request = sub.request
        engine = self.loop.engine
        if engine.role != "target" or self.stages.stage != "serving":
            stage = self.stages.stage
            raise NotReady("", f"worker {self.worker_id} is not serving (stage {stage})")
        holder = ""
        reserve = 0
        if request.checkpoint_holder is not None:
            if request.checkpoint_holder == self.worker_id:
                raise InvalidField("checkpoint_holder", "a request's holder must not be its home")
            holder = self.address_of(
                request.checkpoint_holder, sub.holder_address, "checkpoint_holder"
            )
            layout = engine.kv_layout
            positions = len(request.prompt_token_ids) + request.max_tokens
            pages = math.ceil(positions / layout.block_size)
            reserve = pages * layout.block_size * layout.bytes_per_token
        pages_in: list[KVPage] = []
        restore = ""
        on_end: Callable[[int], None] | None = None
        if request.restore_from == self.worker_id:
            # The paper's common case: resume on the holder, a local host -> device restore.
            rid = engine_request_id(request.request_id)
            pages_in = self.store.pages(rid) if self.store.has(rid) else []
            on_end = self._release_local
        elif request.restore_from is not None:
            restore = self.address_of(request.restore_from, sub.restore_address, "restore_from")
            pages_in = self._fetch(restore, request.request_id)
        stream, restored = self.loop.submit(
            request,
            pages_in,
            holder=holder,
            reserve_bytes=reserve,
            release_on_end=(restore,) if restore else (),
            on_end=on_end,
        )
        resumed = len(request.prompt_token_ids) + len(request.generated_token_ids)
        if restored:
            self.metrics.restores.inc()
            self.metrics.restored_tokens.inc(restored)
        if request.generated_token_ids or request.restore_from is not None:
            self.metrics.recomputed_tokens.inc(resumed - restored)
        return stream, restored

    def _release_local(self, request_id: int) -> None:
        self.store.release(engine_request_id(request_id))
        self._update_store_gauges()

    def _fetch(self, address: str, request_id: int) -> list[KVPage]:
        try:
            return self._peer(address).fetch_pages(
                request_id, timeout_s=self.config.fetch_timeout_s
            )
        except Exception as exc:  # the holder is gone too: recompute everything
            log.warning("restore of request %d from %s failed: %s", request_id, address, exc)
            return []

    # ---- checkpoints held for others ---------------------------------------------------------

    def receive_pages(self, messages: Iterable[PageMessage]) -> tuple[int, dict[int, int]]:
        """Store pages sent by a home worker; returns (pages accepted, valid tokens of each
        request touched). Raises the store's errors (over budget, no reservation)."""
        accepted = 0
        touched: dict[int, int] = {}
        for msg in messages:
            rid = engine_request_id(msg.request_id)
            if msg.release:
                self.store.release(rid)
                touched.pop(msg.request_id, None)
                continue
            if msg.reserve_bytes:
                self.store.reserve(rid, msg.reserve_bytes)
            if msg.page is not None:
                if msg.page.request_id != rid:
                    raise InvalidField("request_id", "page and message disagree")
                result = self.store.add_page(msg.page, msg.token_ids)
                self.metrics.ckpt_pages_received.labels(result.outcome.value).inc()
                if result.outcome is PageOutcome.REJECTED:
                    log.warning(
                        "page %d of request %s refused: %s", msg.page.page_index, rid, result.reason
                    )
                accepted += result.accepted
            touched[msg.request_id] = self.store.valid_prefix_tokens(rid)
        self._update_store_gauges()
        return accepted, touched

    def fetch_pages(self, request_id: int, start: int = 0, end: int | None = None) -> list[KVPage]:
        """Valid checkpoint pages of a request held here (raises NotReservedError)."""
        return self.store.pages(engine_request_id(request_id), start, end)

    def _update_store_gauges(self) -> None:
        stats = self.store.stats()
        self.metrics.ckpt_held.set(stats.held_bytes)
        self.metrics.ckpt_reserved.set(stats.reserved_bytes)

    # ---- survivor side of assisting (an AssistLink) ------------------------------------------

    def mirrored_requests(self) -> Mirror:
        """This worker's requests past their prefill, for a paired draft to propose for."""
        steps, specs = self.loop.running_specs()
        return Mirror(steps, tuple(specs))

    def mirror_stream(self, alive: Callable[[], bool], poll_s: float = 0.002) -> Iterator[Mirror]:
        """:meth:`mirrored_requests` after each engine step, while ``alive()`` (the stream a
        paired draft reads). The step counter is read without entering the engine loop, so
        an idle survivor costs nothing. Ends with :class:`WorkerStopping` once the worker
        stops, so that the draft stops at once instead of after the server's grace period."""
        last = -1
        while alive():
            if self.loop.stopping:
                raise WorkerStopping("", "worker stopping")
            if self.loop.stats().steps == last:
                time.sleep(poll_s)
                continue
            mirror = self.mirrored_requests()
            last = mirror.steps
            yield mirror

    def accept_proposals(self, proposals: Sequence[Proposal]) -> int:
        """Queue draft proposals for verification in the next step (stale ones are dropped);
        returns how many were queued."""
        batch = list(proposals)
        if not batch:
            return 0
        return self.loop.call(lambda engine: engine.submit_proposals(batch))

    # ---- reports and stages ------------------------------------------------------------------

    def status(self) -> tuple[WorkerStatus, int]:
        """The worker's report and the checkpoint bytes it holds."""
        loop = self.loop.stats()
        engine: Any = self.loop.engine
        capacity = used = context = 0
        if engine.role is not None:
            context = int(engine.engine_config.resolve_max_model_len(engine.model_config))
            size = engine.engine_config.block_size
            capacity = int(getattr(engine, "num_kv_blocks", 0)) * size
            used = capacity - int(getattr(engine, "num_free_blocks", 0)) * size
        bridge = getattr(engine, "bridge", None)
        if bridge is not None:  # the vLLM engine's KV connector
            moved = bridge.stats()
            self.metrics.connector_loaded_bytes.set(moved.loaded_bytes)
            self.metrics.connector_load_seconds.set(moved.load_seconds)
            self.metrics.connector_restored_tokens.set(moved.restored_tokens)
            self.metrics.connector_saved_bytes.set(moved.saved_bytes)
        store = self.store.stats()
        self.metrics.queue.set(loop.waiting)
        self.metrics.running.set(loop.running)
        self.metrics.set_steps(loop.steps)
        self.metrics.draft_accepted.set(loop.accepted_tokens)
        self._update_store_gauges()
        status = WorkerStatus(
            worker_id=self.worker_id,
            stage=self.stages.stage,
            queue_length=loop.waiting,
            running=loop.running,
            waiting_time_s=loop.oldest_waiting_s,
            kv_used_tokens=used,
            kv_capacity_tokens=capacity,
            host_budget_bytes=store.budget_bytes,
            host_reserved_bytes=store.reserved_bytes,
            steps=loop.steps,
            checkpoints={int(rid): n for rid, n in self.store.inventory().items()},
            max_model_len=context,
        )
        return status, store.held_bytes

    def set_stage(self, stage: str, survivor: int | None, survivor_address: str = "") -> str:
        if stage == "assisting" and survivor is not None:
            survivor_address = self.address_of(survivor, survivor_address, "survivor_worker")
        return self.stages.set(stage, survivor, survivor_address)
