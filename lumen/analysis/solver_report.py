"""Solver-quality report: heuristic optimality gaps and solve time against instance size.

Two studies, both on the generated instance families of ``lumen.planner.generators``:

* **gaps**: small and medium instances that the exact backend solves to proven optimality; for
  each heuristic, the relative gap to the optimum (mean, P95, max) per family and size;
* **scaling**: solve time of every backend from 4 to 1,024 workers (log-log), exact backends
  until the first size where they no longer prove optimality within the time limit.

The result is a Markdown file and PNG plots in one folder, plus the raw rows as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lumen.planner.generators.pairing import FAMILIES as PAIRING_FAMILIES
from lumen.planner.generators.pairing import random_pairing_problem
from lumen.planner.generators.placement import FAMILIES as PLACEMENT_FAMILIES
from lumen.planner.generators.placement import random_placement_problem
from lumen.planner.generators.recovery import FAMILIES as RECOVERY_FAMILIES
from lumen.planner.generators.recovery import random_recovery_problem
from lumen.planner.result import SolveSettings, Termination
from lumen.planner.solve import BACKENDS, Problem, instance_size, solve

KINDS = ("placement", "recovery", "pairing")
EXACT = {"placement": "cpsat", "recovery": "cpsat", "pairing": "matching"}
DEFAULT_SCALE_SIZES = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Exact models beyond this many decision variables are not even built in the scaling study
#: (building them alone would take minutes and gigabytes); the report says so.
EXACT_SIZE_CAP = 2_000_000


def _gap_sizes(kind: str) -> list[tuple[int, int]]:
    return {
        "placement": [(4, 12), (8, 32), (16, 64)],
        "recovery": [(4, 16), (8, 48), (16, 128)],
        "pairing": [(1, 3), (2, 6), (4, 12)],
    }[kind]


def _scale_shape(kind: str, workers: int) -> tuple[int, int]:
    """Instance shape at a cluster size: placement places 16 requests per worker; recovery
    re-homes one failed worker's requests (8 per worker, at most 512); pairing pairs a quarter
    of the workers (recovering) with the rest."""
    if kind == "placement":
        return workers, 16 * workers
    if kind == "recovery":
        return workers, min(512, 8 * workers)
    rec = max(1, workers // 4)
    return rec, max(1, workers - rec)


def generate(kind: str, rng: np.random.Generator, a: int, b: int, family: str) -> Problem:
    if kind == "placement":
        return random_placement_problem(rng, a, b, family)
    if kind == "recovery":
        return random_recovery_problem(rng, a, b, family)
    return random_pairing_problem(rng, a, b, family)


def families(kind: str) -> tuple[str, ...]:
    return {
        "placement": PLACEMENT_FAMILIES,
        "recovery": RECOVERY_FAMILIES,
        "pairing": PAIRING_FAMILIES,
    }[kind]


def heuristics(kind: str) -> list[str]:
    return [name for name, info in BACKENDS[kind].items() if not info.exact]


@dataclass
class GapRow:
    kind: str
    family: str
    size: str
    method: str
    gaps: list[float] = field(default_factory=list)
    proven: int = 0
    instances: int = 0

    def stats(self) -> tuple[float, float, float]:
        if not self.gaps:
            return (math.nan, math.nan, math.nan)
        g = np.array(self.gaps)
        return float(g.mean()), float(np.percentile(g, 95)), float(g.max())


@dataclass
class ScaleRow:
    kind: str
    workers: int
    method: str
    seconds: float
    termination: str
    objective: float | None


def relative_gap(kind: str, value: float, optimum: float) -> float:
    """Gap of a heuristic objective to the optimum, >= 0 when the heuristic is worse."""
    scale = max(abs(optimum), 1e-9)
    return (optimum - value) / scale if kind == "pairing" else (value - optimum) / scale


def gap_study(
    kinds: Sequence[str],
    instances: int,
    time_limit_s: float,
    seed: int,
    tick: Callable[[], None] = lambda: None,
) -> list[GapRow]:
    rows: list[GapRow] = []
    for kind in kinds:
        for family in families(kind):
            for a, b in _gap_sizes(kind):
                per = {m: GapRow(kind, family, f"{a}x{b}", m) for m in heuristics(kind)}
                for k in range(instances):
                    rng = np.random.default_rng([seed, k, a, b, families(kind).index(family)])
                    problem = generate(kind, rng, a, b, family)
                    exact = solve(problem, EXACT[kind], SolveSettings(time_limit_s=time_limit_s))
                    for row in per.values():
                        row.instances += 1
                    if exact.termination is not Termination.OPTIMAL or exact.objective is None:
                        tick()
                        continue
                    for m, row in per.items():
                        res = solve(problem, m, SolveSettings(time_limit_s=time_limit_s))
                        if res.objective is not None and math.isfinite(res.objective):
                            row.gaps.append(relative_gap(kind, res.objective, exact.objective))
                            row.proven += 1
                    tick()
                rows.extend(per.values())
    return rows


def scale_study(
    kinds: Sequence[str],
    sizes: Sequence[int],
    time_limit_s: float,
    seed: int,
    tick: Callable[[], None] = lambda: None,
) -> list[ScaleRow]:
    rows: list[ScaleRow] = []
    for kind in kinds:
        stopped: set[str] = set()
        for workers in sizes:
            a, b = _scale_shape(kind, workers)
            problem = generate(kind, np.random.default_rng([seed, workers]), a, b, "uniform")
            for method, info in BACKENDS[kind].items():
                if method in stopped:
                    continue
                if info.exact and instance_size(problem) > EXACT_SIZE_CAP:
                    rows.append(ScaleRow(kind, workers, method, math.nan, "skipped", None))
                    stopped.add(method)
                    continue
                res = solve(problem, method, SolveSettings(time_limit_s=time_limit_s))
                rows.append(
                    ScaleRow(
                        kind, workers, method, res.wall_time_s, res.termination.value, res.objective
                    )
                )
                if info.exact and (
                    res.termination is not Termination.OPTIMAL or res.wall_time_s > time_limit_s
                ):
                    stopped.add(method)  # larger instances will not be proven either
            tick()
    return rows


def write_report(
    out_dir: Path, gaps: list[GapRow], scale: list[ScaleRow], settings: dict[str, Any]
) -> Path:
    """Write report.md, scaling.png, gaps.png and rows.json into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")

    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = sorted({r.kind for r in scale} | {r.kind for r in gaps}, key=KINDS.index)
    _plot_scaling(out_dir / "scaling.png", kinds, scale)
    _plot_gaps(out_dir / "gaps.png", kinds, gaps)
    lines = _report_lines(kinds, gaps, scale, settings)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "rows.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "gaps": [asdict(r) for r in gaps],
                "scaling": [asdict(s) for s in scale],
            },
            indent=1,
            default=str,
        ),
        encoding="utf-8",
    )
    return report


