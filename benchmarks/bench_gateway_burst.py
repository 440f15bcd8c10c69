"""A burst of concurrent requests on a live local cluster: are healthy workers declared dead?

Starts the planner, ``--workers`` worker processes (tiny random models on CPU) and the gateway
with its default failure detection (heartbeat every 0.5 s, 1 s status deadline), fires
``--requests`` completions at once, polls ``/healthz`` throughout, and prints the gateway's
failure counters (no worker is killed, so every failure counted is a false one) and how a
prompt past the workers' context is answered::

    PYTHONPATH=$PWD python benchmarks/bench_gateway_burst.py --workers 3 --requests 200
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster


def _post(url: str, k: int, max_tokens: int) -> int:
    body: dict[str, object] = {
        "model": "lumen",
        "prompt": [(7 * k + j) % 250 + 1 for j in range(16)],
        "max_tokens": max_tokens,
    }
    request = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return -1


def _counter(text: str, name: str) -> float:
    return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _too_long(url: str) -> dict[str, object]:
    """Status, error code and seconds of a prompt past any worker's context (5,000 tokens)."""
    body = json.dumps({"model": "lumen", "prompt": [1] * 5000, "max_tokens": 4}).encode()
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url + "/v1/completions", body, timeout=120) as reply:
            status, error = int(reply.status), None
    except urllib.error.HTTPError as exc:
        status, error = int(exc.code), json.loads(exc.read())["error"]["code"]
    return {"status": status, "code": error, "seconds": round(time.monotonic() - start, 3)}


def burst(workers: int, requests: int, max_tokens: int, log_dir: Path) -> dict[str, object]:
    """Run one burst; the measured figures."""
    spec = ClusterSpec(workers, "lumen", min_step_s=0.0, log_dir=log_dir)
    with LocalCluster(spec) as cluster:
        url = cluster.gateway_url
        health: list[int] = []
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                try:
                    with urllib.request.urlopen(url + "/healthz", timeout=5) as reply:
                        health.append(int(reply.status))
                except urllib.error.HTTPError as exc:
                    health.append(int(exc.code))
                except OSError:
                    health.append(-1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        start = time.monotonic()
        with ThreadPoolExecutor(requests) as pool:
            codes = list(pool.map(lambda k: _post(url, k, max_tokens), range(requests)))
        elapsed = time.monotonic() - start
        done.set()
        watcher.join()
        with urllib.request.urlopen(url + "/metrics", timeout=10) as reply:
            metrics = reply.read().decode()
        context = _too_long(url)
    return {
        "workers": workers,
        "requests": requests,
        "ok": codes.count(200),
        "statuses": sorted(set(codes)),
        "seconds": round(elapsed, 2),
        "false_failures": _counter(metrics, "lumen_gateway_worker_failures_total"),
        "missed_heartbeats": _counter(metrics, "lumen_gateway_missed_heartbeats_total"),
        "resumed_requests": _counter(metrics, "lumen_gateway_resumed_requests_total"),
        "too_long_prompt": context,
        "health_polls": len(health),
        "health_not_200": sum(1 for h in health if h != 200),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(burst(args.workers, args.requests, args.max_tokens, Path(tmp))))


if __name__ == "__main__":
    main()
