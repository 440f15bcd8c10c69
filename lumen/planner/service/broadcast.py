"""Fan-out of published plans to subscribers, with a bounded replay buffer.

Every published plan gets the next sequence number (1, 2, ...) and goes into a ring buffer of the
last ``history`` updates and into each subscriber's bounded queue. A subscriber that asks for
``after_sequence = s`` first receives the buffered updates above ``s``. A subscriber that falls
``queue_size`` updates behind is dropped (its stream ends with :attr:`Subscription.overflowed`
set) rather than making the publisher block or memory grow: it resubscribes with the last
sequence it saw and gets the rest from the buffer.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time

from lumen.planner.decisions import Decision, PlanUpdate, Status


class Subscription:
    """One subscriber's queue; iterate with :meth:`get` until it returns None."""

    def __init__(self, owner: PlanBroadcaster, size: int) -> None:
        self._owner = owner
        self._queue: queue.Queue[PlanUpdate | None] = queue.Queue(maxsize=size)
        self.closed = False
        self.overflowed = False

    def _offer(self, update: PlanUpdate | None) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(update)
        except queue.Full:
            self.overflowed = True
            self.closed = True

    def get(self, timeout_s: float) -> PlanUpdate | None:
        """The next update; None after ``timeout_s`` without one, or once closed (check
        :attr:`closed` to tell the two apart)."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._owner.unsubscribe(self)


class PlanBroadcaster:
    """Thread-safe publisher of :class:`PlanUpdate` records."""

    def __init__(self, history: int = 256, queue_size: int = 1024) -> None:
        self._lock = threading.Lock()
        self._buffer: collections.deque[PlanUpdate] = collections.deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self._sequence = 0
        self._closed = False

    @property
    def last_sequence(self) -> int:
        return self._sequence

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, plan: Decision, status: Status, state_version: int) -> PlanUpdate:
        with self._lock:
            self._sequence += 1
            update = PlanUpdate(self._sequence, time.time(), state_version, status, plan)
            self._buffer.append(update)
            for sub in list(self._subscribers):
                sub._offer(update)
                if sub.closed:
                    self._subscribers.discard(sub)
            return update

    def subscribe(self, after_sequence: int = 0) -> Subscription:
        """A new subscription; buffered updates above ``after_sequence`` (when it is > 0) are
        queued first, so that nothing published after this call is missed."""
        with self._lock:
            sub = Subscription(self, self._queue_size)
            if self._closed:
                sub.closed = True
                return sub
            if after_sequence > 0:
                for update in self._buffer:
                    if update.sequence > after_sequence:
                        sub._offer(update)
            self._subscribers.add(sub)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)
            sub.closed = True

    def close(self) -> None:
        """End every subscription (graceful shutdown); later subscriptions start closed."""
        with self._lock:
            self._closed = True
            for sub in self._subscribers:
                sub.closed = True
                with contextlib.suppress(queue.Full):
                    sub._queue.put_nowait(None)  # wake a blocked reader
            self._subscribers.clear()
