"""``lumen calibrate``: fit a scenario's engine efficiencies to a published failure-free
operating point (mean TTFT, and mean TPOT when given) and record them in its ``calibration``
block. Only failure-free runs are simulated (:mod:`lumen.simulator.calibration`); this is not
``lumen.executor.bridge.calibrate``, which measures the live CPU workers' engine."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn
from rich.table import Table

from lumen.planner.costmodel import DEFAULT_EFFICIENCY
from lumen.scenarios.calibration import block_yaml, with_calibration
from lumen.scenarios.catalog import bundled_scenarios
from lumen.scenarios.loader import ScenarioError, read_scenario_text
from lumen.scenarios.resolve import LoadedScenario, load_scenario
from lumen.simulator.calibration import (
    EngineFit,
    Evaluation,
    Targets,
    calibration_block,
    fit_engine,
)

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

DEFAULT_SOURCE = "failure-free targets given to lumen calibrate"


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)


class UsageError(Exception):
    """A bad command-line value; the message is the whole explanation."""


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _targets(ttft: float, tpot: float | None) -> Targets:
    for flag, value in (("--ttft", ttft), ("--tpot", tpot)):
        if value is not None and not (math.isfinite(value) and value > 0.0):
            raise UsageError(f"{flag} takes a mean latency in seconds > 0, got {value}")
    return Targets(ttft, tpot)


def _check_write(path: Path | None, overwrite: bool) -> None:
    """Refuse to replace an existing file unless asked, before any simulation."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--write {str(path)!r} is a folder; give a scenario file path")
    if path.exists() and not overwrite:
        raise UsageError(
            f"--write {str(path)!r} exists; pass --overwrite to replace its calibration block"
        )
    if not path.parent.is_dir():
        raise UsageError(f"--write {str(path)!r}: no folder {str(path.parent)!r}")


def _is_bundled(path: Path) -> bool:
    resolved = path.resolve()
    return any(p.resolve() == resolved for p in bundled_scenarios().values())


def calibrate(
    scenario: str = typer.Argument(..., help="Scenario file or bundled scenario name."),
    ttft: float = typer.Option(..., "--ttft", help="Target failure-free mean TTFT, seconds."),
    tpot: float | None = typer.Option(
        None,
        "--tpot",
        help="Target failure-free mean TPOT, seconds; without it one uniform slowdown is fitted.",
    ),
    requests: int | None = typer.Option(
        None, "--requests", help="Simulate the first N requests; default: the whole workload."
    ),
    seed: int = typer.Option(0, "--seed", help="Simulation seed (offset to the workload's)."),
    source: str = typer.Option(DEFAULT_SOURCE, "--source", help="Where the targets come from."),
    note: str = typer.Option("", "--note", help="A note to keep in the block."),
    write: Path | None = typer.Option(
        None, "--write", help="Write the scenario with its calibration block to this file."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Let --write replace an existing file (its other lines kept)."
    ),
) -> None:
    """Fit the engine's compute and memory efficiencies to failure-free latency targets
    (never to failure-time outcomes) and print or write the scenario's calibration block."""
    try:
        targets = _targets(ttft, tpot)
        if requests is not None and requests < 1:
            raise UsageError(f"--requests must be >= 1, got {requests}")
        if seed < 0:
            raise UsageError(f"--seed must be >= 0, got {seed}")
        _check_write(write, overwrite)
        loaded = load_scenario(scenario)
        text = read_scenario_text(loaded.source)
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
    except UsageError as exc:
        raise _fail(str(exc), 2) from None
    started = time.perf_counter()
    fit = _run_fit(loaded, targets, requests, seed)
    wall = time.perf_counter() - started
    out.print(fit_table(fit))
    out.print(
        f"{fit.evaluations} failure-free simulations of {fit.requests:,} requests (seed {seed})"
        f" in {wall:.1f} s",
        highlight=False,
    )
    for problem in fit.problems:
        out.print(f"[bold yellow]warning:[/bold yellow] {escape(problem)}", highlight=False)
    if not fit.plausible:
        out.print(
            "[bold yellow]warning: implausible fit[/bold yellow] - recorded with plausible:"
            " false and apply: false (the default efficiencies stay in use); the model likely"
            " misses a cost the testbed paid, rather than the engine being that slow"
            " (docs/simulator-model.md, Calibration)",
            highlight=False,
        )
    block = calibration_block(fit, source, note)
    if write is None:
        out.print(block_yaml(block), highlight=False, markup=False, soft_wrap=True)
        return
    try:
        new_text, _ = with_calibration(text, block, str(write))
        if _is_bundled(write):
            out.print(f"[yellow]note:[/yellow] updating the bundled scenario {write}")
        write.write_text(new_text, encoding="utf-8")
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
    except OSError as exc:
        raise _fail(f"cannot write {str(write)!r}: {exc.strerror or exc}", 1) from None
    out.print(f"wrote {write}")


def _run_fit(
    loaded: LoadedScenario, targets: Targets, requests: int | None, seed: int
) -> EngineFit:
    with Progress(
        SpinnerColumn(), "{task.description}", TimeElapsedColumn(), console=out, transient=True
    ) as progress:
        task = progress.add_task(f"calibrating {loaded.scenario.name}", total=None)

        def shown(ev: Evaluation, n: int) -> None:
            progress.update(
                task,
                description=f"calibrating {loaded.scenario.name}: run {n}, compute"
                f" {ev.compute:.4f}, memory {ev.memory:.4f} -> TTFT {ev.ttft_s:.3f} s,"
                f" TPOT {ev.tpot_s * 1e3:.1f} ms",
            )

        return fit_engine(loaded, targets, requests, seed, on_eval=shown)


def fit_table(fit: EngineFit) -> Table:
    """Parameters and failure-free latencies: defaults, fitted, targets and residuals."""
    b, base, t = fit.best, fit.baseline, fit.targets
    how = "TTFT and TPOT" if t.tpot_s is not None else "TTFT alone (uniform slowdown)"
    table = Table(title=f"{fit.scenario}: engine fitted to {how}", title_justify="left")
    for col in ("", "default", "fitted", "target", "residual"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("compute efficiency", f"{DEFAULT_EFFICIENCY.compute:.4f}", f"{b.compute:.4f}")
    table.add_row("memory efficiency", f"{DEFAULT_EFFICIENCY.memory:.4f}", f"{b.memory:.4f}")
    if fit.slowdown is not None:
        table.add_row("slowdown", "1", f"{fit.slowdown:.3f}x")
    ttft_res, tpot_res = b.residuals(t)
    table.add_row(
        "mean TTFT",
        f"{base.ttft_s:.4f} s",
        f"{b.ttft_s:.4f} s",
        f"{t.ttft_s} s",
        f"{ttft_res:+.2%}",
    )
    table.add_row(
        "mean TPOT",
        f"{base.tpot_s * 1e3:.1f} ms",
        f"{b.tpot_s * 1e3:.1f} ms",
        "-" if t.tpot_s is None else f"{t.tpot_s * 1e3:.1f} ms",
        "-" if tpot_res is None else f"{tpot_res:+.2%}",
    )
    verdict = "[green]yes[/green]" if fit.plausible else "[bold yellow]no[/bold yellow]"
    table.add_row("plausible", "", verdict)
    return table
