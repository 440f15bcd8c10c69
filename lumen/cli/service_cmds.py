"""Service commands: ``lumen serve`` runs the planner service; ``lumen plan ...`` calls one.

``lumen plan`` prints JSON (one document per call, one line per streamed plan) so that scripts
can consume it; failures print the server's status code and detail and exit 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from lumen.planner.builders import PlacementOptions
from lumen.planner.decisions import (
    Decision,
    Status,
    decision_to_dict,
    status_to_dict,
)
from lumen.planner.domain import Request
from lumen.planner.service.auth import read_token
from lumen.planner.service.budget import (
    DEFAULT_MAX_PROBLEM_BYTES,
    DEFAULT_MAX_PROBLEM_SECONDS,
    ProblemBudget,
)
from lumen.planner.service.client import PlannerClient, PlannerError
from lumen.planner.service.controller import DEFAULT_METHODS, ControllerConfig
from lumen.planner.service.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ServerConfig,
    create_server,
    serve,
)
from lumen.planner.solve import methods
from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import LoadedScenario, load_scenario
from lumen.scenarios.snapshot import steady_state_snapshot

err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

plan_app = typer.Typer(help="Call a running planner service.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.add_typer(plan_app, name="plan")


def controller_config(
    loaded: LoadedScenario,
    *,
    placement_method: str | None = None,
    recovery_method: str | None = None,
    pairing_method: str | None = None,
    time_limit_s: float = 1.0,
    reoptimize_interval_s: float | None = None,
) -> ControllerConfig:
    """The controller a scenario implies: its cost model, prefill chunk, placement settings
    (alpha, failure domains) and speculation parameters."""
    s = loaded.scenario
    chosen = {
        "placement": placement_method or DEFAULT_METHODS["placement"],
        "recovery": recovery_method or DEFAULT_METHODS["recovery"],
        "pairing": pairing_method or DEFAULT_METHODS["pairing"],
    }
    return ControllerConfig(
        cost=loaded.cost_model,
        prefill_chunk_tokens=s.cluster.prefill_chunk_tokens,
        placement=PlacementOptions(
            alpha=s.planner.alpha, require_other_node=s.cluster.holder_outside_node
        ),
        acceptance_rate=s.speculation.acceptance_rate,
        depth=s.speculation.depth,
        methods=chosen,
        time_limit_s=time_limit_s,
        reoptimize_interval_s=reoptimize_interval_s
        if reoptimize_interval_s is not None
        else s.planner.reoptimize_interval_s,
    )


def _load(scenario: str) -> LoadedScenario:
    try:
        return load_scenario(scenario)
    except ScenarioError as exc:
        err.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None


def _check_method(kind: str, name: str | None) -> None:
    if name is not None and name not in methods(kind):
        err.print(
            f"error: unknown {kind} method {escape(repr(name))};"
            f" choose from {', '.join(methods(kind))}",
            highlight=False,
        )
        raise typer.Exit(2)


def _method_option(kind: str, own: str) -> Any:
    """``--KIND-method``: the backend for calls that name none and for ``own``."""
    label = "Draft-pairing" if kind == "pairing" else kind.capitalize()
    return typer.Option(
        None,
        f"--{kind}-method",
        help=f"{label} backend for calls that name none and for {own}"
        f" (default {DEFAULT_METHODS[kind]}; one of {', '.join(methods(kind))}).",
    )


def serve_cmd(
    address: str = typer.Option("127.0.0.1:50051", "--address", help="HOST:PORT to listen on."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Server certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Server private key (PEM)."),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Require 'authorization: Bearer <token>' with this token."
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus /metrics on this port of the --address host (0: any free port;"
        " the port is printed).",
    ),
    scenario: str = typer.Option(
        "paper-8w-qwen3-14b", "--scenario", help="Scenario whose cost model and settings to use."
    ),
    placement_method: str | None = _method_option("placement", "the service's own plans"),
    recovery_method: str | None = _method_option("recovery", "the plans after a failure"),
    pairing_method: str | None = _method_option("pairing", "the plans after a failure"),
    time_limit: float = typer.Option(
        1.0, "--time-limit", min=0.001, help="Default solver limit (seconds)."
    ),
    reoptimize_interval: float | None = typer.Option(
        None, "--reoptimize-interval", min=0.001, help="Re-optimize placement every S seconds."
    ),
    max_workers: int = typer.Option(
        64, "--max-workers", min=4, help="Handler threads (unary calls, streams, health)."
    ),
    max_streams: int | None = typer.Option(
        None,
        "--max-streams",
        min=1,
        help="Open WatchPlans streams allowed; beyond: RESOURCE_EXHAUSTED (default: half of"
        " --max-workers, at most --max-workers - 2).",
    ),
    max_message_mib: float = typer.Option(
        DEFAULT_MAX_MESSAGE_BYTES / 2**20,
        "--max-message-mib",
        min=0.001,
        help="Largest message received or sent (MiB); beyond: RESOURCE_EXHAUSTED.",
    ),
    max_problem_mib: float = typer.Option(
        DEFAULT_MAX_PROBLEM_BYTES / 2**20,
        "--max-problem-mib",
        min=1,
        help="Most memory one planning problem may need by the service's estimate (MiB);"
        " beyond: RESOURCE_EXHAUSTED before anything is built.",
    ),
    max_problem_seconds: float = typer.Option(
        DEFAULT_MAX_PROBLEM_SECONDS,
        "--max-problem-seconds",
        min=0.001,
        help="Most time posing one planning problem may take by the service's estimate;"
        " beyond: RESOURCE_EXHAUSTED.",
    ),
) -> None:
    """Run the planner gRPC service until SIGTERM (graceful stop)."""
    if (tls_cert is None) != (tls_key is None):
        err.print("error: --tls-cert and --tls-key go together")
        raise typer.Exit(2)
    for kind, name in (
        ("placement", placement_method),
        ("recovery", recovery_method),
        ("pairing", pairing_method),
    ):
        _check_method(kind, name)
    token = None
    if token_file is not None:
        try:
            token = read_token(token_file)
        except (OSError, ValueError) as exc:
            err.print(f"error: --token-file: {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
    config = controller_config(
        _load(scenario),
        placement_method=placement_method,
        recovery_method=recovery_method,
        pairing_method=pairing_method,
        time_limit_s=time_limit,
        reoptimize_interval_s=reoptimize_interval,
    )
    config = dataclasses.replace(
        config,
        budget=ProblemBudget(
            max_bytes=int(max_problem_mib * 2**20), max_seconds=max_problem_seconds
        ),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        server, port = create_server(
            config,
            ServerConfig(
                address=address,
                tls_cert=tls_cert,
                tls_key=tls_key,
                token=token,
                metrics_port=metrics_port,
                max_workers=max_workers,
                max_streams=max_streams,
                max_message_bytes=int(max_message_mib * 2**20),
            ),
        )
    except (OSError, RuntimeError, ValueError) as exc:
        err.print(f"error: cannot serve on {escape(address)}: {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    print(f"lumen planner listening on port {port}", flush=True)

    def on_ready() -> None:
        if server.metrics_port is not None:
            host = server.config.metrics_host
            print(
                f"lumen planner metrics on http://{host}:{server.metrics_port}/metrics", flush=True
            )

    serve(server, on_ready)


# -- lumen plan ------------------------------------------------------------------------------------


@plan_app.callback()
def _plan_root(
    ctx: typer.Context,
    address: str = typer.Option("127.0.0.1:50051", "--address", help="HOST:PORT of the service."),
    token_file: Path | None = typer.Option(None, "--token-file", help="Bearer token file."),
    tls_ca: Path | None = typer.Option(
        None, "--tls-ca", help="Dial with TLS, trusting this CA certificate (PEM)."
    ),
    timeout: float = typer.Option(10.0, "--timeout", min=0.001, help="Call deadline (seconds)."),
) -> None:
    """Options shared by every ``lumen plan`` command."""
    try:
        token = read_token(token_file) if token_file is not None else None
        roots = tls_ca.read_bytes() if tls_ca is not None else None
    except (OSError, ValueError) as exc:
        err.print(f"error: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    ctx.obj = PlannerClient(address, token=token, root_certificates=roots, timeout_s=timeout)
    ctx.call_on_close(ctx.obj.close)


def _client(ctx: typer.Context) -> PlannerClient:
    client: PlannerClient = ctx.obj
    return client


def _emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, sort_keys=True), flush=True)


def _outcome(status: Status, plan: Decision | None) -> None:
    _emit({"status": status_to_dict(status), "plan": decision_to_dict(plan)})


def _fail(exc: PlannerError) -> typer.Exit:
    err.print(f"error: {exc.code}: {escape(exc.details)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _ids(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()] if text else []
    except ValueError:
        err.print(
            f"error: {option}: expected comma-separated integers, got {escape(repr(text))}",
            highlight=False,
        )
        raise typer.Exit(2) from None


@plan_app.command("health")
def health_cmd(ctx: typer.Context) -> None:
    """Print the service's health status (exit 1 unless SERVING)."""
    try:
        status = _client(ctx).health()
    except PlannerError as exc:
        raise _fail(exc) from None
    _emit({"health": status})
    if status != "SERVING":
        raise typer.Exit(1)


