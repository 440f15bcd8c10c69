"""Standard service hygiene: health, reflection, bearer token, TLS, metrics, graceful stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from lumen.planner.service.client import PlannerClient, PlannerError
from lumen.planner.service.controller import ControllerConfig
from lumen.planner.service.server import ServerConfig, create_server

from .conftest import ServerFactory, small_state

REPO = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service="lumen.v1.Planner"), timeout=5)
        return int(reply.status)


def test_health_is_not_serving_until_ready_and_again_before_stopping(
    config: ControllerConfig,
) -> None:
    srv, port = create_server(config)
    srv.listen()
    target = f"127.0.0.1:{port}"
    assert _health(target) == NOT_SERVING
    srv.mark_ready()
    assert _health(target) == SERVING
    channel = grpc.insecure_channel(target)
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="lumen.v1.Planner"), timeout=10
    )
    assert next(stream).status == SERVING
    srv.stop(grace_s=1.0)
    assert next(stream).status == NOT_SERVING  # announced before the server went away
    channel.close()


def test_reflection_lists_the_services(make_server: ServerFactory) -> None:
    srv, _ = make_server()
    with grpc.insecure_channel(srv.target) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"lumen.v1.Planner", "grpc.health.v1.Health"} <= services


def test_calls_without_the_token_are_unauthenticated(make_server: ServerFactory) -> None:
    srv, good = make_server(client_token="s3cret", token="s3cret")
    assert good.report_cluster_state(small_state()) == 1
    for token in (None, "wrong"):
        with PlannerClient(srv.target, token=token, timeout_s=5) as bad:
            with pytest.raises(PlannerError) as info:
                bad.plan_recovery(failed=[1])
            assert info.value.code == "UNAUTHENTICATED"
            with pytest.raises(PlannerError) as stream_info:
                next(iter(bad.watch_plans(timeout_s=2)))
            assert stream_info.value.code == "UNAUTHENTICATED"
            assert bad.health() == "SERVING"  # probes need no token
    assert good.plan_recovery(failed=[1]).plan is not None


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_with_tls_a_plaintext_client_cannot_connect(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    srv, _ = make_server(tls_cert=cert, tls_key=key)
    with PlannerClient(srv.target, timeout_s=1.0, retries=0) as plain:
        with pytest.raises(PlannerError) as info:
            plain.report_cluster_state(small_state())
        assert info.value.code == "UNAVAILABLE"
    with PlannerClient(f"localhost:{srv.port}", root_certificates=cert.read_bytes()) as secure:
        assert secure.report_cluster_state(small_state()) == 1


def test_metrics_count_rpcs_and_solves(make_server: ServerFactory) -> None:
    srv, client = make_server(metrics_port=0)
    client.report_cluster_state(small_state())
    client.plan_recovery(failed=[1], method="greedy")
    with pytest.raises(PlannerError):
        client.plan_recovery(failed=[9])
    assert srv.metrics_port is not None
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    assert 'lumen_planner_rpcs_total{code="OK",method="PlanRecovery"} 1.0' in text
    assert 'lumen_planner_rpcs_total{code="NOT_FOUND",method="PlanRecovery"} 1.0' in text
    assert (
        'lumen_planner_solves_total{method="greedy",problem="recovery",termination="feasible"}'
        in text
    )
    assert "lumen_planner_solve_seconds_bucket" in text
    assert "lumen_planner_rpc_latency_seconds_count" in text
    assert "lumen_planner_state_version 1.0" in text


def test_serve_stops_gracefully_on_sigterm() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lumen.cli import main; main()",
            "serve",
            "--address",
            "127.0.0.1:0",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on port" in line, line
        port = int(line.rsplit(" ", 1)[1])
        with PlannerClient(f"127.0.0.1:{port}", timeout_s=10) as client:
            assert client.health() == "SERVING"
            assert client.report_cluster_state(small_state()) == 1
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - start < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_config_checks_tls_pairs() -> None:
    with pytest.raises(ValueError, match="both"):
        ServerConfig(tls_cert=Path("cert.pem"))
