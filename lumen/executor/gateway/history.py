"""Per-request token history: what the client has been sent, the only truth a resume needs.

Every token a worker emits passes :meth:`TokenHistory.extend`, which places it by position
(``TokenEvent.generated_tokens`` counts all tokens emitted so far): tokens the history already
has are dropped, so a resumed request that repeats a token it was given is never sent twice, and
a gap (a token missing before the new ones) is refused instead of being papered over. A request
is resumed anywhere with ``generated_token_ids = history`` and continues exactly where its
client's stream stopped.

A :class:`TrackedRequest` adds what the gateway knows about the request's current attempt: the
worker it runs on (its *home*), its checkpoint holder, and an attempt counter. Recovery bumps
the counter under the request's lock; a stream thread of an older attempt that wakes up later
finds the counter changed and drops what it got, so an abandoned (hung) worker can never write
into a request that moved on.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from lumen.executor.worker.api import TokenLogprob


class HistoryGapError(RuntimeError):
    """A worker emitted tokens after a position the history has not reached."""


class TokenHistory:
    """The output token ids of one request, in order (not thread-safe: callers hold a lock)."""

    def __init__(self) -> None:
        self._ids: list[int] = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(self._ids)

    def extend(self, token_ids: tuple[int, ...], generated_tokens: int) -> tuple[int, ...]:
        """Add the tokens that end at position ``generated_tokens``; returns the new ones.

        Raises:
            HistoryGapError: the tokens start after the end of the history.
        """
        start = generated_tokens - len(token_ids)
        if start > len(self._ids):
            raise HistoryGapError(
                f"tokens start at position {start} but the history has {len(self._ids)}"
            )
        new = token_ids[len(self._ids) - start :]
        self._ids.extend(new)
        return new


@dataclass(frozen=True, slots=True)
class StreamItem:
    """What a client's sink receives: new tokens (with their log probabilities when the
    request asked for them), or the end (``finish``: "stop", "length", or "error" with
    ``error`` set)."""

    index: int
    token_ids: tuple[int, ...] = ()
    finish: str | None = None
    error: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(eq=False)
class TrackedRequest:
    """One client request inside the gateway (see the module docstring).

    Attributes:
        index: the choice index inside its HTTP call (several prompts share one sink).
        worker: the worker running the current attempt (None: waiting to be dispatched).
        holder: the worker the current attempt streams checkpoints to (None: no checkpoint).
        attempt: bumped whenever the request is taken off a worker.
        resumes: how many times the request was resumed after a failure.
    """

    request_id: int
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    sink: queue.Queue[StreamItem]
    index: int = 0
    temperature: float = 0.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    top_p: float = 1.0
    top_k: int = 0
    logprobs: int | None = None
    history: TokenHistory = field(default_factory=TokenHistory)
    worker: int | None = None
    holder: int | None = None
    attempt: int = 0
    resumes: int = 0
    done: bool = False
    arrived_s: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None
    last_token_s: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def context_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.history)
