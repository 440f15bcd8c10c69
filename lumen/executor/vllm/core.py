"""The vLLM-free half of LUMEN's vLLM connector (no vLLM, no torch import).

vLLM's KV connector API (``KVConnectorBase_V1``) splits a connector in two: a *scheduler side*
that decides, per step, which requests load KV from outside and which blocks are saved, and a
*worker side* that moves the bytes. Everything here is plain bookkeeping that CI tests without
vLLM; :mod:`~lumen.executor.vllm.connector` only translates vLLM's objects into these calls.

- **One vLLM block is one LUMEN page.** The page size is vLLM's ``block_size``; page ``i`` of a
  request covers positions ``[i * block_size, (i + 1) * block_size)``, carries the chained tag of
  its tokens (:func:`~lumen.executor.engine.kv_page.page_tag`) and a checksum, exactly as the
  built-in engine's pages, so the same holder store validates and activates them.
- **Restores load whole blocks.** A restored request matches the longest valid checkpointed
  prefix offered for it (each page verified, contiguous from position 0, its tag chaining over
  the request's own tokens), rounded down to whole blocks and kept below the request's length
  (vLLM must compute at least the last token); the tail is prefilled again.
- **Saves are whole blocks.** After a step, every block whose tokens are all computed and known
  (never speculative tokens) is copied out once, in order, for each request that has a holder
  (:meth:`LumenKVBridge.set_saving`); the engine loop hands the pages to the checkpoint
  streamer, which sends them to the holder.
- **The bridge** (:class:`LumenKVBridge`) is the in-process meeting point: the vLLM engine
  adapter offers restore pages and drains saved pages, the connector's two halves read and fill
  it. vLLM creates the connector itself, so it finds the bridge by name
  (:func:`register_bridge`, :func:`get_bridge`) from ``kv_connector_extra_config``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lumen.executor.engine.kv_page import ROOT_TAG, KVLayout, KVPage, page_tag

__all__ = [
    "BRIDGE_KEY",
    "REQUEST_KEY",
    "BlockIO",
    "BridgeStats",
    "CachedRequest",
    "LoadSpec",
    "LumenKVBridge",
    "NewRequest",
    "SaveSpec",
    "SchedulerBook",
    "StepPlan",
    "WorkerSide",
    "get_bridge",
    "matchable_tokens",
    "register_bridge",
    "unregister_bridge",
    "valid_restore_prefix",
]

#: ``kv_connector_extra_config`` key naming the bridge of the worker process.
BRIDGE_KEY = "lumen_bridge"
#: ``kv_transfer_params`` key carrying LUMEN's request id (vLLM suffixes its own ids).
REQUEST_KEY = "lumen_request_id"


def matchable_tokens(valid_prefix: int, num_tokens: int, block_size: int) -> int:
    """Tokens a request of ``num_tokens`` can load from a ``valid_prefix``: whole blocks only,
    and fewer than ``num_tokens`` (the last token is always computed, to sample the next)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    usable = min(valid_prefix, max(num_tokens - 1, 0))
    return usable // block_size * block_size


