"""Summary statistics and the recovery window on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lumen.simulator.metrics import bin_means, recovery_window, summarize


def test_summarize_ignores_nan() -> None:
    d = summarize([1.0, 2.0, 3.0, math.nan])
    assert (d.count, d.mean, d.p50) == (3, 2.0, 2.0)
    assert d.p99 == pytest.approx(2.98)
    assert math.isnan(summarize([math.nan]).mean)


def test_bin_means_last_bin_may_be_short() -> None:
    np.testing.assert_allclose(bin_means([1, 3, 5, 7, 10], bin_size=2), [2.0, 6.0, 10.0])


def _bins(means: list[float], size: int = 200) -> np.ndarray:
    return np.repeat(np.asarray(means, dtype=np.float64), size)


def test_window_opens_above_threshold_and_closes_after_three_good_bins() -> None:
    ref = _bins([1.0] * 10)
    #            0    1    2     3    4    5    6    7    8    9
    run = _bins([1.0, 1.04, 1.5, 1.2, 1.0, 1.3, 1.0, 1.03, 1.0, 1.0])
    w = recovery_window(run, ref)
    assert w is not None
    # Opens at bin 2 (1.04 is within 5 %); bin 4 is good but bin 5 is not; 6, 7, 8 close it.
    assert (w.first_bin, w.end_bin, w.closed) == (2, 6, True)
    assert (w.start_request, w.end_request, w.requests, w.bins) == (400, 1200, 800, 4)
    arrival = np.arange(2000, dtype=np.float64) * 0.5
    assert w.duration_s(arrival) == pytest.approx(0.5 * 799)


def test_window_never_closing_runs_to_the_end() -> None:
    ref = _bins([1.0] * 5)
    w = recovery_window(_bins([1.0, 2.0, 1.0, 1.0, 3.0]), ref)
    assert w is not None
    assert (w.first_bin, w.end_bin, w.closed, w.end_request) == (1, 5, False, 1000)


def test_no_window_without_degradation() -> None:
    ref = _bins([1.0, 2.0, 3.0])
    assert recovery_window(ref * 1.049, ref) is None
    assert recovery_window(ref, ref) is None


def test_window_uses_bin_means_and_partial_last_bin() -> None:
    ref = np.ones(450)
    run = np.ones(450)
    run[400:] = 2.0  # only the short last bin (50 requests) is slow
    w = recovery_window(run, ref)
    assert w is not None
    assert (w.first_bin, w.end_bin, w.start_request, w.end_request) == (2, 3, 400, 450)


def test_window_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="shape"):
        recovery_window(np.ones(10), np.ones(11))
