"""Planner-service benchmark: RPC latency, sustained throughput and resident memory.

    python benchmarks/bench_service.py            # full run (about a minute)
    python benchmarks/bench_service.py --quick    # smoke run (seconds)

The service runs in its own process (``lumen serve`` on a free port); the clients run here.
Prints (1) the client-side latency (p50/p99) of PlanRecovery with the greedy backend for one
failed worker of a 64-worker, 2,000-request state, planned on the reported state and with the
state sent inline; (2) sustained RPC/s of the same call, and of incremental placements of new
requests, from 32 concurrent clients (one channel each) for 30 s each, and how many failed;
(3) the service's resident memory idle, holding a 1,024-worker, 100,000-request state, and
after its first incremental placement (which builds the 1,024 x 1,024 placement state) and a
recovery plan.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _common import proc_status, start_service

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad
from lumen.planner.service.client import PlannerClient, PlannerError

KV_BYTES_PER_TOKEN = 163_840  # Qwen3-14B, the served scenario's model
FAILED = 7


def synthetic_state(workers: int, requests: int, seed: int = 0) -> ClusterState:
    """Two workers per node, requests spread evenly with Azure-like lengths, each checkpointed
    (all but the last partial 16-token page) on the worker two places further in the ring,
    which is on another node."""
    rng = np.random.default_rng(seed)
    ws = [Worker(k, k // 2, "A800-80GB") for k in range(workers)]
    homes = rng.integers(0, workers, size=requests)
    prompts = rng.integers(100, 4_000, size=requests)
    outputs = rng.integers(50, 1_000, size=requests)
    reqs = []
    for i in range(requests):
        home, prompt, out = int(homes[i]), int(prompts[i]), int(outputs[i])
        generated = int(rng.integers(0, out))
        context = prompt + generated
        reqs.append(
            Request(i, home, prompt, generated, out, (home + 2) % workers, context - context % 16)
        )
    counts = np.bincount(homes, minlength=workers)
    loads = {
        k: WorkerLoad(
            queue_length=int(rng.integers(0, 8)),
            waiting_time_s=float(rng.uniform(0.0, 2.0)),
            gpu_kv_used_tokens=int(counts[k]) * 2_000,
            gpu_kv_capacity_tokens=281_096,
            host_budget_bytes=2_000 * 10**9,
        )
        for k in range(workers)
    }
    return ClusterState.build(ws, reqs, loads, kv_bytes_per_token=KV_BYTES_PER_TOKEN)


class Service:
    """``lumen serve`` in a child process on a free port."""

    def __init__(self) -> None:
        self.proc, self.target = start_service("--max-workers", "96")

    def rss_mib(self) -> float:
        return proc_status(self.proc.pid, "VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def percentiles(ms: list[float]) -> str:
    a = np.array(ms)
    return f"p50 {np.percentile(a, 50):7.2f} ms   p99 {np.percentile(a, 99):7.2f} ms"


def bench_latency(service: Service, state: ClusterState, repeats: int) -> None:
    print(
        f"\n[1] PlanRecovery latency, greedy, worker {FAILED} of {len(state.workers)} fails,"
        f" {len(state.requests):,} requests ({repeats} calls each)"
    )
    with PlannerClient(service.target, timeout_s=60) as client:
        client.report_cluster_state(state)
        for label, inline in (("reported state", None), ("state sent inline", state)):
            client.plan_recovery(inline, [FAILED], method="greedy")  # warm-up
            wall, solve_ms, moved = [], [], 0
            for _ in range(repeats):
                start = time.perf_counter()
                outcome = client.plan_recovery(inline, [FAILED], method="greedy")
                wall.append((time.perf_counter() - start) * 1e3)
                solve_ms.append(outcome.status.wall_time_s * 1e3)
                assert outcome.plan is not None
                moved = len(outcome.plan.assignments)
            print(
                f"    {label:<18} {percentiles(wall)}   (solver p50 {np.median(solve_ms):.2f} ms,"
                f" {moved} requests moved)"
            )


def bench_throughput(service: Service, call: str, clients: int, seconds: float) -> None:
    """``call``: "recovery" (PlanRecovery, greedy, on the reported state) or "place"
    (PlaceRequest of new requests, each client its own id range)."""
    label = "PlanRecovery (greedy)" if call == "recovery" else "PlaceRequest (incremental)"
    print(f"    {label:<27}", end="", flush=True)
    counts = [0] * clients
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def run(k: int) -> None:
        with PlannerClient(service.target, timeout_s=30, retries=0) as client:
            client.health()  # connect before the clock starts
            start_gate.wait()
            next_id = 10_000_000 * (k + 1)
            while time.perf_counter() < stop_at[0]:
                try:
                    if call == "recovery":
                        client.plan_recovery(failed=[FAILED], method="greedy")
                    else:
                        next_id += 1
                        client.place_request(Request(next_id, next_id % 64, 500, 0, 200))
                    counts[k] += 1
                except PlannerError as exc:
                    errors.append(exc.code)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start_gate.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    total = sum(counts)
    print(
        f" {total:7,} calls in {elapsed:.1f} s = {total / elapsed:6,.0f} RPC/s,"
        f" {len(errors)} errors{' (' + ', '.join(sorted(set(errors))) + ')' if errors else ''}"
    )


def bench_memory(workers: int, requests: int) -> None:
    print(f"\n[3] service resident memory, {workers:,} workers x {requests:,} requests")
    state = synthetic_state(workers, requests, seed=1)
    service = Service()
    try:
        with PlannerClient(service.target, timeout_s=300) as client:
            time.sleep(0.5)
            idle = service.rss_mib()
            start = time.perf_counter()
            client.report_cluster_state(state)
            report_s = time.perf_counter() - start
            held = service.rss_mib()
            start = time.perf_counter()
            placed = client.place_request(Request(requests + 1, 0, 1_000, 0, 500))
            place_s = time.perf_counter() - start
            client.plan_recovery(failed=[FAILED], method="greedy")
            planned = service.rss_mib()
        print(f"    idle                                   {idle:8.1f} MiB")
        print(
            f"    holding the state                      {held:8.1f} MiB"
            f"   (ReportClusterState took {report_s:.2f} s)"
        )
        print(
            f"    + first placement and a recovery plan  {planned:8.1f} MiB"
            f"   (first PlaceRequest {place_s:.2f} s, holder {placed.holder})"
        )
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}"
    )
    state = synthetic_state(64, 2_000)
    service = Service()
    try:
        bench_latency(service, state, repeats=20 if args.quick else 200)
        clients, seconds = (8, 2.0) if args.quick else (32, 30.0)
        print(f"\n[2] sustained RPC/s, {clients} concurrent clients for {seconds:g} s each")
        for call in ("recovery", "place"):
            bench_throughput(service, call, clients, seconds)
    finally:
        service.stop()
    if args.quick:
        bench_memory(128, 10_000)
    else:
        bench_memory(1_024, 100_000)


if __name__ == "__main__":
    main()
