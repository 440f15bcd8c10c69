"""The wire contract: generated stubs match the .proto files, messages round-trip, the planner
service has the agreed shape, and the domain never imports generated code (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message

from lumen.proto import generate
from lumen.proto.gen.v1 import executor_pb2, planner_pb2

REPO = Path(__file__).resolve().parents[1]
FILES = (planner_pb2.DESCRIPTOR, executor_pb2.DESCRIPTOR)
#: The thin gRPC adapters (docs/architecture.md): the only modules that may import stubs:
#: the servicers, the clients, their shared message conversion and the servers (health).
ADAPTERS = frozenset(
    {
        "lumen/planner/service/servicer.py",
        "lumen/planner/service/client.py",
        "lumen/planner/service/wire.py",
        "lumen/executor/worker/client.py",
        "lumen/executor/worker/servicer.py",
        "lumen/executor/worker/wire.py",
        "lumen/executor/worker/assist_link.py",
    }
)


def test_generated_stubs_match_the_proto_files() -> None:
    assert generate.drift() == [], "run `python -m lumen.proto.generate`"


def test_check_mode_reports_a_hand_edited_stub(tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    gen.mkdir()
    for rel, text in generate.committed().items():
        (gen / rel).parent.mkdir(parents=True, exist_ok=True)
        (gen / rel).write_text(text, encoding="utf-8")
    assert generate.drift(gen) == []
    (gen / "v1" / "planner_pb2.py").write_text("# edited by hand\n", encoding="utf-8")
    (gen / "v1" / "old_pb2.py").write_text("", encoding="utf-8")
    (gen / "v1" / "executor_pb2.pyi").unlink()
    assert generate.drift(gen) == [
        "v1/executor_pb2.pyi (missing)",
        "v1/old_pb2.py (stale: no .proto generates it)",
        "v1/planner_pb2.py (differs)",
    ]


def test_generated_cross_file_imports_point_into_the_gen_package() -> None:
    for rel, text in generate.committed().items():
        for line in text.splitlines():
            assert not line.startswith(("from lumen.v1", "import lumen.v1")), (rel, line)


def _round_trip(msg: Message) -> None:
    data = msg.SerializeToString(deterministic=True)
    back = type(msg).FromString(data)
    assert back == msg
    assert back.SerializeToString(deterministic=True) == data


def test_cluster_state_round_trips() -> None:
    state = planner_pb2.ClusterState(
        workers=[
            planner_pb2.Worker(id=0, node=0, hardware="a100-80g"),
            planner_pb2.Worker(
                id=1, node=1, hardware="a100-80g", state=planner_pb2.WORKER_STATE_FAILED
            ),
        ],
        loads={
            0: planner_pb2.WorkerLoad(
                queue_length=3,
                waiting_time_ms=12.5,
                gpu_kv_used_tokens=1_000,
                gpu_kv_capacity_tokens=200_000,
                host_budget_bytes=64 << 30,
                host_reserved_bytes=1 << 30,
            )
        },
        requests=[
            planner_pb2.RequestState(
                id=7,
                home_worker=1,
                prompt_tokens=100,
                generated_tokens=20,
                max_tokens=256,
                checkpoint_holder=0,
                checkpointed_tokens=96,
            ),
            planner_pb2.RequestState(id=8, home_worker=0, prompt_tokens=5, max_tokens=10),
        ],
        kv_bytes_per_token=131_072,
    )
    _round_trip(state)
    back = planner_pb2.ClusterState.FromString(state.SerializeToString())
    # optional field presence survives the wire: holder 0 is set, the second request has none.
    assert back.requests[0].HasField("checkpoint_holder")
    assert back.requests[0].checkpoint_holder == 0
    assert not back.requests[1].HasField("checkpoint_holder")
    assert back.loads[0].host_budget_bytes == 64 << 30


def test_plan_update_round_trips_with_each_plan_kind() -> None:
    status = planner_pb2.SolveStatus(
        method="cpsat",
        termination=planner_pb2.TERMINATION_OPTIMAL,
        limit=planner_pb2.LIMIT_NONE,
        objective=3.0,
        bound=3.0,
        gap=0.0,
        wall_time_ms=4.2,
    )
    placement = planner_pb2.PlacementPlan(holder_by_request={7: 0, 8: 2})
    recovery = planner_pb2.RecoveryPlan(
        assignments=[
            planner_pb2.RecoveryAssignment(
                request_id=7,
                destination_worker=0,
                mode=planner_pb2.RECOVERY_MODE_RESTORE,
                position=0,
            )
        ],
        orders=[planner_pb2.MachineOrder(worker_id=0, request_ids=[7])],
    )
    pairing = planner_pb2.PairingPlan(
        pairs=[planner_pb2.WorkerPair(recovering_worker=1, survivor_worker=0, saved_ms=150.0)]
    )
    kinds = {"placement": placement, "recovery": recovery, "pairing": pairing}
    for seq, (kind, plan) in enumerate(kinds.items(), start=1):
        update = planner_pb2.PlanUpdate(sequence=seq, state_version=5, status=status)
        getattr(update, kind).CopyFrom(plan)
        update.created_at.FromMilliseconds(1_700_000_000_000)
        _round_trip(update)
        assert (
            planner_pb2.PlanUpdate.FromString(update.SerializeToString()).WhichOneof("plan") == kind
        )


def test_unset_objective_is_distinguishable_from_zero() -> None:
    status = planner_pb2.SolveStatus(termination=planner_pb2.TERMINATION_NO_SOLUTION)
    back = planner_pb2.SolveStatus.FromString(status.SerializeToString())
    assert not back.HasField("objective")
    assert not back.HasField("bound")
    assert not back.HasField("gap")


def test_kv_page_round_trips() -> None:
    page = executor_pb2.KVPage(
        request_id=7,
        page_index=3,
        start_position=48,
        end_position=64,
        tag=b"llama-3-8b@rev1",
        checksum=0xDEADBEEF,
        dtype="float16",
        shape=[32, 2, 16, 8, 128],
        payload=bytes(range(256)) * 4,
    )
    _round_trip(page)


def test_executor_reuses_the_planner_worker_load() -> None:
    report = executor_pb2.ReportLoadResponse(
        worker_id=2, load=planner_pb2.WorkerLoad(queue_length=4, waiting_time_ms=1.5)
    )
    _round_trip(report)
    assert (
        executor_pb2.ReportLoadResponse.DESCRIPTOR.fields_by_name["load"].message_type
        is planner_pb2.WorkerLoad.DESCRIPTOR
    )


def _enums(file: _descriptor.FileDescriptor) -> list[_descriptor.EnumDescriptor]:
    found = list(file.enum_types_by_name.values())
    stack = list(file.message_types_by_name.values())
    while stack:
        msg = stack.pop()
        found.extend(msg.enum_types)
        stack.extend(msg.nested_types)
    return found


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_every_enum_starts_with_unspecified_zero(file: _descriptor.FileDescriptor) -> None:
    enums = _enums(file)
    assert enums
    for enum in enums:
        zero = enum.values_by_number[0]
        assert zero.name.endswith("_UNSPECIFIED"), enum.full_name
        assert zero is enum.values[0], enum.full_name


def test_planner_service_has_exactly_the_seven_rpcs() -> None:
    service = planner_pb2.DESCRIPTOR.services_by_name["Planner"]
    assert service.full_name == "lumen.v1.Planner"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {
        "PlanPlacement",
        "PlaceRequest",
        "PlanRecovery",
        "PlanPairing",
        "ReportClusterState",
        "ReportFailure",
        "WatchPlans",
    }
    streaming = {name: (m.client_streaming, m.server_streaming) for name, m in methods.items()}
    assert streaming.pop("WatchPlans") == (False, True)
    assert set(streaming.values()) == {(False, False)}
    assert methods["WatchPlans"].output_type is planner_pb2.PlanUpdate.DESCRIPTOR


def test_executor_service_has_exactly_the_seven_rpcs_with_their_streaming_shape() -> None:
    service = executor_pb2.DESCRIPTOR.services_by_name["Executor"]
    assert service.full_name == "lumen.v1.Executor"
    methods = {m.name: m for m in service.methods}
    shape = {name: (m.client_streaming, m.server_streaming) for name, m in methods.items()}
    assert shape == {
        "SubmitRequest": (False, True),
        "SendPages": (True, False),
        "FetchPages": (False, True),
        "ReportLoad": (False, False),
        "SetStage": (False, False),
        "MirrorRequests": (False, True),
        "SubmitProposals": (False, False),
    }
    assert methods["MirrorRequests"].output_type is executor_pb2.MirrorSnapshot.DESCRIPTOR
    assert methods["SubmitProposals"].input_type is executor_pb2.SubmitProposalsRequest.DESCRIPTOR


def test_assist_link_messages_round_trip() -> None:
    snapshot = executor_pb2.MirrorSnapshot(
        steps=12,
        requests=[
            executor_pb2.MirroredRequest(
                request_id=7,
                prompt_token_ids=[1, 2, 3],
                output_token_ids=[4],
                max_tokens=16,
                stop_token_ids=[0],
            ),
            executor_pb2.MirroredRequest(
                request_id=8, output_offset_tokens=5, output_token_ids=[9, 9]
            ),
        ],
    )
    _round_trip(snapshot)
    proposals = executor_pb2.SubmitProposalsRequest(
        assistant_worker=1,
        proposals=[
            executor_pb2.DraftProposal(
                request_id=7, history_tokens=4, last_token_id=4, token_ids=[5, 6, 7, 8]
            )
        ],
    )
    _round_trip(proposals)
    _round_trip(executor_pb2.SubmitProposalsResponse(proposals_queued=1))


def test_grpc_modules_import() -> None:
    from lumen.proto.gen.v1 import executor_pb2_grpc, planner_pb2_grpc

    assert hasattr(planner_pb2_grpc, "PlannerServicer")
    assert hasattr(executor_pb2_grpc, "ExecutorStub")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_planner_domain_never_imports_generated_code() -> None:
    sources = [
        path
        for path in sorted((REPO / "lumen" / "planner").rglob("*.py"))
        if path.relative_to(REPO).as_posix() not in ADAPTERS
    ]
    assert sources
    offenders = [
        f"{path.relative_to(REPO).as_posix()}: {name}"
        for path in sources
        for name in sorted(_imported_modules(path))
        if name.startswith("lumen.proto.gen") or name.endswith(("_pb2", "_pb2_grpc"))
    ]
    assert offenders == []
