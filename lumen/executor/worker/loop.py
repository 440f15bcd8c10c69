"""The engine step loop: one thread owns the engine; everything else talks to it by message.

Engines are single-threaded state machines (:class:`~lumen.executor.engine.Engine`), so the loop
thread is the only one that calls them: RPC threads queue commands (add a request, import a
checkpoint, abort, run a function such as a weight load) and read tokens from per-request
streams. Between steps the loop also exports the new full KV pages of checkpointed requests and
hands them to a sink (the checkpoint streamer), which sends them on its own thread, off the
decode path.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from lumen.executor.engine.interface import (
    Engine,
    KVPage,
    RequestOutput,
    RequestSpec,
    SamplingParams,
)
from lumen.executor.worker.api import GenerationRequest, TokenEvent
from lumen.executor.worker.errors import WorkerStopping

__all__ = ["CheckpointSink", "EngineLoop", "LoopStats", "RequestStream", "engine_request_id"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_IDLE_WAIT_S = 0.05


def engine_request_id(request_id: int) -> str:
    """The engine's id of a request (a decimal string; KV page checksums cover it)."""
    return str(request_id)


class CheckpointSink(Protocol):
    """Where the loop puts exported pages (the checkpoint streamer)."""

    def pages(
        self,
        holder: str,
        request_id: int,
        pages: list[tuple[KVPage, tuple[int, ...]]],
        reserve_bytes: int,
    ) -> None: ...

    def release(self, holder: str, request_id: int) -> None: ...


class RequestStream:
    """The token events of one request, as the loop produces them (read from any thread)."""

    def __init__(self, request_id: int, on_cancel: Callable[[int], None]) -> None:
        self.request_id = request_id
        self._events: queue.Queue[TokenEvent | BaseException] = queue.Queue()
        self._on_cancel = on_cancel
        self._done = False

    def put(self, item: TokenEvent | BaseException) -> None:
        self._events.put(item)

    def events(
        self, poll_s: float = 0.1, alive: Callable[[], bool] = lambda: True
    ) -> Iterator[TokenEvent]:
        """Yield events until the finished one; stops early (and aborts) when ``alive()`` turns
        false, e.g. the RPC was cancelled. Raises the error the loop ended the request with."""
        try:
            while not self._done:
                try:
                    item = self._events.get(timeout=poll_s)
                except queue.Empty:
                    if not alive():
                        return
                    continue
                if isinstance(item, BaseException):
                    self._done = True
                    raise item
                self._done = item.finished
                yield item
        finally:
            if not self._done:
                self._on_cancel(self.request_id)


@dataclass(frozen=True, slots=True)
class LoopStats:
    """The loop's counters at one instant."""

    steps: int
    waiting: int
    running: int
    oldest_waiting_s: float
    draft_tokens: int = 0
    accepted_tokens: int = 0


@dataclass(eq=False)
class _Tracked:
    request: GenerationRequest
    stream: RequestStream
    tokens: list[int]
    submitted_at: float
    holder: str = ""
    release_on_end: tuple[str, ...] = ()
    on_end: Callable[[int], None] | None = None
    reserve_bytes: int = 0
    sent_upto: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None


@dataclass(eq=False)
class _Command:
    fn: Callable[[Engine], Any]
    future: Future[Any] = field(default_factory=Future)


