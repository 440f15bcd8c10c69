"""Fitting a scenario's engine efficiencies to a published failure-free operating point.

Only failure-free runs are simulated (``stop-and-restart``, no failure events: without failures
every policy serves alike), so a calibration can never be tuned to the failure-time outcomes a
reproduction tests. The parameters are the roofline's compute and memory efficiencies
(:class:`lumen.planner.costmodel.RooflineEfficiency`), each in ``(0, 1]``:

* ``compute+memory`` (a TTFT and a TPOT target): for a memory efficiency ``m`` the compute
  efficiency ``c(m)`` that meets the TTFT target is solved for, then ``m`` such that the TPOT
  at ``(c(m), m)`` meets the TPOT target. Compute efficiency mostly moves prefill (TTFT),
  memory efficiency mostly moves decode (TPOT), but each moves both through the mixed batches,
  hence the nesting.
* ``uniform-slowdown`` (a TTFT target alone): one factor ``s`` divides both default
  efficiencies (``0.65 / s``, ``0.80 / s``); one target cannot separate two parameters.

Each one-dimensional solve brackets the root by geometric steps from a start, then narrows it
by regula falsi (Illinois) on log efficiency against log latency: latencies fall as an
efficiency rises. A solve that runs into a bound scans the whole range for a crossing before
it gives up (along the TTFT-matching curve TPOT need not be monotone). The answer is the
evaluated point closest to the targets, TTFT first (:func:`_closest`), run once more with its
efficiencies rounded as the block records them; ``reached`` says whether it is within
:data:`REACHED` of every target, so a target out of reach within the bounds is reported with
the closest point, never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from lumen.planner.costmodel import DEFAULT_EFFICIENCY
from lumen.scenarios.calibration import implausible
from lumen.scenarios.resolve import LoadedScenario, build_cost_model
from lumen.scenarios.schema import (
    CalibrationConfig,
    CalibrationFit,
    CalibrationTargets,
    EngineEfficiency,
)
from lumen.simulator.cluster import simulate
from lumen.simulator.run import cluster_options, scenario_trace

__all__ = [
    "MIN_EFFICIENCY",
    "TOLERANCE",
    "EngineFit",
    "Evaluation",
    "FailureFreeRuns",
    "Targets",
    "calibration_block",
    "fit_engine",
]

#: Lowest efficiency the search tries (a fiftieth of peak: far below anything plausible).
MIN_EFFICIENCY = 0.02
#: Relative distance from a target that counts as reached.
TOLERANCE = 0.005
#: Relative distance of the recorded (rounded) fit from a target that counts as reached.
REACHED = 0.01
_MAX_STEPS = 40
#: Points of the scan for a crossing when a solve runs into a bound.
_SCAN_POINTS = 7
#: Decimals of the efficiencies a calibration block records.
_DIGITS = 4


@dataclass(frozen=True, slots=True)
class Targets:
    """Failure-free mean TTFT and (optionally) mean TPOT to fit, in seconds."""

    ttft_s: float
    tpot_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"the {name.removesuffix('_s').upper()} target must be > 0 s")


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One failure-free run at ``(compute, memory)`` efficiencies and its mean latencies."""

    compute: float
    memory: float
    ttft_s: float
    tpot_s: float

    def residuals(self, targets: Targets) -> tuple[float, float | None]:
        """Relative misses ``fitted / target - 1`` of TTFT and TPOT (None without a target)."""
        tpot = None if targets.tpot_s is None else self.tpot_s / targets.tpot_s - 1.0
        return self.ttft_s / targets.ttft_s - 1.0, tpot

    def distance(self, targets: Targets) -> float:
        """The largest absolute log ratio to a target (0 on the targets)."""
        d = abs(math.log(self.ttft_s / targets.ttft_s))
        if targets.tpot_s is not None:
            d = max(d, abs(math.log(self.tpot_s / targets.tpot_s)))
        return d


