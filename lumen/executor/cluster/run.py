"""Drive a local cluster with a workload, crash a worker on schedule, and measure.

:func:`run_policy` starts a :class:`LocalCluster` for one policy, sends the workload open loop
to the gateway, SIGKILLs the chosen worker at the given time, starts it again after
``restart_after_s`` and watches it until it serves again. Measured in the same run:

- TTFT and TPOT of every request (mean, P99) and of the requests that arrived while the
  worker was down or recovering (the failure window);
- recovery time: from the SIGKILL until the restarted workers report ``serving``;
- lost requests (errors) and, with a reference run, outputs that differ from it.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster
from lumen.executor.cluster.loadgen import LoadRequest, LoadResult, run_load

__all__ = ["FailureInjection", "PolicyRun", "mismatches", "parse_injection", "run_policy"]


@dataclass(frozen=True, slots=True)
class FailureInjection:
    """SIGKILL ``workers`` (together) ``at_s`` seconds after the first request; restart them
    after ``restart_after_s`` more."""

    at_s: float
    workers: tuple[int, ...]
    restart_after_s: float = 0.0
    #: SIGSTOP instead of SIGKILL: the workers hang (alive, silent) until they are killed and
    #: restarted after ``restart_after_s``.
    hang: bool = False
    #: Also SIGKILL the planner service at the same time (the gateway falls back to planning
    #: recovery itself).
    kill_planner: bool = False


def parse_injection(text: str) -> FailureInjection:
    """``AT_S:WORKER[+WORKER...][:RESTART_AFTER_S]`` -> :class:`FailureInjection`
    (ValueError if bad)."""
    parts = text.split(":")
    usage = f"bad failure injection {text!r}: expected AT_S:WORKER[+WORKER...][:RESTART_AFTER_S]"
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        at = float(parts[0])
        workers = tuple(sorted({int(w) for w in parts[1].split("+")}))
        after = float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError:
        raise ValueError(usage) from None
    if not (math.isfinite(at) and at >= 0 and min(workers) >= 0 and after >= 0):
        raise ValueError(f"{usage}; times and workers must be >= 0")
    return FailureInjection(at, workers, after)


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """One policy's live run."""

    policy: str
    load: LoadResult
    failure: FailureInjection | None
    recovery_s: float  # NaN without a failure, inf when the worker never served again
    gateway_metrics: dict[str, float] = field(default_factory=dict)

    def counter(self, name: str) -> float:
        """Sum of a gateway metric's samples over their labels (0 when absent)."""
        return sum(v for k, v in self.gateway_metrics.items() if k.split("{")[0] == name)

    def window(self) -> np.ndarray:
        """Per request: arrived while the failed worker was down or recovering."""
        arrival = np.asarray(self.load.arrival_s)
        if self.failure is None:
            return np.zeros(arrival.shape, bool)
        end = self.failure.at_s + (self.recovery_s if math.isfinite(self.recovery_s) else 1e18)
        return (arrival >= self.failure.at_s) & (arrival < end)

    def summary(self) -> dict[str, float]:
        ttft, tpot = self.load.ttft_s(), self.load.tpot_s()
        w = self.window()

        def mean(a: np.ndarray) -> float:
            a = a[np.isfinite(a)]
            return float(a.mean()) if a.size else math.nan

        def p99(a: np.ndarray) -> float:
            a = a[np.isfinite(a)]
            return float(np.percentile(a, 99)) if a.size else math.nan

        return {
            "requests": float(len(ttft)),
            "errors": float(len(ttft) - self.load.ok),
            "ttft_mean_s": mean(ttft),
            "ttft_p99_s": p99(ttft),
            "tpot_mean_s": mean(tpot),
            "tpot_p99_s": p99(tpot),
            "window_requests": float(w.sum()),
            "window_ttft_mean_s": mean(ttft[w]),
            "window_tpot_mean_s": mean(tpot[w]),
            "recovery_s": self.recovery_s,
        }


def mismatches(run: LoadResult, reference: LoadResult) -> list[int]:
    """Indices of requests whose tokens differ from the reference run's."""
    return [
        i for i, (a, b) in enumerate(zip(run.token_ids, reference.token_ids, strict=True)) if a != b
    ]


def _watch_recovery(
    cluster: LocalCluster, failure: FailureInjection, t_kill: list[float], done: list[float]
) -> None:
    """Restart the workers after their delay and time them until they all serve."""
    time.sleep(failure.restart_after_s)
    for w in failure.workers:
        if failure.hang:
            cluster.kill_worker(w)
        cluster.restart_worker(w)
    deadline = time.monotonic() + 600.0
    try:
        for w in failure.workers:
            cluster.wait_worker(w, deadline, stage="serving")
        done.append(time.monotonic() - t_kill[0])
    except RuntimeError:
        done.append(math.inf)


def run_policy(
    spec: ClusterSpec,
    requests: Sequence[LoadRequest],
    failure: FailureInjection | None,
    timeout_s: float = 300.0,
    before: Callable[[LocalCluster], None] | None = None,
) -> PolicyRun:
    """Run ``requests`` on a fresh cluster of ``spec`` (one policy), with ``failure``;
    ``before`` runs on the started cluster before the workload (such as probing it)."""
    if failure is not None and not all(0 <= w < spec.workers for w in failure.workers):
        raise ValueError(f"failure: no worker {list(failure.workers)} among {spec.workers}")
    with LocalCluster(spec) as cluster:
        if before is not None:
            before(cluster)
        t_kill: list[float] = []
        done: list[float] = []
        watcher: threading.Thread | None = None

        def crash() -> None:
            nonlocal watcher
            assert failure is not None
            t_kill.append(time.monotonic())
            if failure.kill_planner:
                cluster.kill_planner()
            for w in failure.workers:
                if failure.hang:
                    cluster.hang_worker(w)
                else:
                    cluster.kill_worker(w)
            watcher = threading.Thread(
                target=_watch_recovery, args=(cluster, failure, t_kill, done), daemon=True
            )
            watcher.start()

        at = [(failure.at_s, crash)] if failure is not None else []
        load = run_load(cluster.gateway_url, requests, timeout_s=timeout_s, at_time=at)
        if watcher is not None:
            watcher.join(timeout_s)
        metrics = scrape(f"{cluster.gateway_url}/metrics")
    recovery = math.nan if failure is None else (done[0] if done else math.inf)
    return PolicyRun(spec.policy, load, failure, recovery, metrics)


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text endpoint (empty when unreachable)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def reference_spec(spec: ClusterSpec) -> ClusterSpec:
    """The same cluster for a failure-free reference run (Stop-and-Restart: nothing extra)."""
    return replace(spec, policy="stop-and-restart")
