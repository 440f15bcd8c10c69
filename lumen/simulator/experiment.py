"""Experiments: a scenario under several policies and seeds, each run beside its reference.

One *pair* is a policy and a seed: the run with the scenario's failures and the failure-free
run of the same policy and seed (the reference). From a pair come the metrics of
docs/simulator.md, section Metrics (:func:`run_metrics`):

- whole-run TTFT, TPOT and end-to-end latency (mean, P50, P99);
- the recovery window against the reference (:func:`lumen.simulator.metrics.recovery_window`)
  and TTFT, TPOT, E2E inside it (mean, P50, P99); recovery time as bins, requests and seconds
  (the arrival-time span of the window's requests). A run with no bin above the threshold has
  no window: recovery time 0, window latencies NaN;
- recomputed tokens, restored tokens and bytes, checkpoint traffic, interrupted requests;
- SLO attainment (share of requests within ``metrics.slo_ttft_s`` / ``slo_tpot_s``) when set.

Over seeds, every metric gets a mean and a Student-t confidence interval (``metrics.confidence``,
95 % by default; :func:`lumen.simulator.confidence.estimate`). Policies are compared with their
per-seed, paired relative change against each baseline, in percent like the paper
(:func:`compare`): negative is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lumen.planner.policies import POLICIES
from lumen.planner.problems import RECOVERY_MODES
from lumen.scenarios.resolve import LoadedScenario, ResolvedFailure
from lumen.scenarios.schema import MetricsConfig, PaperReference, Policy
from lumen.simulator.cluster import SimulationResult
from lumen.simulator.confidence import Estimate, estimate, json_float
from lumen.simulator.metrics import Distribution, RecoveryWindow, recovery_window, summarize
from lumen.simulator.run import scenario_failures, scenario_trace, simulate_scenario

__all__ = [
    "BASELINES",
    "METRICS",
    "Comparison",
    "Experiment",
    "ExperimentSummary",
    "PairRun",
    "RunMetrics",
    "aggregate",
    "build_experiment",
    "compare",
    "implemented_policies",
    "model_counters",
    "run_experiment",
    "run_metrics",
    "run_pair",
    "select_policies",
]

#: Policies every other policy is compared against, as in the paper.
BASELINES: tuple[str, ...] = (Policy.STOP_AND_RESTART.value, Policy.FIXED_CHECKPOINTING.value)

#: Every per-run metric: name -> what it is. Latencies in seconds, traffic in bytes.
METRICS: dict[str, str] = {
    "ttft_mean_s": "time to first token, mean over all requests",
    "ttft_p50_s": "time to first token, median",
    "ttft_p99_s": "time to first token, 99th percentile",
    "tpot_mean_s": "time per output token after the first, mean (multi-token outputs)",
    "tpot_p50_s": "time per output token, median",
    "tpot_p99_s": "time per output token, 99th percentile",
    "e2e_mean_s": "end-to-end latency, mean",
    "e2e_p50_s": "end-to-end latency, median",
    "e2e_p99_s": "end-to-end latency, 99th percentile",
    "window_ttft_mean_s": "TTFT mean of the requests in the recovery window",
    "window_ttft_p50_s": "TTFT median in the recovery window",
    "window_ttft_p99_s": "TTFT 99th percentile in the recovery window",
    "window_tpot_mean_s": "TPOT mean in the recovery window",
    "window_tpot_p50_s": "TPOT median in the recovery window",
    "window_tpot_p99_s": "TPOT 99th percentile in the recovery window",
    "window_e2e_mean_s": "end-to-end latency mean in the recovery window",
    "window_e2e_p99_s": "end-to-end latency 99th percentile in the recovery window",
    "recovery_s": "recovery time: arrival-time span of the window's requests (0: no window)",
    "recovery_bins": "recovery time in bins of metrics.bin_size requests",
    "recovery_requests": "requests in the recovery window",
    "window_closed": "1 when the window closed before the last bin, 0 when not, NaN: none",
    "interrupted_requests": "requests a failure interrupted at least once",
    "recomputed_tokens": "KV tokens lost to failures and computed again",
    "restored_tokens": "KV tokens restored from checkpoints",
    "restored_bytes": "checkpoint bytes copied back to a GPU",
    "checkpoint_bytes_sent": "checkpoint traffic: KV bytes streamed to holders",
    "checkpoint_bytes_dropped": "checkpoint bytes still queued on a link when its worker failed",
    "restore_requests": "interrupted requests restored on their holder",
    "transfer_requests": "interrupted requests whose checkpoint moved to another worker",
    "recompute_requests": "interrupted requests prefilled again from scratch",
    "wait_requests": "interrupted requests that waited for their recovering worker",
    "drafts_loaded": "recovering workers that loaded a draft model",
    "verify_steps": "survivor iterations that verified draft tokens",
    "decode_tokens": "output tokens produced",
    "prefill_tokens": "prompt and recomputed tokens prefilled",
    "makespan_s": "simulated time until the last request finished",
    "slo_ttft_attainment": "share of requests with TTFT <= metrics.slo_ttft_s (NaN: no SLO)",
    "slo_tpot_attainment": "share of requests with TPOT <= metrics.slo_tpot_s (NaN: no SLO)",
    "slo_attainment": "share of requests meeting every SLO that is set (NaN: none set)",
    "reference_ttft_mean_s": "failure-free run of the same policy and seed: TTFT mean",
    "reference_ttft_p99_s": "failure-free run: TTFT 99th percentile",
    "reference_tpot_mean_s": "failure-free run: TPOT mean",
    "reference_tpot_p99_s": "failure-free run: TPOT 99th percentile",
    "reference_checkpoint_bytes_sent": "failure-free run: checkpoint traffic",
}

#: The paper's three reductions and the per-run metric each is computed on.
REDUCTIONS: dict[str, str] = {
    "ttft": "window_ttft_mean_s",
    "tpot": "window_tpot_mean_s",
    "recovery": "recovery_s",
}
#: Whole-run changes reported beside them (defined even when a run has no window).
WHOLE_RUN_CHANGES: dict[str, str] = {"ttft_all": "ttft_mean_s", "tpot_all": "tpot_mean_s"}


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------


def implemented_policies() -> tuple[str, ...]:
    """Policies the simulator implements now, in the schema's order."""
    return tuple(p.value for p in Policy if p.value in POLICIES)