def valid_restore_prefix(
    pages: Iterable[KVPage], token_ids: Sequence[int], layout: KVLayout
) -> list[KVPage]:
    """The longest run of full pages, contiguous from position 0, that verify and whose tags
    chain over ``token_ids``. Pages out of order are sorted first; the run stops at the first
    missing, partial, corrupt or mismatched page."""
    by_index: dict[int, KVPage] = {}
    for page in pages:
        by_index.setdefault(page.page_index, page)
    size = layout.block_size
    expected_shape = layout.page_shape(size)
    chain: list[KVPage] = []
    prev = ROOT_TAG
    while True:
        index = len(chain)
        cand = by_index.get(index)
        if cand is None or cand.start_position != index * size or cand.num_tokens != size:
            return chain
        if cand.shape != expected_shape or cand.dtype != layout.dtype or not cand.verify():
            return chain
        if not cand.matches(token_ids, prev):
            return chain
        chain.append(cand)
        prev = cand.token_tag


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Blocks of one request to fill from its restore pages: ``block_ids[k]`` receives page
    ``first_page + k``."""

    request_id: str
    block_ids: tuple[int, ...]
    first_page: int


@dataclass(frozen=True, slots=True)
class SaveSpec:
    """Newly completed blocks of one request to copy out: ``block_ids[k]`` holds page
    ``first_page + k``, over ``token_ids[k * block_size:(k + 1) * block_size]``, tagged
    ``tags[k]``."""

    request_id: str
    block_ids: tuple[int, ...]
    first_page: int
    token_ids: tuple[int, ...]
    tags: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What the worker side does in one step (the connector metadata's content)."""

    loads: tuple[LoadSpec, ...] = ()
    saves: tuple[SaveSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request scheduled for the first time (or again after preemption): all its blocks."""

    request_id: str
    block_ids: tuple[int, ...]
    num_computed_tokens: int


@dataclass(frozen=True, slots=True)
class CachedRequest:
    """A request scheduled again: the blocks added this step (``resumed``: they replace all)."""

    request_id: str
    new_block_ids: tuple[int, ...]
    num_computed_tokens: int
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """What the connector moved so far in this process."""

    restored_requests: int = 0
    restored_tokens: int = 0
    loaded_bytes: int = 0
    load_seconds: float = 0.0
    saved_pages: int = 0
    saved_bytes: int = 0
    load_errors: int = 0


class LumenKVBridge:
    """Restore pages offered for requests and pages saved from them, in one worker process.

    Thread-safe: the engine loop, vLLM's scheduler and its model runner may call from different
    threads.
    """

    def __init__(self, layout: KVLayout) -> None:
        self.layout = layout
        self._lock = threading.Lock()
        self._restores: dict[str, list[KVPage]] = {}
        self._saved: dict[str, list[KVPage]] = {}
        self._saving: set[str] = set()
        self._stats = BridgeStats()

    # ---- which requests are checkpointed -----------------------------------------------------

    def set_saving(self, request_id: str, saving: bool) -> None:
        """Whether the request's completed blocks are copied out (it has a holder)."""
        with self._lock:
            if saving:
                self._saving.add(request_id)
            else:
                self._saving.discard(request_id)

    def saving(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._saving

    # ---- restores (engine adapter -> scheduler side -> worker side) --------------------------

    def offer_restore(
        self, request_id: str, token_ids: Sequence[int], pages: Iterable[KVPage]
    ) -> int:
        """Keep the valid prefix of ``pages`` for ``request_id``; returns the tokens vLLM will
        load for it (:func:`matchable_tokens`)."""
        chain = valid_restore_prefix(pages, token_ids, self.layout)
        matched = matchable_tokens(
            chain[-1].end_position if chain else 0, len(token_ids), self.layout.block_size
        )
        kept = chain[: matched // self.layout.block_size]
        with self._lock:
            if kept:
                self._restores[request_id] = kept
            else:
                self._restores.pop(request_id, None)
        return matched

    def restorable_tokens(self, request_id: str) -> int:
        """Tokens held for a restore of ``request_id`` (whole blocks; 0 when none)."""
        with self._lock:
            pages = self._restores.get(request_id)
            return pages[-1].end_position if pages else 0

    def restore_page(self, request_id: str, page_index: int) -> KVPage | None:
        with self._lock:
            pages = self._restores.get(request_id, [])
            return pages[page_index] if 0 <= page_index < len(pages) else None

    def restore_done(self, request_id: str, loaded_bytes: int, seconds: float, errors: int) -> None:
        """The worker side loaded the request's pages: keep them as its first saved pages (the
        new holder needs them too; they are already host pages with the right tags)."""
        with self._lock:
            pages = self._restores.pop(request_id, [])
            if pages and not errors and request_id in self._saving:
                self._saved.setdefault(request_id, [])[:0] = pages
            s = self._stats
            self._stats = BridgeStats(
                s.restored_requests + (1 if pages else 0),
                s.restored_tokens + (pages[-1].end_position if pages else 0),
                s.loaded_bytes + loaded_bytes,
                s.load_seconds + seconds,
                s.saved_pages,
                s.saved_bytes,
                s.load_errors + errors,
            )

    # ---- saves (worker side -> engine adapter) -----------------------------------------------

    def put_saved(self, pages: Sequence[KVPage]) -> None:
        with self._lock:
            for page in pages:
                self._saved.setdefault(page.request_id, []).append(page)
            s = self._stats
            nbytes = sum(len(p.payload) for p in pages)
            self._stats = BridgeStats(
                s.restored_requests,
                s.restored_tokens,
                s.loaded_bytes,
                s.load_seconds,
                s.saved_pages + len(pages),
                s.saved_bytes + nbytes,
                s.load_errors,
            )

    def take_saved(self, request_id: str, from_position: int = 0) -> list[KVPage]:
        """Saved pages of the request ending after ``from_position``; pages ending at or before
        it were sent already and are dropped."""
        with self._lock:
            pages = self._saved.get(request_id, [])
            keep = [p for p in pages if p.end_position > from_position]
            if pages:
                self._saved[request_id] = keep
            return list(keep)

    def finish(self, request_id: str) -> None:
        """Forget a finished or aborted request (its host copies are freed)."""
        with self._lock:
            self._restores.pop(request_id, None)
            self._saved.pop(request_id, None)
            self._saving.discard(request_id)

    def held_bytes(self) -> int:
        """Host bytes of restore and saved pages held now."""
        with self._lock:
            groups = [*self._restores.values(), *self._saved.values()]
            return sum(len(p.payload) for pages in groups for p in pages)

    def stats(self) -> BridgeStats:
        with self._lock:
            return self._stats


_BRIDGES: dict[str, LumenKVBridge] = {}
_BRIDGES_LOCK = threading.Lock()


def register_bridge(name: str, bridge: LumenKVBridge) -> None:
    """Make ``bridge`` findable by the connector vLLM creates in this process."""
    with _BRIDGES_LOCK:
        _BRIDGES[name] = bridge


def unregister_bridge(name: str) -> None:
    with _BRIDGES_LOCK:
        _BRIDGES.pop(name, None)


def get_bridge(name: str) -> LumenKVBridge:
    """The bridge registered under ``name``.

    Raises:
        LookupError: none is; the connector then runs outside a LUMEN worker process (vLLM
            multiprocessing on, or a plain ``vllm serve``), which it does not support.
    """
    with _BRIDGES_LOCK:
        bridge = _BRIDGES.get(name)
    if bridge is None:
        raise LookupError(
            f"no LUMEN KV bridge {name!r} in this process: LumenConnector runs inside "
            "`python -m lumen.executor.worker --engine vllm` (VLLM_ENABLE_V1_MULTIPROCESSING=0)"
        )
    return bridge


@dataclass(eq=False, slots=True)
class _Tracked:
    """Scheduler-side state of one request."""

    token_source: Sequence[int]
    block_ids: list[int] = field(default_factory=list)
    saved_pages: int = 0
    last_tag: bytes = ROOT_TAG
    computed_at_match: int = 0


class SchedulerBook:
    """The scheduler side's bookkeeping: matched tokens, pending loads, save progress.

    ``token_source`` of a request is a live sequence of its tokens (vLLM's
    ``Request.all_token_ids``), read when a step is planned.
    """

    def __init__(self, bridge: LumenKVBridge) -> None:
        self.bridge = bridge
        self.block_size = bridge.layout.block_size
        self._tracked: dict[str, _Tracked] = {}
        self._pending_loads: dict[str, LoadSpec] = {}
        self._ready: dict[str, SaveSpec] = {}

    def track(self, request_id: str, token_source: Sequence[int]) -> None:
        if request_id not in self._tracked:
            self._tracked[request_id] = _Tracked(token_source)

    def matched_tokens(
        self, request_id: str, token_source: Sequence[int], num_computed_tokens: int
    ) -> int:
        """``get_num_new_matched_tokens``: tokens to load beyond those vLLM already has."""
        self.track(request_id, token_source)
        held = self.bridge.restorable_tokens(request_id)
        matched = matchable_tokens(held, len(token_source), self.block_size)
        self._tracked[request_id].computed_at_match = num_computed_tokens
        return max(0, matched - num_computed_tokens)

    def after_alloc(
        self, request_id: str, block_ids: Sequence[int], num_external_tokens: int
    ) -> None:
        """``update_state_after_alloc``: remember which blocks receive the loaded tokens."""
        tracked = self._tracked.get(request_id)
        if tracked is None or num_external_tokens <= 0:
            return
        first = tracked.computed_at_match // self.block_size
        count = num_external_tokens // self.block_size
        if first + count > len(block_ids):
            raise ValueError(
                f"request {request_id!r}: {len(block_ids)} blocks for {first + count} to load"
            )
        self._pending_loads[request_id] = LoadSpec(
            request_id, tuple(block_ids[first : first + count]), first
        )
        # The loaded pages become the request's first saved pages (WorkerSide.load): do not
        # copy those blocks out again.
        last = self.bridge.restore_page(request_id, first + count - 1)
        if last is not None and first + count > tracked.saved_pages:
            tracked.saved_pages = first + count
            tracked.last_tag = last.token_tag

    def plan_step(
        self,
        new: Iterable[NewRequest],
        cached: Iterable[CachedRequest],
        num_scheduled_tokens: dict[str, int],
    ) -> StepPlan:
        """``build_connector_meta``: this step's loads and the blocks it completes."""
        loads = tuple(self._pending_loads.values())
        self._pending_loads.clear()
        for req in new:
            tracked = self._tracked.get(req.request_id)
            if tracked is None:
                continue
            tracked.block_ids = list(req.block_ids)
            self._plan_save(req.request_id, tracked, req.num_computed_tokens, num_scheduled_tokens)
        for creq in cached:
            tracked = self._tracked.get(creq.request_id)
            if tracked is None:
                continue
            if creq.resumed:
                tracked.block_ids = list(creq.new_block_ids)
            else:
                tracked.block_ids.extend(creq.new_block_ids)
            self._plan_save(
                creq.request_id, tracked, creq.num_computed_tokens, num_scheduled_tokens
            )
        saves = tuple(self._ready.values())
        self._ready.clear()
        return StepPlan(loads, saves)

    def _plan_save(
        self,
        request_id: str,
        tracked: _Tracked,
        num_computed: int,
        num_scheduled_tokens: dict[str, int],
    ) -> None:
        if not self.bridge.saving(request_id):
            return  # no holder: nothing is copied out
        tokens = tracked.token_source
        # Positions whose K/V exist after this step: never beyond the known tokens, so
        # speculative tokens (maybe rejected) are never saved.
        done = min(num_computed + num_scheduled_tokens.get(request_id, 0), len(tokens))
        full = min(done // self.block_size, len(tracked.block_ids))
        if full <= tracked.saved_pages:
            return
        size = self.block_size
        first = tracked.saved_pages
        token_ids = tuple(int(t) for t in tokens[first * size : full * size])
        tags: list[bytes] = []
        prev = tracked.last_tag
        for k in range(full - first):
            prev = page_tag(prev, (first + k) * size, token_ids[k * size : (k + 1) * size])
            tags.append(prev)
        self._ready[request_id] = SaveSpec(
            request_id, tuple(tracked.block_ids[first:full]), first, token_ids, tuple(tags)
        )
        tracked.saved_pages = full
        tracked.last_tag = prev

    def finished(self, request_id: str) -> None:
        """``request_finished``: forget the request here and in the bridge."""
        self._tracked.pop(request_id, None)
        self._pending_loads.pop(request_id, None)
        self.bridge.finish(request_id)

    def tracked_requests(self) -> int:
        return len(self._tracked)


class BlockIO(Protocol):
    """Copies between the paged KV cache and page payloads (the binding's torch code)."""

    def read_blocks(self, block_ids: Sequence[int]) -> list[bytes]:
        """One payload per block, in the page layout ``(layers, 2, block_size, heads, dim)``."""
        ...

    def write_blocks(self, block_ids: Sequence[int], payloads: Sequence[bytes]) -> None:
        """Write payloads of the page layout into the blocks."""
        ...


class WorkerSide:
    """The worker side's work for one step, given a :class:`BlockIO`."""

    def __init__(self, bridge: LumenKVBridge, clock: Callable[[], float] | None = None) -> None:
        self.bridge = bridge
        self._clock = clock or time.perf_counter
        self.failed_blocks: set[int] = set()

    def load(self, plan: StepPlan, io: BlockIO) -> int:
        """Fill the blocks of every load; returns the bytes written. Blocks whose page is gone
        are reported in :attr:`failed_blocks` (vLLM recomputes them)."""
        total = 0
        for spec in plan.loads:
            started = self._clock()
            pages = [
                self.bridge.restore_page(spec.request_id, spec.first_page + k)
                for k in range(len(spec.block_ids))
            ]
            good = [(b, p) for b, p in zip(spec.block_ids, pages, strict=True) if p is not None]
            missing = {b for b, p in zip(spec.block_ids, pages, strict=True) if p is None}
            if good:
                io.write_blocks([b for b, _ in good], [p.payload for _, p in good])
            nbytes = sum(len(p.payload) for _, p in good)
            total += nbytes
            self.failed_blocks |= missing
            self.bridge.restore_done(spec.request_id, nbytes, self._clock() - started, len(missing))
        return total

    def save(self, plan: StepPlan, io: BlockIO) -> int:
        """Copy out every newly completed block as a tagged, checksummed page; returns the
        pages saved."""
        layout = self.bridge.layout
        size = layout.block_size
        count = 0
        for spec in plan.saves:
            payloads = io.read_blocks(spec.block_ids)
            pages = [
                KVPage.create(
                    request_id=spec.request_id,
                    page_index=spec.first_page + k,
                    start_position=(spec.first_page + k) * size,
                    end_position=(spec.first_page + k + 1) * size,
                    token_tag=spec.tags[k],
                    dtype=layout.dtype,
                    shape=layout.page_shape(size),
                    payload=payload,
                )
                for k, payload in enumerate(payloads)
            ]
            self.bridge.put_saved(pages)
            count += len(pages)
        return count

    def take_failed(self) -> set[int]:
        failed, self.failed_blocks = self.failed_blocks, set()
        return failed
