"""The report of ``lumen reproduce``: the paper's numbers beside ours, the sensitivity of LUMEN's
changes to each reading of the paper, our own policies beside the paper's, and the failure-free
reference numbers calibration is judged on (docs/simulator.md, "Reproducing the paper").

Everything here reads :class:`lumen.simulator.reproduce.ScenarioReproduction` objects, so the
report needs no per-request results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lumen.analysis.repro_plots import SensitivityPanel, plot_sensitivity
from lumen.analysis.reproduction import Verdict
from lumen.analysis.sim_tables import fmt_change, fmt_estimate, fmt_paper
from lumen.simulator.confidence import Estimate, json_float
from lumen.simulator.experiment import Comparison, ExperimentSummary, compare
from lumen.simulator.reproduce import ScenarioReproduction

__all__ = [
    "COUNTERS",
    "Shift",
    "headline_markdown",
    "lumen_optimal_worse",
    "optimal_comparisons",
    "reproduction_json",
    "reproduction_markdown",
    "sensitivity_shifts",
    "write_reproduction",
]

LUMEN = "lumen"
OPTIMAL = "lumen-optimal"
SR, FC = "stop-and-restart", "fixed-checkpointing"
SHORT = {SR: "S&R", FC: "FC"}
QUANTITIES = {"ttft": "TTFT", "tpot": "TPOT", "recovery": "recovery"}
#: The mechanism counters shown beside lumen-optimal and lumen (per run, mean over seeds).
COUNTERS = (
    "recovery_s",
    "verify_steps",
    "drafts_loaded",
    "restore_requests",
    "recompute_requests",
    "transfer_requests",
    "wait_requests",
)
#: Headline groups, by scenario-name prefix, in the order the report lists them.
GROUPS = (
    ("paper-4w", "4-worker testbed"),
    ("paper-8w", "8-worker testbed"),
    ("paper-sim-10w", "10-worker simulation"),
    ("scale-", "scale series"),
    ("failures-", "multi-failure"),
)


def _group(name: str) -> tuple[int, str]:
    for i, (prefix, label) in enumerate(GROUPS):
        if name.startswith(prefix):
            return i, label
    return len(GROUPS), "other"


def _ordered(reps: Sequence[ScenarioReproduction]) -> list[ScenarioReproduction]:
    return sorted(reps, key=lambda r: (_group(r.name)[0], r.name))


def _comparison(summary: ExperimentSummary, policy: str, baseline: str) -> Comparison | None:
    for c in summary.comparisons:
        if c.policy == policy and c.baseline == baseline:
            return c
    return None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# --------------------------------------------------------------------------------------------
# The paper beside ours
# --------------------------------------------------------------------------------------------


def _verdict_cell(c: Comparison, key: str) -> str:
    paper = c.paper.get(key)
    ours = c.changes.get(key)
    if paper is None:
        return "-" if ours is None else f"({fmt_change(ours)})"
    assert ours is not None
    v = Verdict(c.policy, c.baseline, key, ours.mean, paper)
    mark = "✓" if v.reproduced else ("~" if v.same_direction else "✗")
    return f"{fmt_paper(paper)} / {fmt_change(ours)} {mark}"


def headline_markdown(reps: Sequence[ScenarioReproduction]) -> list[str]:
    """One row per scenario and baseline with a published number: paper / ours (default
    reading) per quantity; ✓ within a factor of 2 with the paper's sign, ~ same sign only,
    ✗ not even that. Ours in parentheses where the paper published nothing."""
    rows = []
    for rep in _ordered(reps):
        for base in (SR, FC):
            c = _comparison(rep.default, LUMEN, base)
            if c is None or not c.paper:
                continue
            cells = [_verdict_cell(c, k) for k in QUANTITIES]
            rows.append([_group(rep.name)[1], rep.name, f"lumen vs {SHORT[base]}", *cells])
    header = ["group", "scenario", "change", "TTFT paper / ours", "TPOT", "recovery"]
    return _table(header, rows)


def _reference_lines(reps: Sequence[ScenarioReproduction]) -> list[str]:
    rows = []
    for rep in _ordered(reps):
        est = rep.default.estimates
        for policy in rep.policies:
            m = est[policy]
            rows.append(
                [
                    rep.name,
                    policy,
                    fmt_estimate(m["reference_ttft_mean_s"], 1.0, 3, "s"),
                    fmt_estimate(m["reference_tpot_mean_s"], 1e3, 1, "ms"),
                    fmt_estimate(m["reference_ttft_p99_s"], 1.0, 3, "s"),
                ]
            )
    return _table(
        ["scenario", "policy", "reference TTFT mean", "reference TPOT mean", "reference TTFT P99"],
        rows,
    )


# --------------------------------------------------------------------------------------------
# Sensitivity to the readings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shift:
    """The reading that moves one of lumen's changes most from the default reading."""

    baseline: str
    quantity: str
    reading: str
    default_pct: float
    reading_pct: float

    @property
    def points(self) -> float:
        return self.reading_pct - self.default_pct


