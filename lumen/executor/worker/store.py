"""The host-memory checkpoint store of a holder worker (docs/architecture.md; no torch import).

A worker holds KV checkpoint pages of requests that run on *other* workers, so that a request
interrupted by its home's failure resumes from the longest valid prefix instead of prefilling
everything again. The store keeps the paper's guarantees:

- **reservations**: the holder reserves a request's maximum context up front
  (:meth:`CheckpointStore.reserve`); the sum of reservations never exceeds the budget, and a
  request's pages never exceed its reservation;
- **pages become valid only when complete**: a page passes :meth:`KVPage.verify` (size, shape,
  checksum) and its tag must chain from the previous valid page over the page's own token ids
  (:func:`~lumen.executor.engine.kv_page.page_tag`); a truncated or corrupt page is refused and
  never becomes visible;
- **staging, then atomic activation**: a complete page whose predecessor has not arrived yet is
  staged (it counts against the reservation but is invisible); when the chain reaches it, its tag
  is checked and it joins the valid prefix under the same lock, so readers see a prefix either
  before or after the page, never a page half-added;
- **longest valid prefix**: :meth:`CheckpointStore.valid_prefix_tokens` and
  :meth:`CheckpointStore.pages` only ever expose the contiguous chain from position 0;
- **release**: :meth:`CheckpointStore.release` frees a request's pages and reservation when it ends.

Pages start on block boundaries and only the last one may be partial; a partial last page is
replaced when a longer copy of it arrives (the sender re-sends it as the request grows).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from lumen.executor.engine.kv_page import ROOT_TAG, KVPage, page_tag

__all__ = [
    "BudgetExceededError",
    "CheckpointError",
    "CheckpointStore",
    "NotReservedError",
    "PageOutcome",
    "PageResult",
    "StoreStats",
]


class CheckpointError(Exception):
    """Base class of the store's errors."""


class BudgetExceededError(CheckpointError):
    """A reservation that does not fit in the host budget (RESOURCE_EXHAUSTED at the boundary)."""


class NotReservedError(CheckpointError, KeyError):
    """The store holds no reservation for this request."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else "no reservation"


class PageOutcome(StrEnum):
    """What :meth:`CheckpointStore.add_page` did with a page."""

    ACTIVATED = "activated"  # joined the valid prefix (and maybe pulled staged pages in after it)
    REPLACED = "replaced"  # a longer copy of the partial last page replaced it
    STAGED = "staged"  # complete, but its predecessor has not arrived yet
    DUPLICATE = "duplicate"  # nothing new (same or shorter copy of a held page)
    REJECTED = "rejected"  # never becomes valid; ``reason`` says why


@dataclass(frozen=True, slots=True)
class PageResult:
    """The outcome of one page and the request's valid prefix afterwards (tokens)."""

    outcome: PageOutcome
    valid_tokens: int
    reason: str = ""

    @property
    def accepted(self) -> bool:
        """Whether the store kept the page (valid now or staged)."""
        return self.outcome in (PageOutcome.ACTIVATED, PageOutcome.REPLACED, PageOutcome.STAGED)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Accounting of the whole store at one instant."""

    budget_bytes: int
    reserved_bytes: int
    held_bytes: int
    requests: int
    pages: int


@dataclass(eq=False, slots=True)
class _Entry:
    """One request's reservation, its valid chain and its staged pages."""

    reserved: int
    chain: list[KVPage] = field(default_factory=list)
    staged: dict[int, tuple[KVPage, tuple[int, ...]]] = field(default_factory=dict)
    held: int = 0

    @property
    def valid_tokens(self) -> int:
        return self.chain[-1].end_position if self.chain else 0


