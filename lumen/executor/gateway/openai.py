"""The subset of the OpenAI completions API the gateway speaks: parsing and response bodies.

``POST /v1/completions`` accepts ``model``, ``prompt`` (a string, a list of token ids, or a list
of either), ``max_tokens`` (default 16), ``temperature`` (default 1, in [0, 2]), ``seed``,
``stream`` and ``stream_options.include_usage``. ``echo``, ``n``, ``best_of``, ``logprobs``,
``suffix`` and ``stop`` are accepted only at their defaults (false, 1, 1, null, null, null) and
refused otherwise; other fields (``user``, penalties at 0...) are ignored. Every refusal is a
:class:`BadRequest` that names the field, answered as HTTP 400 with OpenAI's error body.
Responses add a ``lumen`` field to each choice with its token ids.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lumen.executor.gateway.tokenizer import ByteTokenizer, TokenizerError

#: Prompts per call at most.
MAX_PROMPTS = 64
#: Fields accepted only at these values.
_DEFAULT_ONLY: dict[str, tuple[object, ...]] = {
    "echo": (None, False),
    "n": (None, 1),
    "best_of": (None, 1),
    "logprobs": (None,),
    "suffix": (None, ""),
    "stop": (None, [], ""),
}


class BadRequest(Exception):
    """Input the API refuses: ``status`` (400, 404...) and an OpenAI-style error body."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    def body(self) -> dict[str, object]:
        return error_body(self.message, "invalid_request_error", self.param, self.code)


def error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class CompletionRequest:
    """A validated completion call; ``prompts`` are token ids."""

    model: str
    prompts: tuple[tuple[int, ...], ...]
    max_tokens: int
    temperature: float
    seed: int | None
    stream: bool
    include_usage: bool


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prompts(value: object, tokenizer: ByteTokenizer) -> list[tuple[int, ...]]:
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list) and value and all(_is_int(t) for t in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = list(value)
    else:
        raise BadRequest(
            "prompt: expected a non-empty string, list of token ids, or list of those", "prompt"
        )
    if len(items) > MAX_PROMPTS:
        raise BadRequest(f"prompt: at most {MAX_PROMPTS} prompts per call", "prompt")
    out: list[tuple[int, ...]] = []
    for k, item in enumerate(items):
        path = "prompt" if len(items) == 1 and item is value else f"prompt[{k}]"
        if isinstance(item, str):
            try:
                ids = tokenizer.encode(item)
            except TokenizerError as exc:
                raise BadRequest(f"{path}: {exc}", "prompt") from None
        elif isinstance(item, list) and all(_is_int(t) for t in item):
            ids = tuple(item)
            try:
                tokenizer.check(ids)
            except TokenizerError as exc:
                raise BadRequest(f"{path}{exc}", "prompt") from None
        else:
            raise BadRequest(f"{path}: expected a string or a list of token ids", "prompt")
        if not ids:
            raise BadRequest(f"{path}: must not be empty", "prompt")
        out.append(ids)
    return out


def parse_completion(
    raw: bytes,
    tokenizer: ByteTokenizer,
    *,
    model: str,
    max_tokens_limit: int,
    max_prompt_tokens: int,
) -> CompletionRequest:
    """Validate a ``/v1/completions`` body (module docstring); raises :class:`BadRequest`."""
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest("request body: expected a JSON object")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("model: required, a string", "model")
    if name != model:
        raise BadRequest(
            f"model: {name!r} does not exist; this gateway serves {model!r}",
            "model",
            status=404,
            code="model_not_found",
        )
    if "prompt" not in body:
        raise BadRequest("prompt: required", "prompt")
    prompts = _prompts(body["prompt"], tokenizer)
    for k, p in enumerate(prompts):
        if len(p) > max_prompt_tokens:
            raise BadRequest(
                f"prompt[{k}]: {len(p)} tokens, at most {max_prompt_tokens} allowed", "prompt"
            )
    max_tokens = body.get("max_tokens", 16)
    if max_tokens is None:
        max_tokens = 16
    if not _is_int(max_tokens) or not 1 <= max_tokens <= max_tokens_limit:
        raise BadRequest(
            f"max_tokens: expected an integer in [1, {max_tokens_limit}], got {max_tokens!r}",
            "max_tokens",
        )
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise BadRequest("temperature: expected a number in [0, 2]", "temperature")
    if not 0.0 <= float(temperature) <= 2.0:
        raise BadRequest(f"temperature: {temperature} outside [0, 2]", "temperature")
    seed = body.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**63):
        raise BadRequest("seed: expected a non-negative integer", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise BadRequest("stream: expected true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise BadRequest("stream_options: an object, only with stream true", "stream_options")
    include_usage = bool(options.get("include_usage", False)) if options else False
    for field, allowed in _DEFAULT_ONLY.items():
        if field in body and body[field] not in allowed:
            shown = ", ".join(json.dumps(a) for a in allowed)
            raise BadRequest(f"{field}: not supported (only {shown})", field)
    return CompletionRequest(
        name, tuple(prompts), max_tokens, float(temperature), seed, bool(stream), include_usage
    )


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def choice(index: int, text: str, ids: Sequence[int], finish: str | None) -> dict[str, object]:
    return {
        "text": text,
        "index": index,
        "logprobs": None,
        "finish_reason": finish,
        "lumen": {"token_ids": list(ids)},
    }


def completion(
    cid: str, model: str, choices: list[dict[str, object]], usage: dict[str, int] | None
) -> dict[str, object]:
    """A response body (non-streaming) or one stream chunk (``usage`` None)."""
    out: dict[str, object] = {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
