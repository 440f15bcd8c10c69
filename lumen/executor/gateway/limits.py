"""Limits of the gateway's HTTP front end: body size, JSON nesting depth and read time.

A request body is read only with a ``Content-Length`` (411 without one) of at most
``max_body_bytes`` (413 beyond); the whole body must arrive within ``body_timeout_s`` and no
single read may wait longer than ``read_timeout_s`` (the connection is closed after a 408, or
without an answer while the request line and headers are still being read), so a stalled or
trickling client holds its thread for a bounded time. JSON nested deeper than
``max_json_depth`` arrays and objects is refused (400) before it is parsed.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BodyError", "HTTPLimits", "json_depth", "load_json", "read_body"]

#: JSON strings (their brackets do not nest anything).
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


@dataclass(frozen=True)
class HTTPLimits:
    """What one HTTP request may take (module docstring)."""

    max_body_bytes: int = 1 << 20
    max_json_depth: int = 32
    read_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1 or self.max_json_depth < 2:
            raise ValueError("max_body_bytes must be >= 1 and max_json_depth >= 2")
        if not (self.read_timeout_s > 0 and self.body_timeout_s > 0):
            raise ValueError("read_timeout_s and body_timeout_s must be > 0")


class BodyError(Exception):
    """A body the gateway will not read or parse: HTTP ``status`` and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (strings skipped; not validated)."""
    data = np.frombuffer(_STRINGS.sub(b"", raw), dtype=np.uint8)
    if data.size == 0:
        return 0
    step = (data == ord("[")).astype(np.int64) + (data == ord("{"))
    step -= (data == ord("]")).astype(np.int64) + (data == ord("}"))
    return int(max(0, np.cumsum(step).max()))


def load_json(raw: bytes, max_depth: int) -> Any:
    """Parse ``raw`` as JSON nested at most ``max_depth`` deep (:class:`BodyError` 400)."""
    depth = json_depth(raw)
    if depth > max_depth:
        raise BodyError(400, f"request body: JSON nested {depth} deep, at most {max_depth}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(400, f"request body: not valid JSON ({exc})") from None
    except RecursionError:
        raise BodyError(400, "request body: JSON nested too deep") from None


def read_body(rfile: io.BufferedIOBase, length_header: str | None, limits: HTTPLimits) -> bytes:
    """Read a body of ``Content-Length`` bytes within the limits (:class:`BodyError`: 411,
    413, 400 for a body cut short, 408 for one that took too long). The socket's own timeout
    (``read_timeout_s``) bounds each read."""
    try:
        length = int(length_header or "")
    except ValueError:
        raise BodyError(411, "Content-Length: required") from None
    if not 0 <= length <= limits.max_body_bytes:
        raise BodyError(413, f"request body: at most {limits.max_body_bytes} bytes")
    deadline = time.monotonic() + limits.body_timeout_s
    parts: list[bytes] = []
    left = length
    while left:
        if time.monotonic() > deadline:
            raise BodyError(408, f"request body: not received within {limits.body_timeout_s} s")
        try:
            chunk = rfile.read1(min(left, 65536))
        except TimeoutError:
            raise BodyError(408, f"request body: no data for {limits.read_timeout_s} s") from None
        if not chunk:
            raise BodyError(400, f"request body: ended after {length - left} of {length} bytes")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
