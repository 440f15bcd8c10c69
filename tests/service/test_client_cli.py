"""The typed client's retries and the ``lumen plan`` / ``lumen serve`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from lumen.cli import app
from lumen.planner.service.client import PlannerClient, PlannerError

from .conftest import ServerFactory

runner = CliRunner()


class Unavailable(grpc.RpcError):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection refused"


class FlakyMethod:
    """Fails with UNAVAILABLE ``failures`` times, then answers; records each call's timeout."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.timeouts: list[float] = []

    def __call__(self, request: Any, timeout: float, metadata: Any) -> str:
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.failures:
            raise Unavailable()
        return "reply"


def test_client_retries_unavailable_within_its_deadline() -> None:
    client = PlannerClient("127.0.0.1:1", timeout_s=5.0, retries=3, backoff_s=0.001)
    flaky = FlakyMethod(failures=2)
    assert client._call(flaky, None, None) == "reply"
    assert len(flaky.timeouts) == 3
    assert flaky.timeouts[0] >= flaky.timeouts[1] >= flaky.timeouts[2]  # one shared deadline
    hopeless = FlakyMethod(failures=10)
    with pytest.raises(PlannerError) as info:
        client._call(hopeless, None, None)
    assert info.value.code == "UNAVAILABLE" and len(hopeless.timeouts) == 4
    client.close()


def test_client_against_nothing_gives_unavailable() -> None:
    client = PlannerClient("127.0.0.1:1", timeout_s=1.0, retries=1, backoff_s=0.01)
    with client, pytest.raises(PlannerError) as info:
        client.health()
    assert info.value.code == "UNAVAILABLE"


def _plan(target: str, *args: str) -> Any:
    result = runner.invoke(app, ["plan", "--address", target, *args])
    return result


def test_plan_commands_call_a_running_service(make_server: ServerFactory) -> None:
    srv, _ = make_server()
    target = srv.target
    health = _plan(target, "health")
    assert health.exit_code == 0 and json.loads(health.output) == {"health": "SERVING"}
    missing = _plan(target, "recovery", "--failed", "3")
    assert missing.exit_code == 1 and "FAILED_PRECONDITION" in missing.output
    report = _plan(target, "report", "failures-8w-x2")
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["workers"] == 8
    recovery = _plan(target, "recovery", "--failed", "3,5", "--method", "greedy")
    assert recovery.exit_code == 0, recovery.output
    doc = json.loads(recovery.output)
    assert doc["status"]["termination"] == "feasible"
    assignments = doc["plan"]["assignments"]
    assert assignments and {a["destination_worker"] for a in assignments} <= set(range(8))
    assert len({a["request_id"] for a in assignments}) == len(assignments)  # each once
    place = _plan(
        target,
        "place",
        "--id",
        "999999",
        "--home",
        "0",
        "--prompt-tokens",
        "100",
        "--max-tokens",
        "50",
    )
    assert place.exit_code == 0 and json.loads(place.output)["holder"] not in (None, 0, 1)
    fail = _plan(target, "fail", "3")
    assert fail.exit_code == 0 and "state_version" in fail.output
    watch = _plan(target, "watch", "--after", "1", "--count", "2", "--for", "5")
    kinds = [json.loads(line)["kind"] for line in watch.output.splitlines()]
    assert kinds == ["recovery", "pairing"]
    unknown = _plan(target, "pairing", "--recovering", "42")
    assert (
        unknown.exit_code == 1
        and "NOT_FOUND: recovering_workers[0]: unknown worker 42" in unknown.output
    )


def test_serve_refuses_bad_options(tmp_path: Path) -> None:
    half_tls = runner.invoke(app, ["serve", "--tls-cert", str(tmp_path / "c.pem")])
    assert half_tls.exit_code == 2 and "go together" in half_tls.output
    empty = tmp_path / "token"
    empty.write_text("\n")
    no_token = runner.invoke(app, ["serve", "--token-file", str(empty)])
    assert no_token.exit_code == 2 and "empty" in no_token.output
    bad_method = runner.invoke(app, ["serve", "--recovery-method", "simplex"])
    assert bad_method.exit_code == 2 and "unknown recovery method" in bad_method.output
