"""The gateway's HTTP front end: the OpenAI API (as vLLM serves it) on the standard library server.

Routes:

- ``POST /v1/completions``, ``POST /v1/chat/completions`` (:mod:`~lumen.executor.gateway.openai`,
  :mod:`~lumen.executor.gateway.chat`), streamed as server-sent events ``data: {...}`` then
  ``data: [DONE]`` with ``stream: true``;
- ``POST /tokenize`` (``{"prompt": str}`` or ``{"messages": [...]}`` -> ``{"count", "max_model_len",
  "tokens"}``) and ``POST /detokenize`` (``{"tokens": [...]}`` -> ``{"prompt": str}``);
- ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /version``, ``GET /metrics`` (Prometheus
  text), ``GET /health`` (200 with an empty body while at least one worker serves, else 503, as
  vLLM) and ``GET /healthz`` (the same with a JSON body naming the serving workers).

Bad input gets 400 (unknown model or route 404, body too large 413, body too slow 408) with
OpenAI's JSON error body; a request the cluster cannot finish gets 503 (or, once streaming, an
``error`` event before ``[DONE]``). Limits on bodies and read times: :mod:`limits`.

One thread per connection (:class:`ThreadingHTTPServer`); every response closes its connection.
A client that disconnects mid-stream has its requests aborted.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lumen import __version__
from lumen.executor.gateway.chat import apply_template, chat_messages, parse_chat
from lumen.executor.gateway.completions import CallRun, Shape, choice_seed
from lumen.executor.gateway.gateway import Gateway
from lumen.executor.gateway.history import StreamItem, TrackedRequest
from lumen.executor.gateway.limits import BodyError, HTTPLimits, load_json, read_body
from lumen.executor.gateway.openai import (
    BadRequest,
    CompletionRequest,
    Limits,
    error_body,
    is_int,
    parse_completion,
    prompt_ids,
)
from lumen.executor.gateway.tokenizer import ByteTokenizer, TokenizerError

log = logging.getLogger(__name__)

#: Largest request body accepted (the default of :class:`HTTPLimits`).
MAX_BODY_BYTES = HTTPLimits().max_body_bytes
#: Routes named in the HTTP status counters (anything else counts as "other").
ROUTES = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/health",
    "/healthz",
    "/version",
    "/metrics",
)

Parser = Callable[[object, ByteTokenizer, Limits], CompletionRequest]


class _Handler(BaseHTTPRequestHandler):
    server: GatewayHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.read_timeout_s)  # each read and write

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_response(self, code: int, message: str | None = None) -> None:
        path = self.path.split("?", 1)[0]
        route = "/v1/models" if path.startswith("/v1/models/") else path
        route = route if route in ROUTES else "other"
        self.server.gateway.metrics.http.labels(route, str(code)).inc()
        super().send_response(code, message)

    # -- plumbing --------------------------------------------------------------------------------

    def _json(self, status: int, body: object) -> None:
        self._text(status, json.dumps(body), "application/json")

    def _text(self, status: int, text: str, kind: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _not_found(self) -> None:
        self._json(404, error_body(f"no route {self.command} {self.path}", "not_found_error"))

    def _limits(self) -> Limits:
        gw = self.server.gateway
        return Limits(
            gw.config.model,
            gw.context_limit(),
            gw.config.max_tokens_limit,
            gw.config.max_prompt_tokens,
        )

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        gw = self.server.gateway
        path = self.path.split("?", 1)[0]
        model = {"id": gw.config.model, "object": "model", "created": 0, "owned_by": "lumen"}
        model["max_model_len"] = gw.context_limit()
        serving = [w for w in gw.board.ids if gw.board.serving(w)]
        if path == "/v1/models":
            self._json(200, {"object": "list", "data": [model]})
        elif path.startswith("/v1/models/"):
            if path[len("/v1/models/") :] == gw.config.model:
                self._json(200, model)
            else:
                missing = BadRequest(f"model {path[11:]!r} does not exist", "model", 404)
                self._json(404, missing.body())
        elif path == "/health":
            self._text(200 if serving else 503, "", "text/plain")
        elif path == "/healthz":
            status = "ok" if serving else "unavailable"
            body = {"status": status, "serving_workers": serving, "policy": gw.config.policy}
            self._json(200 if serving else 503, body)
        elif path == "/version":
            self._json(200, {"version": __version__})
        elif path == "/metrics":
            self._text(200, gw.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        parsers: dict[str, Parser] = {
            "/v1/completions": parse_completion,
            "/v1/chat/completions": parse_chat,
        }
        if path not in (*parsers, "/tokenize", "/detokenize"):
            self._not_found()
            return
        try:
            raw = read_body(self.rfile, self.headers.get("Content-Length"), self.server.limits)
            body = load_json(raw, self.server.limits.max_json_depth)
            if path == "/tokenize":
                self._json(200, self._tokenize(body))
                return
            if path == "/detokenize":
                self._json(200, self._detokenize(body))
                return
            call = parsers[path](body, self.server.tokenizer, self._limits())
        except BodyError as exc:
            self._json(exc.status, BadRequest(exc.message, status=exc.status).body())
            return
        except BadRequest as exc:
            self._json(exc.status, exc.body())
            return
        self._generate(call)

    # -- tokenizer routes ------------------------------------------------------------------------

    def _tokenize(self, body: object) -> dict[str, object]:
        if not isinstance(body, dict):
            raise BadRequest("request body: expected a JSON object")
        if "messages" in body:
            text = apply_template(chat_messages(body["messages"]))
            try:
                ids = self.server.tokenizer.encode(text)
            except TokenizerError as exc:
                raise BadRequest(f"messages: {exc}", "messages") from None
        elif isinstance(body.get("prompt"), str):
            ids = prompt_ids(body["prompt"], self.server.tokenizer, self._limits())[0]
        else:
            raise BadRequest("prompt: required, a string (or messages)", "prompt")
        limit = self.server.gateway.context_limit()
        return {"count": len(ids), "max_model_len": limit, "tokens": list(ids)}

    def _detokenize(self, body: object) -> dict[str, object]:
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not all(is_int(t) for t in tokens):
            raise BadRequest("tokens: required, a list of token ids", "tokens")
        try:
            self.server.tokenizer.check(tokens)
        except TokenizerError as exc:
            raise BadRequest(f"tokens{exc}", "tokens") from None
        return {"prompt": self.server.tokenizer.decode(tokens)}

    # -- completions -----------------------------------------------------------------------------

    def _generate(self, call: CompletionRequest) -> None:
        gw = self.server.gateway
        sink: queue.Queue[StreamItem] = queue.Queue()
        s = call.sampling
        requests = [
            gw.submit(
                p,
                s.max_tokens,
                temperature=s.temperature,
                seed=choice_seed(s.seed, j),
                stop_token_ids=s.stop_token_ids,
                sink=sink,
                index=i * s.n + j,
                top_p=s.top_p,
                top_k=s.top_k,
                logprobs=s.logprobs,
            )
            for i, p in enumerate(call.prompts)
            for j in range(s.n)
        ]
        run = CallRun(call, requests, self.server.tokenizer, gw.abort)
        shape = Shape(call.chat, call.model)
        try:
            if call.stream:
                self._stream(call, run, shape, sink)
            else:
                self._complete(run, shape, sink)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.info("client went away; aborting %d request(s)", len(requests))
        finally:
            for r in requests:
                gw.abort(r)

    def _items(
        self, requests: list[TrackedRequest], sink: queue.Queue[StreamItem]
    ) -> Iterator[StreamItem]:
        """The sink's items until every request ended, or a timeout item (index -1)."""
        open_ = len(requests)
        deadline = time.monotonic() + self.server.request_timeout_s
        while open_:
            try:
                item = sink.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                yield StreamItem(-1, finish="error", error="the request timed out")
                return
            if item.finish is not None:
                open_ -= 1
            yield item

    def _complete(self, run: CallRun, shape: Shape, sink: queue.Queue[StreamItem]) -> None:
        for item in self._items(run.requests, sink):
            if item.finish == "error":
                self._json(503, error_body(item.error, "server_error"))
                return
            run.feed(item)
        self._json(200, shape.body(run))

    def _stream(
        self, call: CompletionRequest, run: CallRun, shape: Shape, sink: queue.Queue[StreamItem]
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def send(body: object) -> None:
            self.wfile.write(b"data: " + json.dumps(body).encode("utf-8") + b"\n\n")
            self.wfile.flush()

        for item in self._items(run.requests, sink):
            if item.finish == "error":
                send(error_body(item.error, "server_error"))
                break
            piece = run.feed(item)
            if piece is not None and (piece.text or piece.token_ids or piece.finish):
                send(shape.chunk(piece, call.sampling.logprobs is not None))
        else:
            if call.include_usage:
                send(shape.usage_chunk(run.usage()))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class GatewayHTTPServer(ThreadingHTTPServer):
    """The HTTP server of one :class:`Gateway` (module docstring)."""

    daemon_threads = True
    #: Connections the kernel queues before they are accepted (a burst must not be refused).
    request_queue_size = 1024

    def __init__(
        self,
        gateway: Gateway,
        address: tuple[str, int] = ("127.0.0.1", 0),
        request_timeout_s: float = 600.0,
        limits: HTTPLimits | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.gateway = gateway
        self.tokenizer = ByteTokenizer(gateway.config.vocab_size)
        self.request_timeout_s = request_timeout_s
        self.limits = limits or HTTPLimits()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="lumen-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
