"""Markdown tables of simulation experiments: one scenario's report and a sweep's table.

They only need :class:`lumen.simulator.experiment.ExperimentSummary` objects, so a sweep, which
keeps no per-request results, renders the same tables as ``lumen simulate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from lumen.analysis.reproduction import reproduction_lines
from lumen.scenarios.resolve import ResolvedFailure
from lumen.scenarios.schema import MetricsConfig
from lumen.simulator.confidence import Estimate
from lumen.simulator.experiment import ExperimentSummary

__all__ = [
    "OPEN",
    "fmt_change",
    "fmt_estimate",
    "fmt_paper",
    "markdown_report",
    "open_window_warning",
    "open_windows",
    "sweep_markdown",
]

#: Appended to every figure computed from a recovery window that was still open at the last
#: simulated request (it covers only part of the recovery).
OPEN = " (open)"


# --------------------------------------------------------------------------------------------
# Recovery windows still open at the end of a run
# --------------------------------------------------------------------------------------------


def open_windows(summary: ExperimentSummary) -> dict[str, int]:
    """Per policy, how many of its runs ended with the recovery window still open."""
    counts: dict[str, int] = {}
    for r in summary.runs:
        if r.window is not None and not r.window.closed:
            counts[r.policy] = counts.get(r.policy, 0) + 1
    return counts


def open_window_warning(summary: ExperimentSummary) -> str | None:
    """One sentence warning about windows still open at the end of a run; None when every
    window closed."""
    counts = open_windows(summary)
    if not counts:
        return None
    runs = {p: sum(1 for r in summary.runs if r.policy == p) for p in counts}
    which = ", ".join(f"{p} ({n} of {runs[p]} run(s))" for p, n in counts.items())
    cut = (
        f" within the first {summary.num_requests:,} requests"
        if summary.num_requests is not None
        else " before the last request"
    )
    return (
        f"the recovery window of {which} did not close{cut}: its window latencies and recovery"
        f" time, and every change computed from them, cover only part of the recovery and are"
        f" marked '{OPEN.strip()}'; simulate more requests (--requests) to close it"
    )


def _mark(text: str, is_open: bool) -> str:
    return text + OPEN if is_open and text not in ("-", "") else text


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def fmt_estimate(e: Estimate, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
    """``mean ± half-width unit`` (the half-width only with two seeds or more); ``-`` when
    there is no finite value."""
    if e.n == 0:
        return "-"
    text = f"{e.mean * scale:.{digits}f}"
    if math.isfinite(e.half_width):
        text += f" ± {e.half_width * scale:.{digits}f}"
    return f"{text} {unit}".rstrip()


def fmt_change(e: Estimate | None) -> str:
    """A relative change in percent with its interval: ``-44.4 ± 3.0 %``."""
    return "-" if e is None else fmt_estimate(e, 1.0, 1, "%")


def fmt_paper(value: float | tuple[float, float] | None) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return f"{value[0]:.1f}..{value[1]:.1f} %"
    return f"{value:.1f} %"


def _fmt_count(e: Estimate) -> str:
    if e.n == 0:
        return "-"
    text = f"{e.mean:,.0f}"
    if math.isfinite(e.half_width):
        text += f" ± {e.half_width:,.0f}"
    return text


def _fmt_bytes(e: Estimate) -> str:
    """Decimal units (1 GB = 10^9 bytes), the unit chosen by the mean."""
    if e.n == 0:
        return "-"
    scale, unit = 1.0, "B"
    for factor, name in ((1e3, "kB"), (1e6, "MB"), (1e9, "GB"), (1e12, "TB")):
        if abs(e.mean) >= factor:
            scale, unit = factor, name
    return fmt_estimate(e, 1.0 / scale, 0 if unit == "B" else 2, unit)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _policy_tables(summary: ExperimentSummary) -> list[str]:
    est = summary.estimates
    lines = ["## Failure-affected window", ""]
    rows = []
    still_open = open_windows(summary)
    for p in summary.policies:
        m = est[p]
        windows = sum(1 for r in summary.runs if r.policy == p and r.window is not None)
        closed = sum(1 for r in summary.runs if r.policy == p and r.window and r.window.closed)
        runs = sum(1 for r in summary.runs if r.policy == p)
        cells = [
            fmt_estimate(m["window_ttft_mean_s"], unit="s"),
            fmt_estimate(m["window_ttft_p99_s"], unit="s"),
            fmt_estimate(m["window_tpot_mean_s"], 1e3, 1, "ms"),
            fmt_estimate(m["window_tpot_p99_s"], 1e3, 1, "ms"),
            fmt_estimate(m["recovery_s"], 1.0, 1, "s"),
            fmt_estimate(m["recovery_bins"], 1.0, 1),
        ]
        rows.append(
            [
                p,
                *(_mark(cell, p in still_open) for cell in cells),
                f"{windows} / {closed} / {runs}",
            ]
        )
    header = [
        "policy",
        "TTFT mean",
        "TTFT P99",
        "TPOT mean",
        "TPOT P99",
        "recovery",
        "recovery (bins)",
        "windows / closed / runs",
    ]
    lines += _table(header, rows)
    lines += ["", "## Whole run", ""]
    rows = []
    for p in summary.policies:
        m = est[p]
        rows.append(
            [
                p,
                fmt_estimate(m["ttft_mean_s"], unit="s"),
                fmt_estimate(m["ttft_p50_s"], unit="s"),
                fmt_estimate(m["ttft_p99_s"], unit="s"),
                fmt_estimate(m["tpot_mean_s"], 1e3, 1, "ms"),
                fmt_estimate(m["tpot_p50_s"], 1e3, 1, "ms"),
                fmt_estimate(m["tpot_p99_s"], 1e3, 1, "ms"),
                fmt_estimate(m["e2e_mean_s"], unit="s"),
                fmt_estimate(m["e2e_p99_s"], unit="s"),
                fmt_estimate(m["reference_ttft_mean_s"], unit="s"),
                fmt_estimate(m["reference_tpot_mean_s"], 1e3, 1, "ms"),
            ]
        )
    header = [
        "policy",
        "TTFT mean",
        "TTFT P50",
        "TTFT P99",
        "TPOT mean",
        "TPOT P50",
        "TPOT P99",
        "E2E mean",
        "E2E P99",
        "failure-free TTFT mean",
        "failure-free TPOT mean",
    ]
    lines += _table(header, rows)
    lines += ["", "## Recovery work", ""]
    rows = []
    for p in summary.policies:
        m = est[p]
        rows.append(
            [
                p,
                _fmt_count(m["interrupted_requests"]),
                _fmt_count(m["recomputed_tokens"]),
                _fmt_count(m["restored_tokens"]),
                _fmt_bytes(m["restored_bytes"]),
                _fmt_bytes(m["checkpoint_bytes_sent"]),
                fmt_estimate(m["slo_attainment"], 100.0, 1, "%"),
            ]
        )
    header = [
        "policy",
        "interrupted requests",
        "recomputed tokens",
        "restored tokens",
        "restored",
        "checkpoint traffic",
        "SLO attainment",
    ]
    lines += _table(header, rows)
    return lines


def _comparison_table(summary: ExperimentSummary) -> list[str]:
    lines = ["## Against the baselines", ""]
    if not summary.comparisons:
        lines.append(
            "Nothing to compare: no baseline policy (stop-and-restart, fixed-checkpointing) ran"
            " beside another policy."
        )
        return lines
    lines += [
        "Change of each policy against each baseline, in percent (negative = better), paired by"
        " seed; TTFT and TPOT are window means, recovery is the window length in seconds. The"
        " paper's numbers stand beside ours where this scenario reproduces them.",
        "",
    ]
    rows = []
    still_open = open_windows(summary)
    for c in summary.comparisons:
        ch = c.changes
        is_open = c.policy in still_open or c.baseline in still_open
        rows.append(
            [
                c.policy,
                c.baseline,
                _mark(fmt_change(ch.get("ttft")), is_open),
                fmt_paper(c.paper.get("ttft")),
                _mark(fmt_change(ch.get("tpot")), is_open),
                fmt_paper(c.paper.get("tpot")),
                _mark(fmt_change(ch.get("recovery")), is_open),
                fmt_paper(c.paper.get("recovery")),
                fmt_change(ch.get("ttft_all")),
                fmt_change(ch.get("tpot_all")),
            ]
        )
    header = [
        "policy",
        "vs",
        "TTFT",
        "TTFT (paper)",
        "TPOT",
        "TPOT (paper)",
        "recovery",
        "recovery (paper)",
        "TTFT, whole run",
        "TPOT, whole run",
    ]
    lines += _table(header, rows)
    if summary.paper_citation:
        lines += ["", f"Paper: {summary.paper_citation}."]
    return lines


def _failure_lines(failures: Mapping[int, Sequence[ResolvedFailure]]) -> list[str]:
    lines = []
    for seed, events in failures.items():
        shown = "; ".join(f"t = {f.at_s:.1f} s, workers {list(f.workers)}" for f in events[:8])
        more = f" (+{len(events) - 8} more)" if len(events) > 8 else ""
        lines.append(f"- seed {seed}: {shown or 'none in the simulated span'}{more}")
    return lines


def markdown_report(
    summary: ExperimentSummary,
    metrics: MetricsConfig,
    *,
    description: str = "",
    failures: Mapping[int, Sequence[ResolvedFailure]] | None = None,
    skipped: Sequence[str] = (),
    plots: Sequence[str] = (),
) -> str:
    """The Markdown report of one experiment."""
    seeds = ", ".join(map(str, summary.seeds))
    requests = "all" if summary.num_requests is None else f"the first {summary.num_requests:,}"
    lines = [f"# Simulation: {summary.scenario}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"Policies: {', '.join(summary.policies)}. Seeds: {seeds} ({requests} requests each);"
        f" every run beside the failure-free run of the same policy and seed. Values are means"
        f" over seeds ± the half-width of the {100 * summary.confidence:.0f} % Student-t"
        " confidence interval (with two seeds or more).",
        "",
        f"Recovery window: requests binned by id in groups of {metrics.bin_size}; it opens at the"
        f" first bin whose mean TTFT is more than {100 * metrics.threshold:g} % above the"
        f" failure-free run's and closes after {metrics.close_bins} bins back within it; recovery"
        " time is the arrival-time span of its requests. A run without such a bin has no window"
        " (recovery 0 s, no window latencies).",
    ]
    if metrics.slo_ttft_s is not None or metrics.slo_tpot_s is not None:
        slos = []
        if metrics.slo_ttft_s is not None:
            slos.append(f"TTFT <= {metrics.slo_ttft_s:g} s")
        if metrics.slo_tpot_s is not None:
            slos.append(f"TPOT <= {1e3 * metrics.slo_tpot_s:g} ms")
        lines += ["", f"SLO: {' and '.join(slos)}."]
    if skipped:
        lines += [
            "",
            f"Not run (not implemented in the simulator yet): {', '.join(skipped)}.",
        ]
    if failures:
        lines += ["", "Failures:", "", *_failure_lines(failures)]
    warning = open_window_warning(summary)
    if warning:
        lines += ["", f"**Warning:** {warning}."]
    lines += ["", *_policy_tables(summary), "", *_comparison_table(summary)]
    reproduction = reproduction_lines(summary)
    if reproduction:
        lines += ["", *reproduction]
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots)]
    return "\n".join(lines) + "\n"


def sweep_markdown(summaries: Sequence[ExperimentSummary]) -> str:
    """One table for many scenarios: per scenario and policy the headline metrics, then every
    comparison against a baseline with the paper's numbers beside ours."""
    lines = ["# Simulation sweep", ""]
    rows = []
    for s in summaries:
        still_open = open_windows(s)
        for p in s.policies:
            m = s.estimates[p]
            is_open = p in still_open
            rows.append(
                [
                    s.scenario,
                    p,
                    str(len(s.seeds)),
                    _mark(fmt_estimate(m["window_ttft_mean_s"], unit="s"), is_open),
                    _mark(fmt_estimate(m["window_tpot_mean_s"], 1e3, 1, "ms"), is_open),
                    _mark(fmt_estimate(m["recovery_s"], 1.0, 1, "s"), is_open),
                    fmt_estimate(m["ttft_mean_s"], unit="s"),
                    fmt_estimate(m["tpot_mean_s"], 1e3, 1, "ms"),
                    _fmt_count(m["interrupted_requests"]),
                ]
            )
    header = [
        "scenario",
        "policy",
        "seeds",
        "window TTFT",
        "window TPOT",
        "recovery",
        "TTFT",
        "TPOT",
        "interrupted",
    ]
    lines += _table(header, rows)
    comparisons = [(s.scenario, c, open_windows(s)) for s in summaries for c in s.comparisons]
    if comparisons:
        lines += ["", "## Against the baselines (%, negative = better)", ""]
        rows = []
        for name, c, still_open in comparisons:
            is_open = c.policy in still_open or c.baseline in still_open
            rows.append(
                [
                    name,
                    c.policy,
                    c.baseline,
                    _mark(fmt_change(c.changes.get("ttft")), is_open),
                    fmt_paper(c.paper.get("ttft")),
                    _mark(fmt_change(c.changes.get("tpot")), is_open),
                    fmt_paper(c.paper.get("tpot")),
                    _mark(fmt_change(c.changes.get("recovery")), is_open),
                    fmt_paper(c.paper.get("recovery")),
                ]
            )
        header = ["scenario", "policy", "vs", "TTFT", "paper", "TPOT", "paper", "recovery", "paper"]
        lines += _table(header, rows)
    warnings = [(s.scenario, open_window_warning(s)) for s in summaries]
    lines += [f"\n**Warning** ({name}): {w}." for name, w in warnings if w]
    return "\n".join(lines) + "\n"
