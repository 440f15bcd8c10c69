"""Confidence intervals over seeds: Student-t critical values without SciPy, and estimates.

The t quantile comes from the closed form of Student's t distribution for integer degrees of
freedom (a finite trigonometric series) inverted by bisection, exact to about 1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Estimate", "estimate", "json_float", "student_t_quantile"]


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom (closed form for integer df).

    With theta = atan(t / sqrt(df)) and c = cos(theta)^2 the mass is a finite series:
    odd df: (2/pi) (theta + sin(theta) cos(theta) (1 + 2/3 c + 2*4/(3*5) c^2 + ...)) with
    (df - 1) // 2 terms in the inner sum (none for df = 1); even df:
    sin(theta) (1 + 1/2 c + 1*3/(2*4) c^2 + ...) with df // 2 terms.
    """
    theta = math.atan(t / math.sqrt(df))
    c = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * (2 * k) / (2 * k + 1)
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def student_t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| <= t) = ``confidence`` (two-sided critical value), by bisection.

    For example 12.706 for 95 % and 1 degree of freedom, 1.960 in the limit of many.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Mean of a metric over seeds and the half-width of its confidence interval.

    Attributes:
        n: finite values behind the mean (NaN values, such as a window metric of a run
            without a window, are left out).
        half_width: NaN when ``n < 2``.
        values: the per-seed values, NaN included, in seed order.
    """

    mean: float
    half_width: float
    n: int
    values: tuple[float, ...]

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": json_float(self.mean),
            "ci_half_width": json_float(self.half_width),
            "n": self.n,
            "values": [json_float(v) for v in self.values],
        }


def estimate(values: Iterable[float], confidence: float = 0.95) -> Estimate:
    """Mean and Student-t confidence half-width ``t * s / sqrt(n)`` of the finite values."""
    allv = tuple(float(v) for v in values)
    arr = np.asarray([v for v in allv if math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return Estimate(math.nan, math.nan, 0, allv)
    mean = float(arr.mean())
    if n < 2:
        return Estimate(mean, math.nan, n, allv)
    sd = float(arr.std(ddof=1))
    return Estimate(mean, student_t_quantile(confidence, n - 1) * sd / math.sqrt(n), n, allv)


def json_float(x: float) -> float | None:
    """JSON has no NaN or infinity: they become null."""
    return x if math.isfinite(x) else None
