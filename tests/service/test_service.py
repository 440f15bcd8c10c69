"""The gRPC service end to end on a real server (port 0): answers equal the planner's, errors
map to the agreed status codes, deadlines bound the solver, plans stream to subscribers."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from lumen.planner.builders import recovery_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.decisions import RecoveryDecision, recovery_decision
from lumen.planner.domain import Request, WorkerState
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination
from lumen.planner.service.client import PlannerClient, PlannerError
from lumen.planner.service.controller import Controller, ControllerConfig
from lumen.planner.service.errors import InvalidField, NotFound, OutOfTime
from lumen.planner.service.server import PlannerServer
from lumen.planner.service.servicer import PlannerServicer, status_code
from lumen.planner.solve import solve
from lumen.proto.gen.v1 import planner_pb2 as pb

from .conftest import ServerFactory, planner_stub, small_state

Served = tuple[PlannerServer, PlannerClient]


def _stub(srv: PlannerServer) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(srv.target)
    return channel, planner_stub(channel)


def test_plan_recovery_over_the_wire_equals_the_direct_solve(
    served: Served, cost: CostModel
) -> None:
    _, client = served
    outcome = client.plan_recovery(failed=[1], method="greedy", time_limit_s=2.0)
    problem = recovery_problem(small_state(), cost, [1])
    direct = solve(problem, "greedy", SolveSettings(time_limit_s=2.0))
    assert outcome.status.termination is direct.termination
    assert outcome.status.objective == pytest.approx(direct.objective, rel=1e-12)
    assert direct.plan is not None
    assert outcome.plan == recovery_decision(problem, direct.plan)


def test_every_rpc_answers_on_the_reported_state(served: Served) -> None:
    _, client = served
    exact = client.plan_placement(method="cpsat", time_limit_s=5.0)
    assert exact.status.termination is Termination.OPTIMAL
    assert exact.plan is not None and set(exact.plan.holder_by_request) == set(range(6))
    for rid, holder in exact.plan.holder_by_request.items():
        home = small_state().request(rid).home
        assert holder != home and holder // 2 != home // 2  # another node
    reloading = small_state().with_worker_state(1, WorkerState.RELOADING)
    pairing = client.plan_pairing(reloading, recovering=[1], acceptance_rate=0.7, depth=3)
    assert pairing.plan is not None and pairing.status.termination is Termination.OPTIMAL
    placed = client.place_request(Request(10, 0, 200, 0, 200))
    assert placed.holder == 3
    inline = client.plan_recovery(small_state(), failed=[3])  # a snapshot given in the call
    assert inline.plan is not None
    assert {a.request_id for a in inline.plan.assignments} == {4, 5}


@pytest.mark.parametrize(
    ("call", "code", "detail"),
    [
        (lambda c: c.plan_recovery(failed=[9]), "NOT_FOUND", "failed_workers[0]: unknown worker 9"),
        (lambda c: c.plan_placement(request_ids=[0, 77]), "NOT_FOUND", "request_ids[1]"),
        (lambda c: c.plan_recovery(failed=[1, 1]), "INVALID_ARGUMENT", "failed_workers[1]"),
        (lambda c: c.plan_recovery(failed=[1], method="simplex"), "INVALID_ARGUMENT", "method"),
        (
            lambda c: c.plan_recovery(failed=[1], time_limit_s=float("nan")),
            "INVALID_ARGUMENT",
            "options.time_limit_ms",
        ),
        (lambda c: c.plan_recovery(), "INVALID_ARGUMENT", "no failed worker"),
        (
            lambda c: c.plan_pairing(recovering=[1], acceptance_rate=1.5),
            "INVALID_ARGUMENT",
            "acceptance_rate",
        ),
        (lambda c: c.place_request(Request(0, 0, 5, 0, 5)), "ALREADY_EXISTS", "request.id"),
        (lambda c: c.place_request(Request(9, 8, 5, 0, 5)), "NOT_FOUND", "request.home_worker"),
        (lambda c: c.report_failure([]), "INVALID_ARGUMENT", "failed_workers"),
        (
            lambda c: c.place_request(Request(9, 0, 5, 0, 5), rule="cpsat"),
            "INVALID_ARGUMENT",
            "options.method",
        ),
        (lambda c: c.plan_placement(alpha=-1.0), "INVALID_ARGUMENT", "settings.alpha"),
    ],
)
def test_errors_map_to_status_codes_naming_the_field(
    served: Served, call: Any, code: str, detail: str
) -> None:
    _, client = served
    with pytest.raises(PlannerError) as info:
        call(client)
    assert info.value.code == code
    assert detail in info.value.details


def test_bad_snapshots_name_the_field_path(served: Served) -> None:
    srv, _ = served
    channel, stub = _stub(srv)
    cases = {
        "state.workers": pb.ClusterState(kv_bytes_per_token=1),
        "state.workers[1].id": pb.ClusterState(
            workers=[
                pb.Worker(id=0, hardware="H200", state=pb.WORKER_STATE_SERVING),
                pb.Worker(id=0, hardware="H200", state=pb.WORKER_STATE_SERVING),
            ],
            kv_bytes_per_token=1,
        ),
        "state.requests[0].home_worker": pb.ClusterState(
            workers=[pb.Worker(id=0, hardware="H200", state=pb.WORKER_STATE_SERVING)],
            requests=[pb.RequestState(id=1, home_worker=5, prompt_tokens=1, max_tokens=1)],
            kv_bytes_per_token=1,
        ),
        "state.loads[0].waiting_time_ms": pb.ClusterState(
            workers=[pb.Worker(id=0, hardware="H200", state=pb.WORKER_STATE_SERVING)],
            loads={0: pb.WorkerLoad(waiting_time_ms=float("inf"))},
            kv_bytes_per_token=1,
        ),
        "state.workers[0].state": pb.ClusterState(
            workers=[pb.Worker(id=0, hardware="H200")], kv_bytes_per_token=1
        ),
    }
    for path, state in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.ReportClusterState(pb.ReportClusterStateRequest(state=state), timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, path
        assert (info.value.details() or "").startswith(path + ":"), info.value.details()
    channel.close()


def test_calls_before_any_report_are_failed_precondition(make_server: ServerFactory) -> None:
    _, client = make_server()
    with pytest.raises(PlannerError) as info:
        client.plan_recovery(failed=[0])
    assert info.value.code == "FAILED_PRECONDITION"


class FakeContext:
    """The parts of ``grpc.ServicerContext`` the servicer's settings use."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.callbacks: list[Any] = []

    def time_remaining(self) -> float | None:
        return self.remaining

    def add_callback(self, fn: Any) -> bool:
        self.callbacks.append(fn)
        return True


