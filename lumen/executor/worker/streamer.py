"""The checkpoint streamer: sends exported KV pages to each request's holder on its own thread.

The engine loop exports a request's new full pages between steps (the GPU -> host copy) and
queues them here; this thread does the network part, so a slow or dead holder never delays a
decode step. Each batch goes out as one SendPages call carrying the request's reservation on its
first message; a request whose holder refuses the reservation (over budget) or cannot be reached
is dropped from checkpointing (it still runs; it will recompute if its home fails). When a
request ends, a release follows its last pages to the holder.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lumen.executor.engine.kv_page import KVPage

__all__ = ["CheckpointStreamer", "PagePeer", "StreamerStats"]

log = logging.getLogger(__name__)


class PagePeer(Protocol):
    """The page operations of another worker (a :class:`~lumen.executor.worker.client.
    ExecutorClient`)."""

    def send_pages(
        self,
        request_id: int,
        pages: Sequence[tuple[KVPage, tuple[int, ...]]],
        reserve_bytes: int = 0,
    ) -> int: ...

    def release_pages(self, request_id: int) -> None: ...

    def fetch_pages(
        self,
        request_id: int,
        start: int = 0,
        end: int | None = None,
        timeout_s: float | None = None,
    ) -> list[KVPage]: ...


@dataclass(frozen=True, slots=True)
class StreamerStats:
    """What the streamer has done so far."""

    pages_sent: int
    bytes_sent: int
    failures: int
    queued: int


@dataclass(frozen=True, slots=True)
class _Job:
    holder: str
    request_id: int
    pages: tuple[tuple[KVPage, tuple[int, ...]], ...] = ()
    reserve_bytes: int = 0
    release: bool = False


class CheckpointStreamer:
    """Implements the engine loop's checkpoint sink (:class:`~.loop.CheckpointSink`).

    Args:
        peer: the page operations of the worker at an address.
        on_sent: called with the payload bytes of each batch delivered (metrics).
    """

    def __init__(
        self,
        peer: Callable[[str], PagePeer],
        on_sent: Callable[[int, int], None] | None = None,
    ) -> None:
        self._peer = peer
        self._on_sent = on_sent
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._dropped: set[tuple[str, int]] = set()
        self._pages_sent = 0
        self._bytes_sent = 0
        self._failures = 0
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="lumen-ckpt", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after the jobs already queued (waiting at most ``timeout_s``)."""
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # ---- the sink ----------------------------------------------------------------------------

    def pages(
        self,
        holder: str,
        request_id: int,
        pages: list[tuple[KVPage, tuple[int, ...]]],
        reserve_bytes: int,
    ) -> None:
        self._put(_Job(holder, request_id, tuple(pages), reserve_bytes))

    def release(self, holder: str, request_id: int) -> None:
        self._put(_Job(holder, request_id, release=True))

    # ---- observation -------------------------------------------------------------------------

    def stats(self) -> StreamerStats:
        return StreamerStats(
            self._pages_sent, self._bytes_sent, self._failures, self._jobs.qsize() + self._busy
        )

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued job has been handled; False on timeout."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self._jobs.qsize() == 0 and self._busy == 0, timeout_s
            )

    # ---- the thread --------------------------------------------------------------------------

    def _put(self, job: _Job) -> None:
        with self._idle:
            self._busy += 1
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._handle(job)
            except Exception as exc:  # the peer is gone or refused: keep streaming the others
                self._failures += 1
                if not job.release:
                    self._dropped.add((job.holder, job.request_id))
                log.warning(
                    "checkpoint %s of request %d to %s failed: %s",
                    "release" if job.release else "pages",
                    job.request_id,
                    job.holder,
                    exc,
                )
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _handle(self, job: _Job) -> None:
        key = (job.holder, job.request_id)
        peer = self._peer(job.holder)
        if job.release:
            self._dropped.discard(key)
            peer.release_pages(job.request_id)
            return
        if key in self._dropped:
            return
        peer.send_pages(job.request_id, job.pages, job.reserve_bytes)
        nbytes = sum(len(page.payload) for page, _ in job.pages)
        self._pages_sent += len(job.pages)
        self._bytes_sent += nbytes
        if self._on_sent is not None:
            self._on_sent(len(job.pages), nbytes)
