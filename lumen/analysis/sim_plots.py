"""PNG plots of simulation experiments: TTFT over time around the failure, latency CDFs.

Plain functions over arrays, so they plot any run (simulated or measured). Matplotlib is
imported lazily with the Agg backend: nothing here needs a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lumen.simulator.metrics import bin_means

__all__ = ["TimeSeries", "plot_cdfs", "plot_ttft_over_time", "zoom_range"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TimeSeries:
    """One policy's run and its failure-free reference, request by request (same requests).

    Attributes:
        window_s: arrival times of the first and last request of the recovery window, or None.
    """

    label: str
    arrival_s: FloatArray
    ttft_s: FloatArray
    reference_ttft_s: FloatArray
    window_s: tuple[float, float] | None = None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def zoom_range(
    end_s: float, failures_s: Sequence[float], window_ends_s: Sequence[float]
) -> tuple[float, float]:
    """x-range around the failures within ``[0, end_s]``: from a little before the first to a
    little after the last window closes (or after the last failure); the whole run when no
    failure falls within it."""
    inside = [t for t in failures_s if 0.0 <= t <= end_s]
    if not inside:
        return 0.0, end_s
    first, last = min(inside), max(inside)
    hi = max([last, *window_ends_s])
    span = max(hi - first, 0.05 * end_s, 1e-9)
    return max(0.0, first - 0.5 * span), min(end_s, hi + 0.5 * span)


def plot_ttft_over_time(
    path: Path,
    series: Sequence[TimeSeries],
    failures_s: Sequence[float],
    bin_size: int,
    title: str,
) -> Path:
    """Mean TTFT per bin of ``bin_size`` requests against the bin's mean arrival time, one
    solid line per policy. The failure-free reference is dashed: one black line when every
    policy's reference is the same, else one per policy in its colour. A strip below shows
    each policy's recovery window as a bar; failures within the run are dotted vertical lines,
    and the x-axis zooms on them (:func:`zoom_range`). Needs at least one series."""
    plt = _pyplot()
    fig, (ax, strip) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(10, 5.5),
        gridspec_kw={"height_ratios": [4, max(1, len(series)) * 0.35 + 0.3]},
    )
    shared = all(
        s.reference_ttft_s.shape == series[0].reference_ttft_s.shape
        and np.allclose(
            s.reference_ttft_s, series[0].reference_ttft_s, rtol=1e-9, atol=0.0, equal_nan=True
        )
        for s in series
    )
    for i, s in enumerate(series):
        color = f"C{i}"
        x = bin_means(s.arrival_s, bin_size)
        ax.plot(x, bin_means(s.ttft_s, bin_size), color=color, lw=1.6, label=s.label)
        if not shared or i == 0:
            ax.plot(
                x,
                bin_means(s.reference_ttft_s, bin_size),
                color="black" if shared else color,
                lw=1.0,
                ls="--",
                alpha=0.8,
                label="failure-free" if shared else f"{s.label} (failure-free)",
            )
        if s.window_s is not None:
            strip.plot(s.window_s, (i, i), color=color, lw=5, solid_capstyle="butt")
    end = max(float(s.arrival_s[-1]) for s in series)
    inside = [t for t in failures_s if 0.0 <= t <= end]
    for k, t in enumerate(inside):
        ax.axvline(t, color="black", ls=":", lw=1.0, label="failure" if k == 0 else None)
        strip.axvline(t, color="black", ls=":", lw=1.0)
    lo, hi = zoom_range(end, inside, [s.window_s[1] for s in series if s.window_s is not None])
    ax.set_xlim(lo, hi)
    ax.set_ylabel(f"mean TTFT per {bin_size} requests (s)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    strip.set_yticks(range(len(series)), [s.label for s in series], fontsize=7)
    strip.set_ylim(len(series) - 0.5, -0.5)
    strip.set_ylabel("window", fontsize=8)
    strip.set_xlabel("arrival time (s)")
    strip.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_cdfs(
    path: Path,
    curves: Sequence[tuple[str, FloatArray]],
    xlabel: str,
    title: str,
    reference: tuple[str, FloatArray] | None = None,
) -> Path:
    """Empirical CDF of each labelled array (NaN values left out) on a log x-axis, with a
    labelled failure-free ``reference`` dashed in black when given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    items: list[tuple[str, FloatArray, dict[str, Any]]] = [
        (label, values, {"color": f"C{i}", "lw": 1.6}) for i, (label, values) in enumerate(curves)
    ]
    if reference is not None:
        items.append((*reference, {"color": "black", "lw": 1.0, "ls": "--"}))
    for label, values, style in items:
        v = np.sort(values[np.isfinite(values) & (values > 0)])
        if v.size == 0:
            continue
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label, **style)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of requests")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
