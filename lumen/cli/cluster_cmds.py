"""``lumen cluster up`` / ``lumen cluster run``: a live cluster on loopback, with real failures.

The scenario gives the policies and the workload's shape (its trace or synthetic lengths and
arrival pattern); the live cluster runs a tiny model on CPU, so the workload is rescaled to
``--rate`` and its lengths capped (``--max-prompt``, ``--max-output``). Beside each live run
``cluster run`` prints the simulator's prediction of the same run, on a cost model of the
workers' model calibrated on this machine (:mod:`lumen.executor.bridge.calibrate`,
:mod:`lumen.executor.bridge.prediction`).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lumen.executor.bridge.calibrate import Calibration
from lumen.executor.bridge.overhead import LiveOverhead
from lumen.executor.bridge.prediction import LiveSetup, cost_model, predict
from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster
from lumen.executor.cluster.loadgen import LoadRequest, workload
from lumen.executor.cluster.probe import probe_cluster
from lumen.executor.cluster.run import (
    FailureInjection,
    PolicyRun,
    mismatches,
    parse_injection,
    reference_spec,
    run_policy,
)
from lumen.planner.policies import POLICIES
from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import LoadedScenario, load_scenario
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


def _policies(text: str | None, default: list[str], option: str = "--policies") -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()] if text else default
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise _fail(f"{option}: unknown {bad}; known: {', '.join(sorted(POLICIES))}")
    return names


def _requests(
    loaded: LoadedScenario, requests: int, rate: float, max_prompt: int, max_output: int
) -> list[LoadRequest]:
    trace = scenario_trace(loaded, 0, requests)
    trace = trace.rescale(rate)
    return workload(
        trace, VOCAB, max_prompt_tokens=max_prompt, max_output_tokens=max_output, seed=0
    )


@cluster_app.command("up")
def up(
    scenario: str = typer.Argument(..., help="Scenario name or path (its cost model)."),
    policy: str = typer.Option("lumen", help="Failure policy of the gateway."),
    workers: int = typer.Option(4, min=2, max=64, help="Worker processes."),
    ssd_gbyte_s: float | None = typer.Option(None, help="Emulated weight-load bandwidth."),
    log_dir: Path = typer.Option(Path("out/cluster"), help="Process logs."),
) -> None:
    """Start the planner, the gateway and the workers, print the endpoints, run until Ctrl-C."""
    if "," in policy:
        raise _fail("--policy: one policy (cluster run takes several with --policies)")
    chosen = _policies(policy, ["lumen"], "--policy")[0]
    try:
        load_scenario(scenario)
    except ScenarioError as exc:
        raise _fail(str(exc), 1) from None
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
    if not math.isfinite(x):
        return "-"
    return f"{1e3 * x:.1f} ms" if x < 0.1 else f"{1e3 * x:,.0f} ms"


def _s(x: float) -> str:
    return "never" if x == math.inf else ("-" if not math.isfinite(x) else f"{x:.2f} s")


def _calibration() -> Calibration:
    """The workers' model measured on this machine (torch needed, like the workers)."""
    from lumen.executor.bridge.calibrate import calibrate

    return calibrate()


def calibration_line(cal: Calibration, ssd_gbyte_s: float | None) -> str:
    """One line of what the calibration measured and the reload it implies."""
    model = cost_model(cal, LiveSetup(ssd_gbyte_s=ssd_gbyte_s))
    decode_ms = 1e3 * model.decode_step_time(1, 64)
    prefill_ms = 1e3 * model.prefill_time(48)
    return (
        f"calibrated ({cal.wall_s:.1f} s): decode step {decode_ms:.1f} ms, 48-token prefill"
        f" {prefill_ms:.1f} ms, loop {1e3 * cal.loop_overhead_s:.1f} ms/step, worker start"
        f" {_s(cal.process_start_s)}, reload {_s(model.reload_timeline().total_s)}"
    )