class EngineLoop:
    """Runs ``engine.step()`` in a thread while requests are unfinished.

    Args:
        engine: the engine (from now on touched only by the loop thread).
        sink: receives checkpoint pages and releases (None: no checkpointing).
        min_step_s: a step takes at least this long (emulates a slower device; 0: off).
        on_token: called with (event, seconds since submit, seconds since previous token) for
            each token event (metrics).
    """

    def __init__(
        self,
        engine: Engine,
        sink: CheckpointSink | None = None,
        *,
        min_step_s: float = 0.0,
        on_token: Callable[[TokenEvent, float | None, float | None], None] | None = None,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.min_step_s = min_step_s
        self.on_token = on_token
        self._commands: list[_Command] = []
        self._tracked: dict[int, _Tracked] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._steps = 0
        self._draft_tokens = 0
        self._accepted_tokens = 0
        self._thread = threading.Thread(target=self._run, name="lumen-engine", daemon=True)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop stepping; running requests end with :class:`WorkerStopping`."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with self._cond:
            pending, self._commands = self._commands, []
        for cmd in pending:
            cmd.future.set_exception(WorkerStopping("", "worker stopping"))
        for tracked in list(self._tracked.values()):
            tracked.stream.put(WorkerStopping("", "worker stopping"))
        self._tracked.clear()

    # ---- called from other threads -----------------------------------------------------------

    def call(self, fn: Callable[[Engine], T], timeout_s: float | None = None) -> T:
        """Run ``fn(engine)`` on the loop thread between steps and return its result."""
        cmd = _Command(fn)
        with self._cond:
            if self._stopping:
                raise WorkerStopping("", "worker stopping")
            self._commands.append(cmd)
            self._cond.notify_all()
        return cmd.future.result(timeout_s)  # type: ignore[no-any-return]

    def submit(
        self,
        request: GenerationRequest,
        pages: list[KVPage] | None = None,
        *,
        holder: str = "",
        reserve_bytes: int = 0,
        release_on_end: tuple[str, ...] = (),
        on_end: Callable[[int], None] | None = None,
    ) -> tuple[RequestStream, int]:
        """Queue ``request`` (restoring the valid prefix of ``pages`` when given); returns its
        stream and the positions restored. ``holder`` (an address) receives its checkpoint
        pages; ``release_on_end`` are holders whose copy is released when the request ends, and
        ``on_end(request_id)`` runs then too (finished or aborted)."""
        spec = to_spec(request)
        stream = RequestStream(request.request_id, self.abort)

        def add(engine: Engine) -> int:
            if request.request_id in self._tracked:
                raise ValueError(f"request {request.request_id} is already running here")
            # An engine that copies KV out for checkpoints (vLLM's connector) does so only
            # for requests that have a holder.
            mark = getattr(engine, "checkpoint_request", None)
            if mark is not None:
                mark(spec.request_id, bool(holder))
            restored = engine.import_kv(spec, pages) if pages else 0
            if not pages:
                engine.add_request(spec)
            self._tracked[request.request_id] = _Tracked(
                request,
                stream,
                list(spec.token_ids),
                time.perf_counter(),
                holder=holder,
                release_on_end=release_on_end,
                on_end=on_end,
                reserve_bytes=reserve_bytes,
            )
            return restored

        return stream, self.call(add)

    def abort(self, request_id: int) -> None:
        """Drop a request (a no-op when it already ended)."""

        def drop(engine: Engine) -> None:
            tracked = self._tracked.pop(request_id, None)
            if tracked is not None:
                engine.abort(engine_request_id(request_id))
                self._release(tracked)

        with self._cond:
            if not self._stopping:
                self._commands.append(_Command(drop))
                self._cond.notify_all()

    def stats(self) -> LoopStats:
        now = time.perf_counter()
        tracked = list(self._tracked.values())
        waiting = [t for t in tracked if t.first_token_at is None]
        oldest = max((now - t.submitted_at for t in waiting), default=0.0)
        return LoopStats(
            self._steps,
            len(waiting),
            len(tracked) - len(waiting),
            oldest,
            self._draft_tokens,
            self._accepted_tokens,
        )

    def running_specs(self, greedy_only: bool = True) -> tuple[int, list[RequestSpec]]:
        """The engine step counter and the specs (history so far) of the requests past their
        prefill, read between steps (what an assisting draft mirrors).

        ``greedy_only`` leaves sampled requests out: verifying drafts of a sampled request keeps
        the target's distribution but not its exact seeded draws, and a request's output must
        not depend on whether a draft helped (a resumed request replays the same draws).
        """

        def read(engine: Engine) -> tuple[int, list[RequestSpec]]:
            specs = []
            for tracked in self._tracked.values():
                if tracked.first_token_at is None:
                    continue
                if greedy_only and tracked.request.temperature > 0:
                    continue
                spec = to_spec(tracked.request)
                outputs = tuple(tracked.tokens[len(spec.prompt_token_ids) :])
                specs.append(
                    RequestSpec(spec.request_id, spec.prompt_token_ids, spec.sampling, outputs)
                )
            return self._steps, specs

        return self.call(read)

    # ---- the loop thread ---------------------------------------------------------------------

    def _run(self) -> None:
        # A step waits until min_step_s after the previous one began; commands that arrive
        # meanwhile (new requests, draft proposals) run before it, so they make that step.
        next_step_at = 0.0
        while True:
            with self._cond:
                while not self._stopping and not self._commands:
                    if not self._busy():
                        self._cond.wait(_IDLE_WAIT_S)
                        continue
                    delay = next_step_at - time.perf_counter()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._stopping:
                    return
                commands, self._commands = self._commands, []
            for cmd in commands:
                if cmd.future.set_running_or_notify_cancel():
                    try:
                        cmd.future.set_result(cmd.fn(self.engine))
                    except BaseException as exc:
                        cmd.future.set_exception(exc)
            now = time.perf_counter()
            if now >= next_step_at and self._busy():
                next_step_at = now + self.min_step_s
                try:
                    self._step()
                except Exception as exc:  # a bug in the engine: fail its requests, keep serving
                    log.exception("engine step failed")
                    self._fail_all(exc)

    def _busy(self) -> bool:
        return bool(self._tracked) and self.engine.role is not None and self.engine.has_unfinished()

    def _step(self) -> None:
        out = self.engine.step()
        self._steps += 1
        self._draft_tokens += out.stats.num_draft_tokens
        self._accepted_tokens += out.stats.num_accepted_tokens
        now = time.perf_counter()
        for result in out.outputs:
            self._deliver(result, now)
        if self.sink is not None:
            self._export_checkpoints()

    def _deliver(self, result: RequestOutput, now: float) -> None:
        rid = int(result.request_id)
        tracked = self._tracked.get(rid)
        if tracked is None:
            return
        tracked.tokens.extend(result.new_token_ids)
        ttft = tpot = None
        if result.new_token_ids:
            if tracked.first_token_at is None:
                tracked.first_token_at = now
                ttft = now - tracked.submitted_at
            elif tracked.last_token_at is not None:
                tpot = (now - tracked.last_token_at) / len(result.new_token_ids)
            tracked.last_token_at = now
        event = TokenEvent(
            rid, result.new_token_ids, result.num_output_tokens, result.finished, result.logprobs
        )
        if result.finished:
            del self._tracked[rid]
            self._release(tracked)
        tracked.stream.put(event)
        if self.on_token is not None:
            self.on_token(event, ttft, tpot)

    def _export_checkpoints(self) -> None:
        """Hand the new full pages of each checkpointed request to the sink."""
        sink = self.sink
        if sink is None:
            return
        size = self.engine.kv_layout.block_size
        for rid, tracked in self._tracked.items():
            # Positions computed so far are at most len(tokens) - 1 (the last token's K/V comes
            # with the next step); export only when a whole new page may be there.
            if not tracked.holder or len(tracked.tokens) - 1 < tracked.sent_upto + size:
                continue
            pages = self.engine.export_kv(engine_request_id(rid), tracked.sent_upto)
            full = [
                (p, tuple(tracked.tokens[p.start_position : p.end_position]))
                for p in pages
                if p.num_tokens == size
            ]
            if not full:
                continue
            reserve = tracked.reserve_bytes if tracked.sent_upto == 0 else 0
            sink.pages(tracked.holder, rid, full, reserve)
            tracked.sent_upto = full[-1][0].end_position

    def _release(self, tracked: _Tracked) -> None:
        if tracked.on_end is not None:
            tracked.on_end(tracked.request.request_id)
        if self.sink is None:
            return
        holders = dict.fromkeys((tracked.holder, *tracked.release_on_end))
        for address in holders:
            if address:
                self.sink.release(address, tracked.request.request_id)

    def _fail_all(self, exc: Exception) -> None:
        for rid, tracked in list(self._tracked.items()):
            self.engine.abort(engine_request_id(rid))
            tracked.stream.put(RuntimeError(f"engine step failed: {exc}"))
        self._tracked.clear()


def to_spec(request: GenerationRequest) -> RequestSpec:
    """The engine's view of a request."""
    return RequestSpec(
        request_id=engine_request_id(request.request_id),
        prompt_token_ids=request.prompt_token_ids,
        sampling=SamplingParams(
            temperature=request.temperature,
            seed=request.seed,
            max_new_tokens=request.max_tokens,
            stop_token_ids=request.stop_token_ids,
            top_p=request.top_p,
            top_k=request.top_k,
            logprobs=request.logprobs,
        ),
        output_token_ids=request.generated_token_ids,
    )
