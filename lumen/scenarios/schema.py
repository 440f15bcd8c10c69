"""Typed schema of LUMEN scenario files.

A scenario is one YAML document describing a cluster, a workload, failures to inject, the
recovery policies to compare and how to measure them. Every model forbids unknown keys (a typo
is an error, not a silently ignored setting), uses strict types (``"4"`` is not a worker count)
and range-checks its numbers; cross-field rules live in ``model_validator``s so that the error
names the field that must change.

Units are part of field names: ``_s`` seconds, ``_qps`` requests per second, ``_gb`` 10^9 bytes,
``_gbit_s`` 10^9 bits per second, ``_gbyte_s`` 10^9 bytes per second.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, model_validator

from lumen.planner.costmodel import (
    HARDWARE_PROFILES,
    MODEL_PROFILES,
    UnknownProfileError,
    draft_compatible,
    get_hardware_profile,
    get_model_profile,
)
from lumen.planner.policies import Policy as Policy  # re-exported: scenario files name policies

#: Upper bounds that keep a scenario file from asking for absurd amounts of work or memory.
MAX_WORKERS = 4096
MAX_REQUESTS = 10_000_000
MAX_FAILURE_EVENTS = 1024
MAX_TIME_S = 30 * 24 * 3600.0

Slug = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]*$", min_length=1, max_length=80)
]
ShortText = Annotated[str, StringConstraints(max_length=2000)]
FileRef = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


#: A policy name as written in a file: enums are matched by value even in strict mode.
PolicyName = Annotated[Policy, Strict(False)]

DEFAULT_POLICIES = (
    Policy.STOP_AND_RESTART,
    Policy.FIXED_CHECKPOINTING,
    Policy.LUMEN,
    Policy.LUMEN_OPTIMAL,
)


class StrictModel(BaseModel):
    """Base of every schema model: frozen, strict, no unknown keys, no NaN or infinity."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )


# --------------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------------