def _mean(c: Comparison | None, key: str) -> float:
    if c is None or key not in c.changes:
        return math.nan
    return c.changes[key].mean


def sensitivity_shifts(rep: ScenarioReproduction) -> list[Shift]:
    """Per baseline and quantity, the reading with the largest absolute shift of lumen's mean
    change from the default reading (left out when no reading has a finite shift)."""
    out = []
    for base in (SR, FC):
        for key in QUANTITIES:
            default = _mean(_comparison(rep.default, LUMEN, base), key)
            best: Shift | None = None
            for r in rep.results[1:]:
                value = _mean(_comparison(r.summary, LUMEN, base), key)
                shift = Shift(base, key, r.reading.name, default, value)
                if math.isfinite(shift.points) and (
                    best is None or abs(shift.points) > abs(best.points)
                ):
                    best = shift
            if best is not None:
                out.append(best)
    return out


def _sensitivity_lines(rep: ScenarioReproduction) -> list[str]:
    rows = []
    for r in rep.results:
        cells = []
        for base in (SR, FC):
            c = _comparison(r.summary, LUMEN, base)
            cells += [fmt_change(None if c is None else c.changes.get(k)) for k in QUANTITIES]
        rows.append([f"`{r.reading.name}`", *cells])
    header = ["reading"] + [f"{QUANTITIES[k]} vs {SHORT[b]}" for b in (SR, FC) for k in QUANTITIES]
    lines = [f"### {rep.name}", "", *_table(header, rows), ""]
    shifts = sensitivity_shifts(rep)
    if shifts:
        lines.append("Moves it most (shift of the mean from the default reading):")
        lines.append("")
        lines += [
            f"- {QUANTITIES[s.quantity]} vs {SHORT[s.baseline]}: `{s.reading}`,"
            f" {s.points:+.1f} points ({s.default_pct:+.1f} % -> {s.reading_pct:+.1f} %)"
            for s in shifts
        ]
        lines.append("")
    return lines


# --------------------------------------------------------------------------------------------
# Our policies beside the paper's
# --------------------------------------------------------------------------------------------


def optimal_comparisons(summary: ExperimentSummary) -> Comparison | None:
    """lumen-optimal against lumen, paired by seed (None when either did not run)."""
    if LUMEN not in summary.estimates or OPTIMAL not in summary.estimates:
        return None
    found = compare(summary.runs, summary.confidence, None, (LUMEN,))
    return next((c for c in found if c.policy == OPTIMAL), None)


@dataclass(frozen=True, slots=True)
class Worse:
    """Where lumen-optimal's mean is above lumen's (a worse number)."""

    scenario: str
    reading: str
    quantity: str
    change: Estimate
    optimal: float
    lumen: float
    counters: dict[str, tuple[float, float]]
    """Per counter, (lumen-optimal, lumen) means."""

    @property
    def significant(self) -> bool:
        return math.isfinite(self.change.half_width) and self.change.low > 0


_ABSOLUTE = {"ttft": "window_ttft_mean_s", "tpot": "window_tpot_mean_s", "recovery": "recovery_s"}


def lumen_optimal_worse(reps: Sequence[ScenarioReproduction]) -> list[Worse]:
    """Every scenario, reading and quantity (window TTFT, window TPOT, recovery time) where
    lumen-optimal's paired mean change against lumen is positive."""
    out = []
    for rep in _ordered(reps):
        for r in rep.results:
            c = optimal_comparisons(r.summary)
            if c is None:
                continue
            est = r.summary.estimates
            counters = {k: (est[OPTIMAL][k].mean, est[LUMEN][k].mean) for k in COUNTERS}
            for key in QUANTITIES:
                e = c.changes[key]
                if e.n > 0 and e.mean > 0:
                    metric = _ABSOLUTE[key]
                    opt, lum = est[OPTIMAL][metric].mean, est[LUMEN][metric].mean
                    out.append(Worse(rep.name, r.reading.name, key, e, opt, lum, counters))
    return out


