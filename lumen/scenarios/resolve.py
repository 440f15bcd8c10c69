"""From a validated scenario to the objects the planner and the simulator run on.

:func:`load_scenario` accepts a path or the name of a bundled scenario, validates the file and
checks that every file it references exists. The ``build_*`` functions then derive, always the
same way for the same scenario and seed: the worker layout, the cost model, the request
workload and the concrete failure events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from lumen.planner.costmodel import (
    DEFAULT_EFFICIENCY,
    Deployment,
    RooflineCostModel,
    RooflineEfficiency,
    get_hardware_profile,
    get_model_profile,
)
from lumen.planner.domain import Worker
from lumen.scenarios.catalog import find_scenario
from lumen.scenarios.loader import ScenarioError, load_scenario_file
from lumen.scenarios.schema import FailureEvent, LengthSpec, Scenario
from lumen.workload import (
    ConstantLength,
    EmpiricalLength,
    LengthDistribution,
    LogNormalLength,
    Trace,
    TraceFormatError,
    UniformLength,
    detect_trace_format,
    load_lengths,
    load_trace,
    resolve_trace_path,
    synthesize_trace,
)

_GB = 1e9


@dataclass(frozen=True)
class ResolvedFailure:
    """Workers that fail together at ``at_s`` (seconds after the first arrival)."""

    at_s: float
    workers: tuple[int, ...]


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario and the directory its relative file references are resolved from."""

    scenario: Scenario
    source: Path

    @property
    def base_dir(self) -> Path:
        return self.source.parent

    @cached_property
    def deployment(self) -> Deployment:
        return build_deployment(self.scenario)

    @cached_property
    def cost_model(self) -> RooflineCostModel:
        return build_cost_model(self.scenario)

    def trace_file(self, ref: str, field: str) -> Path:
        try:
            return resolve_trace_path(ref, self.base_dir)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise ScenarioError(str(self.source), [f"{field}: {_message(exc)}"]) from None


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def load_scenario(ref: str | Path) -> LoadedScenario:
    """Load a scenario by path or bundled name and check the files it references."""
    path = find_scenario(ref)
    loaded = LoadedScenario(load_scenario_file(path), path)
    problems: list[str] = []  # every problem of the file, not only the first
    missing = False
    for field, file_ref in _file_refs(loaded.scenario):
        try:
            loaded.trace_file(file_ref, field)
        except ScenarioError as exc:
            problems += exc.problems
            missing = True
    if not missing:
        try:
            _check_replayable(loaded)
        except ScenarioError as exc:
            problems += exc.problems
    try:
        loaded.deployment  # noqa: B018 - builds and caches; raises when the model does not fit
    except ValueError as exc:
        problems.append(f"cluster: {exc}")
    if problems:
        raise ScenarioError(str(path), problems)
    return loaded


def _check_replayable(loaded: LoadedScenario) -> None:
    """A replayed trace needs arrival times, which a lengths table (``@sharegpt-v3``) lacks."""
    spec = loaded.scenario.workload.trace
    if spec is None or spec.format != "auto":
        return  # an explicit format is checked when the file is read
    field = "workload.trace.file"
    try:
        fmt = detect_trace_format(loaded.trace_file(spec.file, field))
    except TraceFormatError:
        return  # reported with the rest of the file's problems when it is read
    if fmt == "lengths":
        raise ScenarioError(
            str(loaded.source),
            [
                f"{field}: {spec.file} is a lengths table with no arrival times, so it cannot "
                "be replayed; use workload.synthetic with prompt_tokens and output_tokens "
                f'{{distribution: trace, file: "{spec.file}"}} and an arrival rate'
            ],
        )


def _file_refs(s: Scenario) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    if s.workload.trace is not None:
        refs.append(("workload.trace.file", s.workload.trace.file))
    if s.workload.synthetic is not None:
        for name in ("prompt_tokens", "output_tokens"):
            spec: LengthSpec = getattr(s.workload.synthetic, name)
            if spec.file is not None:
                refs.append((f"workload.synthetic.{name}.file", spec.file))
    return refs