class FailureFreeRuns:
    """Failure-free runs of one scenario's workload at chosen efficiencies, memoized.

    The scenario's own calibration (if any) is ignored: every run starts from the default
    efficiencies with only ``compute`` and ``memory`` replaced.
    """

    def __init__(
        self,
        loaded: LoadedScenario,
        requests: int | None = None,
        seed: int = 0,
        on_eval: Callable[[Evaluation, int], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.trace = scenario_trace(loaded, seed, requests)
        self.seed = seed
        self.on_eval = on_eval
        self.evaluations: list[Evaluation] = []
        self._memo: dict[tuple[float, float], Evaluation] = {}

    def __call__(self, compute: float, memory: float) -> Evaluation:
        key = (round(compute, 9), round(memory, 9))
        found = self._memo.get(key)
        if found is not None:
            return found
        s = self.loaded.scenario
        efficiency = replace(DEFAULT_EFFICIENCY, compute=compute, memory=memory)
        result = simulate(
            self.trace,
            build_cost_model(s, efficiency),
            s.cluster.workers,
            max_batch_size=s.cluster.max_batch_size,
            prefill_chunk_tokens=s.cluster.prefill_chunk_tokens,
            seed=s.workload.seed + self.seed,
            policy="stop-and-restart",
            options=cluster_options(s),
        )
        ev = Evaluation(compute, memory, result.summary.ttft_s.mean, result.summary.tpot_s.mean)
        self._memo[key] = ev
        self.evaluations.append(ev)
        if self.on_eval is not None:
            self.on_eval(ev, len(self.evaluations))
        return ev


@dataclass(frozen=True)
class EngineFit:
    """The outcome of :func:`fit_engine`.

    Attributes:
        best: the evaluated point closest to the targets.
        baseline: the run at the default efficiencies.
        slowdown: ``uniform-slowdown`` only, the factor dividing both default efficiencies.
        reached: whether ``best`` is within :data:`TOLERANCE` of every target.
        problems: why the fit is not plausible (out of the band, or not reached); [] when it is.
    """

    method: str
    scenario: str
    targets: Targets
    best: Evaluation
    baseline: Evaluation
    slowdown: float | None
    reached: bool
    requests: int
    seed: int
    evaluations: int
    problems: list[str] = field(default_factory=list)

    @property
    def plausible(self) -> bool:
        return not self.problems


def _solve(
    latency: Callable[[float], float], target: float, lo: float, hi: float, start: float
) -> float:
    """``x`` in ``[lo, hi]`` where the decreasing ``latency(x)`` meets ``target`` (or the bound
    it runs into), by a geometric bracket from ``start`` and Illinois steps in log space."""

    def g(u: float) -> float:
        return math.log(latency(math.exp(u)) / target)

    u_lo, u_hi = math.log(lo), math.log(hi)
    a = min(max(math.log(start), u_lo), u_hi)
    ga = g(a)
    step = math.log(1.25)
    while abs(ga) > TOLERANCE:
        b = min(max(a + (step if ga > 0 else -step), u_lo), u_hi)
        if b == a:
            break
        gb = g(b)
        if (gb > 0) != (ga > 0):
            return math.exp(_illinois(g, a, ga, b, gb))
        a, ga, step = b, gb, step * 2.0
    else:
        return math.exp(a)
    # A bound without a crossing: the latency may not be monotone after all (a nested solve),
    # so look for a crossing over the whole range before calling the target out of reach.
    grid = [u_lo + (u_hi - u_lo) * k / (_SCAN_POINTS - 1) for k in range(_SCAN_POINTS)]
    values = [g(u) for u in grid]
    for k, (u, gu) in enumerate(zip(grid, values, strict=True)):
        if abs(gu) <= TOLERANCE:
            return math.exp(u)
        if k + 1 < len(grid) and (gu > 0) != (values[k + 1] > 0):
            return math.exp(_illinois(g, u, gu, grid[k + 1], values[k + 1]))
    return math.exp(a)  # out of reach within the bounds


def _illinois(g: Callable[[float], float], a: float, ga: float, b: float, gb: float) -> float:
    """Regula falsi with the Illinois modification on a bracket ``g(a), g(b)`` of opposite sign."""
    side = 0
    u, gu = a, ga
    for _ in range(_MAX_STEPS):
        u = (a * gb - b * ga) / (gb - ga)
        gu = g(u)
        if abs(gu) <= TOLERANCE or abs(b - a) < 1e-6:
            break
        if (gu > 0) == (gb > 0):
            b, gb = u, gu
            if side == -1:
                ga /= 2.0
            side = -1
        else:
            a, ga = u, gu
            if side == 1:
                gb /= 2.0
            side = 1
    return u


def fit_engine(
    loaded: LoadedScenario,
    targets: Targets,
    requests: int | None = None,
    seed: int = 0,
    on_eval: Callable[[Evaluation, int], None] | None = None,
) -> EngineFit:
    """Fit the engine efficiencies of ``loaded`` to failure-free ``targets`` (module docstring).

    Args:
        requests: the first requests of the workload to simulate (default: all of them).
        seed: the simulation seed (offset to the workload's).
        on_eval: called after every new simulation with its evaluation and count.
    """
    runs = FailureFreeRuns(loaded, requests, seed, on_eval)
    c0, m0 = DEFAULT_EFFICIENCY.compute, DEFAULT_EFFICIENCY.memory
    baseline = runs(c0, m0)
    if targets.tpot_s is None:
        method = "uniform-slowdown"
        _solve(
            lambda x: runs(c0 * x, m0 * x).ttft_s,
            targets.ttft_s,
            MIN_EFFICIENCY / min(c0, m0),
            1.0 / max(c0, m0),
            1.0,
        )
    else:
        method = "compute+memory"
        tpot = targets.tpot_s
        starts = {"compute": c0}

        def compute_for(memory: float) -> float:
            ttft = targets.ttft_s
            c = _solve(
                lambda x: runs(x, memory).ttft_s, ttft, MIN_EFFICIENCY, 1.0, starts["compute"]
            )
            starts["compute"] = c
            return c

        _solve(lambda m: runs(compute_for(m), m).tpot_s, tpot, MIN_EFFICIENCY, 1.0, m0)
    closest = _closest(runs.evaluations, targets)
    # What the block will hold (efficiencies to 4 decimals), run once more.
    best = runs(round(closest.compute, _DIGITS), round(closest.memory, _DIGITS))
    slowdown = c0 / best.compute if method == "uniform-slowdown" else None
    reached = best.distance(targets) <= REACHED
    problems = implausible(best.compute, best.memory)
    if not reached:
        problems.append(_unreached(best, targets))
    return EngineFit(
        method=method,
        scenario=loaded.scenario.name,
        targets=targets,
        best=best,
        baseline=baseline,
        slowdown=slowdown,
        reached=reached,
        requests=len(runs.trace),
        seed=seed,
        evaluations=len(runs.evaluations),
        problems=problems,
    )


def _closest(evaluations: list[Evaluation], targets: Targets) -> Evaluation:
    """TTFT first: among the points meeting the TTFT target, the one with the TPOT nearest its
    target; without any, the point whose largest miss is smallest."""
    on_ttft = [ev for ev in evaluations if abs(math.log(ev.ttft_s / targets.ttft_s)) <= TOLERANCE]
    if on_ttft:
        return min(on_ttft, key=lambda ev: ev.distance(targets))
    return min(evaluations, key=lambda ev: ev.distance(targets))


def _unreached(best: Evaluation, targets: Targets) -> str:
    ttft, tpot = best.residuals(targets)
    misses = f"TTFT {ttft:+.1%}" + ("" if tpot is None else f", TPOT {tpot:+.1%}")
    return (
        "the search did not reach the targets with efficiencies in"
        f" [{MIN_EFFICIENCY}, 1]; the closest point misses them by {misses}"
    )


def calibration_block(fit: EngineFit, source: str, note: str = "") -> CalibrationConfig:
    """The scenario ``calibration`` block recording ``fit`` and its provenance; the note says
    why a fit is flagged implausible, before any ``note`` given."""
    b = fit.best
    notes = [*fit.problems]
    if fit.slowdown is not None:
        notes.insert(0, f"a uniform {fit.slowdown:.2f}x slowdown of the default roofline")
    if note:
        notes.append(note)
    return CalibrationConfig(
        engine=EngineEfficiency(compute_efficiency=b.compute, memory_efficiency=b.memory),
        targets=CalibrationTargets(ttft_mean_s=fit.targets.ttft_s, tpot_mean_s=fit.targets.tpot_s),
        source=source,
        fitted=CalibrationFit(
            method=fit.method,  # type: ignore[arg-type]
            scenario=fit.scenario,
            ttft_mean_s=round(b.ttft_s, 4),
            tpot_mean_s=round(b.tpot_s, 5),
            requests=fit.requests,
            seed=fit.seed,
            slowdown=None if fit.slowdown is None else round(fit.slowdown, 3),
            reached=fit.reached,
        ),
        plausible=fit.plausible,
        apply=fit.plausible,
        note="; ".join(notes),
    )
