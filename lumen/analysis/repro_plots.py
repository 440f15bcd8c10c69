"""PNG plot of a reproduction: one panel per scenario, one bar per reading with its confidence
interval, the paper's published number as a marker."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lumen.analysis.sim_plots import _pyplot

__all__ = ["SensitivityPanel", "plot_sensitivity"]


@dataclass(frozen=True)
class SensitivityPanel:
    """One scenario: per reading, the mean change and its half-width (NaN: none), and the
    paper's number or range (None: not published)."""

    title: str
    readings: Sequence[str]
    means: Sequence[float]
    half_widths: Sequence[float]
    paper: float | tuple[float, float] | None


def plot_sensitivity(
    path: Path, panels: Sequence[SensitivityPanel], ylabel: str, title: str
) -> Path:
    """A grid of bar charts (four per row): bar = our change under a reading (the default
    reading first, darker), whisker = its confidence interval, red line or band = the paper."""
    plt = _pyplot()
    cols = min(4, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        x = list(range(len(panel.readings)))
        means = [m if math.isfinite(m) else 0.0 for m in panel.means]
        errs = [h if math.isfinite(h) else 0.0 for h in panel.half_widths]
        colors = ["C0" if i == 0 else "C7" for i in x]
        ax.bar(x, means, yerr=errs, color=colors, capsize=3, width=0.7)
        for i, m in enumerate(panel.means):
            if not math.isfinite(m):
                ax.text(i, 0.0, "n/a", ha="center", va="bottom", fontsize=6)
        if isinstance(panel.paper, tuple):
            ax.axhspan(*panel.paper, color="red", alpha=0.2, label="paper")
        elif panel.paper is not None:
            ax.axhline(panel.paper, color="red", lw=1.5, ls="--", label="paper")
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xticks(x, panel.readings, rotation=60, ha="right", fontsize=6)
        ax.set_title(panel.title, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3, axis="y")
        if panel.paper is not None:
            ax.legend(fontsize=6, loc="lower left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
