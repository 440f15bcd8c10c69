"""Simulator speed: wall time, peak memory and simulated decode tokens per wall second.

(a) the paper's 10-worker Llama-3-70B scenario, 15,000 requests, with its failure (worker 4 at
    300 s) and without;
(b) 64 workers, one simulated hour of the Azure conversation trace at 1.4 QPS per worker, one
    worker failing at 30 minutes;
(c) the bundled scenario scale-1024w-llama3-70b-hour: 1,024 workers, Llama-3-70B, 1.4 QPS per
    worker, 25 % of the workers failing at 15 minutes, one simulated hour (5.16 M requests).
    Goal: <= 15 minutes of wall time and < 4 GB peak memory. ``--scale-minutes M`` simulates
    only the first M minutes' requests and prints the hour extrapolated linearly from them,
    labelled as such (the failure at 15 minutes is then outside a horizon under 15).

Both run the chosen policy (default lumen: checkpoint placement and streaming for every
request, recovery planning, draft pairing) with the scenarios' cluster options.

Usage: python benchmarks/bench_simulator.py [--quick] [--policy NAME] [--scale-minutes M]
(--quick: 3 simulated minutes for (b), 6 seconds for (c); default for (c): 2 minutes, extrapolated)
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumen.planner.policies import POLICIES
from lumen.scenarios.resolve import build_trace, load_scenario
from lumen.simulator.cluster import simulate
from lumen.simulator.run import cluster_options, simulate_scenario
from lumen.workload import BUNDLED_TRACES, load_trace


def _peak_mib() -> float:
    # ru_maxrss is in KiB on Linux: the peak of the whole process so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="simulate 3 minutes for (b)")
    parser.add_argument(
        "--policy",
        default="lumen",
        choices=sorted(POLICIES),
        help="failure policy (default lumen: checkpoint streaming and progressive recovery)",
    )
    parser.add_argument(
        "--scale-minutes",
        type=float,
        default=None,
        help="simulated minutes of (c), 60 for the whole hour (default 2; 0.1 with --quick)",
    )
    args = parser.parse_args()
    print(
        f"simulator benchmark: python {platform.python_version()}, {platform.machine()},"
        " one process"
    )

    loaded = load_scenario("paper-sim-10w-llama3-70b")
    trace = build_trace(loaded)
    options = cluster_options(loaded.scenario)
    print(
        f"\n(a) paper-sim-10w-llama3-70b: {len(trace):,} requests, 10 workers, policy {args.policy}"
    )
    for label, failures in (("failure-free", ()), ("worker 4 fails at 300 s", ((300.0, [4]),))):
        start = time.perf_counter()
        result = simulate(
            trace,
            loaded.cost_model,
            loaded.scenario.cluster.workers,
            failures=failures,
            policy=args.policy,
            options=options,
        )
        wall = time.perf_counter() - start
        s = result.summary
        print(
            f"    {label}: wall {wall:.2f} s, mean TTFT {s.ttft_s.mean:.3f} s,"
            f" mean TPOT {1e3 * s.tpot_s.mean:.1f} ms, {result.interrupted_requests} interrupted,"
            f" {result.recomputed_tokens:,} tokens recomputed,"
            f" {result.restored_tokens:,} restored"
        )
    print(
        f"    wall {wall:.2f} s, {s.decode_tokens:,} decode tokens,"
        f" {s.decode_tokens / wall / 1e6:.2f} M decode tokens per wall second,"
        f" {s.events:,} events; peak RSS so far {_peak_mib():.0f} MiB"
    )

    seconds = 180.0 if args.quick else 3600.0
    rate = 1.4 * 64
    base = load_trace(BUNDLED_TRACES["azure-conv-2023"])
    big = base.tile(int(rate * seconds) + 1).rescale(rate)
    scale = load_scenario("scale-64w-llama3-70b")
    start = time.perf_counter()
    result = simulate(
        big,
        scale.cost_model,
        64,
        failures=((seconds / 2, [0]),),
        policy=args.policy,
        options=cluster_options(scale.scenario),
    )
    wall = time.perf_counter() - start
    s = result.summary
    print(
        f"\n(b) 64 workers, {seconds / 60:.0f} simulated minutes of the Azure conversation trace"
        f" at {rate:.1f} QPS: {len(big):,} requests, worker 0 fails halfway,"
        f" policy {args.policy}"
    )
    print(
        f"    wall {wall:.2f} s ({s.makespan_s / wall:.0f}x faster than real time),"
        f" {s.decode_tokens:,} decode tokens, {s.decode_tokens / wall / 1e6:.2f} M decode"
        f" tokens per wall second, {s.events:,} events; peak RSS {_peak_mib():.0f} MiB"
    )
    print(
        f"    mean TTFT {s.ttft_s.mean:.3f} s, P99 {s.ttft_s.p99:.3f} s;"
        f" mean TPOT {1e3 * s.tpot_s.mean:.1f} ms"
    )
    minutes = args.scale_minutes or (0.1 if args.quick else 2.0)
    bench_scale_1024(minutes, args.policy)


#: Goals of (c): wall time of the simulated hour and peak resident memory.
SCALE_GOAL_WALL_S = 15 * 60.0
SCALE_GOAL_PEAK_MIB = 4096.0


def bench_scale_1024(minutes: float, policy: str) -> None:
    """(c): the first ``minutes`` of scale-1024w-llama3-70b-hour (all of it at 60)."""
    loaded = load_scenario("scale-1024w-llama3-70b-hour")
    total = loaded.scenario.workload.num_requests
    count = min(total, round(total * minutes / 60.0))
    start = time.perf_counter()
    result = simulate_scenario(loaded, policy, num_requests=count)
    wall = time.perf_counter() - start
    s = result.summary
    whole = count == total
    print(
        f"\n(c) scale-1024w-llama3-70b-hour: 1,024 workers, {count:,} of {total:,} requests"
        f" ({minutes:g} of 60 simulated minutes), policy {policy}"
    )
    print(
        f"    wall {wall:.1f} s, {s.events:,} events, makespan {s.makespan_s:.0f} s,"
        f" mean TTFT {s.ttft_s.mean:.3f} s, {result.interrupted_requests} interrupted"
    )
    hour = wall * total / count
    label = "measured" if whole else f"EXTRAPOLATED linearly from {minutes:g} min"
    print(
        f"    one simulated hour: wall {hour / 60:.1f} min ({label})"
        f"   goal <= {SCALE_GOAL_WALL_S / 60:.0f} min"
        f"   {'met' if hour <= SCALE_GOAL_WALL_S else 'NOT met'}"
    )
    peak = _peak_mib()
    print(
        f"    peak RSS {peak:.0f} MiB (whole process; {'the hour' if whole else 'this horizon'})"
        f"   goal < {SCALE_GOAL_PEAK_MIB:.0f} MiB"
        f"   {'met' if peak < SCALE_GOAL_PEAK_MIB else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