# --------------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------------


def build_deployment(s: Scenario) -> Deployment:
    """The per-worker deployment (model on hardware with tensor parallelism and link speeds)."""
    c = s.cluster
    return Deployment(
        model=get_model_profile(c.model),
        hardware=get_hardware_profile(c.hardware),
        tensor_parallel=c.tensor_parallel,
        gpu_memory_utilization=c.gpu_memory_utilization,
        network_bandwidth=None if c.network_gbit_s is None else c.network_gbit_s * _GB / 8,
        ssd_bandwidth=None if c.ssd_gbyte_s is None else c.ssd_gbyte_s * _GB,
        host_to_gpu_bandwidth=None
        if c.host_to_gpu_gbyte_s is None
        else c.host_to_gpu_gbyte_s * _GB,
    )


def engine_efficiency(s: Scenario) -> RooflineEfficiency:
    """The roofline efficiencies of the scenario's engine: the defaults, with the compute and
    memory efficiencies of its ``calibration`` block when it has one to apply (an implausible
    fit is recorded with ``apply: false``)."""
    if s.calibration is None or not s.calibration.apply:
        return DEFAULT_EFFICIENCY
    engine = s.calibration.engine
    return replace(
        DEFAULT_EFFICIENCY,
        compute=engine.compute_efficiency,
        memory=engine.memory_efficiency,
    )


def build_cost_model(
    s: Scenario, efficiency: RooflineEfficiency | None = None
) -> RooflineCostModel:
    """The roofline cost model of the scenario's worker, with the scenario's engine
    efficiencies (:func:`engine_efficiency`) unless ``efficiency`` is given; the draft runs on
    the same engine. A recovering worker runs its draft model over all of its GPUs (the draft
    has the worker to itself while the target loads)."""
    draft = None if s.cluster.draft_model is None else get_model_profile(s.cluster.draft_model)
    return RooflineCostModel(
        build_deployment(s),
        draft=draft,
        efficiency=engine_efficiency(s) if efficiency is None else efficiency,
        draft_tensor_parallel=s.cluster.tensor_parallel,
    )


