"""Planner commands: ``solve`` (and ``compare-solvers``, in its own module)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from lumen.cli.render import fmt_seconds
from lumen.planner.builders import PlacementOptions, pairing_problem, placement_problem
from lumen.planner.builders import recovery_problem as build_recovery_problem
from lumen.planner.checker import check_pairing, check_placement, check_recovery
from lumen.planner.plans import PairingPlan, PlacementPlan, RecoveryPlan
from lumen.planner.problems import PairingProblem, PlacementProblem, RecoveryProblem
from lumen.planner.result import SolveResult, SolveSettings
from lumen.planner.solve import Problem, methods, solve
from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import LoadedScenario, load_scenario, resolve_failures
from lumen.scenarios.snapshot import steady_state_snapshot

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

PROBLEMS = ("placement", "recovery", "pairing")


def register(app: typer.Typer) -> None:
    app.command("solve")(solve_cmd)


def _failed_workers(loaded: LoadedScenario) -> list[int]:
    events = resolve_failures(loaded.scenario, horizon_s=3600.0)
    return list(events[0].workers) if events else [0]


def pose(loaded: LoadedScenario, problem: str, seed: int, placement: str) -> Problem:
    """The problem ``lumen solve`` poses for a scenario: drawn from a steady-state snapshot at
    the scenario's first failure (see lumen.scenarios.snapshot)."""
    s = loaded.scenario
    cost = loaded.cost_model
    if problem == "placement":
        state = steady_state_snapshot(loaded, seed, placement_method=None)
        options = PlacementOptions(
            alpha=s.planner.alpha, require_other_node=s.cluster.holder_outside_node
        )
        return placement_problem(state, cost, options=options)
    failed = _failed_workers(loaded)
    if problem == "recovery":
        state = steady_state_snapshot(loaded, seed, placement_method=placement)
        return build_recovery_problem(state, cost, failed, chunk=s.cluster.prefill_chunk_tokens)
    state = steady_state_snapshot(loaded, seed, placement_method=None)
    return pairing_problem(state, cost, failed, s.speculation.acceptance_rate, s.speculation.depth)


def check(problem: Problem, plan: Any) -> tuple[bool, float, tuple[str, ...]]:
    if isinstance(problem, PlacementProblem) and isinstance(plan, PlacementPlan):
        r = check_placement(problem, plan)
    elif isinstance(problem, RecoveryProblem) and isinstance(plan, RecoveryPlan):
        r = check_recovery(problem, plan)
    elif isinstance(problem, PairingProblem) and isinstance(plan, PairingPlan):
        r = check_pairing(problem, plan)
    else:
        raise TypeError("plan does not match problem")
    return r.feasible, r.objective, r.violations


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _plan_rows(problem: Problem, plan: Any) -> list[tuple[str, str]]:
    if isinstance(problem, PlacementProblem):
        counts = np.bincount(plan.holder, minlength=problem.num_workers)
        used = np.bincount(
            plan.holder, weights=problem.reserve_bytes, minlength=problem.num_workers
        )
        share = np.divide(
            used, problem.budget_bytes, out=np.zeros_like(used), where=problem.budget_bytes > 0
        )
        return [
            (
                "checkpoints per holder",
                f"min {counts.min()}, mean {counts.mean():.1f}, max {counts.max()}",
            ),
            ("host budget used", f"max {100 * share.max():.1f} % of a holder's budget"),
        ]
    if isinstance(problem, RecoveryProblem):
        names = plan.mode_names()
        modes = {k: names.count(k) for k in sorted(set(names))}
        return [
            ("modes", ", ".join(f"{k} {v}" for k, v in modes.items()) or "-"),
            ("machines used", f"{sum(1 for o in plan.order if o)} of {problem.num_machines}"),
        ]
    pairs = ", ".join(
        f"{int(problem.recovering_ids[r])}->{int(problem.survivor_ids[s])}" for r, s in plan.pairs
    )
    return [("pairs (recovering->survivor)", pairs or "none")]


def _ids(problem: Problem) -> dict[str, list[int]]:
    """Cluster ids behind the plan's indices."""
    if isinstance(problem, RecoveryProblem):
        return {
            "machines": problem.machine_ids.tolist(),
            "requests": problem.request_ids.tolist(),
        }
    if isinstance(problem, PairingProblem):
        return {
            "recovering": problem.recovering_ids.tolist(),
            "survivors": problem.survivor_ids.tolist(),
        }
    return {"workers": list(range(problem.num_workers))}


