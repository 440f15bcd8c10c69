"""The subset of the OpenAI API the gateway speaks: request parsing and validation.

``POST /v1/completions`` accepts ``model``, ``prompt`` (a string, a list of token ids, or a list
of either) and the sampling fields below; ``POST /v1/chat/completions`` (see
:mod:`lumen.executor.gateway.chat`) takes ``messages`` instead of ``prompt``. Sampling fields:
``max_tokens`` (``max_completion_tokens`` in chat; default 16, capped at the room the context
leaves), ``temperature`` (default 1, in [0, 2]), ``top_p`` (in (0, 1]), ``top_k`` (vLLM's
extension; 0 or -1: off), ``seed``, ``n`` (samples per prompt, at most :data:`MAX_N`), ``stop``
(up to 4 strings), ``stop_token_ids`` (vLLM's extension), ``echo`` (completions), ``stream``,
``stream_options.include_usage`` and log probabilities: ``logprobs`` (completions: alternatives
per token, 0 to 5; chat: true/false with ``top_logprobs`` 0 to 20). ``best_of`` and ``suffix``
are accepted only at their defaults; other fields (``user``, penalties at 0...) are ignored.
Every refusal is a :class:`BadRequest` that names the field, answered with
OpenAI's error body: 400, or 404 for an unknown model.

Context length, as vLLM checks it: a prompt of ``max_model_len`` tokens or more, or one whose
``max_tokens`` would take the context past ``max_model_len``, is refused with 400 and code
``context_length_exceeded``; without ``max_tokens`` the output is capped at the room left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lumen.executor.gateway.tokenizer import ByteTokenizer, TokenizerError

#: Prompts per call at most.
MAX_PROMPTS = 64
#: Samples per prompt at most (``n``).
MAX_N = 16
#: Stop strings at most, and their longest length (characters).
MAX_STOPS, MAX_STOP_CHARS = 4, 256
#: Fields accepted only at these values.
_DEFAULT_ONLY: dict[str, tuple[object, ...]] = {
    "best_of": (None, 1),
    "suffix": (None, ""),
}
#: Alternatives per token at most: ``logprobs`` (completions), ``top_logprobs`` (chat).
MAX_COMPLETION_LOGPROBS, MAX_TOP_LOGPROBS = 5, 20


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
class Sampling:
    """The sampling fields of a call, validated."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    n: int
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...]
    logprobs: int | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """A validated completion or chat call; ``prompts`` are token ids."""

    model: str
    prompts: tuple[tuple[int, ...], ...]
    sampling: Sampling
    stream: bool
    include_usage: bool
    echo: bool = False
    chat: bool = False


@dataclass(frozen=True)
class Limits:
    """What the served model allows: its name, the context, the output and prompt caps."""

    model: str
    max_model_len: int | None
    max_tokens_limit: int
    max_prompt_tokens: int


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{name}: expected a number in [{low}, {high}]", name)
    if not low <= float(value) <= high:
        raise BadRequest(f"{name}: {value} outside [{low}, {high}]", name)
    return float(value)


