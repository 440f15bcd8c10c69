"""Simulator commands: ``simulate`` (one scenario, every output) and ``sweep`` (many, fanned
out over processes or a Ray cluster), plus the headline comparison ``lumen demo`` shows."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from lumen.analysis.sim_tables import OPEN, open_window_warning, open_windows
from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import LoadedScenario, load_scenario
from lumen.simulator.experiment import (
    ExperimentSummary,
    PairRun,
    build_experiment,
    implemented_policies,
    run_experiment,
    select_policies,
)
from lumen.simulator.run import scenario_failures, scenario_trace
from lumen.simulator.sweep import (
    Plan,
    RayUnavailableError,
    Task,
    check_ray,
    plan_tasks,
    run_sweep,
    run_tasks,
)

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

MAX_SEEDS = 1000

#: The demo's headline run: the paper's 4-worker testbed, cut to the requests that cover its
#: failure (300 s, request ~3,600) and the recovery window after it.
DEMO_SCENARIO = "paper-4w-qwen3-32b"
DEMO_REQUESTS = 7500


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.command("sweep")(sweep)


class UsageError(Exception):
    """A bad command-line value; the message is the whole explanation."""


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def parse_policies(text: str | None) -> list[str] | None:
    """``a,b,c`` -> names (None when not given)."""
    if text is None:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise UsageError("--policies needs at least one policy name, comma-separated")
    return names


def parse_seeds(text: str | None) -> int | None:
    """``N`` -> N seeds (0..N-1); None when not given."""
    if text is None:
        return None
    try:
        n = int(text)
    except ValueError:
        raise UsageError(
            f"--seeds takes a number of seeds (1..{MAX_SEEDS}), got {text!r}"
        ) from None
    if not 1 <= n <= MAX_SEEDS:
        raise UsageError(f"--seeds takes a number of seeds (1..{MAX_SEEDS}), got {n}")
    return n


def check_out_dir(path: Path) -> None:
    """Create ``path`` and make sure a file can be written there, before any simulation."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lumen-write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(
            f"--out {str(path)!r} is not a writable folder ({reason}); give another with --out"
        ) from None


def _plan(
    ref: str, policies: Sequence[str] | None, seeds: int | None
) -> tuple[LoadedScenario, list[str], list[str], list[int]]:
    """Load a scenario and settle its policies and seeds (ScenarioError / UsageError)."""
    loaded = load_scenario(ref)
    try:
        chosen, skipped = select_policies(loaded.scenario.policies, policies)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    n = seeds if seeds is not None else loaded.scenario.metrics.seeds
    return loaded, chosen, skipped, list(range(n))


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    )


def _check_requests(requests: int | None) -> None:
    if requests is not None and requests < 1:
        raise UsageError(f"--requests must be >= 1, got {requests}")