def build_workers(s: Scenario) -> list[Worker]:
    """Workers 0..n-1, filled into nodes in order (``workers_per_node`` each)."""
    c = s.cluster
    return [
        Worker(id=i, node=i // c.workers_per_node, hardware=c.hardware) for i in range(c.workers)
    ]


def checkpoint_budget_bytes(s: Scenario) -> int:
    return int(s.cluster.checkpoint_budget_gb * _GB)


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------


def build_trace(loaded: LoadedScenario, seed_offset: int = 0) -> Trace:
    """The request workload of the scenario, for simulation seed ``workload.seed + seed_offset``.

    A replayed trace is the same for every seed; synthetic workloads are redrawn per seed.
    """
    s = loaded.scenario
    wl = s.workload
    workers = s.cluster.workers
    if wl.trace is not None:
        spec = wl.trace
        path = loaded.trace_file(spec.file, "workload.trace.file")
        trace = _load(path, spec.format, "workload.trace.file", loaded, spec.burstgpt_model)
        if wl.num_requests > len(trace):
            if not spec.repeat:
                raise ScenarioError(
                    str(loaded.source),
                    [
                        f"workload.num_requests: asks for {wl.num_requests} requests but the trace"
                        f" holds {len(trace)}; lower it or set workload.trace.repeat: true"
                    ],
                )
            trace = trace.tile(wl.num_requests)
        else:
            trace = trace.truncate(wl.num_requests)
        rate = spec.effective_rate_qps(workers)
        return trace.rescale(rate) if rate is not None else trace
    syn = wl.synthetic
    assert syn is not None  # guaranteed by WorkloadConfig's validator
    rate = syn.effective_rate_qps(workers)
    assert rate is not None  # guaranteed by SyntheticWorkload's validator
    return synthesize_trace(
        n=wl.num_requests,
        arrivals=syn.arrivals,
        rate_qps=rate,
        cv=syn.cv,
        prompt=_length(loaded, syn.prompt_tokens, "prompt_tokens"),
        output=_length(loaded, syn.output_tokens, "output_tokens"),
        seed=wl.seed + seed_offset,
    )


def _load(
    path: Path, fmt: str, field: str, loaded: LoadedScenario, burstgpt_model: str | None = None
) -> Trace:
    try:
        if burstgpt_model is not None:
            from lumen.workload import load_burstgpt_csv

            return load_burstgpt_csv(path, model=burstgpt_model)
        return load_trace(path, format=fmt)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ScenarioError(str(loaded.source), [f"{field}: {exc}"]) from None


def _length(loaded: LoadedScenario, spec: LengthSpec, name: str) -> LengthDistribution:
    if spec.distribution == "constant":
        assert spec.value is not None
        return ConstantLength(spec.value)
    if spec.distribution == "uniform":
        assert spec.low is not None and spec.high is not None
        return UniformLength(spec.low, spec.high)
    if spec.distribution == "lognormal":
        assert spec.mean is not None and spec.cv is not None
        return LogNormalLength(
            mean=spec.mean, cv=spec.cv, min_value=spec.low or 1, max_value=spec.high
        )
    assert spec.file is not None
    field = f"workload.synthetic.{name}.file"
    path = loaded.trace_file(spec.file, field)
    try:
        table = load_lengths(path, format=spec.format)
    except ValueError as exc:
        raise ScenarioError(str(loaded.source), [f"{field}: {exc}"]) from None
    column = table.prompt_tokens if name == "prompt_tokens" else table.output_tokens
    return EmpiricalLength(column)


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


def resolve_failures(s: Scenario, horizon_s: float, seed_offset: int = 0) -> list[ResolvedFailure]:
    """Concrete failure events in time order.

    Random choices (``count``, ``fraction_of_workers``, sampled node failures) are drawn from a
    generator seeded by ``workload.seed + seed_offset``, so a seed fixes the whole run. A worker
    never fails twice at the same instant; sampled failures skip workers that an earlier event
    already took down at that time.
    """
    c = s.cluster
    rng = np.random.default_rng([s.workload.seed + seed_offset, 0xFA11])
    events: list[ResolvedFailure] = []
    for ev in s.failures.events:
        events.append(ResolvedFailure(ev.at_s, _select(ev, s, rng)))
    sampled = s.failures.sampled
    if sampled is not None:
        horizon = sampled.horizon_s if sampled.horizon_s is not None else horizon_s
        rate_per_s = sampled.rate_per_node_day / 86_400.0
        for node in range(c.nodes):
            t = 0.0
            while True:
                t += float(rng.exponential(1.0 / rate_per_s))
                if t >= horizon:
                    break
                first = node * c.workers_per_node
                ids = tuple(range(first, min(first + c.workers_per_node, c.workers)))
                events.append(ResolvedFailure(t, ids))
    events.sort(key=lambda e: (e.at_s, e.workers))
    return events


def _select(ev: FailureEvent, s: Scenario, rng: np.random.Generator) -> tuple[int, ...]:
    c = s.cluster
    if ev.workers is not None:
        return tuple(sorted(ev.workers))
    if ev.nodes is not None:
        ids = [
            w
            for n in ev.nodes
            for w in range(n * c.workers_per_node, min((n + 1) * c.workers_per_node, c.workers))
        ]
        return tuple(sorted(ids))
    if ev.count is not None:
        k = ev.count
    else:
        assert ev.fraction_of_workers is not None
        k = max(1, math.floor(ev.fraction_of_workers * c.workers + 0.5))
    return tuple(sorted(int(w) for w in rng.choice(c.workers, size=k, replace=False)))