def select_policies(
    scenario_policies: Sequence[str], requested: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """The policies to run and the scenario's policies left out because they are not
    implemented yet.

    With ``requested`` None the scenario's own policies run (those implemented); otherwise
    exactly ``requested``. Raises ValueError naming the known or implemented policies for an
    unknown name, an unimplemented requested one, a duplicate or nothing to run.
    """
    known = [p.value for p in Policy]
    implemented = implemented_policies()
    if requested is None:
        chosen = [str(p) for p in scenario_policies if str(p) in implemented]
        skipped = [str(p) for p in scenario_policies if str(p) not in implemented]
        if not chosen:
            raise ValueError(
                f"none of the scenario's policies ({', '.join(map(str, scenario_policies))}) is"
                f" implemented in the simulator yet; implemented: {', '.join(implemented)}"
            )
        return chosen, skipped
    unknown = [p for p in requested if p not in known]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}; policies are {', '.join(known)}")
    missing = [p for p in requested if p not in implemented]
    if missing:
        raise ValueError(
            f"policy {missing[0]!r} is not implemented in the simulator yet;"
            f" implemented: {', '.join(implemented)}"
        )
    if len(set(requested)) != len(requested):
        raise ValueError("a policy is listed twice")
    if not requested:
        raise ValueError("give at least one policy")
    return list(requested), []


# --------------------------------------------------------------------------------------------
# One pair: a run and its failure-free reference
# --------------------------------------------------------------------------------------------


