"""The pairing driver: a recovering worker whose draft is up drafts for the longest-waiting
survivor, under policies with progressive recovery only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest

from lumen.executor.gateway import Gateway
from lumen.executor.gateway.pairing import PairingDriver, longest_waiting
from lumen.planner.costmodel import CostModel, NoDraftModelError
from lumen.planner.service.client import PlannerClient
from lumen.planner.service.controller import ControllerConfig
from lumen.planner.service.server import ServerConfig, create_server

from .conftest import GatewayFactory
from .fakes import FakeWorker


def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _waits_seen(gw: Gateway, fakes: list[FakeWorker]) -> None:
    """Survivor 2 has waited longest (3 s), then 0 (1 s), as the gateway's heartbeats saw."""
    fakes[0].waiting_time_s = 1.0
    fakes[2].waiting_time_s = 3.0

    def seen(w: int) -> bool:
        status = gw.board.status(w)
        return status is not None and status.waiting_time_s == fakes[w].waiting_time_s

    _until(lambda: seen(0) and seen(2))


def _recovering(gw: Gateway, fakes: list[FakeWorker], worker: int, ready: bool) -> FakeWorker:
    """``worker`` restarts in stages (its draft loaded or not) after :func:`_waits_seen`."""
    _waits_seen(gw, fakes)
    fake = fakes[worker]
    fake.draft_ready = ready
    fake.stage = "draft-loading"
    return fake


def _pairings(gw: Gateway, source: str) -> float:
    return gw.metrics.value("lumen_gateway_pairings_total", {"source": source})


def test_a_recovering_worker_is_paired_with_the_longest_waiting_survivor_once_its_draft_is_up(
    make_gateway: GatewayFactory,
) -> None:
    gw, fakes = make_gateway(3, policy="lumen")
    fake = _recovering(gw, fakes, 1, ready=False)
    # refused while the draft loads: tried again every round, never paired
    _until(lambda: len(fake.stage_calls) >= 2)
    assert fake.stage == "draft-loading" and fake.survivor is None
    assert set(fake.stage_calls) == {("assisting", 2)}
    assert _pairings(gw, "local") == 0
    fake.draft_ready = True
    _until(lambda: fake.stage == "assisting")
    assert fake.survivor == 2
    assert gw.pairing is not None and gw.pairing.pairs == {1: 2}
    assert _pairings(gw, "local") == 1
    # paired once: no further SetStage while the survivor serves
    calls = len(fake.stage_calls)
    time.sleep(0.2)
    assert len(fake.stage_calls) == calls
    # the survivor dies: the draft is paired again, with the other survivor
    fakes[2].kill()
    _until(lambda: fake.survivor == 0)
    assert _pairings(gw, "local") == 2
    # the worker switches by itself: the pair ends
    fake.stage = "switching"
    _until(lambda: gw.pairing is not None and gw.pairing.pairs == {})
    assert "lumen_gateway_pairings_total" in gw.metrics.render()


@pytest.mark.parametrize("policy", ["stop-and-restart", "fixed-checkpointing"])
def test_policies_without_progressive_recovery_never_pair(
    make_gateway: GatewayFactory, policy: str
) -> None:
    gw, fakes = make_gateway(3, policy=policy)
    fake = _recovering(gw, fakes, 1, ready=True)
    time.sleep(0.3)  # six heartbeats
    assert gw.pairing is None
    assert fake.stage_calls == [] and fake.stage == "draft-loading"
    assert _pairings(gw, "local") == 0


def test_two_recovering_workers_get_different_survivors(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(4, policy="lumen")
    _waits_seen(gw, fakes)
    for w in (1, 3):
        fakes[w].stage = "draft-loading"
    _until(lambda: fakes[1].stage == fakes[3].stage == "assisting")
    assert {fakes[1].survivor, fakes[3].survivor} == {0, 2}


def test_longest_waiting_breaks_ties_by_the_lowest_id(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(3, policy="lumen")
    _until(lambda: all(gw.board.status(w) is not None for w in range(3)))
    assert longest_waiting(gw.board, [2, 0, 1]) == 0
    assert longest_waiting(gw.board, []) is None
    fakes[2].waiting_time_s = 0.5
    _until(lambda: longest_waiting(gw.board, [0, 1, 2]) == 2)


@pytest.fixture
def planner(cost: CostModel) -> Iterator[PlannerClient]:
    server, port = create_server(ControllerConfig(cost=cost), ServerConfig())
    server.start()
    client = PlannerClient(f"127.0.0.1:{port}", timeout_s=5.0)
    yield client
    client.close()
    server.stop(0)


def test_with_a_planner_the_pairing_plan_comes_from_the_service(
    make_gateway: GatewayFactory, planner: PlannerClient
) -> None:
    gw, fakes = make_gateway(3, policy="lumen", planner=planner)
    fake = _recovering(gw, fakes, 1, ready=True)
    _until(lambda: fake.stage == "assisting")
    assert fake.survivor == 2
    assert _pairings(gw, "planner") == 1
    assert gw.metrics.value("lumen_gateway_planner_fallbacks_total", {"call": "pairing"}) == 0


class _NoDraftCost:
    """A cost model that cannot pose the pairing problem (it knows no draft model)."""

    def __getattr__(self, name: str) -> object:
        raise NoDraftModelError(f"no draft model ({name})")


def test_without_a_posable_problem_the_paper_rule_pairs(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(3, policy="lumen-optimal")  # pairing method "auto"
    assert gw.pairing is not None
    gw.pairing.stop()
    _waits_seen(gw, fakes)
    driver = PairingDriver(
        gw._workers,
        gw.board,
        "auto",
        gw.snapshot,
        cast(CostModel, _NoDraftCost()),
        gw.metrics,
    )
    fakes[1].stage = "draft-loading"
    _until(lambda: getattr(gw.board.status(1), "stage", "") == "draft-loading")
    assert driver.step() == [(1, 2)]
    assert _pairings(gw, "rule") == 1
    assert driver.step() == []  # paired: nothing left to do
