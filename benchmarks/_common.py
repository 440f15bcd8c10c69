"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np


def start_service(*serve_args: str) -> tuple[subprocess.Popen[str], str]:
    """``lumen serve`` in a child process on a free loopback port, and its target address
    once it says it listens (RuntimeError if it exits first)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lumen.cli import main; main()",
            "serve",
            "--address",
            "127.0.0.1:0",
            *serve_args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    while "listening on port" not in line:
        if not line:
            raise RuntimeError("the service did not start")
        line = proc.stdout.readline()
    return proc, f"127.0.0.1:{int(line.rsplit(' ', 1)[1])}"


def proc_status(pid: int, key: str) -> float:
    """A memory field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``, ...) in MiB (nan if absent)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


#: Issue goals for the greedy's gap to the optimum, on every instance family.
GOAL_MEAN_GAP = 0.01
GOAL_MAX_GAP = 0.05


def print_family_goals(
    greedy: Sequence[float],
    families: Sequence[str],
    proven: Sequence[bool],
    order: Iterable[str],
) -> None:
    """The greedy's mean and max gap per family (in ``order``) beside the goals, counting
    unproven instances and the greedy's failures (infinite gaps) instead of dropping them."""
    g_all = np.asarray(greedy, dtype=float)
    fams = np.asarray(families)
    unproven = ~np.asarray(proven, dtype=bool)
    print(
        f"    greedy by family (goal: mean <= {GOAL_MEAN_GAP:.0%} and max <= {GOAL_MAX_GAP:.0%}"
        " on every family):"
    )
    for family in order:
        sel = fams == family
        g = g_all[sel]
        if not g.size:
            continue
        ok = g[np.isfinite(g)]
        failed = int(g.size - ok.size)
        mean = float(ok.mean()) if ok.size else np.inf
        top = float(ok.max()) if ok.size else np.inf
        met = failed == 0 and mean <= GOAL_MEAN_GAP and top <= GOAL_MAX_GAP
        print(
            f"      {family:<13} mean {mean:7.2%}  max {top:7.2%}  over {g.size} instances"
            f" ({int(unproven[sel].sum())} unproven, {failed} greedy failed)"
            f"   {'met' if met else 'NOT met'}"
        )
