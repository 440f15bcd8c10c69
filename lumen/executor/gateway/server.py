"""The gateway's HTTP front end: OpenAI-compatible completions on the standard library server.

Routes: ``POST /v1/completions`` (see :mod:`lumen.executor.gateway.openai`; streamed as
server-sent events ``data: {...}`` then ``data: [DONE]``), ``GET /v1/models``, ``GET /healthz``
(200 while at least one worker serves, else 503) and ``GET /metrics`` (Prometheus text). Bad
input gets 400 (unknown model 404) with OpenAI's JSON error body; a request the cluster cannot
finish gets 503 (or, once streaming, an ``error`` event before ``[DONE]``).

One thread per connection (:class:`ThreadingHTTPServer`); streams close the connection at the
end. A client that disconnects mid-stream has its requests aborted.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lumen.executor.gateway.gateway import Gateway
from lumen.executor.gateway.history import StreamItem, TrackedRequest
from lumen.executor.gateway.openai import (
    BadRequest,
    CompletionRequest,
    choice,
    completion,
    completion_id,
    error_body,
    parse_completion,
    usage,
)
from lumen.executor.gateway.tokenizer import ByteTokenizer, StreamDecoder

log = logging.getLogger(__name__)

#: Largest request body accepted.
MAX_BODY_BYTES = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: GatewayHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing --------------------------------------------------------------------------------

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str, kind: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._json(404, error_body(f"no route {self.command} {self.path}", "not_found_error"))

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        gw = self.server.gateway
        path = self.path.split("?", 1)[0]
        if path == "/v1/models":
            model = {"id": gw.config.model, "object": "model", "created": 0, "owned_by": "lumen"}
            self._json(200, {"object": "list", "data": [model]})
        elif path == "/healthz":
            serving = [w for w in gw.board.ids if gw.board.serving(w)]
            status = "ok" if serving else "unavailable"
            body = {"status": status, "serving_workers": serving, "policy": gw.config.policy}
            self._json(200 if serving else 503, body)
        elif path == "/metrics":
            self._text(200, gw.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._not_found()

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/v1/completions":
            self._not_found()
            return
        gw = self.server.gateway
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(411, BadRequest("Content-Length: required").body())
            return
        if not 0 <= length <= MAX_BODY_BYTES:
            self._json(413, BadRequest(f"request body: at most {MAX_BODY_BYTES} bytes").body())
            return
        raw = self.rfile.read(length)
        try:
            call = parse_completion(
                raw,
                self.server.tokenizer,
                model=gw.config.model,
                max_tokens_limit=gw.config.max_tokens_limit,
                max_prompt_tokens=gw.config.max_prompt_tokens,
            )
        except BadRequest as exc:
            self._json(exc.status, exc.body())
            return
        sink: queue.Queue[StreamItem] = queue.Queue()
        requests = [
            gw.submit(
                p, call.max_tokens, temperature=call.temperature, seed=call.seed, sink=sink, index=k
            )
            for k, p in enumerate(call.prompts)
        ]
        try:
            if call.stream:
                self._stream(call, requests, sink)
            else:
                self._complete(call, requests, sink)
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away; aborting %d request(s)", len(requests))
        finally:
            for r in requests:
                gw.abort(r)

    # -- completions -----------------------------------------------------------------------------

    def _items(
        self, requests: list[TrackedRequest], sink: queue.Queue[StreamItem]
    ) -> Any:  # Iterator[StreamItem], ending with a TimeoutError item
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

    def _complete(
        self, call: CompletionRequest, requests: list[TrackedRequest], sink: queue.Queue[StreamItem]
    ) -> None:
        ids: list[list[int]] = [[] for _ in requests]
        finish: list[str | None] = [None] * len(requests)
        for item in self._items(requests, sink):
            if item.finish == "error":
                self._json(503, error_body(item.error, "server_error"))
                return
            if item.index >= 0:
                ids[item.index].extend(item.token_ids)
                finish[item.index] = item.finish or finish[item.index]
        tok = self.server.tokenizer
        choices = [choice(k, tok.decode(t), t, finish[k]) for k, t in enumerate(ids)]
        prompt_tokens = sum(len(p) for p in call.prompts)
        body = completion(
            completion_id(), call.model, choices, usage(prompt_tokens, sum(map(len, ids)))
        )
        self._json(200, body)

    def _stream(
        self, call: CompletionRequest, requests: list[TrackedRequest], sink: queue.Queue[StreamItem]
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        cid = completion_id()
        decoders: list[StreamDecoder] = [self.server.tokenizer.decoder() for _ in requests]
        generated = 0

        def send(body: object) -> None:
            self.wfile.write(b"data: " + json.dumps(body).encode("utf-8") + b"\n\n")
            self.wfile.flush()

        for item in self._items(requests, sink):
            if item.finish == "error":
                send(error_body(item.error, "server_error"))
                break
            generated += len(item.token_ids)
            k = item.index
            text = decoders[k].feed(item.token_ids)
            if item.finish is not None:
                text += decoders[k].flush()
            if text or item.token_ids or item.finish is not None:
                send(
                    completion(
                        cid, call.model, [choice(k, text, item.token_ids, item.finish)], None
                    )
                )
        else:
            if call.include_usage:
                body = completion(
                    cid, call.model, [], usage(sum(map(len, call.prompts)), generated)
                )
                send(body)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class GatewayHTTPServer(ThreadingHTTPServer):
    """The HTTP server of one :class:`Gateway` (module docstring)."""

    daemon_threads = True

    def __init__(
        self,
        gateway: Gateway,
        address: tuple[str, int] = ("127.0.0.1", 0),
        request_timeout_s: float = 600.0,
    ) -> None:
        super().__init__(address, _Handler)
        self.gateway = gateway
        self.tokenizer = ByteTokenizer(gateway.config.vocab_size)
        self.request_timeout_s = request_timeout_s
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
