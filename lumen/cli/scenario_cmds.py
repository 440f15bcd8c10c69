"""Scenario commands: ``validate``, ``scenario show|list``, ``schema`` and ``demo``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from lumen.cli.render import fmt_seconds, summary_panel
from lumen.scenarios.catalog import bundled_scenarios
from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import LoadedScenario, build_trace, load_scenario
from lumen.scenarios.schema import Scenario
from lumen.scenarios.summary import ScenarioSummary, summarize

# Piped output (CI logs, files) gets a wide fixed width instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

scenario_app = typer.Typer(help="Inspect scenario files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("schema")(schema)
    app.command("demo")(demo)
    app.add_typer(scenario_app, name="scenario")


def _check(ref: str) -> LoadedScenario:
    """Load a scenario and build its workload once, so trace problems surface here too."""
    loaded = load_scenario(ref)
    build_trace(loaded)
    return loaded


def _report_error(exc: ScenarioError) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)


def validate(
    scenarios: list[str] = typer.Argument(
        None, help="Scenario files or bundled scenario names.", show_default=False
    ),
    all_bundled: bool = typer.Option(False, "--all", help="Validate every bundled scenario."),
) -> None:
    """Validate scenario files; exit status 1 when any is invalid."""
    refs = list(scenarios or [])
    if all_bundled:
        refs += [str(p) for p in bundled_scenarios().values()]
    if not refs:
        err.print("error: give at least one scenario, or --all for the bundled ones")
        raise typer.Exit(2)
    bad = 0
    for ref in refs:
        try:
            loaded = _check(ref)
        except ScenarioError as exc:
            bad += 1
            _report_error(exc)
            continue
        s = loaded.scenario
        c = s.cluster
        out.print(
            f"[green]ok[/green] {escape(s.name)} ({escape(str(loaded.source))}):"
            f" {c.workers} x {c.model}"
            f" on {c.tensor_parallel} x {c.hardware}, {s.workload.num_requests:,} requests,"
            f" {len(s.failures.events)} failure event(s)",
            highlight=False,
        )
    if bad:
        err.print(f"[bold red]{bad} of {len(refs)} scenario(s) invalid[/bold red]")
        raise typer.Exit(1)


@scenario_app.command("show")
def show(
    scenario: str = typer.Argument(..., help="Scenario file or bundled scenario name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Print the resolved configuration (defaults filled in) and the numbers it implies."""
    try:
        loaded = load_scenario(scenario)
        summary = summarize(loaded)
    except ScenarioError as exc:
        _report_error(exc)
        raise typer.Exit(1) from None
    resolved = loaded.scenario.model_dump(mode="json", exclude_none=True)
    if as_json:
        doc = {"scenario": resolved, "derived": summary.to_dict()}
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    text = yaml.safe_dump(resolved, sort_keys=False, width=100)
    out.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default", word_wrap=True))
    out.print(summary_panel(summary))


@scenario_app.command("list")
def list_bundled() -> None:
    """List the bundled scenarios (usable by name wherever a scenario is expected)."""
    table = Table("name", "workers", "model", "description", show_lines=False)
    for name, path in bundled_scenarios().items():
        try:
            s = load_scenario(path).scenario
        except ScenarioError as exc:
            table.add_row(escape(name), "-", "-", f"[red]invalid: {escape(str(exc))}[/red]")
            continue
        table.add_row(escape(name), str(s.cluster.workers), s.cluster.model, escape(s.description))
    out.print(table)


def schema(
    output: Path | None = typer.Option(None, "--out", help="Write to this file instead."),
) -> None:
    """Print the JSON Schema of scenario files."""
    text = json.dumps(Scenario.model_json_schema(), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        out.print(f"wrote {output}")


def demo(
    live: bool = typer.Option(
        True, "--live/--no-live", help="Finish with a short live-cluster run with a real failure."
    ),
) -> None:
    """The main job: validate and summarize every bundled scenario, compare the planner's
    backends on one failure, simulate the paper's headline comparison, then crash a worker of
    a small live cluster and compare what it measures with the simulator's prediction."""
    rows: list[tuple[str, ScenarioSummary | None, str]] = []
    for name, path in bundled_scenarios().items():
        try:
            summary = summarize(_check(str(path)))
        except ScenarioError as exc:
            _report_error(exc)
            rows.append((name, None, str(exc)))
            continue
        out.print(summary_panel(summary))
        rows.append((name, summary, ""))
    table = Table(title="Bundled scenarios", show_lines=False)
    for col in ("scenario", "status", "workers", "model", "KV/token", "reload", "draft load"):
        table.add_column(col)
    table.add_column("requests", justify="right")
    table.add_column("failures", justify="right")
    for name, s, _problem in rows:
        if s is None:
            table.add_row(name, "[red]invalid[/red]", *["-"] * 7)
            continue
        table.add_row(
            name,
            "[green]valid[/green]",
            str(s.workers),
            s.model,
            f"{s.kv_bytes_per_token // 1024} KiB",
            fmt_seconds(s.reload_total_s),
            "-" if s.draft_load_s is None else fmt_seconds(s.draft_load_s),
            f"{s.requests:,}",
            str(len(s.failures)),
        )
    out.print(table)
    # The planner on one paper scenario: every backend on the same failure, side by side.
    from lumen.cli.planner_cmds import compare_methods

    featured = load_scenario("failures-8w-x4")
    for problem in ("placement", "recovery", "pairing"):
        out.print(compare_methods(featured, problem, time_limit_s=5.0))
    # The simulator on the paper's 4-worker testbed: every policy on the same failure.
    from lumen.cli.sim_cmds import DEMO_SCENARIO, demo_headline

    out.print(demo_headline())
    live_ok = True
    if live:
        from lumen.cli.cluster_cmds import demo_live

        live_ok = demo_live(DEMO_SCENARIO, out)
    invalid = sum(1 for _, s, _ in rows if s is None)
    if invalid or not live_ok:
        raise typer.Exit(1)