def _stops(
    body: dict[str, Any], tokenizer: ByteTokenizer
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    stop = body.get("stop")
    if stop is None or stop == "":
        strings: list[object] = []
    elif isinstance(stop, str):
        strings = [stop]
    elif isinstance(stop, list):
        strings = list(stop)
    else:
        raise BadRequest("stop: expected a string or a list of strings", "stop")
    if len(strings) > MAX_STOPS or not all(
        isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in strings
    ):
        raise BadRequest(
            f"stop: at most {MAX_STOPS} non-empty strings of {MAX_STOP_CHARS} characters", "stop"
        )
    ids = body.get("stop_token_ids") or []
    if not isinstance(ids, list) or not all(is_int(t) for t in ids) or len(ids) > 64:
        raise BadRequest(
            "stop_token_ids: expected a list of at most 64 token ids", "stop_token_ids"
        )
    try:
        tokenizer.check(ids)
    except TokenizerError as exc:
        raise BadRequest(f"stop_token_ids{exc}", "stop_token_ids") from None
    return tuple(str(s) for s in strings), tuple(ids)


def _max_tokens(value: object, name: str, prompts: list[tuple[int, ...]], limits: Limits) -> int:
    longest = max(len(p) for p in prompts)
    context = limits.max_model_len
    if context is not None and longest >= context:
        raise BadRequest(
            f"This model's maximum context length is {context} tokens. However, your prompt"
            f" has {longest} tokens. Please reduce the length of the prompt.",
            "prompt" if name == "max_tokens" else "messages",
            code="context_length_exceeded",
        )
    room = limits.max_tokens_limit if context is None else context - longest
    if value is None:
        return min(16, room, limits.max_tokens_limit)
    if not is_int(value) or not 1 <= int(str(value)) <= limits.max_tokens_limit:
        raise BadRequest(
            f"{name}: expected an integer in [1, {limits.max_tokens_limit}], got {value!r}", name
        )
    wanted = int(str(value))
    if context is not None and longest + wanted > context:
        raise BadRequest(
            f"This model's maximum context length is {context} tokens. However, you requested"
            f" {longest + wanted} tokens ({longest} in the prompt, {wanted} in the completion)."
            " Please reduce the length of the prompt or completion.",
            name,
            code="context_length_exceeded",
        )
    return wanted


def completion_logprobs(body: dict[str, Any]) -> int | None:
    """``logprobs`` of a completions call: alternatives per token, or None."""
    value = body.get("logprobs")
    if value is None:
        return None
    if not is_int(value) or not 0 <= value <= MAX_COMPLETION_LOGPROBS:
        raise BadRequest(
            f"logprobs: expected an integer in [0, {MAX_COMPLETION_LOGPROBS}] or null", "logprobs"
        )
    if body.get("echo"):
        raise BadRequest("logprobs: not supported with echo (no prompt log probabilities)", "echo")
    return int(value)


def chat_logprobs(body: dict[str, Any]) -> int | None:
    """``logprobs`` and ``top_logprobs`` of a chat call: alternatives per token, or None."""
    wanted, top = body.get("logprobs"), body.get("top_logprobs")
    if not isinstance(wanted, bool | None):
        raise BadRequest("logprobs: expected true or false", "logprobs")
    if top is not None and (not is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise BadRequest(
            f"top_logprobs: expected an integer in [0, {MAX_TOP_LOGPROBS}]", "top_logprobs"
        )
    if top and not wanted:
        raise BadRequest("top_logprobs: only with logprobs true", "top_logprobs")
    return int(top or 0) if wanted else None


def parse_sampling(
    body: dict[str, Any],
    prompts: list[tuple[int, ...]],
    tokenizer: ByteTokenizer,
    limits: Limits,
    max_tokens_field: str = "max_tokens",
    chat: bool = False,
) -> Sampling:
    """The sampling fields of ``body`` (module docstring); raises :class:`BadRequest`."""
    max_tokens = _max_tokens(body.get(max_tokens_field), max_tokens_field, prompts, limits)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0.0:
        raise BadRequest("top_p: must be in (0, 1]", "top_p")
    top_k = body.get("top_k")
    if top_k is None or top_k == -1:
        top_k = 0
    if not is_int(top_k) or top_k < 0:
        raise BadRequest("top_k: expected an integer >= 0 (0 or -1: off)", "top_k")
    seed = body.get("seed")
    if seed is not None and not (is_int(seed) and 0 <= seed < 2**63):
        raise BadRequest("seed: expected a non-negative integer", "seed")
    n = body.get("n", 1)
    n = 1 if n is None else n
    if not is_int(n) or not 1 <= n <= MAX_N or n * len(prompts) > MAX_PROMPTS:
        raise BadRequest(f"n: expected an integer in [1, {MAX_N}], n x prompts <= 64", "n")
    stop, stop_ids = _stops(body, tokenizer)
    logprobs = chat_logprobs(body) if chat else completion_logprobs(body)
    return Sampling(max_tokens, temperature, top_p, int(top_k), seed, n, stop, stop_ids, logprobs)


def check_model(body: object, model: str) -> dict[str, Any]:
    """``body`` as an object naming the served model (:class:`BadRequest` otherwise)."""
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
    for field, allowed in _DEFAULT_ONLY.items():
        if field in body and body[field] not in allowed:
            shown = ", ".join(json.dumps(a) for a in allowed)
            raise BadRequest(f"{field}: not supported (only {shown})", field)
    return body


def stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    """``(stream, include_usage)`` of ``body``."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise BadRequest("stream: expected true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise BadRequest("stream_options: an object, only with stream true", "stream_options")
    return bool(stream), bool(options.get("include_usage", False)) if options else False


def prompt_ids(value: object, tokenizer: ByteTokenizer, limits: Limits) -> list[tuple[int, ...]]:
    """The prompts of a completions call as token ids (a string, ids, or a list of either)."""
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list) and value and all(is_int(t) for t in value):
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
        elif isinstance(item, list) and all(is_int(t) for t in item):
            ids = tuple(item)
            try:
                tokenizer.check(ids)
            except TokenizerError as exc:
                raise BadRequest(f"{path}{exc}", "prompt") from None
        else:
            raise BadRequest(f"{path}: expected a string or a list of token ids", "prompt")
        if not ids:
            raise BadRequest(f"{path}: must not be empty", "prompt")
        if len(ids) > limits.max_prompt_tokens:
            raise BadRequest(
                f"{path}: {len(ids)} tokens, at most {limits.max_prompt_tokens} allowed",
                "prompt",
                code="context_length_exceeded",
            )
        out.append(ids)
    return out


def parse_completion(body: object, tokenizer: ByteTokenizer, limits: Limits) -> CompletionRequest:
    """Validate a ``/v1/completions`` body (module docstring); raises :class:`BadRequest`."""
    call = check_model(body, limits.model)
    if "prompt" not in call:
        raise BadRequest("prompt: required", "prompt")
    prompts = prompt_ids(call["prompt"], tokenizer, limits)
    sampling = parse_sampling(call, prompts, tokenizer, limits)
    stream, include_usage = stream_options(call)
    echo = call.get("echo", False)
    if not isinstance(echo, bool | None):
        raise BadRequest("echo: expected true or false", "echo")
    return CompletionRequest(
        limits.model, tuple(prompts), sampling, stream, include_usage, echo=bool(echo)
    )
