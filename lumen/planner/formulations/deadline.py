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
