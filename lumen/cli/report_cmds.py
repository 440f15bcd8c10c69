"""``lumen compare-solvers``: the solver-quality report."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def register(app: typer.Typer) -> None:
    app.command("compare-solvers")(compare_solvers)


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        err.print(f"error: {name} must be comma-separated integers, got {text!r}")
        raise typer.Exit(2) from None
    if not values or min(values) < 2:
        err.print(f"error: {name} needs at least one size, each >= 2")
        raise typer.Exit(2)
    return values


def compare_solvers(
    sizes: str = typer.Option(
        "4,8,16,32,64,128,256,512,1024", "--sizes", help="Worker counts of the scaling study."
    ),
    output: Path = typer.Option(Path("out/solver-report"), "--out", help="Report folder."),
    problems: str = typer.Option(
        "placement,recovery,pairing", "--problems", help="Which problems to study."
    ),
    instances: int = typer.Option(10, "--instances", min=1, help="Instances per family and size."),
    time_limit: float = typer.Option(10.0, "--time-limit", min=0.01, help="Seconds per solve."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Write a solver-quality report: heuristic gaps to the optimum and solve time vs size."""
    from lumen.analysis.solver_report import (
        KINDS,
        families,
        gap_study,
        scale_study,
        write_report,
    )

    kinds = [k.strip() for k in problems.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        err.print(f"error: --problems takes {', '.join(KINDS)}; got {problems!r}")
        raise typer.Exit(2)
    scale_sizes = _ints(sizes, "--sizes")
    gap_total = sum(len(families(k)) * 3 * instances for k in kinds)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("gap study", total=gap_total)
        gaps = gap_study(kinds, instances, time_limit, seed, lambda: progress.advance(task))
        task = progress.add_task("scaling study", total=len(kinds) * len(scale_sizes))
        scale = scale_study(kinds, scale_sizes, time_limit, seed, lambda: progress.advance(task))
    settings = {
        "instances per family and size": instances,
        "time limit (s)": time_limit,
        "seed": seed,
        "scaling sizes": ",".join(map(str, scale_sizes)),
    }
    report = write_report(output, gaps, scale, settings)
    out.print(f"wrote {report} (+ gaps.png, scaling.png, rows.json)")