def _row(table: Table, name: str, kind: str, s: dict[str, float], outputs: str) -> None:
    table.add_row(
        name,
        kind,
        _ms(s["ttft_mean_s"]),
        _ms(s["ttft_p99_s"]),
        _ms(s["tpot_mean_s"]),
        _ms(s["window_ttft_mean_s"]),
        _ms(s["window_tpot_mean_s"]),
        _s(s["recovery_s"]),
        outputs,
    )


def _outputs(errors: int, differ: list[int], checked: bool) -> str:
    """What became of a live run's requests: lost (errors) and, against the reference, how
    many differ."""
    parts = [f"{errors} lost"] if errors else []
    if checked:
        parts.append(f"{len(differ)} differ" if differ else "identical")
    return ", ".join(parts) or "-"


def compare_live(
    title: str,
    load: Sequence[LoadRequest],
    workers: int,
    policies: Sequence[str],
    failure: FailureInjection,
    *,
    ssd_gbyte_s: float | None,
    verify: bool,
    log_dir: Path,
    calibration: Calibration,
    say: Callable[[str], None],
) -> tuple[Table, bool]:
    """Run ``load`` live per policy (after a failure-free reference when ``verify``), each
    beside the simulator's prediction of the same run. Returns the table and whether any
    request was lost or differs from the reference. Raises RuntimeError when a cluster does
    not start."""
    runs: list[PolicyRun] = []
    reference: PolicyRun | None = None
    base = ClusterSpec(workers, policies[0], ssd_gbyte_s=ssd_gbyte_s, log_dir=log_dir)
    model = cost_model(calibration, LiveSetup(ssd_gbyte_s=ssd_gbyte_s))
    overheads: dict[str, LiveOverhead] = {}
    # Probes as far apart as the workload's requests (at most 0.5 s): an idle path is colder.
    gaps = np.diff(np.sort([r.arrival_s for r in load]))
    pause_s = float(np.clip(np.median(gaps), 0.0, 0.5)) if gaps.size else 0.0

    def probe_as(key: str, kinds: tuple[bool, ...]) -> Callable[[LocalCluster], None]:
        """Probe the cluster's request path before its workload (no failure yet)."""

        def probe(cluster: LocalCluster) -> None:
            probed = probe_cluster(cluster, load, pause_s=pause_s, start_kinds=kinds)
            overheads[key] = LiveOverhead.fit(probed, model)
            say(f"  {overheads[key].describe()}")

        return probe

    if verify:
        say("failure-free reference run (its request path probed first) ...")
        reference = run_policy(reference_spec(base), load, None, before=probe_as("", ()))
    else:
        run_policy(reference_spec(base), [], None, before=probe_as("", ()))
    specs = []
    for name in policies:
        killed = "+".join(map(str, failure.workers))
        say(
            f"{name}: request path probed, then the workload with worker(s) {killed} killed"
            f" at {failure.at_s:g} s ..."
        )
        spec = ClusterSpec(workers, name, ssd_gbyte_s=ssd_gbyte_s, log_dir=log_dir / name)
        specs.append(spec)
        runs.append(run_policy(spec, load, failure, before=probe_as(name, (spec.progressive,))))
    table = Table(title=title)
    for col in (
        "policy",
        "run",
        "TTFT mean",
        "TTFT P99",
        "TPOT mean",
        "window TTFT",
        "window TPOT",
        "recovery",
        "outputs",
    ):
        label = col in ("policy", "run")
        table.add_column(col, justify="left" if label else "right", no_wrap=label)
    bad = False
    free = predict(load, reference_spec(base), None, calibration, overheads[""]).summary()
    if reference is not None:
        _row(table, "failure-free", "live", reference.summary(), "reference")
    _row(table, "failure-free", "simulated", free, "-")
    for spec, r in zip(specs, runs, strict=True):
        table.add_section()
        s = r.summary()
        diff = mismatches(r.load, reference.load) if reference is not None else []
        bad |= bool(diff) or s["errors"] > 0
        outputs = _outputs(int(s["errors"]), diff, reference is not None)
        _row(table, r.policy, "live", s, outputs)
        predicted = predict(load, spec, failure, calibration, overheads[spec.policy]).summary()
        _row(table, r.policy, "simulated", predicted, "-")
    return table, bad


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
    """Run the workload per policy on a fresh cluster, crash a worker, print what it cost
    beside the simulator's prediction of the same run (from the workers' model calibrated on
    this machine)."""
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
    load = _requests(loaded, requests, rate, max_prompt, max_output)
    ssd_gbyte_s = _bandwidth_for(reload_s)
    out.print("calibrating the workers' model on this machine ...")
    try:
        calibration = _calibration()
    except ImportError as exc:
        raise _fail(f"the live cluster needs the executor extra (torch): {exc}", 1) from None
    out.print(calibration_line(calibration, ssd_gbyte_s), highlight=False)
    title = (
        f"{loaded.scenario.name}: live cluster vs simulator, {workers} workers, {requests} requests"
    )
    try:
        table, bad = compare_live(
            title,
            load,
            workers,
            names,
            failure,
            ssd_gbyte_s=ssd_gbyte_s,
            verify=verify,
            log_dir=log_dir,
            calibration=calibration,
            say=lambda text: out.print(text, highlight=False),
        )
    except RuntimeError as exc:
        raise _fail(str(exc), 1) from None
    out.print(table)
    if bad:
        raise typer.Exit(1)


