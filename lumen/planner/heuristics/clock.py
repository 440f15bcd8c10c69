"""When a heuristic must stop: the call's time limit and its cancel event.

A :class:`Clock` is made per solve from its :class:`SolveSettings`. Heuristics ask it between
units of work (every :data:`CHECK_EVERY` insertions, before each local-search round) and stop
there: before any plan exists they raise :class:`Stopped` (the backend answers NO_SOLUTION with
the limit); after, they keep the plan they have and the clock remembers why they stopped
(:attr:`Clock.hit`), so that the result says FEASIBLE with that limit rather than a plain
heuristic result. A plan then depends on timing; one whose limit did not bind does not.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from lumen.planner.result import Limit, SolveSettings

#: Insertion loops ask the clock once per this many requests.
CHECK_EVERY = 64


class Stopped(Exception):
    """Work stopped before any plan existed; ``limit`` says why."""

    def __init__(self, limit: Limit, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass
class Clock:
    """A deadline (``time.perf_counter()`` seconds) and a cancel event, and the first limit that
    stopped some work (:attr:`hit`, None while none has)."""

    deadline: float = math.inf
    cancel: threading.Event | None = None
    hit: Limit | None = None
    #: What stopped, for the result's message.
    why: str = ""

    @classmethod
    def of(cls, settings: SolveSettings, start: float) -> Clock:
        return cls(start + settings.time_limit_s, settings.cancel)

    def limit(self) -> Limit | None:
        """The limit reached now (cancellation first), or None."""
        return self.allows(0.0)

    def allows(self, seconds: float) -> Limit | None:
        """The limit that work of about ``seconds`` would reach (None: it fits)."""
        if self.cancel is not None and self.cancel.is_set():
            return Limit.CANCELLED
        return Limit.TIME if time.perf_counter() + seconds > self.deadline else None

    def check(self, what: str) -> None:
        """Raise :class:`Stopped` if a limit is reached (``what``: the work cut, for its
        message)."""
        if (limit := self.limit()) is not None:
            raise Stopped(limit, f"stopped ({limit.value}) {what}")

    def stop(self, limit: Limit, why: str) -> None:
        """Record that ``limit`` cut work after a plan existed (the first record stays)."""
        if self.hit is None:
            self.hit, self.why = limit, why