class CheckpointStore:
    """Checkpoint pages held for other workers, within ``budget_bytes`` of host memory.

    Thread-safe: every method takes one lock; readers get copies of the page lists (the pages
    themselves are immutable).
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self._budget = budget_bytes
        self._entries: dict[str, _Entry] = {}
        self._reserved = 0
        self._held = 0
        self._lock = threading.Lock()

    # ---- accounting --------------------------------------------------------------------------

    @property
    def budget_bytes(self) -> int:
        """Host memory the store may reserve."""
        return self._budget

    @property
    def reserved_bytes(self) -> int:
        """Sum of the reservations (never above the budget)."""
        with self._lock:
            return self._reserved

    @property
    def held_bytes(self) -> int:
        """Payload bytes of the pages held, staged ones included (never above the reservations)."""
        with self._lock:
            return self._held

    def stats(self) -> StoreStats:
        """A consistent snapshot of the accounting."""
        with self._lock:
            pages = sum(len(e.chain) + len(e.staged) for e in self._entries.values())
            return StoreStats(self._budget, self._reserved, self._held, len(self._entries), pages)

    def inventory(self) -> dict[str, int]:
        """Request id -> valid checkpointed prefix (tokens), for every reserved request."""
        with self._lock:
            return {rid: e.valid_tokens for rid, e in self._entries.items()}

    def has(self, request_id: str) -> bool:
        """Whether the request has a reservation here."""
        with self._lock:
            return request_id in self._entries

    # ---- reservations ------------------------------------------------------------------------

    def reserve(self, request_id: str, nbytes: int) -> int:
        """Reserve ``nbytes`` for ``request_id`` (its maximum context); returns its reservation.

        Reserving again keeps the larger of the two sizes (growing needs budget too).

        Raises:
            ValueError: ``nbytes`` is negative.
            BudgetExceededError: the reservation does not fit in the remaining budget.
        """
        if nbytes < 0:
            raise ValueError(f"reserve({request_id!r}): nbytes must be >= 0, got {nbytes}")
        with self._lock:
            entry = self._entries.get(request_id)
            current = entry.reserved if entry is not None else 0
            extra = nbytes - current
            if extra <= 0:
                return current
            if self._reserved + extra > self._budget:
                free = self._budget - self._reserved
                raise BudgetExceededError(
                    f"checkpoint of request {request_id!r} needs {nbytes} bytes"
                    f" ({extra} more than reserved); only {free} of {self._budget} are free"
                )
            if entry is None:
                self._entries[request_id] = _Entry(reserved=nbytes)
            else:
                entry.reserved = nbytes
            self._reserved += extra
            return nbytes

    def release(self, request_id: str) -> int:
        """Drop the request's pages and reservation; returns the bytes of reservation freed
        (0 when it had none)."""
        with self._lock:
            entry = self._entries.pop(request_id, None)
            if entry is None:
                return 0
            self._reserved -= entry.reserved
            self._held -= entry.held
            return entry.reserved

    # ---- pages -------------------------------------------------------------------------------

    def add_page(self, page: KVPage, token_ids: Sequence[int]) -> PageResult:
        """Offer one received page; ``token_ids`` are the tokens at its positions.

        The page is refused (never valid) when it fails :meth:`KVPage.verify` (truncated,
        corrupt), its token ids do not match its range, or it does not fit the reservation; it is
        staged when its predecessor is missing, and activated when it extends the chain with a
        tag computed from the previous page's tag and its own tokens.

        Raises:
            NotReservedError: the request has no reservation.
        """
        tokens = tuple(int(t) for t in token_ids)
        with self._lock:
            entry = self._entries.get(page.request_id)
            if entry is None:
                raise NotReservedError(
                    f"no checkpoint reservation for request {page.request_id!r}; reserve first"
                )
            problem = _check_complete(page, tokens)
            if problem:
                return PageResult(PageOutcome.REJECTED, entry.valid_tokens, problem)
            index = page.page_index
            chain = entry.chain
            if index < len(chain) - 1 or (
                index == len(chain) - 1 and page.end_position <= chain[-1].end_position
            ):
                return PageResult(PageOutcome.DUPLICATE, entry.valid_tokens)
            if index == len(chain) - 1:
                return self._replace_last(entry, page, tokens)
            if index == len(chain) and page.start_position == entry.valid_tokens:
                return self._append(entry, page, tokens)
            return self._stage(entry, page, tokens)

    def valid_prefix_tokens(self, request_id: str) -> int:
        """Length of the request's contiguous valid prefix (0 without pages or reservation)."""
        with self._lock:
            entry = self._entries.get(request_id)
            return entry.valid_tokens if entry is not None else 0

    def pages(self, request_id: str, start: int = 0, end: int | None = None) -> list[KVPage]:
        """Valid pages overlapping positions ``[start, end)`` (``end`` None: to the prefix's end).

        Raises:
            NotReservedError: the request has no reservation.
        """
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                raise NotReservedError(f"no checkpoint held for request {request_id!r}")
            stop = entry.valid_tokens if end is None else end
            return [p for p in entry.chain if p.end_position > start and p.start_position < stop]

    # ---- internals (called with the lock held) -----------------------------------------------

    def _fits(self, entry: _Entry, extra: int) -> str:
        if entry.held + extra > entry.reserved:
            return (
                f"page needs {extra} bytes; the reservation has {entry.reserved - entry.held}"
                f" of {entry.reserved} left"
            )
        return ""

    def _replace_last(self, entry: _Entry, page: KVPage, tokens: tuple[int, ...]) -> PageResult:
        chain = entry.chain
        old = chain[-1]
        prev = chain[-2].token_tag if len(chain) > 1 else ROOT_TAG
        if page.start_position != old.start_position or not _chains(page, tokens, prev):
            return PageResult(PageOutcome.REJECTED, entry.valid_tokens, "tag does not chain")
        extra = len(page.payload) - len(old.payload)
        problem = self._fits(entry, extra)
        if problem:
            return PageResult(PageOutcome.REJECTED, entry.valid_tokens, problem)
        chain[-1] = page
        self._account(entry, extra)
        self._promote(entry)
        return PageResult(PageOutcome.REPLACED, entry.valid_tokens)

    def _append(self, entry: _Entry, page: KVPage, tokens: tuple[int, ...]) -> PageResult:
        chain = entry.chain
        prev = chain[-1].token_tag if chain else ROOT_TAG
        if not _chains(page, tokens, prev):
            return PageResult(PageOutcome.REJECTED, entry.valid_tokens, "tag does not chain")
        old = entry.staged.pop(page.page_index, None)
        extra = len(page.payload) - (len(old[0].payload) if old else 0)
        problem = self._fits(entry, extra)
        if problem:
            if old is not None:
                entry.staged[page.page_index] = old
            return PageResult(PageOutcome.REJECTED, entry.valid_tokens, problem)
        chain.append(page)
        self._account(entry, extra)
        self._promote(entry)
        return PageResult(PageOutcome.ACTIVATED, entry.valid_tokens)

    def _stage(self, entry: _Entry, page: KVPage, tokens: tuple[int, ...]) -> PageResult:
        old = entry.staged.get(page.page_index)
        if old is not None and old[0].end_position > page.end_position:
            return PageResult(PageOutcome.DUPLICATE, entry.valid_tokens)
        # An equal or longer copy supersedes the staged one (a re-send may fix a bad copy).
        extra = len(page.payload) - (len(old[0].payload) if old else 0)
        problem = self._fits(entry, extra)
        if problem:
            return PageResult(PageOutcome.REJECTED, entry.valid_tokens, problem)
        entry.staged[page.page_index] = (page, tokens)
        self._account(entry, extra)
        return PageResult(PageOutcome.STAGED, entry.valid_tokens)

    def _promote(self, entry: _Entry) -> None:
        """Move staged pages that now continue the chain into it (dropping ones that do not)."""
        while True:
            staged = entry.staged.get(len(entry.chain))
            if staged is None or staged[0].start_position != entry.valid_tokens:
                return  # the next page is missing, or the last one is still partial
            page, tokens = entry.staged.pop(len(entry.chain))
            prev = entry.chain[-1].token_tag if entry.chain else ROOT_TAG
            if not _chains(page, tokens, prev):
                self._account(entry, -len(page.payload))
                return
            entry.chain.append(page)

    def _account(self, entry: _Entry, delta: int) -> None:
        entry.held += delta
        self._held += delta


def _check_complete(page: KVPage, tokens: tuple[int, ...]) -> str:
    if page.page_index < 0:
        return "negative page index"
    if not page.verify():
        return "incomplete or corrupt page (size, shape or checksum mismatch)"
    if len(tokens) != page.num_tokens:
        return f"{len(tokens)} token ids for a page of {page.num_tokens} positions"
    return ""


def _chains(page: KVPage, tokens: tuple[int, ...], prev_tag: bytes) -> bool:
    return page_tag(prev_tag, page.start_position, tokens) == page.token_tag