def _plot_scaling(path: Path, kinds: list[str], scale: list[ScaleRow]) -> None:
    """Solve time against workers per backend, one log-log panel per problem kind."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5 * max(1, len(kinds)), 4))
    axes_list = list(np.atleast_1d(axes))
    for ax, kind in zip(axes_list, kinds, strict=False):
        for method in BACKENDS[kind]:
            pts = [
                (r.workers, r.seconds)
                for r in scale
                if r.kind == kind
                and r.method == method
                and math.isfinite(r.seconds)
                and r.termination in ("optimal", "feasible")  # no point for refusals
            ]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            style = "-o" if BACKENDS[kind][method].exact else "--s"
            ax.loglog(xs, ys, style, label=method, markersize=4)
        ax.set_title(f"{kind}: solve time (solid: exact)")
        ax.set_xlabel("workers")
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_gaps(path: Path, kinds: list[str], gaps: list[GapRow]) -> None:
    """Box plots of the heuristics' gaps to the optimum, one panel per problem kind."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5 * max(1, len(kinds)), 4))
    axes_list = list(np.atleast_1d(axes))
    for ax, kind in zip(axes_list, kinds, strict=False):
        methods = heuristics(kind)
        data = [
            [100 * g for r in gaps if r.kind == kind and r.method == m for g in r.gaps]
            for m in methods
        ]
        ax.boxplot([d if d else [math.nan] for d in data], tick_labels=methods)
        ax.set_title(f"{kind}: gap to the optimum")
        ax.set_ylabel("gap (%)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report_lines(
    kinds: list[str], gaps: list[GapRow], scale: list[ScaleRow], settings: dict[str, Any]
) -> list[str]:
    """The Markdown of report.md, one line per item."""
    lines = ["# Solver quality report", ""]
    lines.append("Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items()) + ".")
    lines += ["", "## Optimality gaps of the heuristics", ""]
    lines.append(
        "Gap = (heuristic - optimum) / optimum over instances the exact backend "
        "proved optimal (pairing maximizes, so its gap is (optimum - heuristic) / optimum)."
    )
    lines += [
        "",
        "| problem | family | size | method | proven / instances | mean | P95 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in gaps:
        mean, p95, mx = r.stats()
        lines.append(
            f"| {r.kind} | {r.family} | {r.size} | {r.method} | {r.proven} / {r.instances} |"
            f" {100 * mean:.2f} % | {100 * p95:.2f} % | {100 * mx:.2f} % |"
        )
    lines += ["", "![gaps](gaps.png)", "", "## Solve time against cluster size", ""]
    lines += ["| problem | workers | method | seconds | status |", "|---|---|---|---|---|"]
    for s in scale:
        lines.append(f"| {s.kind} | {s.workers} | {s.method} | {s.seconds:.4f} | {s.termination} |")
    lines += ["", "![scaling](scaling.png)", "", "## Where exact stops proving optimality", ""]
    for kind in kinds:
        for method, info in BACKENDS[kind].items():
            if not info.exact:
                continue
            text = _exact_limit_text(kind, method, scale, settings)
            if text is not None:
                lines.append(f"- {kind} / {method}: {text}")
    return lines


def _exact_limit_text(
    kind: str, method: str, scale: list[ScaleRow], settings: dict[str, Any]
) -> str | None:
    """Up to which size the exact ``method`` proved optimality on ``kind``; None when it was
    not tried at all. The time limit is the ``"time limit (s)"`` setting (none when absent)."""
    rows = [s for s in scale if s.kind == kind and s.method == method]
    proven = [s.workers for s in rows if s.termination == "optimal"]
    tried = [s.workers for s in rows if s.termination != "skipped"]
    if not tried:
        return None
    skipped = [s.workers for s in rows if s.termination == "skipped"]
    if len(proven) != len(tried):
        failed = min(set(tried) - set(proven))
        return (
            f"proved up to {max(proven) if proven else 'no'} workers; "
            f"not within the time limit at {failed}"
        )
    text = f"proved every size tried (up to {max(tried)} workers)"
    last = max((s for s in rows if s.workers == max(tried)), key=lambda s: s.seconds)
    if skipped:
        text += f"; not built beyond: more than {EXACT_SIZE_CAP:,} variables"
    elif last.seconds > float(settings.get("time limit (s)", math.inf)):
        text += (
            f"; larger sizes not tried: the last solve took {last.seconds:.1f} s,"
            " over the time limit"
        )
    return text
