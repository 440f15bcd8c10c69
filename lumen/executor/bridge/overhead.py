"""The live request path's overhead, as the simulator's prediction of a live run models it.

:func:`lumen.executor.cluster.probe.probe_cluster` measures probe TTFTs through a running
cluster, idle and beside a starting worker process. :meth:`LiveOverhead.fit` subtracts the
engine's share of each probe (its prefill step on the calibrated cost model, loop overhead
included) and keeps the rest:

- ``idle_s``: the mean path overhead of a request when nothing else happens (HTTP, dispatch,
  gRPC hops, hand-off into the engine loop, the first token's way back);
- ``busy_s``: the mean path overhead of a request sent while another one streams (the path's
  processes share the machine's cores), when the probe measured it;
- per kind of restart, a profile of the mean overhead over time since the worker's spawn, in
  bins of ``bin_s``, until it serves (the CPU a starting worker takes from its neighbours).

:meth:`LiveOverhead.per_request` gives each request of a workload its overhead: the profile's
value when it arrives while a restarted worker starts, ``idle_s`` otherwise, plus the excess of
``busy_s`` over ``idle_s`` when it arrives while another request is in flight (which requests
overlap is the simulation's: :func:`lumen.executor.bridge.prediction.predict` decides it on a
first simulated pass).
:func:`lumen.executor.bridge.prediction.predict` delays each request's arrival at the simulated
cluster by it and adds it to the simulated TTFT.

Everything here is measured without a failure (the calibration never sees a failure-time
outcome). What stays unmodelled: the failure detection and re-dispatch of interrupted requests
(including a request the gateway sends to the killed worker before it notices), a restarted
worker's cold first requests, and what its assisting stage costs the survivor it drafts for
(the probe's spare worker is unknown to the gateway, so never paired).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lumen.executor.cluster.probe import PathProbe, StartProbe
from lumen.planner.costmodel import CostModel

__all__ = ["LiveOverhead", "StartProfile"]


@dataclass(frozen=True, slots=True)
class StartProfile:
    """Mean path overhead while a worker process starts: ``overhead_s[k]`` for requests sent
    in ``[k * bin_s, (k + 1) * bin_s)`` after its spawn; none past the last bin."""

    progressive: bool
    bin_s: float
    overhead_s: tuple[float, ...]
    serving_s: float

    @property
    def end_s(self) -> float:
        return self.bin_s * len(self.overhead_s)

    def at(self, since_spawn_s: float) -> float | None:
        """The profile's overhead that long after the spawn (None outside it)."""
        if not 0.0 <= since_spawn_s < self.end_s:
            return None
        return self.overhead_s[int(since_spawn_s // self.bin_s)]


@dataclass(frozen=True, slots=True)
class LiveOverhead:
    """The live path's overhead per request (module docstring)."""

    idle_s: float
    idle_p90_s: float
    profiles: tuple[StartProfile, ...] = ()
    busy_s: float | None = None

    @property
    def busy_excess_s(self) -> float:
        """What a request in flight adds to another's path (0 when not measured)."""
        return 0.0 if self.busy_s is None else max(0.0, self.busy_s - self.idle_s)

    @classmethod
    def fit(cls, probe: PathProbe, model: CostModel, bin_s: float = 0.5) -> LiveOverhead:
        """Subtract each probe's prefill on ``model`` from its TTFT (never below 0)."""
        if bin_s <= 0:
            raise ValueError("bin_s must be > 0")
        idle = _path(probe.prompt_tokens, probe.ttft_s, model)
        profiles = tuple(_profile(s, model, bin_s, float(idle.mean())) for s in probe.starts)
        busy = None
        if probe.busy_ttft_s:
            busy = float(_path(probe.busy_prompt_tokens, probe.busy_ttft_s, model).mean())
        return cls(float(idle.mean()), float(np.percentile(idle, 90)), profiles, busy)

    def profile(self, progressive: bool) -> StartProfile | None:
        return next((p for p in self.profiles if p.progressive == progressive), None)

    def per_request(
        self,
        arrival_s: Sequence[float],
        restarts: Sequence[tuple[float, bool]] = (),
        busy: Sequence[bool] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Each request's overhead: the largest of the profiles of the ``restarts`` (spawn
        time, progressive) it arrives within, otherwise ``idle_s``; plus
        :attr:`busy_excess_s` where ``busy`` (it arrives while another request is in
        flight)."""
        if busy is not None and len(busy) != len(arrival_s):
            raise ValueError("busy needs one flag per request")
        out = np.full(len(arrival_s), self.idle_s, dtype=np.float64)
        for at, progressive in restarts:
            prof = self.profile(progressive)
            if prof is None:
                continue
            for i, a in enumerate(arrival_s):
                value = prof.at(a - at)
                if value is not None:
                    out[i] = max(out[i], value)
        if busy is not None:
            out += self.busy_excess_s * np.asarray(busy, dtype=np.float64)
        return out

    def describe(self) -> str:
        """One line: idle overhead and each start profile's peak."""
        parts = [f"request path {1e3 * self.idle_s:.1f} ms idle (P90 {1e3 * self.idle_p90_s:.1f})"]
        if self.busy_s is not None:
            parts.append(f"{1e3 * self.busy_s:.1f} ms beside a request in flight")
        for p in self.profiles:
            kind = "progressive restart" if p.progressive else "restart"
            parts.append(
                f"up to {1e3 * max(p.overhead_s):.0f} ms while a {kind} starts"
                f" ({p.serving_s:.1f} s)"
            )
        return ", ".join(parts)


def _path(
    prompt_tokens: Sequence[int], ttft_s: Sequence[float], model: CostModel
) -> npt.NDArray[np.float64]:
    if not ttft_s:
        raise ValueError("no probe to fit")
    engine = np.asarray([model.prefill_time(n) for n in prompt_tokens], dtype=np.float64)
    return np.maximum(np.asarray(ttft_s, dtype=np.float64) - engine, 0.0)


def _profile(start: StartProbe, model: CostModel, bin_s: float, fill_s: float) -> StartProfile:
    """Bin a start's probes by send time; an empty bin keeps the previous bin's value (the
    first keeps ``fill_s``, the idle overhead)."""
    path = _path(start.prompt_tokens, start.ttft_s, model)
    since = np.asarray(start.since_spawn_s, dtype=np.float64)
    end = start.serving_s if math.isfinite(start.serving_s) else float(since.max(initial=0.0))
    bins = max(1, math.ceil(end / bin_s))
    values: list[float] = []
    last = fill_s
    for k in range(bins):
        inside = (since >= k * bin_s) & (since < (k + 1) * bin_s)
        if inside.any():
            last = float(path[inside].mean())
        values.append(last)
    return StartProfile(start.progressive, bin_s, tuple(values), start.serving_s)