@plan_app.command("report")
def report_cmd(
    ctx: typer.Context,
    scenario: str = typer.Argument(..., help="Report a steady-state snapshot of this scenario."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Report a cluster snapshot (drawn from a scenario, as ``lumen solve`` does)."""
    state = steady_state_snapshot(_load(scenario), seed)
    try:
        version = _client(ctx).report_cluster_state(state)
    except PlannerError as exc:
        raise _fail(exc) from None
    _emit(
        {"state_version": version, "workers": len(state.workers), "requests": len(state.requests)}
    )


@plan_app.command("fail")
def fail_cmd(
    ctx: typer.Context, workers: str = typer.Argument(..., help="Failed worker ids, e.g. 3,5.")
) -> None:
    """Report failed workers (the plans follow on ``lumen plan watch``)."""
    try:
        version = _client(ctx).report_failure(_ids(workers, "WORKERS"))
    except PlannerError as exc:
        raise _fail(exc) from None
    _emit({"state_version": version})


@plan_app.command("recovery")
def recovery_cmd(
    ctx: typer.Context,
    failed: str = typer.Option("", "--failed", help="Failed worker ids (default: the view's)."),
    method: str = typer.Option("", "--method", help="Backend (default: the service's)."),
    time_limit: float | None = typer.Option(None, "--time-limit", min=0.001),
) -> None:
    """Plan recovery on the reported state."""
    try:
        o = _client(ctx).plan_recovery(
            failed=_ids(failed, "--failed"), method=method, time_limit_s=time_limit
        )
    except PlannerError as exc:
        raise _fail(exc) from None
    _outcome(o.status, o.plan)


@plan_app.command("placement")
def placement_cmd(
    ctx: typer.Context,
    method: str = typer.Option("", "--method", help="Backend (default: the service's)."),
    time_limit: float | None = typer.Option(None, "--time-limit", min=0.001),
) -> None:
    """Plan checkpoint placement of every request of the reported state."""
    try:
        o = _client(ctx).plan_placement(method=method, time_limit_s=time_limit)
    except PlannerError as exc:
        raise _fail(exc) from None
    _outcome(o.status, o.plan)


@plan_app.command("pairing")
def pairing_cmd(
    ctx: typer.Context,
    recovering: str = typer.Option("", "--recovering", help="Recovering worker ids."),
    method: str = typer.Option("", "--method", help="Backend (default: the service's)."),
) -> None:
    """Plan draft pairing on the reported state."""
    try:
        o = _client(ctx).plan_pairing(recovering=_ids(recovering, "--recovering"), method=method)
    except PlannerError as exc:
        raise _fail(exc) from None
    _outcome(o.status, o.plan)


@plan_app.command("place")
def place_cmd(
    ctx: typer.Context,
    request_id: int = typer.Option(..., "--id", min=0),
    home: int = typer.Option(..., "--home", min=0),
    prompt_tokens: int = typer.Option(..., "--prompt-tokens", min=1),
    max_tokens: int = typer.Option(..., "--max-tokens", min=1),
    rule: str = typer.Option("", "--rule", help="greedy (default), lumen or fixed-ring."),
) -> None:
    """Place one new request incrementally."""
    try:
        placed = _client(ctx).place_request(
            Request(request_id, home, prompt_tokens, 0, max_tokens), rule=rule
        )
    except PlannerError as exc:
        raise _fail(exc) from None
    _emit({"status": status_to_dict(placed.status), "holder": placed.holder})


@plan_app.command("watch")
def watch_cmd(
    ctx: typer.Context,
    after: int = typer.Option(0, "--after", min=0, help="Replay buffered plans after this."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after N plans."),
    timeout: float | None = typer.Option(None, "--for", min=0.001, help="Stop after S seconds."),
) -> None:
    """Print plans as the service publishes them, one JSON line each."""
    seen = 0
    try:
        for update in _client(ctx).watch_plans(after, timeout_s=timeout):
            _emit(
                {
                    "sequence": update.sequence,
                    "kind": update.kind,
                    "state_version": update.state_version,
                    "status": status_to_dict(update.status),
                    "plan": decision_to_dict(update.plan),
                }
            )
            seen += 1
            if count is not None and seen >= count:
                break
    except PlannerError as exc:
        if exc.code != "DEADLINE_EXCEEDED":  # --for elapsed
            raise _fail(exc) from None