def _fmt_abs(key: str, value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if key == "tpot":
        return f"{1e3 * value:.1f} ms"
    return f"{value:.3f} s" if key == "ttft" else f"{value:.1f} s"


def _counter_cells(est: Mapping[str, Estimate]) -> list[str]:
    return [f"{est[k].mean:,.1f}" if est[k].n else "-" for k in COUNTERS]


def _optimal_lines(reps: Sequence[ScenarioReproduction]) -> list[str]:
    rows = []
    for rep in _ordered(reps):
        for r in rep.results:
            c = optimal_comparisons(r.summary)
            if c is None:
                continue
            rows.append(
                [rep.name, f"`{r.reading.name}`", *(fmt_change(c.changes[k]) for k in QUANTITIES)]
            )
    lines = [
        "## Our policies: lumen-optimal beside lumen",
        "",
        "Paired per-seed change of lumen-optimal against lumen (negative: lumen-optimal lower).",
        "",
        *_table(["scenario", "reading", "TTFT", "TPOT", "recovery"], rows),
        "",
    ]
    worse = lumen_optimal_worse(reps)
    if not worse:
        return [*lines, "lumen-optimal is nowhere worse than lumen.", ""]
    sig = sum(w.significant for w in worse)
    lines += [
        f"Where lumen-optimal is worse than lumen ({len(worse)} case(s), {sig} with the"
        " confidence interval above 0, marked *); counters are per run, lumen-optimal / lumen:",
        "",
    ]
    for w in worse:
        counters = ", ".join(f"{k} {a:,.1f} / {b:,.1f}" for k, (a, b) in w.counters.items())
        lines.append(
            f"- {w.scenario} `{w.reading}` {QUANTITIES[w.quantity]}{' *' if w.significant else ''}:"
            f" {_fmt_abs(w.quantity, w.optimal)} against {_fmt_abs(w.quantity, w.lumen)}"
            f" ({fmt_change(w.change)}); {counters}"
        )
    return [*lines, ""]


def _counter_lines(reps: Sequence[ScenarioReproduction]) -> list[str]:
    rows = []
    for rep in _ordered(reps):
        est = rep.default.estimates
        for policy in (LUMEN, OPTIMAL):
            if policy in est:
                rows.append([rep.name, policy, *_counter_cells(est[policy])])
    return [
        "### Mechanism counters (default reading, mean per run)",
        "",
        *_table(["scenario", "policy", *COUNTERS], rows),
        "",
    ]


# --------------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _header(reps: Sequence[ScenarioReproduction], meta: Mapping[str, Any]) -> list[str]:
    cap = meta.get("num_requests")
    sizes = {r.name: r.loaded.scenario.workload.num_requests for r in _ordered(reps)}
    reqs = ", ".join(f"{n} {min(cap or k, k):,}" for n, k in sizes.items())
    seeds = sorted({len(r.default.seeds) for r in reps})
    readings = [r.reading.name for r in reps[0].results] if reps else []
    lines = [
        "# Reproducing the paper",
        "",
        f"Generated by `{meta.get('command', 'lumen reproduce')}`"
        + (f" in {_duration(meta['wall_s'])}" if "wall_s" in meta else "")
        + (f" on {meta['workers']} process(es)" if "workers" in meta else "")
        + f" (LUMEN {meta.get('version', '?')}); regenerate it with the same command.",
        "",
        f"- **Seeds**: {', '.join(map(str, seeds))} per scenario, reading and policy; intervals"
        " are the Student-t 95 % half-widths over seeds (none with one seed).",
        "- **Requests per run**: "
        + ("every request of each scenario" if cap is None else f"capped at {cap:,}")
        + f" ({reqs}).",
        f"- **Readings**: {', '.join(f'`{r}`' for r in readings)} (docs/simulator-model.md,"
        " Readings of the paper); each alternative changes one field from the default.",
        "- **Changes** are paired per seed, in percent, negative = LUMEN lower (better);"
        " TTFT and TPOT are recovery-window means, recovery is the window's length in seconds.",
        "",
    ]
    return lines


def reproduction_markdown(reps: Sequence[ScenarioReproduction], meta: Mapping[str, Any]) -> str:
    """The whole report.md."""
    lines = _header(reps, meta)
    lines += [
        "## The paper's numbers beside ours (default reading)",
        "",
        "paper / ours (mean ± CI); ✓ the paper's sign and within a factor of 2, ~ the sign only,"
        " ✗ neither; in parentheses: ours where the paper published no number.",
        "",
        *headline_markdown(reps),
        "",
        "![lumen TTFT change vs Stop-and-Restart per reading](ttft_vs_stop-and-restart.png)",
        "",
        "## Failure-free reference (default reading)",
        "",
        "Calibration is judged on these: the same requests without failures.",
        "",
        *_reference_lines(reps),
        "",
        "## Sensitivity to the readings",
        "",
        "lumen's change against Stop-and-Restart (S&R) and Fixed-Checkpointing (FC) under each"
        " reading; below each table the reading that moves each change most from the default.",
        "",
    ]
    for rep in _ordered(reps):
        lines += _sensitivity_lines(rep)
    lines += [
        "![lumen TTFT change vs Fixed-Checkpointing per reading](ttft_vs_fixed-checkpointing.png)",
        "",
    ]
    lines += _optimal_lines(reps)
    lines += _counter_lines(reps)
    skipped = sorted({p for r in reps for p in r.skipped})
    if skipped:
        lines += [f"Not run (not implemented in the simulator yet): {', '.join(skipped)}.", ""]
    return "\n".join(lines)


def _estimate_doc(e: Estimate | None) -> dict[str, Any] | None:
    return None if e is None else e.to_dict()


def reproduction_json(reps: Sequence[ScenarioReproduction], meta: Mapping[str, Any]) -> Any:
    """report.json: the run's settings, per scenario and reading the experiment summary, and
    the sensitivity shifts, lumen-optimal's comparisons and where it is worse."""
    scenarios = []
    for rep in _ordered(reps):
        readings = {}
        for r in rep.results:
            opt = optimal_comparisons(r.summary)
            readings[r.reading.name] = {
                "changes": dict(r.reading.changes),
                "summary": r.summary.to_dict(),
                "lumen_optimal_vs_lumen": None if opt is None else opt.to_dict(),
            }
        scenarios.append(
            {
                "scenario": rep.name,
                "group": _group(rep.name)[1],
                "policies": list(rep.policies),
                "skipped": list(rep.skipped),
                "readings": readings,
                "most_moving": [
                    {
                        "baseline": s.baseline,
                        "quantity": s.quantity,
                        "reading": s.reading,
                        "default_pct": json_float(s.default_pct),
                        "reading_pct": json_float(s.reading_pct),
                        "shift_points": json_float(s.points),
                    }
                    for s in sensitivity_shifts(rep)
                ],
            }
        )
    worse = [
        {
            "scenario": w.scenario,
            "reading": w.reading,
            "quantity": w.quantity,
            "change_pct": _estimate_doc(w.change),
            "lumen_optimal": json_float(w.optimal),
            "lumen": json_float(w.lumen),
            "significant": w.significant,
            "counters": {k: [json_float(a), json_float(b)] for k, (a, b) in w.counters.items()},
        }
        for w in lumen_optimal_worse(reps)
    ]
    return {**meta, "scenarios": scenarios, "lumen_optimal_worse": worse}


def _plots(reps: Sequence[ScenarioReproduction], out_dir: Path) -> list[Path]:
    files = []
    for base in (SR, FC):
        panels = []
        for rep in _ordered(reps):
            comps = [_comparison(r.summary, LUMEN, base) for r in rep.results]
            if all(c is None for c in comps):
                continue
            changes = [None if c is None else c.changes.get("ttft") for c in comps]
            paper = next((c.paper.get("ttft") for c in comps if c is not None), None)
            panels.append(
                SensitivityPanel(
                    rep.name,
                    [r.reading.name for r in rep.results],
                    [math.nan if e is None else e.mean for e in changes],
                    [math.nan if e is None else e.half_width for e in changes],
                    paper,
                )
            )
        if panels:
            path = out_dir / f"ttft_vs_{base}.png"
            title = f"lumen's window TTFT change vs {base} per reading (default first)"
            files.append(plot_sensitivity(path, panels, "change (%)", title))
    return files


def write_reproduction(
    reps: Sequence[ScenarioReproduction], out_dir: Path, meta: Mapping[str, Any]
) -> list[Path]:
    """Write report.md, report.json, headline.md (the headline table alone, for the README)
    and the plots to ``out_dir``; the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(reproduction_markdown(reps, meta), encoding="utf-8")
    doc = out_dir / "report.json"
    doc.write_text(json.dumps(reproduction_json(reps, meta), indent=1) + "\n", encoding="utf-8")
    head = out_dir / "headline.md"
    head.write_text("\n".join(headline_markdown(reps)) + "\n", encoding="utf-8")
    return [md, doc, head, *_plots(reps, out_dir)]
