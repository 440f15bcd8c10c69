"""Measure what the live request path adds to a request's first token, without any failure.

A live request's TTFT is the engine's work plus the path around it: the HTTP request to the
gateway, dispatch, the gRPC call to the worker, the hand-off into its engine loop and the way
back of the first token. On a machine whose processes share a few cores, the path also slows
down while a worker process starts (interpreter, imports, weight build and load take a core).
:func:`probe_cluster` measures both on a running, otherwise idle :class:`LocalCluster`:

- **idle**: the workload's requests (prompts and output lengths) sent one at a time, closed
  loop, so that none waits behind another;
- **beside a starting worker**: the same, while a spare worker process (the command line of a
  restart, unknown to the gateway) starts, timed from its spawn until it reports ``serving``.

The measurement uses the cluster's own processes and no failure: it is a failure-free
calibration. :mod:`lumen.executor.bridge.overhead` turns it into the per-request overhead the
simulator's prediction of a live run adds (the engine's share of a probe's TTFT is subtracted
there, from the calibrated cost model).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lumen.executor.cluster.launcher import LocalCluster
from lumen.executor.cluster.loadgen import LoadRequest, send_one

__all__ = ["PathProbe", "StartProbe", "probe_cluster"]


@dataclass(frozen=True, slots=True)
class StartProbe:
    """Probes sent while a spare worker started.

    Attributes:
        progressive: the spare started as a progressive restart does (draft first).
        since_spawn_s: per probe, when it was sent after the spare's spawn.
        prompt_tokens, ttft_s: per probe.
        serving_s: when the spare reported ``serving`` after its spawn (inf: never).
    """

    progressive: bool
    since_spawn_s: tuple[float, ...]
    prompt_tokens: tuple[int, ...]
    ttft_s: tuple[float, ...]
    serving_s: float


@dataclass(frozen=True, slots=True)
class PathProbe:
    """What :func:`probe_cluster` measured: idle probes and one :class:`StartProbe` per kind
    of restart."""

    prompt_tokens: tuple[int, ...]
    ttft_s: tuple[float, ...]
    starts: tuple[StartProbe, ...] = field(default_factory=tuple)
    wall_s: float = 0.0

    def start(self, progressive: bool) -> StartProbe | None:
        """The probe of a restart of that kind (None when it was not measured)."""
        return next((s for s in self.starts if s.progressive == progressive), None)


def probe_cluster(
    cluster: LocalCluster,
    requests: Sequence[LoadRequest],
    *,
    idle_probes: int = 16,
    pause_s: float = 0.0,
    start_kinds: Sequence[bool] = (False,),
    tail_s: float = 0.5,
    timeout_s: float = 120.0,
) -> PathProbe:
    """Measure the request path of ``cluster`` (module docstring). ``requests`` are cycled
    (their prompts and output lengths; their arrival times are ignored); ``start_kinds``
    lists the restarts to measure (True: progressive). Each probe waits ``pause_s`` after
    the previous one ended: a path that has sat idle (sockets, threads, caches gone cold) is
    slower than one hit back to back, so pause as long as the workload's requests are apart.
    Raises RuntimeError when a probe fails."""
    if not requests or idle_probes < 1 or pause_s < 0:
        raise ValueError("probing needs at least one request and one idle probe, pause >= 0")
    t0 = time.monotonic()
    sent = _Sender(cluster.gateway_url, requests, pause_s)
    lengths, ttfts = [], []
    for _ in range(idle_probes):
        n, ttft = sent.next()
        lengths.append(n)
        ttfts.append(ttft)
    starts = tuple(
        _probe_start(cluster, sent, progressive, tail_s, timeout_s) for progressive in start_kinds
    )
    return PathProbe(tuple(lengths), tuple(ttfts), starts, time.monotonic() - t0)


class _Sender:
    """Closed-loop probe requests cycling through the workload's requests."""

    def __init__(self, url: str, requests: Sequence[LoadRequest], pause_s: float) -> None:
        self.url = url
        self.requests = list(requests)
        self.pause_s = pause_s
        self.k = 0

    def next(self) -> tuple[int, float]:
        req = self.requests[self.k % len(self.requests)]
        if self.k and self.pause_s:
            time.sleep(self.pause_s)
        self.k += 1
        ttft, error = send_one(self.url, req)
        if error is not None or not math.isfinite(ttft):
            raise RuntimeError(f"a probe request failed: {error or 'no token'}")
        return len(req.prompt_token_ids), ttft


def _probe_start(
    cluster: LocalCluster, sent: _Sender, progressive: bool, tail_s: float, timeout_s: float
) -> StartProbe:
    spawned = time.monotonic()
    spare = cluster.start_spare_worker(progressive)
    serving: list[float] = []

    def watch() -> None:
        try:
            cluster.wait_worker(spare, spawned + timeout_s, stage="serving")
            serving.append(time.monotonic() - spawned)
        except RuntimeError:
            serving.append(math.inf)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    since, lengths, ttfts = [], [], []
    try:
        while not serving or time.monotonic() - spawned < serving[0] + tail_s:
            if time.monotonic() - spawned > timeout_s:
                break
            at = time.monotonic() - spawned
            n, ttft = sent.next()
            since.append(at)
            lengths.append(n)
            ttfts.append(ttft)
            if serving and math.isinf(serving[0]):
                break
    finally:
        watcher.join(timeout_s)
        cluster.stop_worker(spare)
    return StartProbe(
        progressive,
        tuple(since),
        tuple(lengths),
        tuple(ttfts),
        serving[0] if serving else math.inf,
    )