def simulate(
    scenario: str = typer.Argument(..., help="Scenario file or bundled scenario name."),
    policies: str | None = typer.Option(
        None,
        "--policies",
        help="Comma-separated policies; default: the scenario's (those implemented).",
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Number of seeds (0..N-1); default: the scenario's metrics.seeds."
    ),
    requests: int | None = typer.Option(
        None, "--requests", help="Simulate only the first N requests (quick looks)."
    ),
    output: Path | None = typer.Option(
        None, "--out", help="Output folder; default: out/sim/<scenario name>."
    ),
    workers: int = typer.Option(
        1, "--workers", help="Local processes running policy x seed pairs in parallel."
    ),
) -> None:
    """Simulate a scenario under its policies and seeds, each beside its failure-free run,
    and write the configuration, per-request results, summary, report and plots."""
    from lumen.analysis.sim_report import write_experiment

    try:
        _check_requests(requests)
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        loaded, chosen, skipped, seed_list = _plan(
            scenario, parse_policies(policies), parse_seeds(seeds)
        )
        out_dir = output if output is not None else Path("out/sim") / loaded.scenario.name
        check_out_dir(out_dir)
        _warn_failures_outside(loaded, seed_list[0], requests)
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
    except UsageError as exc:
        raise _fail(str(exc), 2) from None
    if skipped:
        out.print(
            f"[yellow]note:[/yellow] not running {', '.join(skipped)}: not implemented in the"
            " simulator yet",
            highlight=False,
        )
    total = 2 * len(chosen) * len(seed_list)
    try:
        with _progress() as progress:
            bar = progress.add_task(f"simulating {loaded.scenario.name}", total=total)
            if workers == 1:
                experiment = run_experiment(
                    loaded,
                    chosen,
                    seed_list,
                    requests,
                    on_run=lambda *_: progress.advance(bar),
                )
            else:
                plan = Plan(loaded, tuple(chosen), tuple(seed_list))
                tasks = plan_tasks([plan], requests, keep_results=True)
                results = run_tasks(tasks, workers, on_done=lambda _: progress.advance(bar, 2))
                pairs = [r for r in results if isinstance(r, PairRun)]
                experiment = build_experiment(loaded, pairs, requests)
    except ValueError as exc:  # a model limit the scenario runs into, e.g. a policy's needs
        raise _fail(f"{loaded.source}: simulation failed: {exc}", 1) from None
    try:
        files = write_experiment(experiment, out_dir, skipped)
    except OSError as exc:
        raise _fail(f"cannot write results to {str(out_dir)!r}: {exc.strerror or exc}", 1) from None
    out.print(headline_table(experiment.summary))
    warn_open_windows(experiment.summary)
    written = ", ".join(p.name for p in files.values())
    out.print(f"wrote {escape(str(out_dir))}{os.sep}: {escape(written)}", highlight=False)


def _warn_failures_outside(loaded: LoadedScenario, seed: int, requests: int | None) -> None:
    if requests is None:
        return
    trace = scenario_trace(loaded, seed, requests)
    events = scenario_failures(loaded, trace, seed)
    if not any(f.at_s <= trace.duration_s for f in events):
        out.print(
            f"[yellow]note:[/yellow] {escape(loaded.scenario.name)}: no failure falls within"
            " the first"
            f" {len(trace):,} requests"
            f" (they arrive within {trace.duration_s:.0f} s); ask for more with --requests",
            highlight=False,
        )


