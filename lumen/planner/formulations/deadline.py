"""Deadlines for model building: the exact backends check them while they build, so that a
model too large for the time limit is refused early instead of overrunning it."""

from __future__ import annotations

import time


class OutOfTime(Exception):
    """Building a model reached the deadline (the caller returns a TIME result)."""


def check_deadline(deadline: float) -> None:
    """Raise :class:`OutOfTime` once :func:`time.perf_counter` is past ``deadline``."""
    if time.perf_counter() > deadline:
        raise OutOfTime


class Pace:
    """Deadline checks for a loop of ``total`` steps that give up early: once the pace so far
    predicts that the loop, times ``factor`` (the work that follows it, in units of the loop),
    ends past the deadline, :meth:`step` raises :class:`OutOfTime` instead of building what
    would be thrown away."""

    def __init__(self, total: int, deadline: float, factor: float = 1.0) -> None:
        self.total = max(total, 1)
        self.deadline = deadline
        self.factor = factor
        self.start = time.perf_counter()

    def step(self, done: int) -> None:
        """Check after ``done`` of the ``total`` steps."""
        now = time.perf_counter()
        if now > self.deadline:
            raise OutOfTime
        if done > 0:
            whole = (now - self.start) / done * self.total * self.factor
            if self.start + whole > self.deadline:
                raise OutOfTime
