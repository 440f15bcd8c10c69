"""Summary statistics and the paper's recovery window (docs/simulator.md), as pure functions.

Recovery window: requests are binned by id in groups of ``bin_size`` (200); the last bin may be
shorter. The window opens at the first bin whose mean TTFT is more than ``threshold`` (5 %)
above the reference (failure-free) run's same bin, and closes once ``close_bins`` (3)
consecutive bins are back within the threshold; those closing bins are not part of the window.
A window that never closes runs to the last bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Distribution", "RecoveryWindow", "bin_means", "recovery_window", "summarize"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Distribution:
    """Mean, median and 99th percentile of a metric (NaN values are ignored)."""

    count: int
    mean: float
    p50: float
    p99: float


def summarize(values: npt.ArrayLike) -> Distribution:
    """Mean, P50 and P99 of the finite values (all NaN when there is none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return Distribution(0, math.nan, math.nan, math.nan)
    p50, p99 = np.percentile(arr, [50.0, 99.0])
    return Distribution(int(arr.size), float(arr.mean()), float(p50), float(p99))


@dataclass(frozen=True, slots=True)
class RecoveryWindow:
    """Bins ``[first_bin, end_bin)`` (requests ``[start_request, end_request)``) of the window.

    Attributes:
        closed: False when the window was still open at the last bin.
    """

    first_bin: int
    end_bin: int
    start_request: int
    end_request: int
    closed: bool

    @property
    def bins(self) -> int:
        return self.end_bin - self.first_bin

    @property
    def requests(self) -> int:
        return self.end_request - self.start_request

    def duration_s(self, arrival_s: npt.ArrayLike) -> float:
        """Time from the first to the last arrival inside the window."""
        arr = np.asarray(arrival_s, dtype=np.float64)
        return float(arr[self.end_request - 1] - arr[self.start_request])


def bin_means(values: npt.ArrayLike, bin_size: int = 200) -> FloatArray:
    """Mean of each group of ``bin_size`` consecutive values (the last group may be shorter)."""
    if bin_size < 1:
        raise ValueError(f"bin_size must be >= 1, got {bin_size}")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {arr.shape}")
    n = arr.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    starts = np.arange(0, n, bin_size)
    sums = np.add.reduceat(arr, starts)
    counts = np.minimum(starts + bin_size, n) - starts
    return np.asarray(sums / counts, dtype=np.float64)


def recovery_window(
    ttft_s: npt.ArrayLike,
    reference_ttft_s: npt.ArrayLike,
    bin_size: int = 200,
    threshold: float = 0.05,
    close_bins: int = 3,
) -> RecoveryWindow | None:
    """The failure-affected window of a run against its failure-free reference, or None when
    no bin is more than ``threshold`` above the reference. Both arrays are indexed by request
    id and must have the same length."""
    ttft = np.asarray(ttft_s, dtype=np.float64)
    ref = np.asarray(reference_ttft_s, dtype=np.float64)
    if ttft.shape != ref.shape:
        raise ValueError(f"TTFT arrays differ in shape: {ttft.shape} vs {ref.shape}")
    if threshold < 0 or close_bins < 1:
        raise ValueError(f"need threshold >= 0 and close_bins >= 1, got {threshold}, {close_bins}")
    above = bin_means(ttft, bin_size) > bin_means(ref, bin_size) * (1.0 + threshold)
    hits = np.flatnonzero(above)
    if hits.size == 0:
        return None
    n_bins = int(above.size)
    first = int(hits[0])
    end, closed, good = n_bins, False, 0
    for b in range(first + 1, n_bins):
        if above[b]:
            good = 0
            continue
        good += 1
        if good == close_bins:
            end, closed = b - close_bins + 1, True
            break
    n = int(ttft.size)
    return RecoveryWindow(first, end, first * bin_size, min(end * bin_size, n), closed)
