"""Recovery-planning benchmark: heuristic latency, exact proof time and heuristic quality.

    python benchmarks/bench_recovery.py            # full run (several minutes)
    python benchmarks/bench_recovery.py --quick    # smoke run (seconds)

Prints (1) the wall time (p50/p99 over 200 runs) of the greedy and of the paper's rule
recovering one failed worker's 512 requests over 1,024 machines, and (1b) the time and traced
memory of one greedy recovery at 16,384 machines x 2,048 requests, beside their goals, and its
objective beside the matrix search's on the same problem made dense (about 3 GiB there);
(2) the time to a proven optimum at 16 machines x
256 requests for CP-SAT and for the MILP (CBC), per family over a few seeds; (3) the gaps of
the greedy, the paper's rule and Stop-and-Restart to the exact backends over generated
instances of every family (the generator's and variants: heterogeneous survivors, failure
domains, binding KV on uneven survivors, long contexts), how many were proven optimal, and the
greedy's gap per family beside the goal; (4) the wall time of each exact backend, and of the
greedy's matrix search under tight KV, beside its time limit on large instances.

Stop-and-Restart ignores checkpoints, so its plan is evaluated on the problem without them; its
gap is measured against the optimum of the full problem (what the checkpoints buy).
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

from lumen.planner.generators.recovery import FAMILIES, random_recovery_problem
from lumen.planner.heuristics.recovery import uses_classes
from lumen.planner.heuristics.recovery_scale import warm_up
from lumen.planner.mode_times import ModeTimes
from lumen.planner.problems import RecoveryProblem
from lumen.planner.result import SolveSettings, Termination
from lumen.planner.solve import solve

HEURISTICS = ("greedy", "lumen", "stop-and-restart")


#: Goals (docs/planner.md, section 2): greedy p99 at 1,024 x 512, and time and memory of one
#: greedy recovery at 16,384 workers x 2,048 requests; gaps on every family.
GOAL_P99_MS = 10.0
GOAL_SCALE_MS = 100.0
GOAL_SCALE_MIB = 500.0
#: Time limit of the matrix search compared with the greedy on classes at scale.
MATRIX_LIMIT_S = 600.0


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def bench_latency(machines: int, requests: int, repeats: int, seed: int) -> None:
    """p50/p99 wall time of the greedy and the paper's rule on one uniform instance."""
    rng = np.random.default_rng(seed)
    problem = random_recovery_problem(rng, machines, requests, "uniform", recovering=(1, 1))
    route = "machine classes" if uses_classes(problem) else "matrix search"
    print(
        f"\n[1] heuristic latency, {requests} requests of one failed worker over {machines}"
        f" machines ({repeats} runs; the greedy on {route})"
    )
    for name in ("greedy", "lumen"):
        solve(problem, name)  # warm-up: imports, caches
        wall = np.array([solve(problem, name).wall_time_s for _ in range(repeats)]) * 1e3
        res = solve(problem, name)
        value = f"{res.objective:.2f}" if res.objective is not None else res.termination.value
        p99 = float(np.percentile(wall, 99))
        goal = ""
        if name == "greedy":
            goal = f" (goal <= {GOAL_P99_MS:g} ms: {_verdict(p99 <= GOAL_P99_MS)})"
        print(
            f"    {name:<7} p50 {np.percentile(wall, 50):6.1f} ms   p99 {p99:6.1f} ms{goal}"
            f"   J = {value}"
        )


def _as_dense(problem: RecoveryProblem) -> RecoveryProblem:
    """The same problem with its (n, m, 4) mode array: the greedy then runs its matrix search."""
    return problem.with_modes(ModeTimes.from_dense(problem.mode_time_s))


