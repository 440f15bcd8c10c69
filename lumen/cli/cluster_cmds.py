"""``lumen cluster up`` / ``lumen cluster run``: a live cluster on loopback, with real failures.

The scenario gives the policies and the workload's shape (its trace or synthetic lengths and
arrival pattern); the live cluster runs a tiny model on CPU, so the workload is rescaled to
``--rate`` and its lengths capped (``--max-prompt``, ``--max-output``).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lumen.executor.cluster_run import (
    PolicyRun,
    mismatches,
    parse_injection,
    reference_spec,
    run_policy,
)
from lumen.executor.launcher import ClusterSpec, LocalCluster
from lumen.executor.loadgen import LoadRequest, workload
from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.recovery import POLICIES
from lumen.simulator.run import scenario_trace

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

#: Vocabulary of the default ``random:SEED`` worker model.
VOCAB = 256

cluster_app = typer.Typer(
    help="A live cluster on loopback: planner, gateway and worker processes.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _policies(text: str | None, default: list[str]) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()] if text else default
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise _fail(f"--policies: unknown {bad}; known: {', '.join(sorted(POLICIES))}")
    return names


def _requests(
    scenario: str, requests: int, rate: float, max_prompt: int, max_output: int
) -> list[LoadRequest]:
    loaded = load_scenario(scenario)
    trace = scenario_trace(loaded, 0, requests)
    trace = trace.rescale(rate)
    return workload(
        trace, VOCAB, max_prompt_tokens=max_prompt, max_output_tokens=max_output, seed=0
    )


@cluster_app.command("up")
def up(
    scenario: str = typer.Argument(..., help="Scenario name or path (its first policy runs)."),
    policy: str | None = typer.Option(None, help="Policy (default: the scenario's first)."),
    workers: int = typer.Option(4, min=2, max=64, help="Worker processes."),
    ssd_gbyte_s: float | None = typer.Option(None, help="Emulated weight-load bandwidth."),
    log_dir: Path = typer.Option(Path("out/cluster"), help="Process logs."),
) -> None:
    """Start the planner, the gateway and the workers, print the endpoints, run until Ctrl-C."""
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
    chosen = _policies(policy, [str(loaded.scenario.policies[0])])[0]
    spec = ClusterSpec(workers, chosen, ssd_gbyte_s=ssd_gbyte_s, log_dir=log_dir)
    cluster = LocalCluster(spec)
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        raise _fail(str(exc), 1) from None
    out.print(f"gateway  {cluster.gateway_url}/v1/completions  (policy {chosen})")
    out.print(f"planner  {cluster.planner_address}")
    for i, address in cluster.worker_addresses.items():
        out.print(f"worker {i} {address}")
    out.print(f"logs in {log_dir}/; Ctrl-C stops everything")
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


def _bandwidth_for(reload_s: float) -> float | None:
    """The emulated storage bandwidth (GB/s) that makes the default worker model's target
    load take ``reload_s`` (None for 0: unthrottled)."""
    if reload_s <= 0:
        return None
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.worker.__main__ import DEFAULT_RANDOM_MODEL
    from lumen.executor.worker.stages import weight_bytes

    return weight_bytes(RandomWeights(DEFAULT_RANDOM_MODEL, 0)) / reload_s / 1e9


def _ms(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{1e3 * x:,.0f} ms"


def _s(x: float) -> str:
    return "never" if x == math.inf else ("-" if not math.isfinite(x) else f"{x:.2f} s")


@cluster_app.command("run")
def run(
    scenario: str = typer.Argument(..., help="Scenario name or path."),
    inject_failure: str = typer.Option(
        ..., help="AT_S:WORKER[+WORKER][:RESTART_AFTER_S]: SIGKILL workers, restart them."
    ),
    policies: str | None = typer.Option(None, help="Comma-separated (default: the scenario's)."),
    workers: int = typer.Option(4, min=2, max=64, help="Worker processes."),
    requests: int = typer.Option(60, min=1, max=100_000, help="Requests of the workload."),
    rate: float = typer.Option(2.0, min=0.01, help="Arrival rate (requests per second)."),
    max_prompt: int = typer.Option(48, min=1, help="Prompt length cap (tokens)."),
    max_output: int = typer.Option(24, min=1, help="Output length cap (tokens)."),
    reload_s: float = typer.Option(
        5.0, min=0.0, help="Emulated target reload time (sets the weight-load bandwidth)."
    ),
    verify: bool = typer.Option(
        True, help="Also run failure-free and check every output is token-identical."
    ),
    log_dir: Path = typer.Option(Path("out/cluster"), help="Process logs."),
) -> None:
    """Run the workload per policy on a fresh cluster, crash a worker, print what it cost."""
    try:
        failure = parse_injection(inject_failure)
        loaded = load_scenario(scenario)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
    if max(failure.workers) >= workers or len(failure.workers) >= workers:
        raise _fail(
            f"--inject-failure: workers {list(failure.workers)} must be some of 0..{workers - 1},"
            " not all"
        )
    names = _policies(policies, [str(p) for p in loaded.scenario.policies])
    load = _requests(scenario, requests, rate, max_prompt, max_output)
    ssd_gbyte_s = _bandwidth_for(reload_s)
    base = ClusterSpec(workers, names[0], ssd_gbyte_s=ssd_gbyte_s, log_dir=log_dir)
    runs: list[PolicyRun] = []
    reference: PolicyRun | None = None
    try:
        if verify:
            out.print("failure-free reference run ...")
            reference = run_policy(reference_spec(base), load, None)
        for name in names:
            killed = "+".join(map(str, failure.workers))
            out.print(f"{name}: running, worker(s) {killed} killed at {failure.at_s:g} s ...")
            spec = ClusterSpec(workers, name, ssd_gbyte_s=ssd_gbyte_s, log_dir=log_dir / name)
            runs.append(run_policy(spec, load, failure))
    except RuntimeError as exc:
        raise _fail(str(exc), 1) from None
    table = Table(
        title=f"{loaded.scenario.name}: live cluster, {workers} workers, {requests} requests"
    )
    for col in (
        "policy",
        "errors",
        "TTFT mean",
        "TTFT P99",
        "TPOT mean",
        "window TTFT",
        "window TPOT",
        "recovery",
        "outputs",
    ):
        table.add_column(col, justify="left" if col == "policy" else "right")
    bad = False
    for r in runs:
        s = r.summary()
        diff = mismatches(r.load, reference.load) if reference is not None else []
        bad |= bool(diff) or s["errors"] > 0
        table.add_row(
            r.policy,
            f"{s['errors']:.0f}",
            _ms(s["ttft_mean_s"]),
            _ms(s["ttft_p99_s"]),
            _ms(s["tpot_mean_s"]),
            _ms(s["window_ttft_mean_s"]),
            _ms(s["window_tpot_mean_s"]),
            _s(s["recovery_s"]),
            "-" if reference is None else ("identical" if not diff else f"{len(diff)} differ"),
        )
    out.print(table)
    if bad:
        raise typer.Exit(1)
