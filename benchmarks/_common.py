"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def print_gap_table(gaps: Mapping[str, Sequence[float]], width: int) -> None:
    """One row per heuristic: mean, P95 and max relative gap to the proven optimum, how many
    instances it solved optimally, and how many it found no plan for (non-finite gaps)."""
    print(
        f"    {'heuristic':<{width}} {'mean':>8} {'p95':>8} {'max':>9} {'optimal':>8} {'failed':>7}"
    )
    for name, values in gaps.items():
        g = np.array(values, dtype=float)
        ok = g[np.isfinite(g)]
        if ok.size == 0:
            print(f"    {name:<{width}} no plans")
            continue
        print(
            f"    {name:<{width}} {ok.mean():8.2%} {np.percentile(ok, 95):8.2%} {ok.max():9.2%}"
            f" {int((ok <= 1e-6).sum()):8d} {int((~np.isfinite(g)).sum()):7d}"
        )
