"""The gateway core with fake workers: dispatch, placement by policy, failure detection
(killed, hung, unresponsive) and recovery with identical outputs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lumen.executor.gateway import Gateway
from lumen.planner.costmodel import CostModel
from lumen.planner.service.client import PlannerClient
from lumen.planner.service.controller import ControllerConfig
from lumen.planner.service.server import ServerConfig, create_server

from .conftest import FAST, GatewayFactory, closed_port
from .fakes import FakeWorker, expected_output

PROMPTS = [tuple(range(k + 1, k + 9)) for k in range(6)]
#: Long prompts: restoring their checkpointed KV beats prefilling them again (the cost model's
#: recompute of 8 tokens costs as much as a restore, so short prompts are always recomputed).
LONG = [tuple(range(k, k + 1500)) for k in range(6)]
MAX_TOKENS = 60


def run_all(
    gw: Gateway,
    prompts: list[tuple[int, ...]] = PROMPTS,
    max_tokens: int = MAX_TOKENS,
    during: Callable[[], None] | None = None,
    after_tokens: int = 10,
    timeout_s: float = 20.0,
) -> list[tuple[int, ...]]:
    """Run ``prompts`` concurrently; call ``during`` once every request has ``after_tokens``
    tokens. Returns each request's streamed output (the concatenation of its chunks)."""
    outputs: list[list[int]] = [[] for _ in prompts]
    errors: list[BaseException] = []
    counts = [0] * len(prompts)
    reached = threading.Event()
    lock = threading.Lock()

    def one(k: int) -> None:
        try:
            for chunk in gw.generate(prompts[k], max_tokens, timeout_s=timeout_s):
                outputs[k].extend(chunk)
                with lock:
                    counts[k] = len(outputs[k])
                    if min(counts) >= after_tokens:
                        reached.set()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(len(prompts))]
    for t in threads:
        t.start()
    if during is not None:
        assert reached.wait(timeout_s), "requests never produced their first tokens"
        during()
    for t in threads:
        t.join(timeout_s + 5)
        assert not t.is_alive(), "a request never finished"
    assert not errors, errors
    return [tuple(o) for o in outputs]


def expected(prompts: list[tuple[int, ...]] = PROMPTS) -> list[tuple[int, ...]]:
    return [expected_output(p, MAX_TOKENS) for p in prompts]


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def busiest(gw: Gateway, fakes: list[FakeWorker]) -> FakeWorker:
    return max(fakes, key=lambda f: len(gw.board.requests_on(f.worker_id)))


