"""Every RPC under malformed and extreme input (hypothesis): empty, negative, huge, NaN, unknown
and duplicate ids. Each call gets a clear status (never INTERNAL or UNKNOWN, always a detail),
and the server keeps serving."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumen.planner.service import wire
from lumen.planner.service.controller import ControllerConfig
from lumen.planner.service.server import PlannerServer, ServerConfig, create_server
from lumen.proto.gen.v1 import planner_pb2 as pb

from .conftest import CLEAR, planner_stub, small_state

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

U32 = st.one_of(st.integers(0, 9), st.sampled_from([2**32 - 1, 2**31, 1_000_000]))
U64 = st.one_of(st.integers(0, 10**6), st.sampled_from([2**64 - 1, 2**60, 10**12]))
REAL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e308, -0.0, 0.5, 1.0, math.nan, math.inf]),
)
#: One flaw per snapshot (None: a well-formed one), so that calls also reach the planner.
STATE_FLAWS = [None] * 6 + ["hardware", "state", "wait", "huge", "kv", "duplicate"]
STATE_FLAWS += ["empty", "home", "holder", "prompt", "generated", "checkpointed", "load"]
STATE_FLAWS += ["overfull", "no-capacity", "reserved"]
OPTION_FLAWS = [None] * 8 + ["method", "time", "threads", "seed", "gap"]


def _worker_state(value: int) -> pb.WorkerState:
    """Any integer, known to the enum or not (proto3 enums are open)."""
    return cast(pb.WorkerState, value)


@st.composite
def cluster_states(draw: st.DrawFn) -> pb.ClusterState:
    flaw = draw(st.sampled_from(STATE_FLAWS))
    ids = draw(st.lists(st.integers(0, 6), min_size=2, max_size=6, unique=True))
    if flaw == "duplicate":
        ids.append(ids[0])
    if flaw == "empty":
        ids = []
    workers = [pb.Worker(id=w, node=draw(st.integers(0, 2)), hardware="A800-80GB") for w in ids]
    for w in workers:
        w.state = draw(st.sampled_from([1, 1, 1, 2, 3, 5]).map(_worker_state))
    loads = {
        w: pb.WorkerLoad(
            queue_length=draw(st.integers(0, 20)),
            waiting_time_ms=draw(st.floats(0, 1e4)),
            gpu_kv_used_tokens=draw(st.integers(0, 10**5)),
            gpu_kv_capacity_tokens=draw(st.integers(10**5, 3 * 10**5)),
            host_budget_bytes=draw(st.integers(0, 10**11)),
        )
        for w in ids
    }
    requests = []
    for k in range(draw(st.integers(0, 8)) if ids else 0):
        prompt = draw(st.integers(1, 4000))
        max_tokens = draw(st.integers(1, 600))
        generated = draw(st.integers(0, max_tokens))
        r = pb.RequestState(
            id=k,
            home_worker=draw(st.sampled_from(ids)),
            prompt_tokens=prompt,
            generated_tokens=generated,
            max_tokens=max_tokens,
        )
        holder = draw(st.sampled_from(ids))
        if holder != r.home_worker and draw(st.booleans()):
            r.checkpoint_holder = holder
            r.checkpointed_tokens = draw(st.integers(0, prompt + generated))
        requests.append(r)
    state = pb.ClusterState(
        workers=workers, loads=loads, requests=requests, kv_bytes_per_token=163_840
    )
    if workers and flaw in ("hardware", "state"):
        bad = workers[draw(st.integers(0, len(workers) - 1))]
        if flaw == "hardware":
            bad.hardware = draw(st.sampled_from(["", "h" * 200, "TPU"]))
        else:
            bad.state = _worker_state(draw(st.sampled_from([0, 99])))
    if flaw == "wait" and ids:
        state.loads[ids[0]].waiting_time_ms = draw(REAL)
    if flaw == "huge" and ids:
        load = state.loads[ids[-1]]
        setattr(
            load, draw(st.sampled_from(["gpu_kv_capacity_tokens", "host_budget_bytes"])), 2**64 - 1
        )
    if flaw in ("overfull", "no-capacity", "reserved") and ids:
        load = state.loads[ids[0]]
        if flaw == "overfull":
            load.gpu_kv_used_tokens = load.gpu_kv_capacity_tokens + 1
        elif flaw == "no-capacity":
            load.gpu_kv_capacity_tokens = load.gpu_kv_used_tokens = 0
        else:
            load.host_reserved_bytes = load.host_budget_bytes + 1
    if flaw == "kv":
        state.kv_bytes_per_token = draw(st.sampled_from([0, 2**33, 2**64 - 1]))
    if flaw == "load":
        state.loads[draw(st.sampled_from([7, 2**32 - 1]))].queue_length = 1
    if requests and flaw in ("home", "holder", "prompt", "generated", "checkpointed"):
        r = requests[0]
        if flaw == "home":
            r.home_worker = draw(st.sampled_from([7, 2**32 - 1]))
        elif flaw == "holder":
            r.checkpoint_holder = draw(st.sampled_from([r.home_worker, 7, 2**32 - 1]))
        elif flaw == "prompt":
            r.prompt_tokens = draw(st.sampled_from([0, 2**32 - 1]))
        elif flaw == "generated":
            r.generated_tokens = r.max_tokens + 1
        else:
            r.checkpointed_tokens = r.prompt_tokens + r.generated_tokens + 1
    return state


@st.composite
def solve_options(draw: st.DrawFn) -> pb.SolveOptions:
    flaw = draw(st.sampled_from(OPTION_FLAWS))
    options = pb.SolveOptions(
        method=draw(st.sampled_from(["", "", "greedy", "lumen", "auto", "cpsat"])),
        time_limit_ms=draw(st.sampled_from([0.0, 200.0, 500.0])),
        threads=draw(st.sampled_from([0, 1, 2])),
        seed=draw(st.integers(0, 100)),
    )
    if flaw == "method":
        options.method = draw(st.sampled_from(["simplex", "x" * 100, "\u00e9"]))
    elif flaw == "time":
        options.time_limit_ms = draw(REAL.filter(lambda x: not 0 <= x <= 1e5))
    elif flaw == "threads":
        options.threads = draw(st.sampled_from([1000, 2**32 - 1]))
    elif flaw == "seed":
        options.seed = draw(st.sampled_from([-1, 2**63 - 1, -(2**63)]))
    elif flaw == "gap":
        options.rel_gap = draw(REAL.filter(lambda x: not 0 <= x < 1))
    return options


def _maybe_state(draw: st.DrawFn) -> pb.ClusterState | None:
    return draw(
        st.one_of(st.none(), st.just(wire.cluster_state_to_proto(small_state())), cluster_states())
    )


ID_LISTS = st.one_of(
    st.lists(st.integers(0, 6), max_size=3, unique=True),
    st.lists(st.one_of(st.integers(0, 9), st.just(2**32 - 1)), max_size=5),
)


def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """A good value four times in five."""
    return draw(bad) if draw(st.integers(0, 4)) == 4 else draw(good)


@st.composite
def rpc_calls(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "PlanPlacement",
                "PlaceRequest",
                "PlanRecovery",
                "PlanPairing",
                "ReportClusterState",
                "ReportFailure",
                "WatchPlans",
            ]
        )
    )
    state = _maybe_state(draw)
    msg: Any
    if kind == "PlanPlacement":
        msg = pb.PlanPlacementRequest(request_ids=draw(ID_LISTS), options=draw(solve_options()))
        if draw(st.booleans()):
            msg.settings.alpha = _mostly(draw, st.floats(0, 10), REAL)
        msg.settings.allow_same_node = draw(st.booleans())
    elif kind == "PlaceRequest":
        req = pb.RequestState(
            id=_mostly(draw, st.integers(100, 10**6), st.integers(0, 8)),
            home_worker=_mostly(draw, st.integers(0, 3), U32),
            prompt_tokens=_mostly(draw, st.integers(1, 3000), st.sampled_from([0, 2**32 - 1])),
            generated_tokens=draw(st.integers(0, 10)),
            max_tokens=_mostly(draw, st.integers(10, 3000), st.sampled_from([0, 2**32 - 1])),
        )
        msg = pb.PlaceRequestRequest(options=draw(solve_options()))
        if draw(st.integers(0, 3)) != 3:  # PlaceRequest takes no method; usually none is sent
            msg.options.method = ""
        if draw(st.integers(0, 9)) != 9:
            msg.request.CopyFrom(req)
    elif kind == "PlanRecovery":
        msg = pb.PlanRecoveryRequest(failed_workers=draw(ID_LISTS), options=draw(solve_options()))
        if state is None and draw(st.booleans()):
            state = wire.cluster_state_to_proto(small_state())
    elif kind == "PlanPairing":
        msg = pb.PlanPairingRequest(
            recovering_workers=draw(ID_LISTS), options=draw(solve_options())
        )
        if draw(st.booleans()):
            msg.acceptance_rate = _mostly(draw, st.floats(0, 0.99), REAL)
        if draw(st.booleans()):
            msg.depth = _mostly(draw, st.integers(1, 8), st.sampled_from([0, 65, 2**32 - 1]))
    elif kind == "ReportClusterState":
        msg = pb.ReportClusterStateRequest()
    elif kind == "ReportFailure":
        msg = pb.ReportFailureRequest(failed_workers=draw(ID_LISTS))
    else:
        msg = pb.WatchPlansRequest(after_sequence=draw(U64))
    if state is not None and kind in (
        "PlanPlacement",
        "PlanRecovery",
        "PlanPairing",
        "ReportClusterState",
    ):
        msg.state.CopyFrom(state)
    return kind, msg


@pytest.fixture(scope="module")
def server() -> Iterator[PlannerServer]:
    from lumen.scenarios.resolve import load_scenario

    config = ControllerConfig(cost=load_scenario("paper-8w-qwen3-14b").cost_model)
    srv, _ = create_server(config, ServerConfig())
    srv.start()
    yield srv
    srv.stop(0)


def _call(stub: Any, kind: str, msg: Any) -> tuple[grpc.StatusCode, str]:
    try:
        if kind == "WatchPlans":
            for _ in stub.WatchPlans(msg, timeout=0.3):
                pass
            return grpc.StatusCode.OK, ""
        getattr(stub, kind)(msg, timeout=20)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code = exc.code()
        if kind == "WatchPlans" and code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, ""  # the stream was open until our deadline
        return code, exc.details() or ""


@FUZZ
@given(call=rpc_calls())
def test_every_rpc_answers_malformed_input_with_a_clear_status(
    server: PlannerServer, call: tuple[str, Any]
) -> None:
    kind, msg = call
    with grpc.insecure_channel(server.target) as channel:
        stub = planner_stub(channel)
        code, details = _call(stub, kind, msg)
        assert code in CLEAR, (kind, code, details)
        if code is not grpc.StatusCode.OK:
            assert details, (kind, code)
        # The server keeps serving: a well-formed call still succeeds.
        good = pb.PlanRecoveryRequest(
            state=wire.cluster_state_to_proto(small_state()), failed_workers=[1]
        )
        assert stub.PlanRecovery(good, timeout=20).HasField("plan")


def test_oversized_and_extreme_snapshots_are_refused_with_the_field(server: PlannerServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = planner_stub(channel)
        many = pb.ClusterState(
            workers=[
                pb.Worker(id=k, hardware="A800-80GB", state=pb.WORKER_STATE_SERVING)
                for k in range(wire.MAX_WORKERS + 1)
            ],
            kv_bytes_per_token=1,
        )
        huge_context = pb.ClusterState(
            workers=[pb.Worker(id=0, hardware="H200", state=pb.WORKER_STATE_SERVING)],
            requests=[pb.RequestState(id=0, home_worker=0, prompt_tokens=2**32 - 1, max_tokens=1)],
            kv_bytes_per_token=1,
        )
        for state, path in (
            (many, "state.workers"),
            (huge_context, "state.requests[0].max_tokens"),
        ):
            with pytest.raises(grpc.RpcError) as info:
                stub.ReportClusterState(pb.ReportClusterStateRequest(state=state), timeout=20)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith(path)
