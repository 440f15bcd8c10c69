"""The gateway's built-in tokenizer: UTF-8 bytes as token ids (reversible, no vocabulary file).

A text prompt becomes the ids of its UTF-8 bytes (``"hi" -> (104, 105)``), so every string
round-trips exactly: ``decode(encode(s)) == s``. Ids 256 and above (a model's own tokens,
which have no byte form here) decode to U+FFFD; clients that need those send and read token ids
(the ``lumen.token_ids`` extension of every response). Streams decode incrementally, so a
character whose bytes arrive in different chunks is emitted once, whole.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

#: Ids below this are bytes.
BYTE_TOKENS = 256
#: What an id without a byte form decodes to.
REPLACEMENT = "\ufffd"


class TokenizerError(ValueError):
    """Text that cannot be tokenized (lone surrogates) or ids outside the vocabulary."""


class ByteTokenizer:
    """UTF-8 byte tokenizer over a model vocabulary of ``vocab_size`` ids (module docstring)."""

    def __init__(self, vocab_size: int = BYTE_TOKENS) -> None:
        if vocab_size < BYTE_TOKENS:
            raise ValueError(f"vocab_size must be >= {BYTE_TOKENS}, got {vocab_size}")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> tuple[int, ...]:
        try:
            return tuple(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise TokenizerError(f"not valid Unicode text ({exc.reason})") from None

    def decode(self, ids: Iterable[int]) -> str:
        decoder = self.decoder()
        return decoder.feed(ids) + decoder.flush()

    def decoder(self) -> StreamDecoder:
        """An incremental decoder for one output stream."""
        return StreamDecoder()

    def check(self, ids: Iterable[int]) -> None:
        """Raise :class:`TokenizerError` naming the first id outside ``[0, vocab_size)``."""
        for k, t in enumerate(ids):
            if not 0 <= t < self.vocab_size:
                raise TokenizerError(f"[{k}]: token id {t} outside [0, {self.vocab_size})")


class StreamDecoder:
    """Turns a stream of ids into text chunks, holding back an incomplete UTF-8 sequence."""

    def __init__(self) -> None:
        self._bytes = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        run = bytearray()
        for t in ids:
            if 0 <= t < BYTE_TOKENS:
                run.append(t)
                continue
            out.append(self._bytes.decode(bytes(run)) + self._bytes.decode(b"", final=True))
            run.clear()
            out.append(REPLACEMENT)
        out.append(self._bytes.decode(bytes(run)))
        return "".join(out)

    def flush(self) -> str:
        """The text of a trailing incomplete sequence (as U+FFFD), at the end of a stream."""
        return self._bytes.decode(b"", final=True)
