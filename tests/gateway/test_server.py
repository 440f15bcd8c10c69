"""The OpenAI-compatible HTTP front end over real sockets (urllib, port 0)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lumen.executor.gateway import Gateway, GatewayHTTPServer

from .conftest import GatewayFactory
from .fakes import FakeWorker, expected_output

Server = tuple[str, Gateway, list[FakeWorker]]


@pytest.fixture
def server(make_gateway: GatewayFactory) -> Iterator[Server]:
    gw, fakes = make_gateway(3, vocab_size=2048)
    http = GatewayHTTPServer(gw, ("127.0.0.1", 0), request_timeout_s=20.0)
    http.start()
    yield f"http://127.0.0.1:{http.port}", gw, fakes
    http.stop()


def post(url: str, body: object) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url + "/v1/completions", data, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stream(
    url: str, body: dict[str, object], on_chunk: Callable[[int], None] | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """The parsed ``data:`` events of a streamed completion and whether ``[DONE]`` ended it."""
    data = json.dumps({**body, "stream": True}).encode()
    request = urllib.request.Request(url + "/v1/completions", data)
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=20) as reply:
        assert reply.headers["Content-Type"] == "text/event-stream"
        for raw in reply:
            line = raw.decode().strip()
            if not line:
                continue
            assert line.startswith("data: ")
            if line == "data: [DONE]":
                return events, True
            events.append(json.loads(line[6:]))
            if on_chunk is not None:
                on_chunk(len(events))
    return events, False


def text_of(ids: tuple[int, ...]) -> str:
    return bytes(ids).decode()


def test_non_streaming_text_and_token_ids(server: Server) -> None:
    url, _, _ = server
    status, body = post(
        url, {"model": "lumen", "prompt": "hello", "max_tokens": 12, "temperature": 0}
    )
    want = expected_output(tuple(b"hello"), 12)
    assert status == 200
    assert body["object"] == "text_completion" and body["model"] == "lumen"
    (c,) = body["choices"]
    assert c["text"] == text_of(want) and c["lumen"]["token_ids"] == list(want)
    assert c["finish_reason"] == "length" and c["index"] == 0
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}
    status, body = post(
        url, {"model": "lumen", "prompt": [[1, 2, 3], "ab"], "max_tokens": 4, "temperature": 0}
    )
    assert status == 200
    assert [c["lumen"]["token_ids"] for c in body["choices"]] == [
        list(expected_output((1, 2, 3), 4)),
        list(expected_output(tuple(b"ab"), 4)),
    ]


def test_streaming_sends_chunks_then_done(server: Server) -> None:
    url, _, _ = server
    body = {"model": "lumen", "prompt": [7, 8, 9], "max_tokens": 20, "temperature": 0}
    events, done = stream(url, {**body, "stream_options": {"include_usage": True}})
    assert done
    chunks = [e for e in events if e["choices"]]
    ids = [t for e in chunks for t in e["choices"][0]["lumen"]["token_ids"]]
    assert tuple(ids) == expected_output((7, 8, 9), 20)
    assert "".join(e["choices"][0]["text"] for e in chunks) == text_of(tuple(ids))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1])
    assert events[-1]["usage"]["completion_tokens"] == 20 and events[-1]["choices"] == []


def test_stream_survives_a_worker_killed_mid_stream(server: Server) -> None:
    url, gw, fakes = server
    prompt = list(range(100, 1600))
    killed = threading.Event()

    def kill_home(n: int) -> None:
        if n == 15 and not killed.is_set():
            home = next(f for f in fakes if gw.board.requests_on(f.worker_id))
            home.kill()
            killed.set()

    body = {"model": "lumen", "prompt": prompt, "max_tokens": 80, "temperature": 0}
    events, done = stream(url, body, on_chunk=kill_home)
    assert done and killed.is_set()
    ids = [t for e in events for t in e["choices"][0]["lumen"]["token_ids"]]
    assert tuple(ids) == expected_output(tuple(prompt), 80)  # nothing lost, nothing repeated
    assert "error" not in events[-1]
    assert gw.metrics.value("lumen_gateway_recoveries_total", {"source": "local"}) == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "request body: not valid JSON"),
        (b"[1, 2]", 400, "request body: expected a JSON object"),
        ({"prompt": "x"}, 400, "model: required"),
        ({"model": "gpt-4", "prompt": "x"}, 404, "'gpt-4' does not exist"),
        ({"model": "lumen"}, 400, "prompt: required"),
        ({"model": "lumen", "prompt": ""}, 400, "prompt: must not be empty"),
        ({"model": "lumen", "prompt": []}, 400, "prompt: expected a non-empty string"),
        ({"model": "lumen", "prompt": [1, -2]}, 400, "prompt[1]: token id -2 outside [0, 2048)"),
        ({"model": "lumen", "prompt": [[1], {}]}, 400, "prompt[1]: expected a string"),
        ({"model": "lumen", "prompt": "x", "max_tokens": 0}, 400, "max_tokens: expected"),
        ({"model": "lumen", "prompt": "x", "max_tokens": "5"}, 400, "max_tokens: expected"),
        ({"model": "lumen", "prompt": "x", "temperature": 3}, 400, "temperature: 3 outside"),
        ({"model": "lumen", "prompt": "x", "seed": -1}, 400, "seed: expected"),
        ({"model": "lumen", "prompt": "x", "echo": 1}, 400, "echo: expected"),
        ({"model": "lumen", "prompt": "x", "n": 17}, 400, "n: expected"),
        ({"model": "lumen", "prompt": "x", "stop": ["a"] * 5}, 400, "stop: at most"),
        ({"model": "lumen", "prompt": "x", "logprobs": 6}, 400, "logprobs: expected"),
        ({"model": "lumen", "prompt": "x", "top_p": 0}, 400, "top_p: must be"),
        ({"model": "lumen", "prompt": "x", "top_k": -2}, 400, "top_k: expected"),
        ({"model": "lumen", "prompt": "x", "stream": "yes"}, 400, "stream: expected"),
    ],
)
def test_bad_input_gets_a_clear_error(
    server: Server, body: object, status: int, message: str
) -> None:
    url, gw, _ = server
    got, reply = post(url, body)
    assert got == status
    assert message in reply["error"]["message"]
    assert reply["error"]["type"] == "invalid_request_error"
    assert not gw.active()


def test_models_health_metrics_and_unknown_routes(server: Server) -> None:
    url, _, fakes = server
    with urllib.request.urlopen(url + "/v1/models", timeout=5) as reply:
        assert json.loads(reply.read())["data"][0]["id"] == "lumen"
    with urllib.request.urlopen(url + "/healthz", timeout=5) as reply:
        assert json.loads(reply.read())["serving_workers"] == [0, 1, 2]
    post(url, {"model": "lumen", "prompt": "hi", "max_tokens": 3})
    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for name in (
        "lumen_gateway_ttft_seconds_count 1.0",
        "lumen_gateway_tpot_seconds_count 1.0",
        "lumen_gateway_queue_requests",
        'lumen_gateway_worker_state{state="up",worker="0"} 1.0',
    ):
        assert name in text
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url + "/v2/nothing", timeout=5)
    assert missing.value.code == 404
    for f in fakes:
        f.kill()
    with pytest.raises(urllib.error.HTTPError) as down:
        for _ in range(100):
            urllib.request.urlopen(url + "/healthz", timeout=5).close()
            threading.Event().wait(0.02)
    assert down.value.code == 503
