"""Checkpoint-placement benchmark: online latency, batch speed and heuristic quality.

    python benchmarks/bench_placement.py            # full run (a few minutes)
    python benchmarks/bench_placement.py --quick    # smoke run (seconds)

Prints (1) the latency of one incremental placement (PlacementState.place) at 1,024 workers on
a warm state, (2) the wall time of batch placement of 100,000 requests over 1,024 workers by
the greedy, the paper's rule and the ring, and (3) the gap of those heuristics to the proven
optimum (CP-SAT) over generated small and medium instances of every family, and (4) the wall time
of each exact backend beside its time limit on a large tight instance.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import print_gap_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumen.planner.generators.placement import FAMILIES, random_placement_problem
from lumen.planner.placement_state import PlacementState
from lumen.planner.result import SolveSettings, Termination
from lumen.planner.solve import solve

HEURISTICS = ("greedy", "lumen", "fixed-ring")


def bench_incremental(workers: int, warm: int, count: int, seed: int) -> None:
    """p50/p99 of PlacementState.place after ``warm`` placements."""
    rng = np.random.default_rng(seed)
    problem = random_placement_problem(rng, workers, warm + count, "uniform")
    state = PlacementState.from_problem(problem)
    home, reserve = problem.home.tolist(), problem.reserve_bytes.tolist()
    work, rate = problem.work_s.tolist(), problem.stream_bytes_s.tolist()
    for i in range(warm):
        state.place(home[i], reserve[i], work[i], rate[i])
    lat = np.empty(count)
    for k, i in enumerate(range(warm, warm + count)):
        t = time.perf_counter()
        state.place(home[i], reserve[i], work[i], rate[i])
        lat[k] = time.perf_counter() - t
    us = lat * 1e6
    print(f"\n[1] incremental placement, {workers} workers, {count:,} placements after {warm:,}")
    print(
        f"    p50 {np.percentile(us, 50):.1f} us   p99 {np.percentile(us, 99):.1f} us"
        f"   mean {us.mean():.1f} us   max {us.max():.0f} us"
    )


def bench_batch(workers: int, requests: int, seed: int) -> None:
    """Wall time and objective of each heuristic on one large uniform instance."""
    rng = np.random.default_rng(seed)
    problem = random_placement_problem(rng, workers, requests, "uniform")
    print(f"\n[2] batch placement, {requests:,} requests over {workers} workers (uniform)")
    for name in HEURISTICS:
        t = time.perf_counter()
        res = solve(problem, name, SolveSettings(time_limit_s=10.0))
        wall = time.perf_counter() - t
        value = f"{res.objective:.5f}" if res.objective is not None else res.termination.value
        print(f"    {name:<11} {wall:6.2f} s   J = {value}")


@dataclass
class GapStats:
    gaps: dict[str, list[float]] = field(default_factory=lambda: {h: [] for h in HEURISTICS})
    family: list[str] = field(default_factory=list)
    medium: int = 0
    proven: int = 0
    infeasible: int = 0
    unproven: int = 0
    exact_s: list[float] = field(default_factory=list)


def _sizes(rng: np.random.Generator, family: str, medium: bool) -> tuple[int, int]:
    """Small: 3-10 workers, up to 4 requests per worker (2 when capacity binds: those are the
    hard ones for an exact proof). Medium: 12-20 workers, 2-4 requests per worker."""
    if medium:
        m = int(rng.integers(12, 21))
        return m, int(rng.integers(2 * m, 4 * m + 1))
    m = int(rng.integers(3, 11))
    top = 2 * m if family == "tight" else 4 * m
    return m, int(rng.integers(max(3, m // 2), top + 1))


def bench_gap(instances: int, seed: int, time_limit_s: float) -> None:
    """Heuristic gaps to the CP-SAT optimum; only proven optima count."""
    rng = np.random.default_rng(seed)
    stats = GapStats()
    print(f"\n[3] gap to the proven optimum, {instances} instances ({', '.join(FAMILIES)})")
    for k in range(instances):
        family = FAMILIES[k % len(FAMILIES)]
        medium = (k // len(FAMILIES)) % 2 == 1 and family != "tight"
        m, n = _sizes(rng, family, medium)
        problem = random_placement_problem(rng, m, n, family)
        exact = solve(problem, "cpsat", SolveSettings(time_limit_s=time_limit_s))
        stats.exact_s.append(exact.wall_time_s)
        if exact.termination is Termination.INFEASIBLE:
            stats.infeasible += 1
            continue
        if exact.termination is not Termination.OPTIMAL or exact.objective is None:
            stats.unproven += 1
            continue
        stats.proven += 1
        stats.medium += medium
        stats.family.append(family)
        best = exact.objective
        for name in HEURISTICS:
            res = solve(problem, name, SolveSettings(time_limit_s=10.0))
            gap = np.inf if res.objective is None else (res.objective - best) / max(best, 1e-12)
            stats.gaps[name].append(gap)
        if (k + 1) % 20 == 0 or k + 1 == instances:
            print(f"    ... {k + 1}/{instances} solved", flush=True)
    exact_s = np.array(stats.exact_s)
    print(
        f"    exact (CP-SAT): {stats.proven} proven optimal, {stats.infeasible} infeasible,"
        f" {stats.unproven} not proven in {time_limit_s:g} s; {stats.medium} of the proven are"
        " medium (12-20 workers)"
    )
    print(
        f"    exact solve time: mean {exact_s.mean():.3f} s, p50 {np.median(exact_s):.3f} s,"
        f" p95 {np.percentile(exact_s, 95):.3f} s, max {exact_s.max():.2f} s"
    )
    print_gap_table(stats.gaps, 11)
    greedy = np.array(stats.gaps["greedy"])
    fams = np.array(stats.family)
    parts = []
    for family in FAMILIES:
        g = greedy[(fams == family) & np.isfinite(greedy)]
        if g.size:
            parts.append(f"{family} {g.mean():.2%} (max {g.max():.2%}, {g.size})")
    print("    greedy mean gap by family: " + "; ".join(parts))


def bench_time_limits(workers: int, requests: int, limit: float, seed: int) -> None:
    """Wall time of each exact backend against its time limit on one tight instance: building
    the model, presolve and the solver itself must all fit in the limit."""
    print(
        f"\n[4] time limits, {workers} workers x {requests:,} requests (tight, seed {seed}),"
        f" limit {limit:g} s"
    )
    for name in ("cpsat", "milp", "auto"):  # imports outside the clock
        solve(random_placement_problem(np.random.default_rng(1), 3, 4, "tight"), name)
    for name in ("cpsat", "milp", "auto"):
        problem = random_placement_problem(np.random.default_rng(seed), workers, requests, "tight")
        t = time.perf_counter()
        res = solve(problem, name, SolveSettings(time_limit_s=limit))
        wall = time.perf_counter() - t
        print(
            f"    {name:<6} limit {limit:5.2f} s   wall {wall:6.2f} s   {res.termination.value}"
            + (f" ({res.limit.value})" if res.limit.value != "none" else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generated instance")
    parser.add_argument("--instances", type=int, help="instances for the gap study")
    parser.add_argument("--time-limit", type=float, default=20.0, help="CP-SAT seconds each")
    args = parser.parse_args(argv)
    workers = 1024
    warm, count = (2_000, 2_000) if args.quick else (20_000, 20_000)
    requests = 10_000 if args.quick else 100_000
    instances = args.instances or (8 if args.quick else 120)
    print(
        f"placement benchmark: python {platform.python_version()}, numpy {np.__version__},"
        f" {os.cpu_count()} CPUs, {platform.machine()}, seed {args.seed}"
    )
    bench_incremental(workers, warm, count, args.seed)
    bench_batch(workers, requests, args.seed)
    bench_gap(instances, args.seed, 2.0 if args.quick else args.time_limit)
    if args.quick:
        bench_time_limits(32, 300, 0.5, 5)
    else:
        bench_time_limits(128, 2000, 1.0, 5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