def test_failure_free_outputs_and_least_loaded_dispatch(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(3)
    assert run_all(gw) == expected()
    # six concurrent requests over three idle workers: two each
    assert [len(f.submissions) for f in fakes] == [2, 2, 2]
    assert gw.metrics.value("lumen_gateway_requests_total", {"outcome": "length"}) == 6
    assert gw.metrics.value("lumen_gateway_ttft_seconds_count") == 6
    assert gw.metrics.value("lumen_gateway_tpot_seconds_count") == 6


def test_policies_choose_holders_by_their_rule(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(4, policy="stop-and-restart")
    run_all(gw, PROMPTS[:2], after_tokens=0)
    assert all(s.checkpoint_holder is None for f in fakes for s in f.submissions)
    gw, fakes = make_gateway(4, policy="fixed-checkpointing")
    run_all(gw)
    for f in fakes:
        for s in f.submissions:
            assert s.checkpoint_holder == (f.worker_id + 1) % 4  # the ring neighbour
    gw, fakes = make_gateway(4, policy="lumen")
    run_all(gw)
    for f in fakes:
        for s in f.submissions:
            assert s.checkpoint_holder is not None and s.checkpoint_holder != f.worker_id


@pytest.mark.parametrize("policy", ["stop-and-restart", "fixed-checkpointing", "lumen"])
def test_killed_worker_every_request_completes_identically(
    make_gateway: GatewayFactory, policy: str
) -> None:
    gw, fakes = make_gateway(3, policy=policy)
    victim: list[FakeWorker] = []

    def kill() -> None:
        victim.append(busiest(gw, fakes))
        victim[0].kill()

    assert run_all(gw, LONG, during=kill, after_tokens=25) == expected(LONG)
    dead = victim[0]
    moved = [s for f in fakes if f is not dead for s in f.submissions if s.generated_token_ids]
    assert len(moved) >= 1, "the dead worker's requests were not resumed elsewhere"
    for s in moved:  # resumed with exactly the tokens the client already had
        assert (
            s.generated_token_ids
            == expected_output(s.prompt_token_ids, MAX_TOKENS)[: len(s.generated_token_ids)]
        )
    assert (
        sum(
            gw.metrics.value("lumen_gateway_worker_failures_total", {"reason": r})
            for r in ("stream", "timeout", "hang")
        )
        == 1
    )
    assert gw.metrics.value("lumen_gateway_recoveries_total", {"source": "local"}) == 1
    resumed = sum(
        gw.metrics.value("lumen_gateway_resumed_requests_total", {"mode": m})
        for m in ("restore", "transfer", "recompute", "wait")
    )
    assert resumed == len(moved)
    restores = [r for f in fakes for r in f.restores]
    if policy == "stop-and-restart":
        assert not restores
        assert gw.metrics.value("lumen_gateway_restored_tokens_total") == 0
    else:  # restores name a live holder that really holds a prefix of the request
        assert restores
        for rid, source, prefix in restores:
            assert source != dead.worker_id and prefix > 0, (rid, source, prefix)
        assert gw.metrics.value("lumen_gateway_restored_tokens_total") > 0


def test_hung_worker_is_detected_within_the_hang_timeout(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(3)
    hung_at: list[float] = []

    def hang() -> None:
        busiest(gw, fakes).hang()
        hung_at.append(time.monotonic())

    assert run_all(gw, during=hang) == expected()
    assert gw.metrics.value("lumen_gateway_worker_failures_total", {"reason": "hang"}) == 1
    # detected and resumed within hang timeout + a heartbeat + slack for the 60 tokens left
    spent = time.monotonic() - hung_at[0]
    assert spent < FAST.hang_timeout_s + FAST.interval_s + 2.0


def test_unresponsive_worker_fails_by_heartbeat_timeout(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(3)

    def silence() -> None:  # heartbeats time out, streams block: only the heartbeat can tell
        victim = busiest(gw, fakes)
        victim.unresponsive = True
        victim.hang()

    assert run_all(gw, during=silence) == expected()
    assert gw.metrics.value("lumen_gateway_worker_failures_total", {"reason": "timeout"}) == 1


def test_returned_worker_takes_new_requests(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(2)
    fakes[1].kill()
    wait_for(lambda: not gw.board.is_up(1))  # the heartbeat noticed
    assert run_all(gw, PROMPTS[:2], after_tokens=0) == expected(PROMPTS[:2])
    assert len(fakes[1].submissions) == 0
    fakes[1].revive()
    wait_for(lambda: gw.board.serving(1))
    run_all(gw, PROMPTS[2:4], after_tokens=0)
    assert len(fakes[1].submissions) == 1


def test_no_worker_alive_requests_wait_until_one_returns(make_gateway: GatewayFactory) -> None:
    gw, fakes = make_gateway(1)
    fakes[0].kill()
    done: list[tuple[int, ...]] = []
    t = threading.Thread(target=lambda: done.extend(run_all(gw, PROMPTS[:1], after_tokens=0)))
    t.start()
    time.sleep(0.3)
    assert not done and gw.metrics.value("lumen_gateway_queue_requests") == 1
    fakes[0].revive()
    t.join(10)
    assert done == expected(PROMPTS[:1])


def test_planner_unreachable_falls_back_to_local_greedy(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    planner = PlannerClient(f"127.0.0.1:{closed_port()}", timeout_s=0.3, retries=1)
    try:
        gw, fakes = make_gateway(3, planner=planner)
        with caplog.at_level(logging.WARNING):
            assert run_all(gw, during=lambda: busiest(gw, fakes).kill()) == expected()
        assert gw.metrics.value("lumen_gateway_recoveries_total", {"source": "fallback"}) == 1
        assert gw.metrics.value("lumen_gateway_planner_fallbacks_total", {"call": "recovery"}) == 1
        assert gw.metrics.value("lumen_gateway_planner_fallbacks_total", {"call": "placement"}) > 0
        assert gw.metrics.value("lumen_gateway_planner_up") == 0
        assert "planner service unreachable" in caplog.text
        assert "planned locally (greedy)" in caplog.text
        # placements still happened, by the policy's rule, locally
        assert all(s.checkpoint_holder is not None for f in fakes for s in f.submissions)
    finally:
        planner.close()


@pytest.fixture
def planner_service(cost: CostModel) -> Iterator[PlannerClient]:
    server, port = create_server(ControllerConfig(cost=cost), ServerConfig())
    server.start()
    client = PlannerClient(f"127.0.0.1:{port}", timeout_s=5.0)
    yield client
    client.close()
    server.stop(0)


def test_recovery_plan_comes_from_the_planner_service(
    make_gateway: GatewayFactory, planner_service: PlannerClient
) -> None:
    gw, fakes = make_gateway(3, planner=planner_service)
    assert run_all(gw, during=lambda: busiest(gw, fakes).kill()) == expected()
    assert gw.metrics.value("lumen_gateway_recoveries_total", {"source": "planner"}) == 1
    assert gw.metrics.value("lumen_gateway_recoveries_total", {"source": "fallback"}) == 0
    assert gw.metrics.value("lumen_gateway_planner_fallbacks_total", {"call": "placement"}) == 0
    assert gw.metrics.value("lumen_gateway_planner_up") == 1
    # the planner placed the checkpoints (its view holds the requests placed on arrival)
    assert all(s.checkpoint_holder is not None for f in fakes for s in f.submissions)
