"""The ``lumen`` Typer application: one CLI, one sub-module per command group."""

from __future__ import annotations

import typer

from lumen import __version__
from lumen.cli import (
    calibrate_cmds,
    cluster_cmds,
    planner_cmds,
    report_cmds,
    reproduce_cmds,
    scenario_cmds,
    service_cmds,
    sim_cmds,
)

app = typer.Typer(
    name="lumen",
    help="LUMEN: optimization-centric failure recovery for distributed LLM serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scenario_cmds.register(app)
planner_cmds.register(app)
report_cmds.register(app)
sim_cmds.register(app)
calibrate_cmds.register(app)
reproduce_cmds.register(app)
service_cmds.register(app)
cluster_cmds.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lumen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """LUMEN command line."""


def main() -> None:
    """Console-script entry point."""
    app()
