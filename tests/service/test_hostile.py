"""Hostile input against the planner service (one test or more per limit of docs/service.md):
oversized problems, deadlines that cut a build, too many streams, broken protobuf bytes (a
fixed-seed fuzz through a raw channel), unauthenticated garbage, questionable snapshots, the
metrics endpoint's address and reflection v1. Health keeps answering throughout."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from typer.testing import CliRunner

from lumen.cli import app
from lumen.planner.builders import BuildCancelled, recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.planner.heuristics import recovery_scale
from lumen.planner.heuristics.classed_state import Inputs, State
from lumen.planner.problems import IntArray
from lumen.planner.service import wire
from lumen.planner.service.budget import ProblemBudget, estimate
from lumen.planner.service.controller import ControllerConfig
from lumen.planner.service.server import DEFAULT_MAX_MESSAGE_BYTES, PlannerServer
from lumen.planner.service.servicer import (
    DEADLINE_RESERVE_FRACTION,
    DEADLINE_RESERVE_S,
    MIN_SOLVE_S,
)
from lumen.proto.gen.v1 import planner_pb2 as pb

from .conftest import CLEAR, ServerFactory, planner_stub, small_state

REPO = Path(__file__).resolve().parents[2]
SEED = 20_261_204
METHODS = [m.name for m in pb.DESCRIPTOR.services_by_name["Planner"].methods]
#: Answers a server may give to bytes it cannot trust (a size limit too); INTERNAL and UNKNOWN
#: mean a bug.
CLEAR_OR_LIMITED = CLEAR | {grpc.StatusCode.RESOURCE_EXHAUSTED}


def wide_state(workers: int, requests: int, failed: int = 4, kv_room: int = 0) -> ClusterState:
    """``requests`` requests, all homed on the first ``failed`` workers, which are failed: a
    recovery problem of ``requests`` x ``workers`` cells (``kv_room``: KV tokens free on each
    worker, so that the problem is feasible; queues of 0-6 requests)."""
    ws = [
        Worker(k, k // 8, "A800-80GB", WorkerState.FAILED if k < failed else WorkerState.SERVING)
        for k in range(workers)
    ]
    reqs = [Request(i, i % failed, 1000, 10, 500) for i in range(requests)]
    loads = {
        k: WorkerLoad(queue_length=k % 7, gpu_kv_capacity_tokens=kv_room) for k in range(workers)
    }
    return ClusterState.build(ws, reqs, loads if kv_room else {}, kv_bytes_per_token=163_840)


def sample(srv: PlannerServer, name: str, **labels: str) -> float:
    value = srv.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="lumen.v1.Planner"), timeout=5
        )
        return int(reply.status)


def raw_call(
    channel: grpc.Channel, method: str, data: bytes, timeout: float = 10
) -> grpc.StatusCode:
    """Send ``data`` as the request of ``method`` as is (identity serializers)."""
    path = f"/lumen.v1.Planner/{method}"
    try:
        if method == "WatchPlans":
            for _ in channel.unary_stream(path)(data, timeout=0.3):
                pass
        else:
            channel.unary_unary(path)(data, timeout=timeout)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        if method == "WatchPlans" and code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK  # an open stream, cut by our deadline
        return code
    return grpc.StatusCode.OK


# -- item 1: problem size budget and cancellable building ------------------------------------------


def test_a_problem_above_the_budget_is_refused_before_building(
    make_server: ServerFactory, cost: CostModel
) -> None:
    config = ControllerConfig(cost=cost, budget=ProblemBudget(max_bytes=8 << 20))
    srv, _ = make_server(config)
    state = wide_state(256, 2_000)  # 512,000 cells, about 47 MiB by the estimate
    assert estimate("recovery", "greedy", 2_000, 256).bytes > 8 << 20
    request = pb.PlanRecoveryRequest(state=wire.cluster_state_to_proto(state))
    with grpc.insecure_channel(srv.target) as channel, pytest.raises(grpc.RpcError) as info:
        planner_stub(channel).PlanRecovery(request, timeout=30)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MiB" in (info.value.details() or "")
    assert (
        sample(
            srv, "lumen_planner_problems_abandoned_total", problem="recovery", reason="too_large"
        )
        == 1
    )
    code = {"method": "PlanRecovery", "code": "RESOURCE_EXHAUSTED"}
    assert sample(srv, "lumen_planner_rpcs_total", **code) == 1
    assert health(srv.target) == health_pb2.HealthCheckResponse.SERVING


def test_a_deadline_stops_the_work_on_a_large_problem(
    make_server: ServerFactory, cost: CostModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ControllerConfig(cost=cost, budget=ProblemBudget(max_bytes=None, max_seconds=None))
    srv, _ = make_server(config)
    # 8 M cells with room on every survivor: built in a fraction of a second on machine classes,
    # then greedy insertion, slowed to at least 2 s here so that the deadline cuts it on any
    # machine (a fast one inserts all 4,000 requests in about 0.03 s).
    insert = recovery_scale._insert

    def slow_insert(inputs: Inputs, state: State, order: IntArray, start: int, stop: int) -> int:
        time.sleep(0.0005 * (stop - start))
        return insert(inputs, state, order, start, stop)

    monkeypatch.setattr(recovery_scale, "_insert", slow_insert)
    state = wide_state(2_048, 4_000, kv_room=200_000)
    request = pb.PlanRecoveryRequest(state=wire.cluster_state_to_proto(state))
    request.options.method = "greedy"
    with grpc.insecure_channel(srv.target) as channel, pytest.raises(grpc.RpcError) as info:
        planner_stub(channel).PlanRecovery(request, timeout=0.3)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    abandoned = {"problem": "recovery", "reason": "cancelled"}
    stopped = {"problem": "recovery", "method": "greedy", "termination": "no solution"}
    assert wait_for(
        lambda: (
            sample(srv, "lumen_planner_problems_abandoned_total", **abandoned)
            + sample(srv, "lumen_planner_solves_total", **stopped)
            == 1
        )
    )
    assert sample(srv, "lumen_planner_solves_total", problem="recovery", method="greedy",
                  termination="feasible") == 0  # fmt: skip
    # Stopped near the deadline, far from the 2 s the insertion needs.
    assert sample(srv, "lumen_planner_solve_seconds_sum", problem="recovery", method="greedy") < 1.5
    assert health(srv.target) == health_pb2.HealthCheckResponse.SERVING


def test_the_builders_stop_when_cancelled(cost: CostModel) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BuildCancelled):
        recovery_problem(wide_state(16, 40), cost, [0, 1, 2, 3], cancel=cancel)


# -- item 2: stream cap ----------------------------------------------------------------------------


def test_streams_beyond_the_cap_are_refused_and_health_and_unary_calls_still_answer(
    make_server: ServerFactory,
) -> None:
    srv, client = make_server(max_workers=6, max_streams=3)
    channel = grpc.insecure_channel(srv.target)
    stub = planner_stub(channel)
    streams = [stub.WatchPlans(pb.WatchPlansRequest(), timeout=30) for _ in range(3)]
    assert wait_for(lambda: srv.metrics.subscribers._value.get() == 3, 10)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(stub.WatchPlans(pb.WatchPlansRequest(), timeout=10)))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "WatchPlans streams" in (info.value.details() or "")
    # Threads are left for health checks and unary calls while the capped streams stay open.
    assert health(srv.target) == health_pb2.HealthCheckResponse.SERVING
    assert client.report_cluster_state(small_state()) >= 1
    for stream in streams:
        stream.cancel()
    assert wait_for(lambda: sample(srv, "lumen_planner_rpcs_total", method="WatchPlans",
                                   code="CANCELLED") == 3)  # fmt: skip
    exhausted = {"method": "WatchPlans", "code": "RESOURCE_EXHAUSTED"}
    assert sample(srv, "lumen_planner_rpcs_total", **exhausted) == 1
    assert sample(srv, "lumen_planner_rpcs_total", method="WatchPlans", code="OK") == 0
    # Stream lifetimes have their own histogram; the unary latency histogram has none of them.
    assert sample(srv, "lumen_planner_stream_seconds_count", method="WatchPlans") == 4
    assert sample(srv, "lumen_planner_rpc_latency_seconds_count", method="WatchPlans") == 0
    channel.close()


# -- item 3: broken protobuf bytes -----------------------------------------------------------------


def _hostile_bytes(rng: random.Random, valid: bytes) -> Iterator[bytes]:
    """Random bytes, truncations and bit flips of a valid message, and fixed broken shapes."""
    yield b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field longer than the message
    yield b"\xff" * 64  # an unterminated varint
    yield b"\x0a\x80" + b"\x0a\x80" * 200  # nested lengths that never close
    for _ in range(12):
        yield bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 256)))
    for _ in range(6):
        yield valid[: rng.randint(0, max(0, len(valid) - 1))]
    for _ in range(6):
        flipped = bytearray(valid)
        if flipped:
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        yield bytes(flipped)


def _valid_request(method: str) -> bytes:
    state = wire.cluster_state_to_proto(small_state())
    messages: dict[str, Any] = {
        "PlanRecovery": pb.PlanRecoveryRequest(state=state, failed_workers=[1]),
        "PlanPlacement": pb.PlanPlacementRequest(state=state),
        "PlanPairing": pb.PlanPairingRequest(state=state, recovering_workers=[1]),
        "ReportClusterState": pb.ReportClusterStateRequest(state=state),
        "PlaceRequest": pb.PlaceRequestRequest(
            request=wire.request_to_proto(Request(50, 0, 9, 0, 9))
        ),
        "ReportFailure": pb.ReportFailureRequest(failed_workers=[3]),
        "WatchPlans": pb.WatchPlansRequest(after_sequence=3),
    }
    return bytes(messages[method].SerializeToString())


def test_broken_bytes_get_invalid_argument_with_one_log_line(
    served: tuple[PlannerServer, Any], caplog: pytest.LogCaptureFixture
) -> None:
    srv, _ = served
    rng = random.Random(SEED)
    codes: dict[grpc.StatusCode, int] = {}
    with caplog.at_level(logging.WARNING), grpc.insecure_channel(srv.target) as channel:
        for method in METHODS:
            undecodable = raw_call(channel, method, b"\x0a\xff\xff\xff\xff\x0f")
            assert undecodable is grpc.StatusCode.INVALID_ARGUMENT, method
            for data in _hostile_bytes(rng, _valid_request(method)):
                code = raw_call(channel, method, data)
                assert code in CLEAR_OR_LIMITED, (method, code, data[:32])
                codes[code] = codes.get(code, 0) + 1
            assert health(srv.target) == health_pb2.HealthCheckResponse.SERVING
    assert codes[grpc.StatusCode.INVALID_ARGUMENT] > len(METHODS) * 3
    malformed = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert malformed and all(r.exc_info is None and "\n" not in r.getMessage() for r in malformed)
    assert not [r for r in caplog.records if r.exc_info is not None]  # no traceback at all
    for method in METHODS:  # decode failures are counted
        assert sample(srv, "lumen_planner_rpcs_total", method=method, code="INVALID_ARGUMENT") >= 1


# -- item 4: authentication before decoding, message size --------------------------------------


def test_unauthenticated_garbage_is_refused_without_decoding(make_server: ServerFactory) -> None:
    srv, _ = make_server(token="s3cret")
    garbage = b"\x0a\xff\xff\xff\xff\x0f" + b"\xff" * (2 << 20)  # 2 MiB that no parser accepts
    with grpc.insecure_channel(srv.target) as channel:
        for method in METHODS:
            assert raw_call(channel, method, garbage) is grpc.StatusCode.UNAUTHENTICATED, method
    assert health(srv.target) == health_pb2.HealthCheckResponse.SERVING


def test_messages_above_the_small_default_cap_are_refused(make_server: ServerFactory) -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 16 << 20
    srv, _ = make_server()
    big = b"\x08\x01" * (9 << 20)  # 18 MiB of failed_workers: [1, 1, ...]
    assert len(big) > DEFAULT_MAX_MESSAGE_BYTES
    with grpc.insecure_channel(srv.target, options=[("grpc.max_send_message_length", -1)]) as ch:
        assert raw_call(ch, "ReportFailure", big) is grpc.StatusCode.RESOURCE_EXHAUSTED
    small, _ = make_server(max_message_bytes=4096)
    with grpc.insecure_channel(small.target) as channel:
        assert raw_call(channel, "ReportFailure", b"\x08\x01" * 4096) is (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )


def test_a_token_without_tls_is_warned_about(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        make_server(token="s3cret")
    assert any("TLS is off" in r.getMessage() for r in caplog.records)


# -- item 5: questionable snapshots --------------------------------------------------------------


def _state(**load: int) -> pb.ClusterState:
    state = wire.cluster_state_to_proto(small_state())
    for key, value in load.items():
        setattr(state.loads[0], key, value)
    return state


@pytest.mark.parametrize(
    ("state", "path"),
    [
        (
            pb.ClusterState(
                workers=[pb.Worker(id=0, hardware="TPU", state=pb.WORKER_STATE_SERVING)],
                kv_bytes_per_token=1,
            ),
            "state.workers[0].hardware",
        ),
        (_state(gpu_kv_used_tokens=400_000), "state.loads[0].gpu_kv_used_tokens"),
        (
            _state(gpu_kv_capacity_tokens=0, gpu_kv_used_tokens=0),
            "state.loads[0].gpu_kv_capacity_tokens",
        ),
        (_state(host_reserved_bytes=81 * 10**9), "state.loads[0].host_reserved_bytes"),
    ],
)
def test_questionable_snapshots_are_invalid_naming_the_field(
    served: tuple[PlannerServer, Any], state: pb.ClusterState, path: str
) -> None:
    srv, _ = served
    with grpc.insecure_channel(srv.target) as channel, pytest.raises(grpc.RpcError) as info:
        planner_stub(channel).ReportClusterState(
            pb.ReportClusterStateRequest(state=state), timeout=10
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(path + ":"), info.value.details()


def test_pairing_serving_workers_as_recovering_is_invalid(
    served: tuple[PlannerServer, Any],
) -> None:
    srv, _ = served
    with grpc.insecure_channel(srv.target) as channel, pytest.raises(grpc.RpcError) as info:
        planner_stub(channel).PlanPairing(
            pb.PlanPairingRequest(recovering_workers=[3, 1]), timeout=10
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("recovering_workers[0]:")


# -- item 6: metrics address, reflection v1, help ----------------------------------------------


def test_metrics_bind_the_grpc_host(make_server: ServerFactory) -> None:
    srv, _ = make_server(address="127.0.0.1:0", metrics_port=0)
    assert srv.metrics.bound is not None
    host, port = srv.metrics.bound
    assert srv.metrics_port is not None
    assert host == "127.0.0.1" and port == srv.metrics_port > 0


def test_reflection_v1_lists_the_services(make_server: ServerFactory) -> None:
    srv, _ = make_server()
    with grpc.insecure_channel(srv.target) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        replies = list(
            call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        )
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"lumen.v1.Planner", "grpc.reflection.v1.ServerReflection"} <= names


def test_serve_help_describes_every_method_option() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())
    for kind in ("Placement", "Recovery", "Draft-pairing"):
        assert f"{kind} backend for calls that name none" in text
    for option in ("--max-streams", "--max-message-mib", "--max-problem-mib"):
        assert option in text


def test_serve_prints_the_metrics_port_and_warns_about_a_token_without_tls(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n", encoding="utf-8")
    args = ["serve", "--address", "127.0.0.1:0", "--metrics-port", "0"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lumen.cli import main; main()",
            *args,
            "--token-file",
            str(token),
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("/metrics" in line for line in lines) and len(lines) < 20:
            lines.append(proc.stdout.readline())
        url = next(line.split(" on ", 1)[1].strip() for line in lines if "/metrics" in line)
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert b"lumen_planner_subscribers" in reply.read()
        assert any("TLS is off" in line for line in lines), lines
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_deadline_reserve_in_the_docs_is_the_code_s() -> None:
    text = " ".join((REPO / "docs" / "service.md").read_text(encoding="utf-8").split())
    reserve = f"{100 * DEADLINE_RESERVE_FRACTION:g} %, at least {DEADLINE_RESERVE_S * 1e3:g} ms"
    assert reserve in text
    assert f"less than {MIN_SOLVE_S * 1e3:g} ms left" in text
