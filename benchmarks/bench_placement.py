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
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import print_family_goals, print_gap_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumen.planner.generators.placement import FAMILIES, random_placement_problem
from lumen.planner.placement_state import PlacementState
from lumen.planner.problems import PlacementProblem
from lumen.planner.result import SolveSettings, Termination
from lumen.planner.solve import solve

HEURISTICS = ("greedy", "lumen", "fixed-ring")


#: Goals of the incremental state at 16,384 workers (docs/planner.md, section 1).
GOAL_PLACE_P99_US = 50.0
GOAL_UPDATE_P99_MS = 10.0
#: Goals of the greedy's gap to the optimum, on every family.


def _goal(measured: float, goal: float, unit: str, fmt: str = ".1f") -> str:
    verdict = "met" if measured <= goal else "NOT met"
    return f"{measured:{fmt}} {unit} (goal <= {goal:{fmt}} {unit}: {verdict})"


def bench_incremental(workers: int, warm: int, count: int, seed: int, updates: int = 50) -> None:
    """p50/p99 of PlacementState.place after ``warm`` placements, of update_wait, and the
    state's traced memory."""
    rng = np.random.default_rng(seed)
    problem = random_placement_problem(rng, workers, warm + count, "uniform")
    tracemalloc.start()
    state = PlacementState.from_problem(problem)
    home, reserve = problem.home.tolist(), problem.reserve_bytes.tolist()
    work, rate = problem.work_s.tolist(), problem.stream_bytes_s.tolist()
    for i in range(warm):
        state.place(home[i], reserve[i], work[i], rate[i])
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()  # it slows every allocation: the timings below run without it
    lat = np.empty(count)
    for k, i in enumerate(range(warm, warm + count)):
        t = time.perf_counter()
        state.place(home[i], reserve[i], work[i], rate[i])
        lat[k] = time.perf_counter() - t
    up = np.empty(updates)
    for k in range(updates):
        wait = rng.uniform(0.0, 3.0, workers)
        t = time.perf_counter()
        state.update_wait(wait)
        up[k] = time.perf_counter() - t
    us = lat * 1e6
    print(f"\n[1] incremental placement, {workers:,} workers, {count:,} placements after {warm:,}")
    print(
        f"    place: p50 {np.percentile(us, 50):.1f} us   p99"
        f" {_goal(float(np.percentile(us, 99)), GOAL_PLACE_P99_US, 'us')}"
        f"   mean {us.mean():.1f} us   max {us.max():.0f} us"
    )
    print(
        f"    update_wait ({updates} runs): p50 {np.percentile(up, 50) * 1e3:.2f} ms   p99"
        f" {_goal(float(np.percentile(up, 99)) * 1e3, GOAL_UPDATE_P99_MS, 'ms', '.2f')}"
    )
    dense = workers * workers * (8 + 8 + 1) / 2**30
    print(
        f"    state memory (traced peak while building it): {traced:.1f} MiB; O(m + requests)"
        f" (goal); a dense m x m state would need {dense:.2f} GiB"
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


#: Families of the gap study: the generator's, then variants built on them here.
#: hetero: uneven workers (waits 0-5 s, budgets 0.5-2x, a fifth that may not hold);
#: domains: failure domains of 4-8 workers per node; long-context: 4-16 GB reservations with
#: 0.5-2 s restores under budgets 1.5x the mean need; reopt: re-optimization of an existing
#: placement (the greedy's plan before the waits moved) with move costs.
GAP_FAMILIES: tuple[str, ...] = (*FAMILIES, "hetero", "domains", "long-context", "reopt")


def gap_problem(rng: np.random.Generator, family: str, m: int, n: int) -> PlacementProblem:
    """An instance of one of :data:`GAP_FAMILIES`."""
    if family in FAMILIES:
        return random_placement_problem(rng, m, n, family)
    if family == "hetero":
        base = random_placement_problem(rng, m, n, "skewed")
        hold = rng.random(m) >= 0.2
        hold[rng.integers(m)] = True
        hold[(int(np.flatnonzero(hold)[0]) + 1) % m] = True  # two holders at least
        return replace_fields(
            base,
            wait_s=rng.uniform(0.0, 5.0, m),
            budget_bytes=np.round(base.budget_bytes * rng.uniform(0.5, 2.0, m)),
            can_hold=hold,
        )
    if family == "domains":
        sizes = rng.integers(4, 9, size=m)
        node = np.repeat(np.arange(m), sizes)[:m]
        if node.max() == 0:
            node[m // 2 :] = 1
        return random_placement_problem(rng, m, n, "uniform", node=node)
    if family == "long-context":
        reserve = np.round(rng.uniform(4.0, 16.0, n) * 1e9)
        budget = np.round(1.5 * reserve.sum() / max(m - 1, 1) * rng.uniform(0.8, 1.2, m))
        return random_placement_problem(
            rng,
            m,
            n,
            "skewed",
            reserve_bytes=reserve,
            budget_bytes=budget,
            work_s=rng.uniform(0.5, 2.0, n),
        )
    base = random_placement_problem(rng, m, n, "skewed")
    before = solve(base, "greedy", SolveSettings(time_limit_s=10.0))
    current = before.require_plan().holder
    return replace_fields(
        base,
        wait_s=np.clip(base.wait_s + rng.normal(0.0, 1.0, m), 0.0, None),
        current=current,
        move_cost_s=rng.uniform(0.0, 0.3, n),
    )


def replace_fields(problem: PlacementProblem, **fields: Any) -> PlacementProblem:
    """``problem`` rebuilt with some fields replaced."""
    data: dict[str, Any] = {
        name: getattr(problem, name)
        for name in (
            "node",
            "wait_s",
            "budget_bytes",
            "home",
            "reserve_bytes",
            "work_s",
            "fail_weight",
            "stream_cap_bytes_s",
            "stream_bytes_s",
            "can_hold",
            "current",
            "move_cost_s",
            "alpha",
            "require_other_node",
        )
    }
    data.update(fields)
    return PlacementProblem.build(**data)


@dataclass
class GapStats:
    gaps: dict[str, list[float]] = field(default_factory=lambda: {h: [] for h in HEURISTICS})
    family: list[str] = field(default_factory=list)
    proven: list[bool] = field(default_factory=list)
    medium: int = 0
    infeasible: int = 0
    exact_failed: int = 0
    exact_s: list[float] = field(default_factory=list)


def _sizes(rng: np.random.Generator, family: str, medium: bool) -> tuple[int, int]:
    """Small: 3-10 workers, up to 4 requests per worker (2 when capacity binds: those are the
    hard ones for an exact proof). Medium: 12-20 workers, 2-4 requests per worker."""
    if medium:
        m = int(rng.integers(12, 21))
        return m, int(rng.integers(2 * m, 4 * m + 1))
    m = int(rng.integers(3, 11))
    top = 2 * m if family in ("tight", "long-context") else 4 * m
    return m, int(rng.integers(max(3, m // 2), top + 1))


def bench_gap(instances: int, seed: int, time_limit_s: float) -> None:
    """Heuristic gaps to the CP-SAT result over every instance: to the proven optimum, or to
    CP-SAT's best plan when it was not proven (counted apart, never dropped)."""
    rng = np.random.default_rng(seed)
    stats = GapStats()
    print(f"\n[3] gap to CP-SAT, {instances} instances ({', '.join(GAP_FAMILIES)})")
    for k in range(instances):
        family = GAP_FAMILIES[k % len(GAP_FAMILIES)]
        medium = (k // len(GAP_FAMILIES)) % 2 == 1 and family not in ("tight", "long-context")
        m, n = _sizes(rng, family, medium)
        problem = gap_problem(rng, family, m, n)
        exact = solve(problem, "cpsat", SolveSettings(time_limit_s=time_limit_s))
        stats.exact_s.append(exact.wall_time_s)
        if exact.termination is Termination.INFEASIBLE:
            stats.infeasible += 1
            continue
        if exact.objective is None:
            stats.exact_failed += 1
            continue
        stats.proven.append(exact.termination is Termination.OPTIMAL)
        stats.medium += medium
        stats.family.append(family)
        best = exact.objective
        for name in HEURISTICS:
            res = solve(problem, name, SolveSettings(time_limit_s=10.0))
            gap = np.inf if res.objective is None else (res.objective - best) / max(best, 1e-12)
            stats.gaps[name].append(gap)
        if (k + 1) % 20 == 0 or k + 1 == instances:
            print(f"    ... {k + 1}/{instances} solved", flush=True)
    _print_gaps(stats, time_limit_s)


def _print_gaps(stats: GapStats, time_limit_s: float) -> None:
    exact_s = np.array(stats.exact_s)
    proven = np.array(stats.proven, dtype=bool)
    print(
        f"    exact (CP-SAT, {time_limit_s:g} s): {int(proven.sum())} proven optimal,"
        f" {int((~proven).sum())} with a plan but not proven (gap to its plan, kept),"
        f" {stats.infeasible} infeasible (left out: nothing to compare),"
        f" {stats.exact_failed} without a plan; {stats.medium} medium (12-20 workers)"
    )
    print(
        f"    exact solve time: mean {exact_s.mean():.3f} s, p50 {np.median(exact_s):.3f} s,"
        f" p95 {np.percentile(exact_s, 95):.3f} s, max {exact_s.max():.2f} s"
    )
    print_gap_table(stats.gaps, 11)
    print_family_goals(stats.gaps["greedy"], stats.family, stats.proven, GAP_FAMILIES)


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
    instances = args.instances or (9 if args.quick else 180)
    print(
        f"placement benchmark: python {platform.python_version()}, numpy {np.__version__},"
        f" {os.cpu_count()} CPUs, {platform.machine()}, seed {args.seed}"
    )
    bench_incremental(workers, warm, count, args.seed)
    big = 4096 if args.quick else 16_384
    bench_incremental(big, 2 * big, 5_000 if args.quick else 20_000, args.seed)
    bench_batch(workers, requests, args.seed)
    bench_gap(instances, args.seed, 2.0 if args.quick else args.time_limit)
    if args.quick:
        bench_time_limits(32, 300, 0.5, 5)
    else:
        bench_time_limits(128, 2000, 1.0, 5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
