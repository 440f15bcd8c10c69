"""Shared fixtures of the planner-service tests: a small hand-checkable cluster, its cost model,
and real servers on port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad
from lumen.planner.service.client import PlannerClient
from lumen.planner.service.controller import ControllerConfig
from lumen.planner.service.server import PlannerServer, ServerConfig, create_server
from lumen.proto.gen.v1 import planner_pb2_grpc as pb_grpc
from lumen.scenarios.resolve import load_scenario

GB = 10**9
#: KV bytes per token of Qwen3-14B (the cost model's model).
KV = 163_840
#: Codes a well-formed server may answer with; INTERNAL and UNKNOWN mean a bug.
CLEAR = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def planner_stub(channel: grpc.Channel) -> Any:
    """A raw stub, for calls the typed client would refuse to make."""
    return pb_grpc.PlannerStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def cost() -> CostModel:
    return load_scenario("paper-8w-qwen3-14b").cost_model


def small_state() -> ClusterState:
    """Four workers on two nodes (0, 1 on node 0; 2, 3 on node 1), six requests.

    Worker 2 has a long queue (5 s), worker 3 none: a new request from node 0 belongs on worker 3
    (the only other-node holders are 2 and 3). Requests 0-2 live on worker 1 (checkpoints on 2
    and 3), requests 3-5 on workers 2 and 3 (checkpoints on 0 and 1)."""
    workers = [Worker(0, 0, "A800-80GB"), Worker(1, 0, "A800-80GB")]
    workers += [Worker(2, 1, "A800-80GB"), Worker(3, 1, "A800-80GB")]
    loads = {
        w: WorkerLoad(
            queue_length=10 if w == 2 else 0,
            waiting_time_s=5.0 if w == 2 else 0.0,
            gpu_kv_used_tokens=2_000,
            gpu_kv_capacity_tokens=300_000,
            host_budget_bytes=80 * GB,
        )
        for w in range(4)
    }
    requests = [
        Request(0, 1, 1_000, 100, 500, checkpoint_holder=2, checkpointed_tokens=1_088),
        Request(1, 1, 2_000, 10, 500, checkpoint_holder=3, checkpointed_tokens=2_000),
        Request(2, 1, 500, 0, 100),
        Request(3, 2, 800, 50, 300, checkpoint_holder=0, checkpointed_tokens=848),
        Request(4, 3, 300, 20, 300, checkpoint_holder=1, checkpointed_tokens=320),
        Request(5, 3, 4_000, 200, 800, checkpoint_holder=0, checkpointed_tokens=4_192),
    ]
    return ClusterState.build(workers, requests, loads, kv_bytes_per_token=KV)


@pytest.fixture
def config(cost: CostModel) -> ControllerConfig:
    return ControllerConfig(cost=cost)


ServerFactory = Callable[..., tuple[PlannerServer, PlannerClient]]


@pytest.fixture
def make_server(config: ControllerConfig) -> Iterator[ServerFactory]:
    """Start servers on port 0 (``ServerConfig`` fields as keywords); all stop at teardown."""
    made: list[tuple[PlannerServer, PlannerClient]] = []

    def make(
        controller: ControllerConfig | None = None,
        client_token: str | None = None,
        **server: object,
    ) -> tuple[PlannerServer, PlannerClient]:
        srv, port = create_server(controller or config, ServerConfig(**server))  # type: ignore[arg-type]
        srv.start()
        client = PlannerClient(f"127.0.0.1:{port}", token=client_token, timeout_s=10.0)
        made.append((srv, client))
        return srv, client

    yield make
    for srv, client in made:
        client.close()
        srv.stop(0)


@pytest.fixture
def served(make_server: ServerFactory) -> tuple[PlannerServer, PlannerClient]:
    """A running server that already holds :func:`small_state`."""
    srv, client = make_server()
    client.report_cluster_state(small_state())
    return srv, client