def test_the_deadline_bounds_the_solver_and_ending_the_call_cancels_it(
    config: ControllerConfig,
) -> None:
    servicer = PlannerServicer(Controller(config))
    asked = pb.SolveOptions(time_limit_ms=60_000)
    ctx = FakeContext(remaining=2.0)
    settings = servicer._settings(asked, ctx)
    assert 1.5 < settings.time_limit_s < 2.0  # the deadline, minus the reserve for the reply
    assert settings.cancel is not None and not settings.cancel.is_set()
    for fn in ctx.callbacks:  # the call ends (cancelled, deadline, disconnect)
        fn()
    assert settings.cancel.is_set()
    no_deadline = servicer._settings(asked, FakeContext(None))
    assert no_deadline.time_limit_s == 60.0
    default = servicer._settings(pb.SolveOptions(), FakeContext(None))
    assert default.time_limit_s == config.time_limit_s
    with pytest.raises(OutOfTime):
        servicer._settings(asked, FakeContext(0.0005))


def test_out_of_time_returns_the_best_plan_or_deadline_exceeded(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = served
    real = solve

    def feasible_at_time_limit(problem: Any, method: str, settings: SolveSettings) -> Any:
        result = real(problem, "greedy", settings)
        return SolveResult(
            "cpsat", Termination.FEASIBLE, Limit.TIME, result.objective, None, 1.0, result.plan
        )

    monkeypatch.setattr("lumen.planner.service.controller.solve", feasible_at_time_limit)
    best = client.plan_recovery(failed=[1], method="cpsat")
    assert best.plan is not None
    assert (best.status.termination, best.status.limit) == (Termination.FEASIBLE, Limit.TIME)

    def nothing_in_time(problem: Any, method: str, settings: SolveSettings) -> Any:
        return SolveResult("cpsat", Termination.NO_SOLUTION, Limit.TIME, wall_time_s=1.0)

    monkeypatch.setattr("lumen.planner.service.controller.solve", nothing_in_time)
    with pytest.raises(PlannerError) as info:
        client.plan_recovery(failed=[1], method="cpsat")
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert "before finding any plan" in info.value.details


class BlockingSolve:
    """Stands in for the solver: records its settings and waits for the cancel event."""

    def __init__(self) -> None:
        self.settings: SolveSettings | None = None
        self.cancelled_after: float | None = None

    def __call__(self, problem: Any, method: str, settings: SolveSettings) -> Any:
        self.settings = settings
        start = time.perf_counter()
        assert settings.cancel is not None
        if settings.cancel.wait(10.0):
            self.cancelled_after = time.perf_counter() - start
        return SolveResult("cpsat", Termination.NO_SOLUTION, Limit.CANCELLED)


def test_the_caller_deadline_reaches_the_solver_and_cancels_it(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = served
    blocking = BlockingSolve()
    monkeypatch.setattr("lumen.planner.service.controller.solve", blocking)
    with pytest.raises(PlannerError) as info:
        client.plan_recovery(failed=[1], method="cpsat", time_limit_s=60.0, timeout_s=0.5)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert blocking.settings is not None and blocking.settings.time_limit_s < 0.5
    deadline = time.monotonic() + 5
    while blocking.cancelled_after is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert blocking.cancelled_after is not None and blocking.cancelled_after < 1.0


def test_cancelling_the_call_stops_the_solve(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = served
    blocking = BlockingSolve()
    monkeypatch.setattr("lumen.planner.service.controller.solve", blocking)
    channel, stub = _stub(srv)
    call = stub.PlanRecovery.future(
        pb.PlanRecoveryRequest(failed_workers=[1], options=pb.SolveOptions(method="cpsat")),
        timeout=30,
    )
    deadline = time.monotonic() + 5
    while blocking.settings is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert blocking.settings is not None, "the solve did not start"
    call.cancel()
    while blocking.cancelled_after is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert blocking.cancelled_after is not None
    channel.close()


def test_status_table() -> None:
    assert status_code(InvalidField("x", "bad")) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_code(NotFound("x", "gone")) is grpc.StatusCode.NOT_FOUND
    assert status_code(OutOfTime("late")) is grpc.StatusCode.DEADLINE_EXCEEDED
    assert status_code(KeyError("bug")) is None  # -> INTERNAL


def test_a_subscriber_gets_the_recovery_plan_within_100_ms_of_the_failure(
    served: Served,
) -> None:
    _, client = served
    client.plan_recovery(failed=[1])  # warm up: the backend's module is imported on first use
    updates: list[tuple[float, Any]] = []
    subscribed = threading.Event()

    def watch() -> None:
        stream = client.watch_plans(timeout_s=10.0)
        subscribed.set()
        for update in stream:
            updates.append((time.perf_counter(), update))
            if update.kind == "recovery":
                break

    watcher = threading.Thread(target=watch)
    watcher.start()
    subscribed.wait(5)
    time.sleep(0.2)  # let the subscription reach the server
    sent = time.perf_counter()
    version = client.report_failure([1])
    watcher.join(5)
    assert updates, "no plan arrived"
    received, update = updates[-1]
    assert isinstance(update.plan, RecoveryDecision)
    assert update.state_version == version
    assert {a.request_id for a in update.plan.assignments} == {0, 1, 2}
    assert received - sent < 0.1, f"recovery plan after {1e3 * (received - sent):.1f} ms"


def test_watch_replays_buffered_plans_after_a_sequence(served: Served) -> None:
    _, client = served
    client.place_request(Request(10, 0, 200, 0, 200))
    client.place_request(Request(11, 1, 200, 0, 200))
    got = []
    for update in client.watch_plans(after_sequence=1, timeout_s=0.5):
        got.append(update)
        break
    assert [u.sequence for u in got] == [2]
    assert got[0].plan.holder_by_request == {11: 3}  # type: ignore[union-attr]