def model_counters(result: SimulationResult) -> dict[str, int]:
    """Restore, checkpoint-streaming, recovery-mode and draft counters of a run."""
    modes = result.recovery_modes
    return {
        "restored_tokens": int(result.restored_tokens),
        "restored_bytes": int(result.restored_bytes),
        "checkpoint_bytes_sent": int(result.checkpoint_bytes_sent),
        "checkpoint_bytes_dropped": int(result.checkpoint_bytes_dropped),
        **{f"{mode}_requests": int(modes.get(mode, 0)) for mode in RECOVERY_MODES},
        "drafts_loaded": int(result.drafts_loaded),
        "verify_steps": int(result.verify_steps),
    }


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """The metrics of one policy and seed (:data:`METRICS` names -> values).

    Attributes:
        window: the recovery window of the run against its reference, None when no bin was
            above the threshold.
    """

    scenario: str
    policy: str
    seed: int
    values: dict[str, float]
    window: RecoveryWindow | None

    def to_dict(self) -> dict[str, Any]:
        w = self.window
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "seed": self.seed,
            "window": None
            if w is None
            else {
                "first_bin": w.first_bin,
                "end_bin": w.end_bin,
                "start_request": w.start_request,
                "end_request": w.end_request,
                "closed": w.closed,
            },
            "metrics": {k: json_float(v) for k, v in self.values.items()},
        }


def _dist(prefix: str, d: Distribution, p50: bool = True) -> dict[str, float]:
    out = {f"{prefix}_mean_s": d.mean}
    if p50:
        out[f"{prefix}_p50_s"] = d.p50
    out[f"{prefix}_p99_s"] = d.p99
    return out


def _attainment(values: np.ndarray[Any, np.dtype[np.float64]], slo: float | None) -> float:
    """Share of requests within ``slo``; NaN values (single-token TPOT) count as met."""
    if slo is None or values.size == 0:
        return math.nan
    return float(np.mean(~(values > slo)))


def run_metrics(
    scenario: str,
    policy: str,
    seed: int,
    result: SimulationResult,
    reference: SimulationResult,
    config: MetricsConfig,
) -> RunMetrics:
    """Metrics of ``result`` measured against its failure-free ``reference`` (same requests);
    ``seed`` is the experiment's seed (an offset to the scenario's, as in
    :func:`lumen.simulator.run.simulate_scenario`)."""
    window = recovery_window(
        result.ttft_s, reference.ttft_s, config.bin_size, config.threshold, config.close_bins
    )
    s = result.summary
    values: dict[str, float] = {}
    values |= _dist("ttft", s.ttft_s) | _dist("tpot", s.tpot_s) | _dist("e2e", s.e2e_s)
    if window is None:
        nan = Distribution(0, math.nan, math.nan, math.nan)
        w_ttft = w_tpot = w_e2e = nan
        span = (0.0, 0.0, 0.0, math.nan)
    else:
        part = slice(window.start_request, window.end_request)
        w_ttft = summarize(result.ttft_s[part])
        w_tpot = summarize(result.tpot_s[part])
        w_e2e = summarize(result.e2e_s[part])
        span = (
            window.duration_s(result.arrival_s),
            float(window.bins),
            float(window.requests),
            1.0 if window.closed else 0.0,
        )
    values |= _dist("window_ttft", w_ttft) | _dist("window_tpot", w_tpot)
    values |= _dist("window_e2e", w_e2e, p50=False)
    names = ("recovery_s", "recovery_bins", "recovery_requests", "window_closed")
    values |= dict(zip(names, span, strict=True))
    counters = model_counters(result)
    values |= {
        "interrupted_requests": float(result.interrupted_requests),
        "recomputed_tokens": float(result.recomputed_tokens),
        **{k: float(v) for k, v in counters.items()},
        "decode_tokens": float(s.decode_tokens),
        "prefill_tokens": float(s.prefill_tokens),
        "makespan_s": s.makespan_s,
    }
    ttft_ok = _attainment(result.ttft_s, config.slo_ttft_s)
    tpot_ok = _attainment(result.tpot_s, config.slo_tpot_s)
    both = [
        ~(v > slo)
        for v, slo in ((result.ttft_s, config.slo_ttft_s), (result.tpot_s, config.slo_tpot_s))
        if slo is not None
    ]
    values |= {
        "slo_ttft_attainment": ttft_ok,
        "slo_tpot_attainment": tpot_ok,
        "slo_attainment": float(np.mean(np.logical_and.reduce(both))) if both else math.nan,
    }
    r = reference.summary
    values |= {
        "reference_ttft_mean_s": r.ttft_s.mean,
        "reference_ttft_p99_s": r.ttft_s.p99,
        "reference_tpot_mean_s": r.tpot_s.mean,
        "reference_tpot_p99_s": r.tpot_s.p99,
        "reference_checkpoint_bytes_sent": float(
            model_counters(reference)["checkpoint_bytes_sent"]
        ),
    }
    return RunMetrics(scenario, policy, seed, values, window)


