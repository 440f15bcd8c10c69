"""``lumen reproduce``: every paper scenario under every reading of the paper, one report."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from lumen import __version__
from lumen.cli.sim_cmds import (
    UsageError,
    _check_requests,
    _fail,
    _progress,
    check_out_dir,
    out,
    parse_seeds,
)
from lumen.scenarios.catalog import bundled_scenarios
from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import LoadedScenario, load_scenario

#: ``--quick``: a couple of scenarios, one seed, the requests around their failure at 300 s.
QUICK_SCENARIOS = ("paper-4w-qwen3-32b", "failures-8w-x1")
QUICK_REQUESTS = 4000


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)


def paper_scenarios() -> list[str]:
    """Names of the bundled paper scenarios (lumen/scenarios/paper/)."""
    return [name for name, path in bundled_scenarios().items() if path.parent.name == "paper"]


def _load(names: list[str]) -> list[LoadedScenario]:
    if len(set(names)) != len(names):
        raise UsageError(f"a scenario is listed twice: {', '.join(names)}")
    return [load_scenario(name) for name in names]


def _command(
    scenarios: str | None,
    seeds: str | None,
    requests: int | None,
    readings: str | None,
    quick: bool,
) -> str:
    parts = ["lumen reproduce"]
    if quick:
        parts.append("--quick")
    if scenarios is not None:
        parts.append(f"--scenarios {scenarios}")
    if seeds is not None:
        parts.append(f"--seeds {seeds}")
    if requests is not None:
        parts.append(f"--requests {requests}")
    if readings is not None:
        parts.append(f"--readings {readings}")
    return " ".join(parts)


def reproduce(
    scenarios: str | None = typer.Option(
        None,
        "--scenarios",
        help="Comma-separated scenarios (names or files); default: every paper scenario.",
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Number of seeds (0..N-1); default: each scenario's metrics.seeds."
    ),
    requests: int | None = typer.Option(
        None, "--requests", help="Simulate only the first N requests of each scenario."
    ),
    readings: str | None = typer.Option(
        None,
        "--readings",
        help="default, all (the default: every single-field alternative) or a comma-separated"
        " list of field=value readings, e.g. assist=synchronous,gateway=round-robin.",
    ),
    workers: int = typer.Option(os.cpu_count() or 1, "--workers", help="Local processes."),
    output: Path = typer.Option(Path("out/reproduce"), "--out", help="Output folder."),
    quick: bool = typer.Option(
        False,
        "--quick",
        help=f"{QUICK_REQUESTS:,} requests, 1 seed, {' and '.join(QUICK_SCENARIOS)}"
        " (each unless given).",
    ),
) -> None:
    """Run the paper scenarios under every reading of the paper with their policies (plus
    lumen-optimal) and seeds, and write one report: the paper's numbers beside ours, the
    sensitivity to each reading, lumen-optimal beside lumen, the failure-free references."""
    from lumen.analysis.repro_report import write_reproduction
    from lumen.simulator.reproduce import (
        parse_readings,
        reproduction_plans,
        run_reproduction,
    )

    command = _command(scenarios, seeds, requests, readings, quick)
    try:
        if quick:
            requests = QUICK_REQUESTS if requests is None else requests
            seeds = "1" if seeds is None else seeds
            scenarios = ",".join(QUICK_SCENARIOS) if scenarios is None else scenarios
        _check_requests(requests)
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        n_seeds = parse_seeds(seeds)
        try:
            chosen_readings = parse_readings(readings)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        names = paper_scenarios() if scenarios is None else scenarios.split(",")
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise UsageError("--scenarios needs at least one scenario name, comma-separated")
        loaded = _load(names)
        check_out_dir(output)
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
    except UsageError as exc:
        raise _fail(str(exc), 2) from None
    start = time.perf_counter()
    try:
        with _progress() as progress:
            plans = reproduction_plans(loaded, chosen_readings, n_seeds)
            total = sum(len(p.policies) * len(p.seeds) for _, p, _ in plans)
            bar = progress.add_task("reproducing", total=total)
            reps = run_reproduction(
                loaded,
                chosen_readings,
                n_seeds,
                requests,
                workers,
                on_done=lambda _: progress.advance(bar),
            )
    except ValueError as exc:
        raise _fail(f"simulation failed: {exc}", 1) from None
    meta = {
        "command": command,
        "version": __version__,
        "num_requests": requests,
        "seeds": n_seeds,
        "readings": [r.name for r in chosen_readings],
        "workers": workers,
        "wall_s": time.perf_counter() - start,
    }
    try:
        files = write_reproduction(reps, output, meta)
    except OSError as exc:
        raise _fail(f"cannot write results to {str(output)!r}: {exc.strerror or exc}", 1) from None
    out.print(f"wrote {output}{os.sep}: " + ", ".join(p.name for p in files))
