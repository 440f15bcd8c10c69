"""One completion or chat call inside the gateway: its choices' text, stops and bodies.

A call of ``p`` prompts with ``n`` samples each runs ``p * n`` requests on one sink; choice
``i * n + j`` is sample ``j`` of prompt ``i`` (sample ``j`` of a seeded call uses ``seed + j``,
so every choice is reproducible on its own, after a failover too). :class:`CallRun` turns the
sink's items into per-choice text (incremental UTF-8 decoding, stop strings, ``echo``) and
aborts a choice as soon as a stop string ends it. :class:`Shape` writes OpenAI's bodies and
stream chunks of the text and chat flavours.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lumen.executor.gateway.history import StreamItem, TrackedRequest
from lumen.executor.gateway.openai import CompletionRequest
from lumen.executor.gateway.stops import StopMatcher
from lumen.executor.gateway.tokenizer import ByteTokenizer, StreamDecoder
from lumen.executor.worker.api import TokenLogprob

__all__ = ["CallRun", "Piece", "Shape", "choice_seed", "usage"]


def choice_seed(seed: int | None, sample: int) -> int | None:
    """The seed of sample ``sample`` of a call seeded with ``seed``."""
    return None if seed is None else (seed + sample) % 2**63


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Piece:
    """What one sink item adds to a choice: text to send, its token ids, the finish reason,
    and the log probabilities of its tokens (when asked for) with the choice's text length
    before it (for ``text_offset``)."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    finish: str | None
    logprobs: tuple[TokenLogprob, ...] = ()
    offset: int = 0


def token_text(token: int) -> str:
    """A token's text as OpenAI lists it: the character of an ASCII byte, ``bytes:\\xNN`` for
    other bytes, U+FFFD for ids without a byte form."""
    if token < 128:
        return chr(token)
    return f"bytes:\\x{token:02x}" if token < 256 else "\ufffd"


def _token_bytes(token: int) -> list[int]:
    return [token] if token < 256 else list("\ufffd".encode())


def text_logprobs(pieces: Sequence[Piece]) -> dict[str, object]:
    """``choices[].logprobs`` of ``/v1/completions`` for the pieces of one choice."""
    tokens: list[str] = []
    chosen: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    for piece in pieces:
        offset = piece.offset
        for t, lp in zip(piece.token_ids, piece.logprobs, strict=False):
            tokens.append(token_text(t))
            chosen.append(lp.logprob)
            tops.append({token_text(a): v for a, v in lp.top})
            offsets.append(offset)
            offset += 1 if t < 128 else 0
    return {
        "tokens": tokens,
        "token_logprobs": chosen,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def chat_logprobs(pieces: Sequence[Piece]) -> dict[str, object]:
    """``choices[].logprobs`` of ``/v1/chat/completions`` for the pieces of one choice."""

    def entry(token: int, logprob: float) -> dict[str, object]:
        return {"token": token_text(token), "logprob": logprob, "bytes": _token_bytes(token)}

    content = [
        {**entry(t, lp.logprob), "top_logprobs": [entry(a, v) for a, v in lp.top]}
        for piece in pieces
        for t, lp in zip(piece.token_ids, piece.logprobs, strict=False)
    ]
    return {"content": content}


@dataclass
class _Choice:
    decoder: StreamDecoder
    matcher: StopMatcher
    prefix: str
    ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    finish: str | None = None
    pieces: list[Piece] = field(default_factory=list)
    length: int = 0


class CallRun:
    """The choices of one call as its tokens arrive (module docstring)."""

    def __init__(
        self,
        call: CompletionRequest,
        requests: Sequence[TrackedRequest],
        tokenizer: ByteTokenizer,
        abort: Callable[[TrackedRequest], None],
    ) -> None:
        self.call = call
        self.requests = list(requests)
        self._abort = abort
        n = call.sampling.n
        self.choices = [
            _Choice(
                tokenizer.decoder(),
                StopMatcher(call.sampling.stop),
                tokenizer.decode(call.prompts[k // n]) if call.echo else "",
            )
            for k in range(len(self.requests))
        ]

    def feed(self, item: StreamItem) -> Piece | None:
        """The piece ``item`` adds (None: nothing, the choice has ended)."""
        c = self.choices[item.index]
        if c.finish is not None:
            return None
        text = c.decoder.feed(item.token_ids)
        if item.finish is not None:
            text += c.decoder.flush()
        out = c.matcher.feed(text)
        finish = item.finish
        if c.matcher.stopped:
            finish = "stop"
            self._abort(self.requests[item.index])
        elif finish is not None:
            out += c.matcher.flush()
        if c.prefix:
            out, c.prefix = c.prefix + out, ""
        c.ids.extend(item.token_ids)
        c.text.append(out)
        c.finish = finish
        piece = Piece(item.index, out, item.token_ids, finish, item.logprobs, c.length)
        c.length += len(out)
        if item.logprobs:
            c.pieces.append(piece)
        return piece

    def usage(self) -> dict[str, int]:
        prompt = sum(len(p) for p in self.call.prompts)
        return usage(prompt, sum(len(c.ids) for c in self.choices))


class Shape:
    """OpenAI's response bodies for a text (``/v1/completions``) or chat call."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}" if chat else f"cmpl-{uuid.uuid4().hex[:24]}"
        self._opened: set[int] = set()

    def _envelope(self, kind: str, choices: list[dict[str, object]]) -> dict[str, object]:
        return {
            "id": self.id,
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
        }

    def _logprobs(self, pieces: Sequence[Piece], wanted: bool) -> dict[str, object] | None:
        if not wanted:
            return None
        return chat_logprobs(pieces) if self.chat else text_logprobs(pieces)

    def chunk(self, piece: Piece, wanted: bool = False) -> dict[str, object]:
        """One stream chunk (``wanted``: the call asked for log probabilities)."""
        extra = {"lumen": {"token_ids": list(piece.token_ids)}}
        logprobs = self._logprobs([piece], wanted and bool(piece.token_ids))
        if not self.chat:
            c = {"text": piece.text, "index": piece.index, "logprobs": logprobs}
            return self._envelope(
                "text_completion", [{**c, "finish_reason": piece.finish, **extra}]
            )
        delta: dict[str, object] = {"content": piece.text}
        if piece.index not in self._opened:
            self._opened.add(piece.index)
            delta = {"role": "assistant", **delta}
        c = {
            "index": piece.index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": piece.finish,
        }
        return self._envelope("chat.completion.chunk", [{**c, **extra}])

    def usage_chunk(self, counts: dict[str, int]) -> dict[str, object]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._envelope(kind, []), "usage": counts}

    def body(self, run: CallRun) -> dict[str, object]:
        """The whole (non-streamed) response."""
        choices: list[dict[str, object]] = []
        wanted = run.call.sampling.logprobs is not None
        for k, c in enumerate(run.choices):
            text = "".join(c.text)
            head: dict[str, object] = (
                {"index": k, "message": {"role": "assistant", "content": text}}
                if self.chat
                else {"text": text, "index": k}
            )
            choices.append(
                {
                    **head,
                    "logprobs": self._logprobs(c.pieces, wanted),
                    "finish_reason": c.finish,
                    "lumen": {"token_ids": c.ids},
                }
            )
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self._envelope(kind, choices), "usage": run.usage()}
