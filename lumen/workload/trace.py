"""The `Trace` record: requests in arrival order, as loaded or synthesized.

Arrays are stored as private read-only copies so a trace can be shared between runs without
one run changing what another replays.
"""

import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Trace"]


@dataclass(frozen=True, eq=False)
class Trace:
    """An immutable sequence of requests, in arrival order.

    Attributes:
        arrival_s: arrival times in seconds, float64, non-decreasing, first one exactly 0.0.
        prompt_tokens: prompt lengths, int64, each >= 1.
        output_tokens: output lengths, int64, each >= 1.
        hash_ids: per request, the ids of its prompt's KV blocks (equal ids = shared prefix
            block), or None when the source has no prefix information.
        source: where the trace came from (file path, generator description, transformations).

    The arrays are copied and made read-only, so a Trace can be shared freely. Equality is
    identity (``eq=False``): element-wise array comparison has no single truth value.
    """

    arrival_s: npt.NDArray[np.float64]
    prompt_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    hash_ids: tuple[tuple[int, ...], ...] | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        arrival = _frozen_array("arrival_s", self.arrival_s, np.float64)
        prompt = _frozen_array("prompt_tokens", self.prompt_tokens, np.int64)
        output = _frozen_array("output_tokens", self.output_tokens, np.int64)
        n = arrival.shape[0]
        if n == 0:
            raise ValueError("a Trace needs at least one request")
        if prompt.shape[0] != n or output.shape[0] != n:
            raise ValueError(
                f"arrays differ in length: arrival_s {n}, prompt_tokens {prompt.shape[0]}, "
                f"output_tokens {output.shape[0]}"
            )
        if not np.all(np.isfinite(arrival)):
            raise ValueError(
                f"arrival_s has a non-finite value at index {_first(~np.isfinite(arrival))}"
            )
        if arrival[0] != 0.0:
            raise ValueError(f"arrival_s must start at 0.0, got {arrival[0]!r}")
        backwards = np.diff(arrival) < 0
        if np.any(backwards):
            i = _first(backwards)
            raise ValueError(
                f"arrival_s must be non-decreasing: index {i + 1} ({arrival[i + 1]!r}) "
                f"comes before index {i} ({arrival[i]!r})"
            )
        for name, tokens in (("prompt_tokens", prompt), ("output_tokens", output)):
            if np.any(tokens < 1):
                i = _first(tokens < 1)
                raise ValueError(f"{name} must be >= 1, got {tokens[i]} at index {i}")
        if self.hash_ids is not None:
            _check_hash_ids(self.hash_ids, n)
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival (the first arrival is at 0)."""
        return float(self.arrival_s[-1])

    @property
    def mean_rate_qps(self) -> float:
        """Mean arrival rate: ``(len - 1) / duration_s``, the inverse of the mean gap.

        Counting gaps rather than requests makes `rescale` exact and keeps the rate of a
        tiled trace equal to the original's. NaN for a single request, inf when every
        request arrives at t=0.
        """
        n = len(self)
        if n < 2:
            return math.nan
        duration = self.duration_s
        return math.inf if duration == 0.0 else (n - 1) / duration

    def rescale(self, rate_qps: float) -> "Trace":
        """Return a copy whose inter-arrival gaps are scaled so `mean_rate_qps` is `rate_qps`.

        Order, burstiness (the gaps' coefficient of variation) and lengths are unchanged.
        """
        if not (math.isfinite(rate_qps) and rate_qps > 0):
            raise ValueError(f"rate_qps must be a positive finite number, got {rate_qps!r}")
        current = self.mean_rate_qps
        if not (math.isfinite(current) and current > 0):
            raise ValueError(
                f"cannot rescale {self.source}: it needs at least two requests at different "
                f"times (mean rate is {current})"
            )
        return Trace(
            arrival_s=self.arrival_s * (current / rate_qps),
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            hash_ids=self.hash_ids,
            source=f"{self.source} | rescale({rate_qps:g} qps)",
        )

    def truncate(self, n: int) -> "Trace":
        """Return the first `n` requests. Use `tile` to get more requests than the trace has."""
        n = operator.index(n)
        if n < 1:
            raise ValueError(f"truncate needs n >= 1, got {n}")
        if n > len(self):
            raise ValueError(
                f"cannot truncate {self.source} to {n} requests: it has only {len(self)}; "
                f"use tile({n}) to repeat it"
            )
        return Trace(
            arrival_s=self.arrival_s[:n],
            prompt_tokens=self.prompt_tokens[:n],
            output_tokens=self.output_tokens[:n],
            hash_ids=None if self.hash_ids is None else self.hash_ids[:n],
            source=f"{self.source} | truncate({n})",
        )

    def tile(self, n: int) -> "Trace":
        """Repeat the trace back to back until it holds exactly `n` requests.

        Copy k is shifted by ``k * (duration_s + mean gap)``, so the seam between copies
        looks like an ordinary gap and the mean rate stays that of the original. In the
        copies, hash ids are offset past the original's id range: a replayed request shares
        prefix blocks with its own copy, not with the earlier copy, whose KV would otherwise
        turn every repeat into an artificial cache hit. `n` <= len is a plain truncation.
        """
        n = operator.index(n)
        if n < 1:
            raise ValueError(f"tile needs n >= 1, got {n}")
        if n <= len(self):
            return self.truncate(n)
        rate = self.mean_rate_qps
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(
                f"cannot tile {self.source}: it needs at least two requests at different "
                f"times to define the gap between copies (mean rate is {rate})"
            )
        copies = -(-n // len(self))
        period = self.duration_s + 1.0 / rate
        shifts = np.repeat(np.arange(copies, dtype=np.float64) * period, len(self))
        hash_ids = None
        if self.hash_ids is not None:
            ids = [i for blocks in self.hash_ids for i in blocks]
            span = max(ids) - min(ids) + 1 if ids else 1
            hash_ids = tuple(
                tuple(i + k * span for i in blocks)
                for k in range(copies)
                for blocks in self.hash_ids
            )[:n]
        return Trace(
            arrival_s=(np.tile(self.arrival_s, copies) + shifts)[:n],
            prompt_tokens=np.tile(self.prompt_tokens, copies)[:n],
            output_tokens=np.tile(self.output_tokens, copies)[:n],
            hash_ids=hash_ids,
            source=f"{self.source} | tile({n})",
        )


def _frozen_array(name: str, value: object, dtype: type[np.generic]) -> Any:
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != 1:
        got = (
            f"dtype {value.dtype}, shape {value.shape}"
            if isinstance(value, np.ndarray)
            else type(value).__name__
        )
        raise ValueError(
            f"{name} must be a 1-D numpy array of {np.dtype(dtype)}, got {got}; "
            f"convert with np.asarray(values, dtype=np.{np.dtype(dtype)})"
        )
    frozen = value.copy()
    frozen.setflags(write=False)
    return frozen


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_hash_ids(hash_ids: object, n: int) -> None:
    if not isinstance(hash_ids, tuple) or len(hash_ids) != n:
        length = len(hash_ids) if isinstance(hash_ids, tuple) else type(hash_ids).__name__
        raise ValueError(f"hash_ids must be a tuple with one entry per request ({n}), got {length}")
    for i, blocks in enumerate(hash_ids):
        if not isinstance(blocks, tuple) or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in blocks
        ):
            raise ValueError(f"hash_ids[{i}] must be a tuple of ints, got {blocks!r}")


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------
