"""Synthetic workloads: arrival processes, request-length distributions and `synthesize_trace`.

Everything here takes plain arguments and an explicit `numpy.random.Generator`, so callers
(config layer, tests, notebooks) decide where randomness comes from and results repeat
exactly for a given seed.
"""

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from lumen.workload.traces import Trace

__all__ = [
    "ArrivalProcess",
    "ConstantLength",
    "EmpiricalLength",
    "LengthDistribution",
    "LogNormalLength",
    "UniformLength",
    "gamma_arrivals",
    "poisson_arrivals",
    "synthesize_trace",
]

ArrivalProcess = Literal["poisson", "gamma"]


def poisson_arrivals(n: int, rate_qps: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Arrival times of a Poisson process: the first at 0.0, then exponential gaps of mean
    ``1 / rate_qps``. Returns `n` non-decreasing float64 times."""
    _check_count(n)
    _check_positive("rate_qps", rate_qps)
    return _from_gaps(rng.exponential(1.0 / rate_qps, size=n - 1))


def gamma_arrivals(
    n: int, rate_qps: float, cv: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Arrival times with Gamma-distributed gaps of mean ``1 / rate_qps`` and coefficient of
    variation `cv` (std / mean of the gaps). ``cv = 1`` is a Poisson process, ``cv > 1`` is
    burstier, ``cv < 1`` more regular. The first arrival is at 0.0."""
    _check_count(n)
    _check_positive("rate_qps", rate_qps)
    _check_positive("cv", cv)
    # Gamma(shape k, scale s) has mean k*s and cv 1/sqrt(k).
    shape = 1.0 / (cv * cv)
    return _from_gaps(rng.gamma(shape, 1.0 / (rate_qps * shape), size=n - 1))


@runtime_checkable
class LengthDistribution(Protocol):
    """A distribution of token counts (prompt or output lengths), all >= 1."""

    def sample(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Draw `n` lengths."""
        ...


@dataclass(frozen=True)
class ConstantLength:
    """Every request has `value` tokens."""

    value: int

    def __post_init__(self) -> None:
        _check_length("value", self.value)

    def sample(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Return `n` copies of `value` (`rng` is not used)."""
        return np.full(_check_size(n), self.value, dtype=np.int64)


@dataclass(frozen=True)
class UniformLength:
    """Lengths drawn uniformly from the integers ``low..high``, both included."""

    low: int
    high: int

    def __post_init__(self) -> None:
        _check_length("low", self.low)
        _check_length("high", self.high)
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")

    def sample(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Draw `n` lengths."""
        return rng.integers(self.low, self.high, size=_check_size(n), endpoint=True, dtype=np.int64)


@dataclass(frozen=True)
class LogNormalLength:
    """Log-normal lengths with the given `mean` and coefficient of variation `cv`, rounded to
    integers and clipped to ``[min_value, max_value]``.

    Mean and cv describe the distribution before rounding and clipping, so tight bounds pull
    the sample mean away from `mean`. Token-length distributions of chat traces are roughly
    log-normal with a long right tail, which `max_value` (e.g. the context window) cuts off.
    """

    mean: float
    cv: float
    min_value: int = 1
    max_value: int | None = None

    def __post_init__(self) -> None:
        _check_positive("mean", self.mean)
        _check_positive("cv", self.cv)
        _check_length("min_value", self.min_value)
        if self.max_value is not None:
            _check_length("max_value", self.max_value)
            if self.max_value < self.min_value:
                raise ValueError(
                    f"max_value ({self.max_value}) must be >= min_value ({self.min_value})"
                )

    @property
    def sigma(self) -> float:
        """Standard deviation of the underlying normal: ``sqrt(ln(1 + cv^2))``."""
        return math.sqrt(math.log1p(self.cv * self.cv))

    @property
    def mu(self) -> float:
        """Mean of the underlying normal, chosen so the log-normal's mean is `mean`."""
        return math.log(self.mean) - 0.5 * self.sigma**2

    def sample(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Draw `n` lengths."""
        raw = np.rint(rng.lognormal(self.mu, self.sigma, size=_check_size(n)))
        upper = np.inf if self.max_value is None else self.max_value
        return np.clip(raw, self.min_value, upper).astype(np.int64)


@dataclass(frozen=True, eq=False, repr=False)
class EmpiricalLength:
    """Lengths resampled (with replacement) from observed values, e.g. a trace's
    ``prompt_tokens``; keeps the shape of a real distribution without its arrival times."""

    values: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"values must be a non-empty 1-D integer array, got dtype {values.dtype}, "
                f"shape {values.shape}"
            )
        if values.min() < 1:
            raise ValueError(f"values must all be >= 1, got {values.min()}")
        frozen = values.astype(np.int64)  # always a copy: later edits by the caller can't leak in
        frozen.setflags(write=False)
        object.__setattr__(self, "values", frozen)

    def __repr__(self) -> str:
        # A summary, not the array: this ends up in Trace.source and result metadata.
        return (
            f"EmpiricalLength({self.values.size} values, mean={self.values.mean():.1f}, "
            f"min={self.values.min()}, max={self.values.max()})"
        )

    def sample(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Draw `n` lengths."""
        return rng.choice(self.values, size=_check_size(n), replace=True)


def synthesize_trace(
    n: int,
    *,
    rate_qps: float,
    prompt: LengthDistribution,
    output: LengthDistribution,
    arrivals: ArrivalProcess = "poisson",
    cv: float = 1.0,
    seed: int = 0,
) -> Trace:
    """Generate a trace of `n` requests.

    Args:
        n: number of requests.
        rate_qps: mean arrival rate.
        prompt: prompt-length distribution.
        output: output-length distribution.
        arrivals: ``"poisson"`` or ``"gamma"`` (see `gamma_arrivals`).
        cv: coefficient of variation of the gaps; only ``"gamma"`` uses it, and ``"poisson"``
            rejects any value but 1.0 rather than silently ignore it.
        seed: seed of `numpy.random.default_rng`.

    Arrivals, prompts and outputs draw from three independent streams spawned from the seed,
    so changing one distribution leaves the others' samples unchanged between experiments.
    """
    _check_count(n)
    arrival_rng, prompt_rng, output_rng = np.random.default_rng(seed).spawn(3)
    if arrivals == "poisson":
        if cv != 1.0:
            raise ValueError(f"poisson arrivals have cv 1.0; got cv={cv}, use arrivals='gamma'")
        arrival_s = poisson_arrivals(n, rate_qps, arrival_rng)
    elif arrivals == "gamma":
        arrival_s = gamma_arrivals(n, rate_qps, cv, arrival_rng)
    else:
        raise ValueError(f"unknown arrival process {arrivals!r}; expected 'poisson' or 'gamma'")
    process = "poisson" if arrivals == "poisson" else f"gamma(cv={cv:g})"
    return Trace(
        arrival_s=arrival_s,
        prompt_tokens=_checked_sample("prompt", prompt, n, prompt_rng),
        output_tokens=_checked_sample("output", output, n, output_rng),
        hash_ids=None,
        source=(
            f"synthetic({process}, {rate_qps:g} qps, n={n}, prompt={prompt!r}, "
            f"output={output!r}, seed={seed})"
        ),
    )


def _from_gaps(gaps: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    arrival = np.zeros(gaps.shape[0] + 1, dtype=np.float64)
    np.cumsum(gaps, out=arrival[1:])
    return arrival


def _checked_sample(
    name: str, dist: LengthDistribution, n: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    # Third-party distributions only promise the protocol; fail here with the culprit named
    # rather than in Trace validation with an anonymous array.
    values = np.asarray(dist.sample(n, rng))
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"{name} distribution {dist!r} returned dtype {values.dtype}, shape {values.shape}; "
            f"expected {n} integers"
        )
    return values.astype(np.int64, copy=False)


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")


def _check_size(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    return int(n)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_length(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
