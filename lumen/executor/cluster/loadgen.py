"""An open-loop load generator for an OpenAI-compatible completions endpoint.

Each request is sent at its arrival time (relative to the start), on its own thread, with
``stream: true``; the generator records when the first token and the last token arrived and
the token ids received (the gateway's ``lumen.token_ids`` extension of each choice). Arrivals
never wait for earlier requests (open loop), so a slow cluster shows up as growing latency,
not as a lower offered load.

:func:`workload` draws the requests from a trace, with prompt and output lengths capped for
small CPU models; token ids are drawn from the model's vocabulary by a seeded generator, so a
workload is the same for every policy compared.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lumen.workload.trace import Trace

__all__ = ["LoadRequest", "LoadResult", "run_load", "send_one", "send_timed", "workload"]


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """One request of a load run: sent ``arrival_s`` after the start."""

    arrival_s: float
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    seed: int = 0
    temperature: float = 0.0


@dataclass(slots=True)
class LoadResult:
    """Per request (in workload order): times relative to the start, NaN when it never came;
    the token ids received; an error message or None; when the load generator actually sent
    it (its lateness past ``arrival_s`` is the client's, not the cluster's; empty when not
    recorded)."""

    arrival_s: list[float]
    first_token_s: list[float]
    finish_s: list[float]
    token_ids: list[list[int]]
    errors: list[str | None] = field(default_factory=list)
    sent_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(e is None for e in self.errors)

    def ttft_s(self) -> npt.NDArray[np.float64]:
        """From when the request was sent (from its arrival time when that is not recorded):
        the cluster's time to the first token, not the load generator's lateness."""
        return _array(self.first_token_s) - _array(self.start_s())

    def start_s(self) -> list[float]:
        """Per request, when it was sent when recorded, else its arrival time."""
        if len(self.sent_s) != len(self.arrival_s):
            return self.arrival_s
        pairs = zip(self.sent_s, self.arrival_s, strict=True)
        return [s if math.isfinite(s) else a for s, a in pairs]

    def tpot_s(self) -> npt.NDArray[np.float64]:
        n = _array([float(len(t)) for t in self.token_ids])
        span = _array(self.finish_s) - _array(self.first_token_s)
        out = np.full(n.shape, np.nan)
        many = n > 1
        out[many] = span[many] / (n[many] - 1)
        return out

    def e2e_s(self) -> npt.NDArray[np.float64]:
        return _array(self.finish_s) - _array(self.arrival_s)


def _array(values: Sequence[float]) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def workload(
    trace: Trace,
    vocab_size: int,
    *,
    max_prompt_tokens: int = 64,
    max_output_tokens: int = 32,
    time_scale: float = 1.0,
    seed: int = 0,
) -> list[LoadRequest]:
    """Requests from ``trace``: arrivals times ``time_scale``, lengths capped (a cap keeps the
    trace's shape: lengths are scaled by ``cap / max length`` when the trace exceeds it)."""
    if vocab_size < 2:
        raise ValueError("vocab_size must be >= 2")
    if min(max_prompt_tokens, max_output_tokens) < 1 or not time_scale > 0:
        raise ValueError("length caps must be >= 1 and time_scale > 0")
    rng = np.random.default_rng(seed)

    def capped(lengths: npt.NDArray[np.int64], cap: int) -> list[int]:
        top = int(lengths.max(initial=1))
        scaled = lengths if top <= cap else np.ceil(lengths * (cap / top))
        return [int(v) for v in np.clip(scaled, 1, cap)]

    prompts = capped(np.asarray(trace.prompt_tokens), max_prompt_tokens)
    outputs = capped(np.asarray(trace.output_tokens), max_output_tokens)
    out = []
    for i in range(len(trace)):
        ids = rng.integers(1, vocab_size, prompts[i]).tolist()
        out.append(
            LoadRequest(
                float(trace.arrival_s[i]) * time_scale,
                tuple(int(t) for t in ids),
                outputs[i],
                seed=seed * 1_000_003 + i,
            )
        )
    return out


def _send(
    base_url: str, req: LoadRequest, timeout_s: float, t0: float, out: LoadResult, i: int
) -> None:
    body = json.dumps(
        {
            "model": "lumen",
            "prompt": list(req.prompt_token_ids),
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "seed": req.seed,
            "stream": True,
        }
    ).encode()
    http = urllib.request.Request(
        f"{base_url.rstrip('/')}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    tokens: list[int] = []
    if i < len(out.sent_s):
        out.sent_s[i] = time.monotonic() - t0
    try:
        with urllib.request.urlopen(http, timeout=timeout_s) as resp:
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices", []):
                    ids = choice.get("lumen", {}).get("token_ids", [])
                    if ids and not tokens:
                        out.first_token_s[i] = time.monotonic() - t0
                    tokens.extend(int(t) for t in ids)
        out.finish_s[i] = time.monotonic() - t0
        if len(tokens) == 0:
            out.errors[i] = "no tokens received"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        out.errors[i] = f"{type(exc).__name__}: {exc}"
    out.token_ids[i] = tokens


def send_one(base_url: str, req: LoadRequest, timeout_s: float = 60.0) -> tuple[float, str | None]:
    """Send one streamed request now and wait for it: its TTFT (seconds from sending, NaN
    when no token came) and its error (None when it completed)."""
    ttft, _, error = send_timed(base_url, req, timeout_s)
    return ttft, error


def send_timed(
    base_url: str, req: LoadRequest, timeout_s: float = 60.0
) -> tuple[float, float, str | None]:
    """:func:`send_one`, also with the time from sending to the last token (NaN when the
    stream never ended)."""
    out = LoadResult([0.0], [math.nan], [math.nan], [[]], [None])
    _send(base_url, req, timeout_s, time.monotonic(), out, 0)
    return out.first_token_s[0], out.finish_s[0], out.errors[0]


def run_load(
    base_url: str,
    requests: Sequence[LoadRequest],
    *,
    timeout_s: float = 120.0,
    at_time: Sequence[tuple[float, Callable[[], None]]] = (),
) -> LoadResult:
    """Send ``requests`` open loop to ``base_url`` and wait for all of them; ``at_time`` runs
    callbacks (such as killing a worker) at given times after the start."""
    n = len(requests)
    nan = math.nan
    out = LoadResult(
        [r.arrival_s for r in requests],
        [nan] * n,
        [nan] * n,
        [[] for _ in range(n)],
        [None] * n,
        [nan] * n,
    )
    t0 = time.monotonic()
    events = sorted(
        [(r.arrival_s, i, None) for i, r in enumerate(requests)]
        + [(t, -1, fn) for t, fn in at_time],
        key=lambda e: (e[0], e[1]),
    )
    threads: list[tuple[int, threading.Thread]] = []
    for at, i, fn in events:
        delay = at - (time.monotonic() - t0)
        if delay > 0:
            time.sleep(delay)
        if fn is not None:
            fn()
            continue
        th = threading.Thread(
            target=_send, args=(base_url, requests[i], timeout_s, t0, out, i), daemon=True
        )
        th.start()
        threads.append((i, th))
    deadline = time.monotonic() + timeout_s
    for _, th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    for i, th in threads:
        if th.is_alive() and out.errors[i] is None:
            out.errors[i] = "timed out"
    return out