def bench_scale(machines: int, requests: int, seed: int, repeats: int = 5) -> None:
    """One greedy recovery at scale on factored mode times (machine classes): build time and
    traced memory, solve time (median and worst of ``repeats``, untraced) and traced memory;
    then the matrix search on the same problem made dense, for its plan's quality and cost."""
    rng = np.random.default_rng(seed)
    print(f"\n[1b] greedy recovery at {machines:,} machines x {requests:,} requests")
    tracemalloc.start()
    t = time.perf_counter()
    problem = random_recovery_problem(rng, machines, requests, "uniform", recovering=(1, 1))
    build_s = time.perf_counter() - t
    build_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    modes = problem.modes
    factored = (modes.class_time_s.nbytes + modes.own_time_s.nbytes) / 2**20
    dense = requests * machines * 4 * 8 / 2**20
    print(
        f"    build {build_s:.2f} s, traced peak {build_mib:.0f} MiB; mode times"
        f" {factored:.2f} MiB in {modes.num_classes} machine classes (dense: {dense:,.0f} MiB)"
    )
    route = "machine classes" if uses_classes(problem) else "matrix search"
    walls = [solve(problem, "greedy").wall_time_s * 1e3 for _ in range(repeats)]
    tracemalloc.start()
    res = solve(problem, "greedy")
    solve_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    ms, worst = float(np.median(walls)), max(walls)
    print(
        f"    greedy on {route}, {res.termination.value}, J = {res.objective:.2f}:"
        f" median {ms:.0f} ms, worst {worst:.0f} ms of {repeats} (goal <= {GOAL_SCALE_MS:g} ms:"
        f" {_verdict(worst <= GOAL_SCALE_MS)}), traced peak {solve_mib:.0f} MiB while solving"
        f" (goal <= {GOAL_SCALE_MIB:g} MiB with the problem:"
        f" {_verdict(max(build_mib, solve_mib) <= GOAL_SCALE_MIB)})"
    )
    tracemalloc.start()
    # The matrix search keeps its time limit: give it one it never reaches, so that the plans
    # compared are both complete.
    matrix = solve(_as_dense(problem), "greedy", SolveSettings(time_limit_s=MATRIX_LIMIT_S))
    matrix_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    if res.objective is not None and matrix.objective is not None:
        change = res.objective / matrix.objective - 1.0
        print(
            f"    the matrix search on the dense problem: J = {matrix.objective:.2f} in"
            f" {matrix.wall_time_s * 1e3:.0f} ms ({matrix.limit.value}), traced peak"
            f" {matrix_mib:,.0f} MiB; machine classes {change:+.2%} against it (negative: better)"
        )


def bench_exact(machines: int, requests: int, seeds: int, threads: int, limit: float) -> None:
    """Time to a proven optimum of each exact backend, per family and seed."""
    print(
        f"\n[2] exact recovery, {machines} machines x {requests} requests,"
        f" time limit {limit:g} s, {threads} threads"
    )
    settings = SolveSettings(time_limit_s=limit, threads=threads)
    for family in FAMILIES:
        rows = []
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            problem = random_recovery_problem(rng, machines, requests, family)
            cells = []
            for name in ("cpsat", "milp"):
                res = solve(problem, name, settings)
                tag = "optimal" if res.termination is Termination.OPTIMAL else "not proven"
                gap = f" gap {res.gap:.2%}" if res.gap is not None and tag != "optimal" else ""
                cells.append(f"{name} {res.wall_time_s:5.2f} s {tag}{gap}")
            rows.append(f"seed {seed}: " + " | ".join(cells))
        print(f"    {family}:")
        for row in rows:
            print(f"      {row}")


#: Families of the gap study: the generator's, then variants of it (overrides).
#: hetero: survivors of different speeds (0.8-1.25x), busy ones, uneven KV; domains: a node of
#: 3-6 workers fails at once, more checkpoints lost; tight-hetero: binding KV on uneven
#: survivors; long-context: contexts up to 32,000 tokens under binding KV.
GAP_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    **{f: (f, {}) for f in FAMILIES},
    "hetero": ("uniform", {"homogeneous": False, "busy_fraction": 0.3, "kv_spread": 0.6}),
    "domains": ("multi-failure", {"recovering": (3, 6), "dead_fraction": 0.2}),
    "tight-hetero": ("tight-kv", {"homogeneous": False, "busy_fraction": 0.2}),
    "long-context": ("tight-kv", {"max_context": 32000.0, "kv_slack": 1.3}),
}


@dataclass
class GapStats:
    gaps: dict[str, list[float]] = field(default_factory=lambda: {h: [] for h in HEURISTICS})
    family: list[str] = field(default_factory=list)
    proven: list[bool] = field(default_factory=list)
    by_milp: int = 0
    exact_failed: int = 0
    exact_s: list[float] = field(default_factory=list)


SIZES = ((4, 16), (8, 32), (14, 25), (8, 64), (16, 64))


