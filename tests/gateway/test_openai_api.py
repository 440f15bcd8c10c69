"""The gateway through the real ``openai`` client: completions, chat, stops, n, echo, seeds,
the context limit, the side routes, and a chat stream that survives its worker's death."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from lumen.executor.gateway import Gateway, GatewayError, GatewayHTTPServer
from lumen.executor.gateway.chat import apply_template

from .conftest import GatewayFactory
from .fakes import FakeWorker, expected_output, fake_logprob

openai = pytest.importorskip("openai")

#: The model's context in these tests.
CONTEXT = 256

Server = tuple[str, Gateway, list[FakeWorker]]


@pytest.fixture
def server(make_gateway: GatewayFactory) -> Iterator[Server]:
    gw, fakes = make_gateway(3, vocab_size=256, max_model_len=CONTEXT)
    http = GatewayHTTPServer(gw, ("127.0.0.1", 0), request_timeout_s=20.0)
    http.start()
    yield f"http://127.0.0.1:{http.port}", gw, fakes
    http.stop()


@pytest.fixture
def client(server: Server) -> Any:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=20)


def text(ids: tuple[int, ...]) -> str:
    return bytes(ids).decode()


def chat_prompt(content: str) -> tuple[int, ...]:
    return tuple(apply_template([("user", content)]).encode())


def test_completions_with_n_echo_stop_and_seed(client: Any) -> None:
    want = text(expected_output(tuple(b"abc"), 12))
    got = client.completions.create(model="lumen", prompt="abc", max_tokens=12, temperature=0)
    assert got.choices[0].text == want and got.choices[0].finish_reason == "length"
    assert got.usage.prompt_tokens == 3 and got.usage.completion_tokens == 12
    echoed = client.completions.create(
        model="lumen", prompt="abc", max_tokens=12, temperature=0, echo=True
    )
    assert echoed.choices[0].text == "abc" + want
    stop = want[6:8]
    cut = client.completions.create(
        model="lumen", prompt="abc", max_tokens=12, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == want[: want.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    many = client.completions.create(
        model="lumen", prompt=["abc", "xy"], max_tokens=5, temperature=1, seed=7, n=2
    )
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    for c in many.choices:
        prompt, sample = (b"abc", b"xy")[c.index // 2], c.index % 2
        assert c.text == text(expected_output(tuple(prompt), 5, 7 + sample, 1.0))
    again = client.completions.create(
        model="lumen", prompt=["abc", "xy"], max_tokens=5, temperature=1, seed=7, n=2
    )
    assert [c.text for c in again.choices] == [c.text for c in many.choices]


def test_streamed_completion_holds_back_a_partial_stop(client: Any) -> None:
    want = text(expected_output(tuple(b"hello"), 20))
    stop = want[10:13]
    chunks = list(
        client.completions.create(
            model="lumen", prompt="hello", max_tokens=20, temperature=0, stop=stop, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == want[: want.find(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_completion_streamed_and_not(client: Any) -> None:
    messages = [{"role": "user", "content": "hi"}]
    want = text(expected_output(chat_prompt("hi"), 10))
    got = client.chat.completions.create(
        model="lumen", messages=messages, max_tokens=10, temperature=0
    )
    assert got.object == "chat.completion" and got.id.startswith("chatcmpl-")
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want
    assert got.choices[0].finish_reason == "length"
    assert got.usage.prompt_tokens == len(chat_prompt("hi"))
    parts = list(
        client.chat.completions.create(
            model="lumen",
            messages=messages,
            max_completion_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [p for p in parts if p.choices]
    assert deltas[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in deltas) == want
    assert parts[-1].usage.completion_tokens == 10


def test_chat_stream_survives_a_worker_killed_mid_stream(server: Server, client: Any) -> None:
    _url, gw, fakes = server
    content = "z" * 120
    prompt = chat_prompt(content)
    stream = client.chat.completions.create(
        model="lumen",
        messages=[{"role": "user", "content": content}],
        max_tokens=60,
        temperature=1.0,
        seed=3,
        stream=True,
    )
    pieces: list[str] = []
    for k, part in enumerate(stream):
        pieces.append(part.choices[0].delta.content or "")
        if k == 10:
            next(f for f in fakes if gw.board.requests_on(f.worker_id)).kill()
    assert "".join(pieces) == text(expected_output(prompt, 60, 3, 1.0))
    assert gw.metrics.value("lumen_gateway_worker_failures_total", {"reason": "stream"}) == 1


def test_context_length_is_checked_before_any_work(server: Server, client: Any) -> None:
    _, _gw, fakes = server
    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.completions.create(model="lumen", prompt="x" * CONTEXT, max_tokens=1)
    error = long_prompt.value.body
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert "maximum context length is 256 tokens" in error["message"]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model="lumen", prompt="x" * 250, max_tokens=10)
    assert too_long.value.body["code"] == "context_length_exceeded"
    assert too_long.value.body["param"] == "max_tokens"
    assert not any(f.submissions for f in fakes)  # refused before reaching a worker
    fits = client.completions.create(model="lumen", prompt="x" * 250, temperature=0)
    assert fits.choices[0].finish_reason == "length"
    assert fits.usage.completion_tokens == CONTEXT - 250  # no max_tokens: the room left


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _post(url: str, body: object) -> tuple[int, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def test_models_health_version_and_tokenizer_routes(server: Server, client: Any) -> None:
    url, _gw, fakes = server
    assert client.models.retrieve("lumen").id == "lumen"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    assert [m.id for m in client.models.list()] == ["lumen"]
    assert _get(url + "/health") == (200, b"")
    status, version = _get(url + "/version")
    assert status == 200 and json.loads(version)["version"]
    status, tok = _post(url + "/tokenize", {"model": "lumen", "prompt": "hé"})
    assert status == 200 and tok == {
        "count": 3,
        "max_model_len": CONTEXT,
        "tokens": [104, 195, 169],
    }
    status, chat = _post(url + "/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
    assert chat["tokens"] == list(chat_prompt("hi"))
    assert _post(url + "/detokenize", {"tokens": [104, 195, 169]}) == (200, {"prompt": "hé"})
    assert _post(url + "/detokenize", {"tokens": [999]})[0] == 400
    for f in fakes:
        f.kill()
    deadline = threading.Event()
    for _ in range(200):
        if _get(url + "/health")[0] == 503:
            break
        deadline.wait(0.02)
    assert _get(url + "/health")[0] == 503


def test_gateway_metrics_count_tokens_latency_and_statuses(server: Server, client: Any) -> None:
    _url, gw, _ = server
    client.completions.create(model="lumen", prompt="abcd", max_tokens=6, temperature=0)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="lumen", prompt="abcd", max_tokens=0)
    m = gw.metrics
    assert m.value("lumen_gateway_prompt_tokens_total") == 4
    assert m.value("lumen_gateway_generation_tokens_total") == 6
    assert m.value("lumen_gateway_e2e_request_latency_seconds_count") == 1
    ok = {"route": "/v1/completions", "code": "200"}
    assert m.value("lumen_gateway_http_responses_total", ok) == 1
    bad = {"route": "/v1/completions", "code": "400"}
    assert m.value("lumen_gateway_http_responses_total", bad) == 1


def test_logprobs_of_completions_and_chat_survive_a_failover(server: Server, client: Any) -> None:
    _, gw, fakes = server
    want = expected_output(tuple(b"abc"), 8)
    got = client.completions.create(
        model="lumen", prompt="abc", max_tokens=8, temperature=0, logprobs=2
    )
    lp = got.choices[0].logprobs
    assert lp.tokens == [chr(t) for t in want]
    assert lp.token_logprobs == [fake_logprob(t, 2).logprob for t in want]
    assert [list(d) for d in lp.top_logprobs] == [
        [chr(a) for a, _ in fake_logprob(t, 2).top] for t in want
    ]
    assert lp.text_offset == list(range(8))
    content = "q" * 100
    prompt = chat_prompt(content)
    stream = client.chat.completions.create(
        model="lumen",
        messages=[{"role": "user", "content": content}],
        max_tokens=40,
        temperature=0,
        logprobs=True,
        top_logprobs=1,
        stream=True,
    )
    entries = []
    for k, part in enumerate(stream):
        if part.choices[0].logprobs is not None:
            entries.extend(part.choices[0].logprobs.content)
        if k == 8:
            next(f for f in fakes if gw.board.requests_on(f.worker_id)).kill()
    tokens = expected_output(prompt, 40)
    assert [e.token for e in entries] == [chr(t) for t in tokens]  # none lost, none repeated
    assert [e.logprob for e in entries] == [fake_logprob(t, 1).logprob for t in tokens]
    assert all(e.top_logprobs[0].token == e.token for e in entries)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(
            model="lumen", messages=[{"role": "user", "content": "x"}], top_logprobs=2
        )


def test_a_request_a_worker_refuses_as_invalid_is_not_retried(server: Server) -> None:
    _, gw, fakes = server
    for f in fakes:
        f.refuse_with = "INVALID_ARGUMENT"
    with pytest.raises(GatewayError, match="refused by the worker"):
        list(gw.generate((1, 2, 3), 4, timeout_s=10))
    assert sum(len(f.submissions) for f in fakes) == 1  # not resumed 16 times elsewhere
