"""Hostile HTTP input: a fixed-seed fuzz battery of bodies, deep nesting, oversized and stalled
bodies, idle connections. Every request gets a well-formed answer (or, stalled, a closed
connection after the server's timeout), and ``/health`` answers throughout."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from lumen.executor.gateway import Gateway, GatewayHTTPServer
from lumen.executor.gateway.limits import HTTPLimits, json_depth

from .conftest import GatewayFactory
from .fakes import FakeWorker

#: Short read timeouts, so stalled clients are cut off quickly in tests.
LIMITS = HTTPLimits(read_timeout_s=0.5, body_timeout_s=1.5)

Server = tuple[int, Gateway, list[FakeWorker]]


@pytest.fixture
def server(make_gateway: GatewayFactory) -> Iterator[Server]:
    gw, fakes = make_gateway(2, vocab_size=256, max_model_len=512)
    http = GatewayHTTPServer(gw, ("127.0.0.1", 0), request_timeout_s=20.0, limits=LIMITS)
    http.start()
    yield http.port, gw, fakes
    http.stop()


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``data`` as is; the status code and body of the answer (-1: closed unanswered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    reply = b"".join(chunks)
    if not reply:
        return -1, b""
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return raw_request(port, head.encode() + body)


def healthy(port: int) -> bool:
    return raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 5.0)[0] == 200


VALID = {"model": "lumen", "prompt": "hi", "max_tokens": 3, "temperature": 0}
CHAT = {"model": "lumen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _junk(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**70), 2**70)
    if kind == 3:
        return rng.uniform(-1e308, 1e308)
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == 5:
        return rng.choice(["", "lumen", "<|im_end|>", "a" * 300, "user"])
    if kind == 6:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {rng.choice([*VALID, *CHAT]): _junk(rng, depth + 1) for _ in range(3)}
    return [rng.randrange(-5, 300) for _ in range(rng.randrange(6))]


def _mutant(rng: random.Random) -> bytes:
    base = dict(rng.choice([VALID, CHAT]))
    how = rng.randrange(5)
    if how == 0:  # one field replaced by junk
        base[rng.choice(list(base))] = _junk(rng)
    elif how == 1:  # an extra field, or one dropped
        base[rng.choice(["n", "stop", "seed", "top_k", "top_p", "echo", "logprobs", "stream"])] = (
            _junk(rng)
        )
    elif how == 2:
        base.pop(rng.choice(list(base)))
    raw = json.dumps(base).encode()
    if how == 3:  # truncated or spliced bytes
        cut = rng.randrange(len(raw))
        raw = raw[:cut] + bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
    elif how == 4:  # random bytes
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    return raw


def test_fuzzed_bodies_get_well_formed_answers(server: Server) -> None:
    port, gw, _ = server
    rng = random.Random(20261204)
    seen: dict[int, int] = {}
    for k in range(300):
        path = rng.choice(["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"])
        status, body = post(port, path, _mutant(rng))
        seen[status] = seen.get(status, 0) + 1
        assert status in (200, 400, 404), (k, status, body[:200])
        reply = json.loads(body)
        if status != 200:
            assert reply["error"]["type"] == "invalid_request_error"
            assert isinstance(reply["error"]["message"], str)
        if k % 50 == 0:
            assert healthy(port)
    assert seen.get(400, 0) > 100 and seen.get(200, 0) > 10, seen
    deadline = time.monotonic() + 5
    while gw.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gw.active()


def test_deep_nesting_gets_400_not_a_dropped_connection(server: Server) -> None:
    port, _, _ = server
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 30_000 + b"1" + b"}" * 30_000):
        status, reply = post(port, "/v1/completions", body)
        assert status == 400
        assert "nested" in json.loads(reply)["error"]["message"]
    assert json_depth(b'{"a": "[[[[", "b": [[1]]}') == 3  # brackets in strings do not count
    assert healthy(port)


def test_body_size_and_length_limits(server: Server) -> None:
    port, _, _ = server
    big = b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"
    status, reply = raw_request(port, big)
    assert status == 413 and "at most 1048576 bytes" in json.loads(reply)["error"]["message"]
    status, _ = raw_request(port, b"POST /v1/completions HTTP/1.1\r\n\r\n")
    assert status == 411
    status, _ = raw_request(port, b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
    assert status == 413


def test_stalled_connections_are_closed_by_the_server(server: Server) -> None:
    port, _, _ = server
    before = threading.active_count()
    socks = []
    for k in range(300):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if k % 3 == 0:  # headers, then a body that never comes
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        elif k % 3 == 1:  # half a request line
            s.sendall(b"POST /v1/compl")
        socks.append(s)  # else: connected, silent
    assert healthy(port)  # answered while 300 connections stall
    start = time.monotonic()
    statuses = []
    for s in socks:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        statuses.append(int(data.split()[1]) if data else -1)
        s.close()
    waited = time.monotonic() - start
    assert waited < 15, waited  # each closed by the server within its body/read timeout
    assert statuses.count(408) == 100  # the stalled bodies got an answer; the rest: closed
    assert set(statuses[1::3] + statuses[2::3]) == {-1}
    deadline = time.monotonic() + 5
    while threading.active_count() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before + 2
    assert healthy(port)
