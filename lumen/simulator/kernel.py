"""A small deterministic discrete-event kernel (docs/architecture.md, conventions).

One heap keyed by ``(time, priority, sequence)``: earlier time first, then lower priority
number, then scheduling order, so ties break the same way on every run. Handlers receive the
simulation and their payload and may return follow-up events (:class:`FollowUp`) instead of
scheduling them by hand. All state that a run depends on — the clock, the sequence counter, id
counters and the random generator — hangs off the :class:`Simulation` object, so two runs with
the same seed and the same handlers are identical.

The kernel knows nothing about LLM serving; the cluster model is built on top of it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

Handler = Callable[["Simulation", Any], "Iterable[FollowUp] | None"]


@dataclass(frozen=True, slots=True)
class FollowUp:
    """An event a handler asks for: ``delay`` seconds after the current time."""

    delay: float
    handler: Handler
    payload: Any = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class EventHandle:
    """Identifies a scheduled event so that it can be cancelled."""

    time: float
    priority: int
    seq: int


class Simulation:
    """The event loop and every piece of state a run depends on."""

    def __init__(self, seed: int = 0, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start time must be finite, got {start}")
        self.now = float(start)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.events_processed = 0
        self._heap: list[tuple[float, int, int, Handler, Any]] = []
        self._seq = 0
        self._cancelled: set[int] = set()
        self._ids: dict[str, int] = {}

    # -- scheduling ------------------------------------------------------------------------------

    def at(
        self, time: float, handler: Handler, payload: Any = None, priority: int = 0
    ) -> EventHandle:
        """Schedule ``handler(sim, payload)`` at absolute ``time`` (not before now)."""
        if not math.isfinite(time):
            raise ValueError(f"event time must be finite, got {time}")
        if time < self.now:
            raise ValueError(f"cannot schedule at {time} before the current time {self.now}")
        seq = self._seq
        self._seq += 1
        heapq.heappush(self._heap, (time, priority, seq, handler, payload))
        return EventHandle(time, priority, seq)

    def after(
        self, delay: float, handler: Handler, payload: Any = None, priority: int = 0
    ) -> EventHandle:
        """Schedule ``handler(sim, payload)`` ``delay`` seconds from now."""
        if not delay >= 0.0:  # also rejects NaN
            raise ValueError(f"delay must be >= 0, got {delay}")
        return self.at(self.now + delay, handler, payload, priority)

    def cancel(self, handle: EventHandle) -> None:
        """Drop a scheduled event (lazily: it is skipped when it reaches the top of the heap)."""
        self._cancelled.add(handle.seq)

    def next_id(self, kind: str) -> int:
        """0, 1, 2, ... per ``kind``: ids that depend only on the order of the run."""
        value = self._ids.get(kind, 0)
        self._ids[kind] = value + 1
        return value

    @property
    def pending(self) -> int:
        """Events still scheduled (cancelled ones included until they are skipped)."""
        return len(self._heap)

    def peek(self) -> float | None:
        """Time of the next event that will run, or None when none is left."""
        while self._heap and self._heap[0][2] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._heap)[2])
        return self._heap[0][0] if self._heap else None

    # -- running ---------------------------------------------------------------------------------

    def step(self) -> bool:
        """Run the next event; False when there is none."""
        if self.peek() is None:
            return False
        time, _, _, handler, payload = heapq.heappop(self._heap)
        self.now = time
        self.events_processed += 1
        follow = handler(self, payload)
        if follow is not None:
            for f in follow:
                self.after(f.delay, f.handler, f.payload, f.priority)
        return True

    def run(self, until: float | None = None, max_events: int | None = None) -> int:
        """Run events in order until none is left, the next one is after ``until`` (the clock
        then stops at ``until``), or ``max_events`` have run. Returns how many ran."""
        ran = 0
        while max_events is None or ran < max_events:
            nxt = self.peek()
            if nxt is None or (until is not None and nxt > until):
                # Nothing left before ``until``: the clock moves on to it.
                if until is not None and until > self.now:
                    self.now = until
                break
            self.step()
            ran += 1
        return ran
