"""``python -m lumen.executor.gateway``: run the gateway in front of running worker processes.

    python -m lumen.executor.gateway --address 0.0.0.0:8000 \\
        --workers 0=10.0.0.1:50061,1=10.0.0.2:50061 [--planner HOST:50051] \\
        [--policy lumen] [--metrics-port 9465]

Workers are reached through ``lumen.executor.worker.client.ExecutorClient(address, worker_id=ID)``,
imported only here; each submission names the addresses of the request's checkpoint holder and
restore source (:class:`AddressedWorker`). SIGTERM or SIGINT stops the HTTP server, then the
gateway.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lumen.executor.gateway.config import GatewayConfig
from lumen.executor.gateway.health import HealthSettings
from lumen.executor.gateway.limits import HTTPLimits
from lumen.executor.worker.api import GenerationRequest, TokenEvent, WorkerStatus
from lumen.planner.policies import POLICIES

log = logging.getLogger("lumen.executor.gateway")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raises ValueError with the offending text."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_workers(text: str) -> list[tuple[int, str]]:
    """``id=HOST:PORT,...`` -> [(id, "HOST:PORT"), ...] (ids distinct, non-negative)."""
    out: list[tuple[int, str]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        wid, sep, address = item.partition("=")
        if not sep or not wid.isdigit():
            raise ValueError(f"expected id=HOST:PORT, got {item!r}")
        parse_address(address)
        out.append((int(wid), address))
    ids = [w for w, _ in out]
    if not out or len(set(ids)) != len(ids):
        raise ValueError(f"expected distinct worker ids, got {text!r}")
    return out


class AddressedWorker:
    """A worker client whose submissions also name the holder's and the restore source's
    addresses (``ExecutorClient.submit(..., holder_address=, restore_address=)``), and whose
    pairings the survivor's (``set_stage(..., survivor_address=)``), so that workers need no
    peer table of their own."""

    def __init__(self, client: Any, addresses: Mapping[int, str]) -> None:
        self.client = client
        self.addresses = dict(addresses)

    @property
    def worker_id(self) -> int:
        return int(self.client.worker_id)

    def submit(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        def address(worker: int | None) -> str:
            return "" if worker is None else self.addresses.get(worker, "")

        events: Iterator[TokenEvent] = self.client.submit(
            request,
            holder_address=address(request.checkpoint_holder),
            restore_address=address(request.restore_from),
        )
        return events

    def status(self, timeout_s: float = 1.0) -> WorkerStatus:
        status: WorkerStatus = self.client.status(timeout_s)
        return status

    def set_stage(self, stage: str, survivor: int | None = None) -> str:
        address = self.addresses.get(survivor, "") if survivor is not None else ""
        return str(self.client.set_stage(stage, survivor, survivor_address=address))

    def close(self) -> None:
        self.client.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lumen.executor.gateway", description=__doc__)
    p.add_argument("--address", required=True, help="HOST:PORT of the HTTP endpoint")
    p.add_argument("--workers", required=True, help="worker ids and addresses: id=HOST:PORT,...")
    p.add_argument("--planner", help="HOST:PORT of the planner service (default: plan locally)")
    p.add_argument("--policy", default="lumen", choices=sorted(POLICIES))
    p.add_argument("--metrics-port", type=int, help="also serve /metrics on this port")
    p.add_argument("--model", default="lumen", help="model name clients must send")
    p.add_argument("--vocab-size", type=int, default=256, help="ids accepted in prompts")
    p.add_argument(
        "--scenario",
        default="paper-8w-qwen3-14b",
        help="cost model and speculation parameters (draft pairing) source",
    )
    p.add_argument("--workers-per-node", type=int, default=1)
    p.add_argument("--heartbeat-interval", type=float, default=0.5, help="seconds")
    p.add_argument("--heartbeat-timeout", type=float, default=1.0, help="seconds")
    p.add_argument("--hang-timeout", type=float, default=5.0, help="seconds")
    p.add_argument("--planner-timeout", type=float, default=2.0, help="seconds per call")
    p.add_argument(
        "--max-model-len",
        type=int,
        help="context limit in tokens (default: the smallest the workers report)",
    )
    p.add_argument(
        "--max-streams-per-worker", type=int, default=48, help="requests running on a worker"
    )
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body")
    p.add_argument("--read-timeout", type=float, default=10.0, help="seconds per read")
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds per request body")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        host, port = parse_address(args.address)
        workers = parse_workers(args.workers)
        if args.planner:
            parse_address(args.planner)
        config = GatewayConfig(
            policy=args.policy,
            model=args.model,
            vocab_size=args.vocab_size,
            scenario=args.scenario,
            workers_per_node=args.workers_per_node,
            health=HealthSettings(
                args.heartbeat_interval, args.heartbeat_timeout, args.hang_timeout
            ),
            max_model_len=args.max_model_len,
            max_streams_per_worker=args.max_streams_per_worker,
        )
        limits = HTTPLimits(
            max_body_bytes=args.max_body_bytes,
            read_timeout_s=args.read_timeout,
            body_timeout_s=args.body_timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))
    from lumen.scenarios.resolve import load_scenario

    scenario = load_scenario(args.scenario)
    speculation = scenario.scenario.speculation  # the pairing problem's draft parameters
    config = dataclasses.replace(
        config, acceptance_rate=speculation.acceptance_rate, speculation_depth=speculation.depth
    )
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        from lumen.executor.worker.client import ExecutorClient  # the gRPC adapter; imported lazily
    except ImportError as exc:
        print(f"error: the executor client is not available ({exc})", file=sys.stderr)
        return 2
    from lumen.executor.gateway.gateway import Gateway
    from lumen.executor.gateway.server import GatewayHTTPServer
    from lumen.planner.service.client import PlannerClient

    addresses = dict(workers)
    clients = [
        AddressedWorker(ExecutorClient(address, worker_id=wid), addresses)
        for wid, address in workers
    ]
    planner = PlannerClient(args.planner, timeout_s=args.planner_timeout) if args.planner else None
    gateway = Gateway(clients, config, planner=planner, cost=scenario.cost_model)
    gateway.start()
    http = GatewayHTTPServer(gateway, (host, port), limits=limits)
    if args.metrics_port is not None:
        gateway.metrics.serve_http(args.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    http.start()
    log.info(
        "gateway on %s:%d, %d worker(s), policy %s, planner %s",
        host,
        http.port,
        len(clients),
        config.policy,
        args.planner or "local",
    )
    stop.wait()
    http.stop()
    gateway.stop()
    for c in clients:
        c.close()
    if planner is not None:
        planner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
