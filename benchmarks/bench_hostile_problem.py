"""An oversized planning problem against a running planner service: memory and time it costs.

    python benchmarks/bench_hostile_problem.py                       # 8,192 workers x 20,000
    python benchmarks/bench_hostile_problem.py --workers 1024 --requests 5000 --deadline 3
    python benchmarks/bench_hostile_problem.py --quick       # 1,024 workers x 2,000 (seconds)
    python benchmarks/bench_hostile_problem.py --kv-room 200000   # feasible: a plan is needed

Starts ``lumen serve`` in its own process, sends one PlanRecovery whose interrupted requests
(all of them: their homes are the first 16 workers, all failed) meet every machine, with a
deadline, and prints the status the client got and when, how long the service kept using CPU
after the call was sent (sampled every 50 ms until it stays idle for 2 s), and the service's peak
resident memory (VmHWM) before and after the call. Extra arguments after ``--`` go to
``lumen serve`` (e.g. ``-- --max-problem-mib 4096``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from _common import proc_status, start_service

from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.planner.service import wire
from lumen.proto.gen.v1 import planner_pb2 as pb
from lumen.proto.gen.v1 import planner_pb2_grpc as pb_grpc

FAILED = 16


def hostile_state(workers: int, requests: int, kv_room: int = 0) -> ClusterState:
    """Every request homed on the first 16 workers, all failed. Without ``kv_room`` no survivor
    reports free KV (the plan is a quick proof of infeasibility); with it each has that many
    tokens free and a queue of 0-6 requests, and the greedy must place every request."""
    ws = [
        Worker(k, k // 8, "A800-80GB", WorkerState.FAILED if k < FAILED else WorkerState.SERVING)
        for k in range(workers)
    ]
    reqs = [Request(i, i % FAILED, 1000, 10, 500) for i in range(requests)]
    loads = {
        k: WorkerLoad(queue_length=k % 7, gpu_kv_capacity_tokens=kv_room) for k in range(workers)
    }
    return ClusterState.build(ws, reqs, loads if kv_room else {}, kv_bytes_per_token=163_840)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8_192)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--deadline", type=float, default=3.0)
    parser.add_argument("--watch", type=float, default=300.0, help="stop watching after S")
    parser.add_argument("--quick", action="store_true", help="1,024 workers x 2,000 requests")
    parser.add_argument(
        "--kv-room", type=int, default=0, help="free KV tokens per worker (0: none, infeasible)"
    )
    args, serve_args = parser.parse_known_args()
    if args.quick:
        args.workers, args.requests = 1_024, 2_000
    serve_args = [a for a in serve_args if a != "--"]
    request = pb.PlanRecoveryRequest(
        state=wire.cluster_state_to_proto(hostile_state(args.workers, args.requests, args.kv_room))
    )
    request.options.method = "greedy"
    print(
        f"request: {args.workers:,} workers x {args.requests:,} requests,"
        f" {request.ByteSize() / 1e3:.0f} KB, deadline {args.deadline:g} s"
    )
    proc, target = start_service(*serve_args)
    try:
        print(f"service idle: peak RSS {proc_status(proc.pid, 'VmHWM'):,.0f} MiB")
        with grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            stub = pb_grpc.PlannerStub(channel)  # type: ignore[no-untyped-call]
            cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
            future = stub.PlanRecovery.future(request, timeout=args.deadline)
            try:
                future.result()
                code = "OK"
            except grpc.RpcError as exc:
                code = f"{exc.code().name}: {exc.details()}"
            answered = time.perf_counter() - t0
            print(f"client got {code[:160]} after {answered:.2f} s")
            last_busy, prev = time.perf_counter(), cpu_s(proc.pid)
            while time.perf_counter() - last_busy < 2.0 and time.perf_counter() - t0 < args.watch:
                time.sleep(0.05)
                now = cpu_s(proc.pid)
                if now - prev > 0.02:
                    last_busy = time.perf_counter()
                prev = now
        busy = last_busy - t0
        print(
            f"service busy for {busy:.1f} s after the call was sent"
            f" ({cpu_s(proc.pid) - cpu0:.1f} CPU s)"
        )
        print(f"service peak RSS {proc_status(proc.pid, 'VmHWM'):,.0f} MiB")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