#: ``lumen demo``'s live part: a short run that still crashes a worker mid-workload.
DEMO_LIVE_WORKERS = 3
DEMO_LIVE_REQUESTS = 36
DEMO_LIVE_RATE = 3.0
DEMO_LIVE_POLICIES = ("stop-and-restart", "lumen")
DEMO_LIVE_FAILURE = "2:1"
DEMO_LIVE_RELOAD_S = 2.0


def demo_live(scenario: str, console: Console, log_dir: Path = Path("out/demo-cluster")) -> bool:
    """``lumen demo``'s live part: a small cluster on loopback, one worker SIGKILLed and
    restarted under each of two policies, a failure-free reference for the token check, and
    the simulator's prediction of each run. Prints as it goes; returns False when a cluster
    did not start or a request was lost or differs. Without torch it prints a one-line note
    and returns True (the live part needs the ``executor`` extra)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        console.print(
            "note: the live-cluster part of the demo needs the executor extra"
            " (pip install -e '.[executor]'); skipped"
        )
        return True
    failure = parse_injection(DEMO_LIVE_FAILURE)
    load = _requests(load_scenario(scenario), DEMO_LIVE_REQUESTS, DEMO_LIVE_RATE, 48, 24)
    ssd_gbyte_s = _bandwidth_for(DEMO_LIVE_RELOAD_S)
    console.print(
        f"live cluster: {DEMO_LIVE_WORKERS} worker processes of a tiny model on this CPU,"
        f" {DEMO_LIVE_REQUESTS} requests of {scenario}'s workload; calibrating ...",
        highlight=False,
    )
    try:
        calibration = _calibration()
        console.print(calibration_line(calibration, ssd_gbyte_s), highlight=False)
        table, bad = compare_live(
            f"{scenario}: live cluster vs simulator, {DEMO_LIVE_WORKERS} workers,"
            f" {DEMO_LIVE_REQUESTS} requests, worker 1 SIGKILLed at {failure.at_s:g} s",
            load,
            DEMO_LIVE_WORKERS,
            DEMO_LIVE_POLICIES,
            failure,
            ssd_gbyte_s=ssd_gbyte_s,
            verify=True,
            log_dir=log_dir,
            calibration=calibration,
            say=lambda text: console.print(text, highlight=False),
        )
    except ImportError as exc:
        console.print(f"note: the live-cluster part of the demo is skipped: {exc}")
        return True
    except RuntimeError as exc:
        console.print(f"[bold red]error:[/bold red] live cluster: {escape(str(exc))}")
        return False
    console.print(table)
    if bad:
        console.print("[bold red]error:[/bold red] a live request was lost or its tokens differ")
    return not bad
