"""A worker's checkpoint link: one FIFO fluid queue and a short history of what it produced.

Every KV token a checkpointed request computes becomes checkpoint bytes on its home worker's
outgoing link; :class:`StreamHistory` tracks the backlog and when the queued bytes were
produced, so that the valid prefix at a failure can be found
(:func:`lumen.simulator.checkpoint.valid_prefixes`). It knows nothing of workers or requests:
the worker owns one and :mod:`lumen.simulator.checkpoint` reads it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque

__all__ = ["HISTORY", "StreamHistory"]

#: Production records kept per link (older ones are summarized by the oldest kept).
HISTORY = 4096


class StreamHistory:
    """A worker's checkpoint link: FIFO fluid queue plus a short production history.

    Records are ``(time, cumulative bytes produced, decode clock)`` after each production.
    """

    def __init__(self, link_bytes_s: float, kv_bytes_per_token: int) -> None:
        if not link_bytes_s > 0.0:
            raise ValueError(f"link bandwidth must be > 0, got {link_bytes_s}")
        self.link_bytes_s = link_bytes_s
        self.kv_bytes_per_token = kv_bytes_per_token
        self.produced_bytes = 0.0  # since the start, all epochs
        self.dropped_bytes = 0.0  # queued when the worker failed: never sent
        self._backlog = 0.0
        self._t = 0.0
        self._times: deque[float] = deque(maxlen=HISTORY)
        self._cum: deque[float] = deque(maxlen=HISTORY)
        self._clock: deque[float] = deque(maxlen=HISTORY)
        self._epoch_cum = 0.0

    def backlog_at(self, now: float) -> float:
        """Bytes still queued at ``now``."""
        return max(0.0, self._backlog - self.link_bytes_s * (now - self._t))

    def produce(self, now: float, tokens: float, clock: float) -> None:
        """``tokens`` of KV were computed at ``now`` (decode clock ``clock``)."""
        self._backlog = self.backlog_at(now) + tokens * self.kv_bytes_per_token
        self._t = now
        added = tokens * self.kv_bytes_per_token
        self.produced_bytes += added
        self._epoch_cum += added
        self._times.append(now)
        self._cum.append(self._epoch_cum)
        self._clock.append(clock)

    def reset(self, now: float) -> None:
        """The worker failed at ``now``: the queued bytes are lost, the history forgotten."""
        self.dropped_bytes += self.backlog_at(now)
        self._backlog = 0.0
        self._t = now
        self._times.clear()
        self._cum.clear()
        self._clock.clear()
        self._epoch_cum = 0.0

    @property
    def sent_bytes(self) -> float:
        """Bytes that left the link so far (queued bytes not counted)."""
        return self.produced_bytes - self.dropped_bytes - self._backlog

    def cutoff(self, now: float) -> tuple[float, float]:
        """``(time, clock)`` after which the bytes still queued at ``now`` were produced;
        ``(inf, inf)`` when nothing is queued, ``(-inf, -inf)`` when all is.

        A record's bytes are produced over the interval since the previous record (a run of
        decode steps, or one iteration whose KV is written at its end)."""
        backlog = self.backlog_at(now)
        if backlog <= 0.0 or not self._cum:
            return math.inf, math.inf
        target = self._epoch_cum - backlog
        cum = self._cum
        k = bisect_left(cum, target)
        if k == 0:
            # Inside the oldest record's burst (or before the kept history): count all of the
            # kept production as missing, which errs on the side of re-prefilling.
            return -math.inf, -math.inf
        # Linear between the records around the target (production is spread over a run).
        c0, c1 = cum[k - 1], cum[k]
        f = (target - c0) / (c1 - c0) if c1 > c0 else 1.0
        t = self._times[k - 1] + f * (self._times[k] - self._times[k - 1])
        clock = self._clock[k - 1] + f * (self._clock[k] - self._clock[k - 1])
        return t, clock
