"""Fixtures of the gateway tests: fake clusters, gateways with fast failure detection, a real
planner service on port 0, and the HTTP server."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from lumen.executor.gateway import Gateway, GatewayConfig, HealthSettings
from lumen.planner.costmodel import CostModel
from lumen.planner.service.client import PlannerClient
from lumen.scenarios.resolve import load_scenario

from .fakes import FakeWorker, make_fakes

#: Fast detection for tests: heartbeat every 50 ms, 300 ms status deadline, 600 ms hang.
FAST = HealthSettings(interval_s=0.05, timeout_s=0.3, hang_timeout_s=0.6)

GatewayFactory = Callable[..., tuple[Gateway, list[FakeWorker]]]


@pytest.fixture(scope="session")
def cost() -> CostModel:
    return load_scenario("paper-8w-qwen3-14b").cost_model


@pytest.fixture
def make_gateway(cost: CostModel) -> Iterator[GatewayFactory]:
    """Start gateways over fresh fakes (``n`` workers, ``policy``, ``planner``, ``step_s``);
    all stop at teardown."""
    made: list[tuple[Gateway, list[FakeWorker]]] = []

    def make(
        n: int = 3,
        policy: str = "lumen",
        planner: PlannerClient | None = None,
        step_s: float = 0.003,
        **config: object,
    ) -> tuple[Gateway, list[FakeWorker]]:
        fakes = make_fakes(n, step_s)
        settings = GatewayConfig(policy=policy, health=FAST, **config)  # type: ignore[arg-type]
        gw = Gateway(fakes, settings, planner=planner, cost=cost)
        gw.start()
        made.append((gw, fakes))
        return gw, fakes

    yield make
    for gw, fakes in made:
        for f in fakes:
            f.close()
        gw.stop()


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