def _describe(problem: Problem) -> str:
    if isinstance(problem, PlacementProblem):
        return f"{problem.num_requests} requests over {problem.num_workers} workers"
    if isinstance(problem, RecoveryProblem):
        rec = int(problem.is_recovering.sum())
        return (
            f"{problem.num_requests} interrupted requests, {problem.num_machines - rec}"
            f" survivors + {rec} recovering"
        )
    a, b = problem.saved_s.shape
    return f"{a} recovering workers x {b} survivors"


def compare_methods(
    loaded: LoadedScenario, problem: str, seed: int = 0, time_limit_s: float = 10.0
) -> Table:
    """Every backend on the same posed problem, checked, side by side (used by the demo)."""
    posed = pose(loaded, problem, seed, "lumen")
    kind_methods = [m for m in methods(problem) if m != "auto"]
    results = [(m, solve(posed, m, SolveSettings(time_limit_s=time_limit_s))) for m in kind_methods]
    best = [r.objective for _, r in results if r.objective is not None]
    maximize = problem == "pairing"
    reference = (max(best) if maximize else min(best)) if best else None
    table = Table(title=f"{problem} on {loaded.scenario.name}: {_describe(posed)}")
    for col in ("method", "status", "objective", "vs best", "wall time", "checker"):
        table.add_column(col, justify="right" if col in ("objective", "vs best") else "left")
    for name, res in results:
        verdict = "-"
        if res.plan is not None:
            feasible, _, _ = check(posed, res.plan)
            verdict = "feasible" if feasible else "[red]infeasible[/red]"
        rel = "-"
        if res.objective is not None and reference:
            rel = f"{100 * (res.objective - reference) / abs(reference):+.1f} %"
        table.add_row(
            name,
            res.termination.value,
            _fmt(res.objective, 5),
            rel,
            fmt_seconds(res.wall_time_s),
            verdict,
        )
    return table


def solve_cmd(
    scenario: str = typer.Argument(..., help="Scenario file or bundled scenario name."),
    problem: str = typer.Option("recovery", "--problem", help="placement, recovery or pairing."),
    method: str = typer.Option("auto", "--method", help="Backend name (see the README)."),
    time_limit: float = typer.Option(10.0, "--time-limit", min=0.001, help="Seconds."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the snapshot draw."),
    placement: str = typer.Option(
        "lumen", "--placement", help="Placement method for the snapshot's checkpoints."
    ),
    output: Path | None = typer.Option(None, "--out", help="Write the plan (JSON) here."),
) -> None:
    """Pose one planner problem from a scenario, solve it, check the plan, print a summary."""
    if problem not in PROBLEMS:
        err.print(f"error: --problem must be one of {', '.join(PROBLEMS)}, got {problem!r}")
        raise typer.Exit(2)
    for kind, name in ((problem, method), ("placement", placement)):
        if name not in methods(kind):
            err.print(
                f"error: unknown {kind} method {name!r}; choose from {', '.join(methods(kind))}"
            )
            raise typer.Exit(2)
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    posed = pose(loaded, problem, seed, placement)
    result: SolveResult[Any] = solve(posed, method, SolveSettings(time_limit_s=time_limit))
    table = Table(title=f"{problem} for {loaded.scenario.name}: {_describe(posed)}")
    table.add_column("field", style="bold cyan")
    table.add_column("value")
    table.add_row("method", result.method)
    table.add_row(
        "status",
        result.termination.value
        + ("" if result.limit.value == "none" else f" ({result.limit.value})"),
    )
    table.add_row("objective", _fmt(result.objective, 6))
    table.add_row("bound", _fmt(result.bound, 6))
    table.add_row("gap", "-" if result.gap is None else f"{100 * result.gap:.3f} %")
    table.add_row("wall time", fmt_seconds(result.wall_time_s))
    feasible, objective = False, float("nan")
    violations: tuple[str, ...] = ()
    if result.plan is not None:
        feasible, objective, violations = check(posed, result.plan)
        verdict = "feasible" if feasible else f"INFEASIBLE: {'; '.join(violations[:3])}"
        table.add_row("plan checker", f"{verdict}, objective {objective:.6g}")
        for key, value in _plan_rows(posed, result.plan):
            table.add_row(key, value)
    if result.message:
        table.add_row("message", result.message)
    out.print(table)
    if output is not None:
        doc = {
            "scenario": loaded.scenario.model_dump(mode="json", exclude_none=True),
            "problem": problem,
            "seed": seed,
            "snapshot_placement": placement,
            "time_limit_s": time_limit,
            "result": result.summary(),
            "checker": {
                "feasible": feasible,
                "objective": objective,
                "violations": list(violations),
            },
            "plan": None if result.plan is None else result.plan.to_dict(),
            "ids": _ids(posed),
        }
        output.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        out.print(f"wrote {output}")
    if result.plan is None or not feasible:
        raise typer.Exit(1)