class ClusterConfig(StrictModel):
    """The serving cluster: identical workers (one model replica each) grouped into nodes."""

    workers: int = Field(ge=1, le=MAX_WORKERS)
    """Number of workers (model replicas)."""
    workers_per_node: int = Field(default=1, ge=1, le=64)
    """Workers sharing one node; a node is a failure domain. Nodes are filled in worker order."""
    hardware: str = Field(min_length=1, max_length=64)
    """GPU hardware profile name (see `lumen scenario show` or the README for the list)."""
    tensor_parallel: int = Field(default=1, ge=1, le=64)
    """GPUs per worker (tensor-parallel degree)."""
    model: str = Field(min_length=1, max_length=64)
    """Target model profile name."""
    draft_model: str | None = Field(default=None, max_length=64)
    """Draft model for speculation-assisted recovery; same family and vocabulary as the model."""
    checkpoint_budget_gb: float = Field(ge=0.0, le=100_000.0)
    """Host memory per worker reserved for holding peers' KV checkpoints, in 10^9 bytes."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0.1, le=1.0)
    """Fraction of GPU memory the engine may use for weights plus KV cache."""
    network_gbit_s: float | None = Field(default=None, gt=0.0, le=100_000.0)
    """Per-worker network bandwidth; default: the hardware profile's."""
    ssd_gbyte_s: float | None = Field(default=None, gt=0.0, le=1_000.0)
    """Read bandwidth of one SSD (a model checkpoint is read from one drive); default: the
    hardware profile's."""
    host_to_gpu_gbyte_s: float | None = Field(default=None, gt=0.0, le=10_000.0)
    """Host-to-GPU copy bandwidth per GPU; default: the hardware profile's."""
    holder_outside_node: bool = True
    """Require each checkpoint holder to sit on another node than the request's home worker."""
    max_batch_size: int = Field(default=512, ge=1, le=65_536)
    """Sarathi-Serve maximum number of sequences per iteration."""
    prefill_chunk_tokens: int = Field(default=1024, ge=16, le=1_048_576)
    """Chunked-prefill token budget per iteration."""

    @property
    def nodes(self) -> int:
        return -(-self.workers // self.workers_per_node)

    @model_validator(mode="after")
    def _check_profiles(self) -> Self:
        try:
            model = get_model_profile(self.model)
        except UnknownProfileError:
            raise ValueError(
                f"unknown model {self.model!r}; allowed: {', '.join(MODEL_PROFILES)}"
            ) from None
        try:
            get_hardware_profile(self.hardware)
        except UnknownProfileError:
            raise ValueError(
                f"unknown hardware {self.hardware!r}; allowed: {', '.join(HARDWARE_PROFILES)}"
            ) from None
        if self.draft_model is not None:
            try:
                draft = get_model_profile(self.draft_model)
            except UnknownProfileError:
                raise ValueError(
                    f"unknown draft_model {self.draft_model!r};"
                    f" allowed: {', '.join(MODEL_PROFILES)}"
                ) from None
            if not draft_compatible(model, draft):
                raise ValueError(
                    f"draft_model {self.draft_model!r} cannot draft for {self.model!r}: a draft"
                    " must share the target's family and vocabulary"
                )
            if draft.weight_bytes >= model.weight_bytes:
                raise ValueError(
                    f"draft_model {self.draft_model!r} is not smaller than the model {self.model!r}"
                )
        return self


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------


class LengthSpec(StrictModel):
    """A token-length distribution.

    ``constant`` needs ``value``; ``uniform`` needs ``low`` and ``high``; ``lognormal`` needs
    ``mean`` and ``cv`` (clipped to [``low``, ``high``] when given); ``trace`` resamples the
    matching column (prompt or output lengths) of the trace or lengths table ``file``.
    """

    distribution: Literal["constant", "uniform", "lognormal", "trace"]
    value: int | None = Field(default=None, ge=1, le=1_048_576)
    low: int | None = Field(default=None, ge=1, le=1_048_576)
    high: int | None = Field(default=None, ge=1, le=1_048_576)
    mean: float | None = Field(default=None, ge=1.0, le=1_048_576.0)
    cv: float | None = Field(default=None, gt=0.0, le=100.0)
    file: FileRef | None = None
    """Trace file or lengths table for ``distribution: trace``: a path (relative to the scenario
    file) or ``@name`` of a bundled one (``@azure-conv-2023``, ``@mooncake-synthetic``,
    ``@sharegpt-v3``)."""
    format: Literal["auto", "azure", "mooncake", "burstgpt", "lengths"] = "auto"

    @model_validator(mode="after")
    def _check_params(self) -> Self:
        needed: dict[str, tuple[str, ...]] = {
            "constant": ("value",),
            "uniform": ("low", "high"),
            "lognormal": ("mean", "cv"),
            "trace": ("file",),
        }
        allowed: dict[str, tuple[str, ...]] = {
            "constant": ("value",),
            "uniform": ("low", "high"),
            "lognormal": ("mean", "cv", "low", "high"),
            "trace": ("file", "format"),
        }
        kind = self.distribution
        missing = [k for k in needed[kind] if getattr(self, k) is None]
        if missing:
            raise ValueError(f"distribution {kind!r} needs {' and '.join(missing)}")
        extra = [
            k
            for k in ("value", "low", "high", "mean", "cv", "file")
            if getattr(self, k) is not None and k not in allowed[kind]
        ]
        if extra:
            raise ValueError(
                f"distribution {kind!r} does not take {', '.join(extra)};"
                f" it takes {', '.join(allowed[kind])}"
            )
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class _RateMixin(StrictModel):
    rate_qps: float | None = Field(default=None, gt=0.0, le=1_000_000.0)
    """Mean arrival rate of the whole cluster."""
    rate_qps_per_worker: float | None = Field(default=None, gt=0.0, le=100_000.0)
    """Mean arrival rate per worker (scales with the cluster size)."""

    def effective_rate_qps(self, workers: int) -> float | None:
        if self.rate_qps_per_worker is not None:
            return self.rate_qps_per_worker * workers
        return self.rate_qps

    def _check_rate(self, required: bool) -> None:
        if self.rate_qps is not None and self.rate_qps_per_worker is not None:
            raise ValueError("give either rate_qps or rate_qps_per_worker, not both")
        if required and self.rate_qps is None and self.rate_qps_per_worker is None:
            raise ValueError("an arrival rate is required: give rate_qps or rate_qps_per_worker")


class TraceWorkload(_RateMixin):
    """Replay a request trace (arrival times and lengths), optionally rescaled in rate."""

    file: FileRef
    """A path (relative to the scenario file) or ``@name`` of a bundled trace
    (``@azure-conv-2023``, ``@mooncake-synthetic``). A lengths table such as ``@sharegpt-v3``
    has no arrival times and cannot be replayed; it serves only as a `LengthSpec` file."""
    format: Literal["auto", "azure", "mooncake", "burstgpt"] = "auto"
    repeat: bool = False
    """Replay the trace back to back when more requests are asked for than it holds."""
    burstgpt_model: str | None = Field(default=None, max_length=64)
    """BurstGPT only: keep the rows of this model (for example ChatGPT or GPT-4)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_rate(required=False)
        return self


class SyntheticWorkload(_RateMixin):
    """Synthetic arrivals (Poisson or Gamma) with sampled prompt and output lengths."""

    arrivals: Literal["poisson", "gamma"] = "poisson"
    cv: float = Field(default=1.0, gt=0.0, le=100.0)
    """Coefficient of variation of the inter-arrival times (Gamma only; 1 is Poisson)."""
    prompt_tokens: LengthSpec
    output_tokens: LengthSpec

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_rate(required=True)
        if self.arrivals == "poisson" and self.cv != 1.0:
            raise ValueError("cv applies to gamma arrivals only; Poisson arrivals have cv = 1")
        return self


class WorkloadConfig(StrictModel):
    """Where requests come from: exactly one of ``trace`` or ``synthetic``."""

    num_requests: int = Field(ge=1, le=MAX_REQUESTS)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Base seed; simulation seed i uses seed + i."""
    trace: TraceWorkload | None = None
    synthetic: SyntheticWorkload | None = None

    @model_validator(mode="after")
    def _check_source(self) -> Self:
        if (self.trace is None) == (self.synthetic is None):
            raise ValueError("give exactly one workload source: trace or synthetic")
        return self


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


class FailureEvent(StrictModel):
    """Workers failing together at one time; choose them by id, by node, or by count."""

    at_s: float = Field(ge=0.0, le=MAX_TIME_S)
    """Simulated time of the failure, seconds after the first arrival."""
    workers: list[Annotated[int, Field(ge=0, lt=MAX_WORKERS)]] | None = Field(
        default=None, min_length=1, max_length=MAX_WORKERS
    )
    nodes: list[Annotated[int, Field(ge=0, lt=MAX_WORKERS)]] | None = Field(
        default=None, min_length=1, max_length=MAX_WORKERS
    )
    count: int | None = Field(default=None, ge=1, le=MAX_WORKERS)
    """Fail this many workers, chosen at random (seeded)."""
    fraction_of_workers: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Fail this fraction of the workers (rounded, at least one), chosen at random (seeded)."""

    @model_validator(mode="after")
    def _check_selector(self) -> Self:
        given = [
            k
            for k in ("workers", "nodes", "count", "fraction_of_workers")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of workers, nodes, count or fraction_of_workers"
                + (f" (got {', '.join(given)})" if given else "")
            )
        for key in ("workers", "nodes"):
            ids = getattr(self, key)
            if ids is not None and len(set(ids)) != len(ids):
                raise ValueError(f"{key} lists an id twice")
        return self


class SampledFailures(StrictModel):
    """Node failures drawn from a Poisson process per node (seeded by the workload seed)."""

    rate_per_node_day: float = Field(gt=0.0, le=100_000.0)
    """Expected failures per node per day (fleet data: 2.3e-3 to 6.5e-3; raise it to
    compress time in a study)."""
    horizon_s: float | None = Field(default=None, gt=0.0, le=MAX_TIME_S)
    """Sample failures within [0, horizon_s); default: the workload's duration."""


class FailureConfig(StrictModel):
    events: list[FailureEvent] = Field(default_factory=list, max_length=MAX_FAILURE_EVENTS)
    sampled: SampledFailures | None = None


# --------------------------------------------------------------------------------------------
# Policies, speculation, planner, metrics, reference results
# --------------------------------------------------------------------------------------------


class SpeculationConfig(StrictModel):
    """Draft-assisted decoding while a failed worker reloads."""

    depth: int = Field(default=4, ge=1, le=32)
    """Draft tokens proposed per verify step (K)."""
    acceptance_rate: float = Field(default=0.6, gt=0.0, lt=1.0)
    """Probability that the target accepts a draft token (a)."""


#: Draft timing, draft loading and gateway routing readings (values of :class:`ReadingsConfig`).
AssistTiming = Literal["concurrent", "synchronous"]
DraftLoad = Literal["parallel", "serial"]
GatewayRule = Literal["least-waiting", "least-requests", "round-robin"]
AssistedBatches = Literal["mixed", "alternate"]


class ReadingsConfig(StrictModel):
    """How the simulator reads what the paper leaves open (docs/simulator-model.md, readings).

    Each field is one reading of the paper or its testbed; the defaults follow the paper's text
    and testbed, and `lumen reproduce` reports every alternative.
    """

    assist: AssistTiming = "concurrent"
    """Draft timing: the recovering worker drafts while the survivor keeps stepping, which
    verifies the drafts that are ready and never waits (concurrent, the paper), or the survivor
    waits for the draft's K proposal steps before each verify step (synchronous)."""
    draft_load: DraftLoad = "parallel"
    """The draft and the target weights are read from separate drives at the same time
    (parallel, the testbed's two SSDs per node), or the draft first (serial)."""
    assisted_batches: AssistedBatches = "mixed"
    """How an assisted survivor schedules: Sarathi-style mixed iterations of prompt chunks and
    verify steps (mixed, the scheduler the paper names), or prompt chunks and verify steps in
    separate iterations, taking turns (alternate); the paper does not say which its prototype
    ran during assistance."""
    gateway: GatewayRule = "least-waiting"
    """How the gateway routes new requests (the paper does not say)."""


class PlannerConfig(StrictModel):
    alpha: float = Field(default=1.0, ge=0.0, le=1_000.0)
    """Weight of restore pressure against waiting time in the LUMEN placement score."""
    method: str = Field(default="auto", min_length=1, max_length=64)
    """Solver backend for the lumen-optimal policy (auto = exact when it fits the time limit)."""
    time_limit_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    reoptimize_interval_s: float | None = Field(default=None, gt=0.0, le=MAX_TIME_S)
    """Re-optimize checkpoint placement periodically; None: place on arrival only."""


class MetricsConfig(StrictModel):
    """How results are measured (docs/simulator.md, metrics)."""

    bin_size: int = Field(default=200, ge=1, le=1_000_000)
    """Requests per bin (by id) for the recovery window."""
    threshold: float = Field(default=0.05, gt=0.0, le=10.0)
    """Relative TTFT excess over the failure-free run that marks a bin as affected."""
    close_bins: int = Field(default=3, ge=1, le=1000)
    """Consecutive unaffected bins that close the recovery window."""
    seeds: int = Field(default=1, ge=1, le=1000)
    """Independent seeds to run; confidence intervals need at least 2."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    slo_ttft_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    slo_tpot_s: float | None = Field(default=None, gt=0.0, le=60.0)


Percent = Annotated[float, Field(ge=-100.0, le=1000.0)]
#: A published change: one number, or a [low, high] range when the paper gives a range.
PercentOrRange = Percent | Annotated[list[Percent], Field(min_length=2, max_length=2)]


class Reductions(StrictModel):
    """Published relative change of LUMEN against one baseline, in percent (negative = better)."""

    ttft_pct: PercentOrRange | None = None
    tpot_pct: PercentOrRange | None = None
    recovery_pct: PercentOrRange | None = None

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        for name in ("ttft_pct", "tpot_pct", "recovery_pct"):
            value = getattr(self, name)
            if isinstance(value, list) and value[0] > value[1]:
                raise ValueError(f"{name}: a range is written [low, high]")
        if self.ttft_pct is None and self.tpot_pct is None and self.recovery_pct is None:
            raise ValueError("give at least one of ttft_pct, tpot_pct, recovery_pct")
        return self


class PaperReference(StrictModel):
    """The published numbers this scenario reproduces, shown beside ours in reports."""

    citation: ShortText
    against: dict[PolicyName, Reductions] = Field(min_length=1)


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

#: How a calibration was fitted: both efficiencies to a TTFT and a TPOT target, or one factor
#: dividing both (a uniform engine slowdown) to a TTFT target alone.
CalibrationMethod = Literal["compute+memory", "uniform-slowdown"]


class EngineEfficiency(StrictModel):
    """Achieved fractions of the GPU's peak; they replace the roofline cost model's defaults
    (``RooflineEfficiency.compute`` 0.65, ``.memory`` 0.80) for the target and the draft."""

    compute_efficiency: float = Field(gt=0.0, le=1.0)
    """Fraction of peak FLOP/s a forward pass reaches (mostly moves prefill, so TTFT)."""
    memory_efficiency: float = Field(gt=0.0, le=1.0)
    """Fraction of peak HBM bandwidth (mostly moves decode, so TPOT)."""


class CalibrationTargets(StrictModel):
    """The failure-free operating point fitted to (never failure-time outcomes)."""

    ttft_mean_s: float = Field(gt=0.0, le=3600.0)
    tpot_mean_s: float | None = Field(default=None, gt=0.0, le=60.0)


class CalibrationFit(StrictModel):
    """What the fit reached, and the failure-free run it was measured on."""

    method: CalibrationMethod
    scenario: Slug
    """The scenario whose failure-free run was fitted (this one, or one sharing its testbed)."""
    ttft_mean_s: float = Field(ge=0.0)
    tpot_mean_s: float = Field(ge=0.0)
    requests: int = Field(ge=1, le=MAX_REQUESTS)
    seed: int = Field(ge=0, le=2**32 - 1)
    policy: PolicyName = Policy.STOP_AND_RESTART
    slowdown: float | None = Field(default=None, gt=0.0, le=1_000.0)
    """``uniform-slowdown`` only: the factor dividing both default efficiencies."""
    reached: bool = True
    """Whether the fitted numbers are within the fit's tolerance of the targets."""


class CalibrationConfig(StrictModel):
    """Engine efficiencies fitted to a published failure-free operating point (``lumen
    calibrate``; docs/simulator-model.md, Calibration), with their provenance. Storage
    bandwidth is not fitted: failure-free latencies do not depend on it."""

    engine: EngineEfficiency
    targets: CalibrationTargets
    source: ShortText
    """Where the targets come from."""
    fitted: CalibrationFit | None = None
    plausible: bool
    """False when the efficiencies fall outside the plausible band for a production engine,
    or the fit could not reach its targets; the values are kept, flagged, not hidden."""
    apply: bool
    """Whether the cost model uses ``engine``. ``lumen calibrate`` writes ``apply:
    plausible``: an implausible fit is recorded but the default efficiencies stay in use
    unless this is set to true by hand."""
    note: ShortText = ""
    """Why a fit is flagged, and anything else worth keeping with it."""

    @model_validator(mode="after")
    def _check_fit(self) -> Self:
        fit = self.fitted
        if fit is not None and (fit.method == "uniform-slowdown") != (fit.slowdown is not None):
            raise ValueError("fitted.slowdown is given with method uniform-slowdown, and only then")
        if fit is not None and fit.method == "compute+memory" and self.targets.tpot_mean_s is None:
            raise ValueError("method compute+memory fits two targets: give targets.tpot_mean_s")
        return self


class Scenario(StrictModel):
    """One scenario file."""

    name: Slug
    description: ShortText = ""
    cluster: ClusterConfig
    workload: WorkloadConfig
    failures: FailureConfig = Field(default_factory=FailureConfig)
    policies: list[PolicyName] = Field(default_factory=lambda: list(DEFAULT_POLICIES), min_length=1)
    speculation: SpeculationConfig = Field(default_factory=SpeculationConfig)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    readings: ReadingsConfig = Field(default_factory=ReadingsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    paper_reference: PaperReference | None = None
    calibration: CalibrationConfig | None = None

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Self:
        cluster = self.cluster
        if len(set(self.policies)) != len(self.policies):
            raise ValueError("policies lists a policy twice")
        for i, ev in enumerate(self.failures.events):
            where = f"failures.events[{i}]"
            if ev.workers is not None:
                bad = [w for w in ev.workers if w >= cluster.workers]
                if bad:
                    raise ValueError(
                        f"{where}.workers: no worker {bad[0]};"
                        f" worker ids are 0..{cluster.workers - 1}"
                    )
                failed = len(ev.workers)
            elif ev.nodes is not None:
                bad = [n for n in ev.nodes if n >= cluster.nodes]
                if bad:
                    raise ValueError(
                        f"{where}.nodes: no node {bad[0]}; node ids are 0..{cluster.nodes - 1}"
                    )
                failed = sum(
                    min(cluster.workers_per_node, cluster.workers - n * cluster.workers_per_node)
                    for n in ev.nodes
                )
            elif ev.count is not None:
                failed = ev.count
            else:
                assert ev.fraction_of_workers is not None
                failed = max(1, math.floor(ev.fraction_of_workers * cluster.workers + 0.5))
            if failed >= cluster.workers:
                raise ValueError(
                    f"{where}: fails {failed} of {cluster.workers} workers;"
                    " at least one must survive"
                )
        if self.failures.sampled is not None and cluster.nodes < 2:
            raise ValueError(
                "failures.sampled: node failures need at least two nodes, or no worker survives"
            )
        needs_draft = {Policy.LUMEN, Policy.LUMEN_OPTIMAL, Policy.LUMEN_PROGRESSIVE}
        if cluster.draft_model is None and needs_draft.intersection(self.policies):
            names = ", ".join(sorted(p.value for p in needs_draft.intersection(self.policies)))
            raise ValueError(
                f"policies {names} use speculation-assisted recovery: set cluster.draft_model"
            )
        needs_budget = set(self.policies) - {Policy.STOP_AND_RESTART, Policy.LUMEN_PROGRESSIVE}
        if cluster.checkpoint_budget_gb == 0 and needs_budget:
            raise ValueError(
                "cluster.checkpoint_budget_gb is 0 but policies "
                + ", ".join(sorted(p.value for p in needs_budget))
                + " checkpoint KV to host memory"
            )
        if self.paper_reference is not None:
            if Policy.LUMEN not in self.policies:
                raise ValueError("paper_reference compares lumen: add lumen to policies")
            missing = [p.value for p in self.paper_reference.against if p not in self.policies]
            if missing:
                raise ValueError(
                    f"paper_reference compares against {', '.join(missing)}: add to policies"
                )
        return self
