"""Chat completions: messages, the built-in model's chat template, and the response shapes.

The built-in engine's tokenizer is :class:`~lumen.executor.gateway.tokenizer.ByteTokenizer`
(UTF-8 bytes), so the chat template is text: ChatML, as Qwen models use it (``\\n``: a
newline)::

    <|im_start|>system\\nYou are...<|im_end|>\\n
    <|im_start|>user\\nHi<|im_end|>\\n
    <|im_start|>assistant\\n

Each message is ``{"role": "system" | "developer" | "user" | "assistant", "content": ...}`` with
content a string or a list of ``{"type": "text", "text": ...}`` parts. Generation stops at
``<|im_end|>`` (added to the call's stop strings and not returned).
"""

from __future__ import annotations

from typing import Any

from lumen.executor.gateway.openai import (
    BadRequest,
    CompletionRequest,
    Limits,
    check_model,
    parse_sampling,
    stream_options,
)
from lumen.executor.gateway.tokenizer import ByteTokenizer, TokenizerError

__all__ = ["END_OF_TURN", "ROLES", "apply_template", "parse_chat"]

#: Where an assistant turn ends.
END_OF_TURN = "<|im_end|>"
#: Roles a message may have.
ROLES = ("system", "developer", "user", "assistant")
#: Messages per call at most.
MAX_MESSAGES = 256


def _content(message: object, k: int) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise BadRequest(f"messages[{k}]: expected an object", "messages")
    role = message.get("role")
    if role not in ROLES:
        raise BadRequest(f"messages[{k}].role: expected one of {', '.join(ROLES)}", "messages")
    content = message.get("content")
    if content is None and role == "assistant":
        content = ""
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise BadRequest(f"messages[{k}].content[{j}]: only text parts", "messages")
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"messages[{k}].content[{j}].text: a string", "messages")
            parts.append(text)
        content = "".join(parts)
    if not isinstance(content, str):
        raise BadRequest(f"messages[{k}].content: a string or text parts", "messages")
    return str(role), content


def apply_template(messages: list[tuple[str, str]]) -> str:
    """The prompt text of ``(role, content)`` messages, ending with an open assistant turn."""
    turns = "".join(f"<|im_start|>{role}\n{content}{END_OF_TURN}\n" for role, content in messages)
    return turns + "<|im_start|>assistant\n"


def chat_messages(value: object) -> list[tuple[str, str]]:
    """Validated ``(role, content)`` pairs of a ``messages`` field."""
    if not isinstance(value, list) or not value:
        raise BadRequest("messages: required, a non-empty list", "messages")
    if len(value) > MAX_MESSAGES:
        raise BadRequest(f"messages: at most {MAX_MESSAGES}", "messages")
    return [_content(m, k) for k, m in enumerate(value)]


def parse_chat(body: object, tokenizer: ByteTokenizer, limits: Limits) -> CompletionRequest:
    """Validate a ``/v1/chat/completions`` body; raises :class:`BadRequest`."""
    call: dict[str, Any] = check_model(body, limits.model)
    text = apply_template(chat_messages(call.get("messages")))
    try:
        ids = tokenizer.encode(text)
    except TokenizerError as exc:
        raise BadRequest(f"messages: {exc}", "messages") from None
    if len(ids) > limits.max_prompt_tokens:
        raise BadRequest(
            f"messages: {len(ids)} tokens, at most {limits.max_prompt_tokens} allowed",
            "messages",
            code="context_length_exceeded",
        )
    field = (
        "max_completion_tokens" if call.get("max_completion_tokens") is not None else "max_tokens"
    )
    sampling = parse_sampling(call, [ids], tokenizer, limits, field, chat=True)
    if END_OF_TURN not in sampling.stop:
        sampling = type(sampling)(**{**sampling.__dict__, "stop": (*sampling.stop, END_OF_TURN)})
    stream, include_usage = stream_options(call)
    return CompletionRequest(limits.model, (ids,), sampling, stream, include_usage, chat=True)