def sweep(
    scenarios: list[str] = typer.Argument(
        ..., help="Scenario files or bundled scenario names.", show_default=False
    ),
    policies: str | None = typer.Option(
        None, "--policies", help="Comma-separated policies; default: each scenario's."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Number of seeds; default: each scenario's metrics.seeds."
    ),
    requests: int | None = typer.Option(
        None, "--requests", help="Simulate only the first N requests of each scenario."
    ),
    workers: int = typer.Option(
        os.cpu_count() or 1, "--workers", help="Local processes (without --ray-address)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Run on this Ray cluster (needs the ray extra), e.g. auto."
    ),
    output: Path = typer.Option(Path("out/sweep"), "--out", help="Output folder."),
) -> None:
    """Run scenario x seed x policy simulations in parallel and write one combined summary
    (sweep.json, sweep.md)."""
    import json

    from lumen.analysis.sim_tables import sweep_markdown

    try:
        _check_requests(requests)
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        wanted, n_seeds = parse_policies(policies), parse_seeds(seeds)
        plans = []
        for ref in scenarios:
            loaded, chosen, skipped, seed_list = _plan(ref, wanted, n_seeds)
            if skipped:
                out.print(
                    f"[yellow]note:[/yellow] {escape(loaded.scenario.name)}: not running"
                    f" {', '.join(skipped)} (not implemented in the simulator yet)",
                    highlight=False,
                )
            plans.append(Plan(loaded, tuple(chosen), tuple(seed_list)))
        names = [p.loaded.scenario.name for p in plans]
        if len(set(names)) != len(names):
            raise UsageError(f"a scenario is listed twice: {', '.join(names)}")
        check_out_dir(output)
        if ray_address is not None:
            check_ray()
        for p in plans:
            _warn_failures_outside(p.loaded, p.seeds[0], requests)
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
    except (UsageError, RayUnavailableError) as exc:
        raise _fail(str(exc), 2) from None
    total = sum(len(p.policies) * len(p.seeds) for p in plans)
    where = f"Ray at {ray_address}" if ray_address else f"{workers} process(es)"
    try:
        with _progress() as progress:
            bar = progress.add_task(f"sweep on {where}", total=total)

            def done(_: Task) -> None:
                progress.advance(bar)

            summaries = run_sweep(plans, requests, workers, ray_address, done)
    except ValueError as exc:
        raise _fail(f"simulation failed: {exc}", 1) from None
    doc = {"scenarios": [s.to_dict() for s in summaries]}
    (output / "sweep.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (output / "sweep.md").write_text(sweep_markdown(summaries), encoding="utf-8")
    for s in summaries:
        out.print(headline_table(s))
        warn_open_windows(s)
    out.print(
        f"wrote {escape(str(output / 'sweep.json'))} and {escape(str(output / 'sweep.md'))}",
        highlight=False,
    )


# --------------------------------------------------------------------------------------------
# Headline comparison (also shown by `lumen demo`)
# --------------------------------------------------------------------------------------------


def _pct(mean: float, half: float, n: int) -> str:
    if n == 0:
        return "-"
    return f"{mean:+.1f} %" + (f" ± {half:.1f}" if half == half else "")


def _paper(value: float | tuple[float, float] | None) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return f"{value[0]:+.1f}..{value[1]:+.1f} %"
    return f"{value:+.1f} %"


def headline_table(summary: ExperimentSummary) -> Table:
    """Per policy the window TTFT/TPOT and recovery time, then each policy's change against
    each baseline with the paper's number beside it."""
    title = f"{escape(summary.scenario)}: {len(summary.seeds)} seed(s)" + (
        "" if summary.num_requests is None else f", first {summary.num_requests:,} requests"
    )
    table = Table(title=title, show_lines=False)
    # Policy names are never cut short; the numeric columns wrap instead.
    width = max([len(p) for p in summary.policies] + [len("absolute")])
    table.add_column("policy", no_wrap=True, min_width=width)
    table.add_column("vs", no_wrap=True, min_width=width)
    for col in ("TTFT", "paper", "TPOT", "paper", "recovery", "paper"):
        table.add_column(col, justify="right")
    still_open = open_windows(summary)
    for p in summary.policies:
        m = summary.estimates[p]
        ttft, tpot, rec = m["window_ttft_mean_s"], m["window_tpot_mean_s"], m["recovery_s"]
        is_open = p in still_open
        table.add_row(
            p,
            "[dim]absolute[/dim]",
            _open("-" if ttft.n == 0 else f"{ttft.mean:.3f} s", is_open),
            "",
            _open("-" if tpot.n == 0 else f"{1e3 * tpot.mean:.1f} ms", is_open),
            "",
            _open("-" if rec.n == 0 else f"{rec.mean:.1f} s", is_open),
            "",
        )
    for c in summary.comparisons:
        cells = []
        is_open = c.policy in still_open or c.baseline in still_open
        for key in ("ttft", "tpot", "recovery"):
            e = c.changes[key]
            cells += [_open(_pct(e.mean, e.half_width, e.n), is_open), _paper(c.paper.get(key))]
        table.add_row(c.policy, c.baseline, *cells)
    table.caption = (
        "Window means (recovery window against the failure-free run); changes in %,"
        " negative = better."
    )
    if still_open:
        table.caption += (
            f" [yellow]{OPEN.strip()}: the recovery window was still open at the last request;"
            " the figure covers only part of the recovery.[/yellow]"
        )
    return table


def _open(text: str, is_open: bool) -> str:
    return text + OPEN if is_open and text not in ("-", "") else text


def warn_open_windows(summary: ExperimentSummary) -> None:
    """Print the warning about recovery windows still open at the end of a run, if any."""
    warning = open_window_warning(summary)
    if warning:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)


def demo_headline(
    scenario: str = DEMO_SCENARIO,
    num_requests: int = DEMO_REQUESTS,
    policies: Sequence[str] | None = None,
) -> Table:
    """The paper's headline comparison from simulation, one seed, every implemented policy
    (``lumen demo``)."""
    loaded = load_scenario(scenario)
    chosen = list(policies) if policies is not None else list(implemented_policies())
    experiment = run_experiment(loaded, chosen, [0], num_requests)
    return headline_table(experiment.summary)
