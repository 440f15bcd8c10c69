"""Measure what the live request path adds to a request's first token, without any failure.

A live request's TTFT is the engine's work plus the path around it: the HTTP request to the
gateway, dispatch, the gRPC call to the worker, the hand-off into its engine loop and the way
back of the first token. On a machine whose processes share a few cores, the path also slows
down while a worker process starts (interpreter, imports, weight build and load take a core).
:func:`probe_cluster` measures both on a running, otherwise idle :class:`LocalCluster`:

- **warm-up** first: rounds of one request per worker sent together, so that each worker gets
  one (the gateway puts a request on the least-loaded worker) and serves its first request
  here, not in the workload: a worker's first request is slow (the gateway's stream channel
  to it connects on first use, the engine's first steps run cold), and one-at-a-time probes
  would only ever reach the first worker. Their TTFTs are kept apart (``warmup_ttft_s``);
- **idle**: the workload's requests (prompts and output lengths) sent one at a time, closed
  loop, so that none waits behind another;
- **beside a request in flight**: pairs of the workload's requests, the second sent while the
  first streams (at offsets spread evenly over an idle probe's mean time to the last token):
  the path is shared (the gateway, the load generator and every worker share the machine's
  cores), so a request that arrives while another runs takes longer;
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
from lumen.executor.cluster.loadgen import LoadRequest, send_one, send_timed

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
    warmup_ttft_s: tuple[float, ...] = ()
    #: Per probe sent beside a request in flight: its prompt length and TTFT.
    busy_prompt_tokens: tuple[int, ...] = ()
    busy_ttft_s: tuple[float, ...] = ()

    def start(self, progressive: bool) -> StartProbe | None:
        """The probe of a restart of that kind (None when it was not measured)."""
        return next((s for s in self.starts if s.progressive == progressive), None)


def probe_cluster(
    cluster: LocalCluster,
    requests: Sequence[LoadRequest],
    *,
    idle_probes: int = 16,
    busy_probes: int = 12,
    warmup_rounds: int = 2,
    pause_s: float = 0.0,
    start_kinds: Sequence[bool] = (False,),
    tail_s: float = 0.5,
    timeout_s: float = 120.0,
) -> PathProbe:
    """Measure the request path of ``cluster`` (module docstring). ``requests`` are cycled
    (their prompts and output lengths; their arrival times are ignored); ``warmup_rounds``
    rounds of one request per worker warm every worker first; ``busy_probes`` pairs measure
    the path beside a request in flight; ``start_kinds`` lists the
    restarts to measure (True: progressive). Each probe waits ``pause_s`` after
    the previous one ended: a path that has sat idle (sockets, threads, caches gone cold) is
    slower than one hit back to back, so pause as long as the workload's requests are apart.
    Raises RuntimeError when a probe fails."""
    if not requests or idle_probes < 1 or pause_s < 0 or min(warmup_rounds, busy_probes) < 0:
        raise ValueError(
            "probing needs a request and an idle probe; pause, warm-up and busy probes >= 0"
        )
    t0 = time.monotonic()
    sent = _Sender(cluster.gateway_url, requests, pause_s)
    warm = [t for _ in range(warmup_rounds) for t in sent.together(cluster.spec.workers)]
    lengths, ttfts, lives = [], [], []
    for _ in range(idle_probes):
        n, ttft = sent.next()
        lengths.append(n)
        ttfts.append(ttft)
        lives.append(sent.last_life_s)
    life_s = sum(lives) / len(lives)
    busy = [sent.beside((k + 0.5) / busy_probes * life_s) for k in range(busy_probes)]
    starts = tuple(
        _probe_start(cluster, sent, progressive, tail_s, timeout_s) for progressive in start_kinds
    )
    return PathProbe(
        tuple(lengths),
        tuple(ttfts),
        starts,
        time.monotonic() - t0,
        tuple(warm),
        tuple(n for n, _ in busy),
        tuple(t for _, t in busy),
    )


class _Sender:
    """Closed-loop probe requests cycling through the workload's requests."""

    def __init__(self, url: str, requests: Sequence[LoadRequest], pause_s: float) -> None:
        self.url = url
        self.requests = list(requests)
        self.pause_s = pause_s
        self.k = 0
        #: The last probe's time from sending to its last token.
        self.last_life_s = math.nan

    def _take(self) -> LoadRequest:
        req = self.requests[self.k % len(self.requests)]
        self.k += 1
        return req

    def _pause(self) -> None:
        if self.k and self.pause_s:
            time.sleep(self.pause_s)

    def next(self) -> tuple[int, float]:
        self._pause()
        req = self._take()
        ttft, life, error = send_timed(self.url, req)
        _check(ttft, error)
        self.last_life_s = life
        return len(req.prompt_token_ids), ttft

    def beside(self, offset_s: float) -> tuple[int, float]:
        """Send a request, then another ``offset_s`` later while the first streams: the
        second's prompt length and TTFT."""
        self._pause()
        first, second = self._take(), self._take()
        result: list[tuple[float, str | None]] = []
        thread = threading.Thread(
            target=lambda: result.append(send_one(self.url, first)), daemon=True
        )
        thread.start()
        time.sleep(offset_s)
        ttft, error = send_one(self.url, second)
        thread.join()
        _check(ttft, error)
        _check(*result[0])
        return len(second.prompt_token_ids), ttft

    def together(self, n: int) -> list[float]:
        """Send the next ``n`` requests at once (one per worker of an idle cluster) and wait
        for them all: their TTFTs."""
        batch = [self.requests[(self.k + j) % len(self.requests)] for j in range(n)]
        self.k += n
        results: list[tuple[float, str | None]] = [(math.nan, None)] * n

        def send(j: int) -> None:
            results[j] = send_one(self.url, batch[j])

        threads = [threading.Thread(target=send, args=(j,), daemon=True) for j in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for ttft, error in results:
            _check(ttft, error)
        return [ttft for ttft, _ in results]


def _check(ttft: float, error: str | None) -> None:
    if error is not None or not math.isfinite(ttft):
        raise RuntimeError(f"a probe request failed: {error or 'no token'}")


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