def bench_gap(instances: int, seed: int, limit: float, threads: int) -> None:
    """Heuristic gaps to the exact result (CP-SAT, then the MILP where CP-SAT did not prove
    optimality: CBC is stronger when KV binds) over every instance: to the proven optimum, or
    to the better exact plan when neither proved it (counted apart, never dropped)."""
    rng = np.random.default_rng(seed)
    stats = GapStats()
    sizes = ", ".join(f"{m}x{n}" for m, n in SIZES)
    names = list(GAP_FAMILIES)
    print(
        f"\n[3] gap to the exact backends, {instances} instances ({sizes} machines x requests;"
        f" {', '.join(names)})"
    )
    for k in range(instances):
        family = names[k % len(names)]  # every family in turn, each size in turn
        m, n = SIZES[(k // len(names)) % len(SIZES)]
        base, overrides = GAP_FAMILIES[family]
        problem = random_recovery_problem(rng, m, n, base, **overrides)
        settings = SolveSettings(time_limit_s=limit, threads=threads)
        exact = solve(problem, "cpsat", settings)
        wall = exact.wall_time_s
        if exact.termination is not Termination.OPTIMAL:
            milp = solve(problem, "milp", settings)
            wall += milp.wall_time_s
            stats.by_milp += milp.termination is Termination.OPTIMAL
            if milp.objective is not None and (
                exact.objective is None
                or milp.termination is Termination.OPTIMAL
                or milp.objective < exact.objective
            ):
                exact = milp
        stats.exact_s.append(wall)
        if exact.objective is None:
            stats.exact_failed += 1
            continue
        stats.proven.append(exact.termination is Termination.OPTIMAL)
        stats.family.append(family)
        best = exact.objective
        for name in HEURISTICS:
            res = solve(problem, name)
            gap = np.inf if res.objective is None else (res.objective - best) / max(best, 1e-12)
            stats.gaps[name].append(gap)
        if (k + 1) % 20 == 0 or k + 1 == instances:
            print(f"    ... {k + 1}/{instances} solved", flush=True)
    _print_gaps(stats, limit)


def _print_gaps(stats: GapStats, limit: float) -> None:
    exact_s = np.array(stats.exact_s)
    proven = np.array(stats.proven, dtype=bool)
    print(
        f"    exact: {int(proven.sum())} proven optimal ({stats.by_milp} by the MILP after"
        f" CP-SAT did not prove it), {int((~proven).sum())} with a plan but not proven in"
        f" {limit:g} s (gap to that plan, kept), {stats.exact_failed} without any exact plan;"
        f" time mean {exact_s.mean():.2f} s, p50 {np.median(exact_s):.2f} s,"
        f" max {exact_s.max():.2f} s"
    )
    print_gap_table(stats.gaps, 17)
    print_family_goals(stats.gaps["greedy"], stats.family, stats.proven, GAP_FAMILIES)
    fams = np.array(stats.family)
    for name in HEURISTICS[1:]:
        g_all = np.array(stats.gaps[name])
        parts = []
        for family in GAP_FAMILIES:
            g = g_all[(fams == family) & np.isfinite(g_all)]
            if g.size:
                parts.append(f"{family} {g.mean():.2%}")
        print(f"    {name} mean gap by family: " + "; ".join(parts))


def bench_time_limits(cases: tuple[tuple[str, int, int, str, float], ...], seed: int) -> None:
    """Wall time of each backend against its time limit: building the model, presolve and the
    solver itself must all fit in the limit (the greedy: its matrix search under tight KV, to
    within one vectorized step)."""
    print("\n[4] time limits (wall time beside the limit; imports warmed up first)")
    for name in {case[0] for case in cases}:
        solve(random_recovery_problem(np.random.default_rng(1), 2, 4, "uniform"), name)
    for name, machines, requests, family, limit in cases:
        problem = random_recovery_problem(np.random.default_rng(seed), machines, requests, family)
        t = time.perf_counter()
        res = solve(problem, name, SolveSettings(time_limit_s=limit))
        wall = time.perf_counter() - t
        print(
            f"    {name:<6} {machines} x {requests} {family:<9} limit {limit:5.2f} s"
            f"   wall {wall:6.2f} s   {res.termination.value}"
            + (f" ({res.limit.value})" if res.limit.value != "none" else "")
        )


#: (backend, machines, requests, family, time limit) of the time-limit study.
LIMIT_CASES = (
    ("cpsat", 64, 512, "tight-kv", 1.0),
    ("milp", 64, 512, "tight-kv", 1.0),
    ("flow", 8, 110, "uniform", 10.0),
    ("flow", 8, 110, "uniform", 1.0),
    ("greedy", 1024, 3900, "tight-kv", 0.5),
)
QUICK_LIMIT_CASES = (
    ("cpsat", 16, 128, "tight-kv", 0.5),
    ("milp", 16, 128, "tight-kv", 0.5),
    ("flow", 8, 48, "uniform", 0.5),
    ("greedy", 512, 2000, "tight-kv", 0.05),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few repeats and instances")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generated instance")
    parser.add_argument("--instances", type=int, help="instances for the gap study")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--time-limit", type=float, default=10.0, help="exact seconds each")
    args = parser.parse_args(argv)
    repeats = 20 if args.quick else 200
    seeds = 1 if args.quick else 3
    instances = args.instances or (8 if args.quick else 160)
    print(
        f"recovery benchmark: python {platform.python_version()}, numpy {np.__version__},"
        f" {os.cpu_count()} CPUs, {platform.machine()}, seed {args.seed}"
    )
    start = time.perf_counter()
    warm_up()  # as the planner service does before it binds
    print(f"the greedy's compiled loops ready in {time.perf_counter() - start:.2f} s")
    bench_latency(1024, 512, repeats, args.seed)
    if args.quick:
        bench_scale(4096, 512, args.seed)
    else:
        bench_scale(16_384, 2_048, args.seed)
    if args.quick:
        bench_exact(8, 64, seeds, args.threads, 2.0)
    else:
        bench_exact(16, 256, seeds, args.threads, args.time_limit)
    bench_gap(instances, args.seed, 2.0 if args.quick else args.time_limit, args.threads)
    bench_time_limits(QUICK_LIMIT_CASES if args.quick else LIMIT_CASES, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