@dataclass(frozen=True, slots=True)
class PairRun:
    """A policy and seed: the run with failures, its failure-free reference, their metrics."""

    policy: str
    seed: int
    result: SimulationResult
    reference: SimulationResult
    metrics: RunMetrics


#: Called after each simulation with (policy, seed, "failure" or "reference").
Progress = Callable[[str, int, str], None]


def run_pair(
    loaded: LoadedScenario,
    policy: str,
    seed: int,
    num_requests: int | None = None,
    on_run: Progress | None = None,
) -> PairRun:
    """Simulate ``policy`` with ``seed`` with and without the scenario's failures."""
    result = simulate_scenario(loaded, policy, seed, num_requests=num_requests)
    if on_run is not None:
        on_run(policy, seed, "failure")
    reference = simulate_scenario(
        loaded, policy, seed, with_failures=False, num_requests=num_requests
    )
    if on_run is not None:
        on_run(policy, seed, "reference")
    s = loaded.scenario
    metrics = run_metrics(s.name, policy, seed, result, reference, s.metrics)
    return PairRun(policy, seed, result, reference, metrics)


# --------------------------------------------------------------------------------------------
# Over seeds: estimates with confidence intervals, comparisons
# --------------------------------------------------------------------------------------------


def aggregate(
    runs: Sequence[RunMetrics], confidence: float = 0.95
) -> dict[str, dict[str, Estimate]]:
    """Per policy (in first-seen order), every metric's estimate over its seeds."""
    by_policy: dict[str, list[RunMetrics]] = {}
    for r in runs:
        by_policy.setdefault(r.policy, []).append(r)
    return {
        policy: {
            name: estimate((r.values[name] for r in sorted(rs, key=lambda r: r.seed)), confidence)
            for name in METRICS
        }
        for policy, rs in by_policy.items()
    }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Relative change of ``policy`` against ``baseline`` in percent (negative = lower).

    Attributes:
        changes: per quantity (``ttft``, ``tpot``, ``recovery``, ``ttft_all``, ``tpot_all``),
            the estimate over seeds of the paired per-seed change.
        paper: the published change per quantity where the scenario reproduces the paper
            (a number, or a ``(low, high)`` range).
    """

    policy: str
    baseline: str
    changes: dict[str, Estimate]
    paper: dict[str, float | tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "baseline": self.baseline,
            "change_pct": {k: v.to_dict() for k, v in self.changes.items()},
            "paper_pct": {k: list(v) if isinstance(v, tuple) else v for k, v in self.paper.items()},
        }


def _change_pct(ours: float, base: float) -> float:
    if not (math.isfinite(ours) and math.isfinite(base)) or base <= 0.0:
        return math.nan
    return 100.0 * (ours - base) / base


def _paper(reference: PaperReference | None, policy: str, baseline: str) -> dict[str, Any]:
    # The paper reports LUMEN (the greedy policy) against its baselines.
    if reference is None or policy != Policy.LUMEN.value:
        return {}
    for against, red in reference.against.items():
        if str(against) != baseline:
            continue
        out: dict[str, float | tuple[float, float]] = {}
        for key in REDUCTIONS:
            value = getattr(red, f"{key}_pct")
            if value is not None:
                out[key] = tuple(value) if isinstance(value, list) else float(value)
        return out
    return {}


def compare(
    runs: Sequence[RunMetrics],
    confidence: float = 0.95,
    paper: PaperReference | None = None,
    baselines: Sequence[str] = BASELINES,
) -> list[Comparison]:
    """Every policy against every baseline that ran, paired by seed. A baseline is compared
    only with the baselines before it (fixed-checkpointing against stop-and-restart, not back)."""
    table: dict[str, dict[int, RunMetrics]] = {}
    for r in runs:
        table.setdefault(r.policy, {})[r.seed] = r
    out: list[Comparison] = []
    for k, base in enumerate(baselines):
        if base not in table:
            continue
        for policy, seeds in table.items():
            if policy in baselines[: k + 1]:
                continue
            paired = [(seeds[s], table[base][s]) for s in sorted(seeds) if s in table[base]]
            changes = {
                key: estimate(
                    (_change_pct(a.values[name], b.values[name]) for a, b in paired), confidence
                )
                for key, name in (REDUCTIONS | WHOLE_RUN_CHANGES).items()
            }
            out.append(Comparison(policy, base, changes, _paper(paper, policy, base)))
    return out


# --------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """What an experiment found, without the per-request results (what a sweep collects)."""

    scenario: str
    policies: tuple[str, ...]
    seeds: tuple[int, ...]
    num_requests: int | None
    confidence: float
    runs: tuple[RunMetrics, ...]
    estimates: dict[str, dict[str, Estimate]]
    comparisons: tuple[Comparison, ...]
    paper_citation: str | None

    @classmethod
    def of(
        cls,
        loaded: LoadedScenario,
        runs: Sequence[RunMetrics],
        num_requests: int | None = None,
    ) -> ExperimentSummary:
        s = loaded.scenario
        conf = s.metrics.confidence
        ordered = sorted(runs, key=lambda r: (_policy_rank(r.policy), r.seed))
        policies = tuple(dict.fromkeys(r.policy for r in ordered))
        seeds = tuple(sorted({r.seed for r in ordered}))
        ref = s.paper_reference
        return cls(
            scenario=s.name,
            policies=policies,
            seeds=seeds,
            num_requests=num_requests,
            confidence=conf,
            runs=tuple(ordered),
            estimates=aggregate(ordered, conf),
            comparisons=tuple(compare(ordered, conf, ref)),
            paper_citation=None if ref is None else ref.citation,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "policies": list(self.policies),
            "seeds": list(self.seeds),
            "num_requests": self.num_requests,
            "confidence": self.confidence,
            "policy_metrics": {
                p: {k: e.to_dict() for k, e in est.items()} for p, est in self.estimates.items()
            },
            "comparisons": [c.to_dict() for c in self.comparisons],
            "paper_citation": self.paper_citation,
            "runs": [r.to_dict() for r in self.runs],
        }


def _policy_rank(policy: str) -> int:
    order = [p.value for p in Policy]
    return order.index(policy) if policy in order else len(order)


@dataclass(frozen=True, slots=True)
class Experiment:
    """Every pair of an experiment with its per-request results, and their summary."""

    loaded: LoadedScenario
    pairs: tuple[PairRun, ...]
    summary: ExperimentSummary
    prompt_tokens: Mapping[int, np.ndarray[Any, np.dtype[np.int64]]]
    """Per seed, the prompt lengths of the simulated requests (for per-request tables)."""
    failures: Mapping[int, tuple[ResolvedFailure, ...]]
    """Per seed, the failure events the runs with failures saw."""


def run_experiment(
    loaded: LoadedScenario,
    policies: Sequence[str],
    seeds: Sequence[int],
    num_requests: int | None = None,
    on_run: Progress | None = None,
) -> Experiment:
    """Run every policy with every seed, each beside its failure-free reference, in this
    process (:mod:`lumen.simulator.sweep` runs the same pairs over processes)."""
    if not seeds:
        raise ValueError("give at least one seed")
    pairs = [
        run_pair(loaded, policy, seed, num_requests, on_run)
        for policy in policies
        for seed in seeds
    ]
    return build_experiment(loaded, pairs, num_requests)


def build_experiment(
    loaded: LoadedScenario, pairs: Sequence[PairRun], num_requests: int | None = None
) -> Experiment:
    """An :class:`Experiment` from its pairs, however they were run."""
    seeds = sorted({p.seed for p in pairs})
    traces = {seed: scenario_trace(loaded, seed, num_requests) for seed in seeds}
    summary = ExperimentSummary.of(loaded, [p.metrics for p in pairs], num_requests)
    return Experiment(
        loaded,
        tuple(pairs),
        summary,
        prompt_tokens={seed: np.asarray(t.prompt_tokens) for seed, t in traces.items()},
        failures={seed: tuple(scenario_failures(loaded, t, seed)) for seed, t in traces.items()},
    )
