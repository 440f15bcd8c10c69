"""KV pages: how a request's KV cache leaves and enters an engine (no torch import).

A page holds the K and V of one KV block of one request over all layers, with its position range,
a tag that ties it to the exact token prefix it was computed from, and a CRC-32 checksum, so the
checkpoint store and transfer code can validate pages without a model.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lumen.executor.engine.config import DTYPE_BYTES

__all__ = ["ROOT_TAG", "KVLayout", "KVPage", "page_tag", "page_tags"]

#: Tag of the empty prefix; the first page of every request chains from it.
ROOT_TAG = bytes(16)
_TAG_PERSON = b"lumen-kv-tag"
_PAGE_MAGIC = b"LKV1"


@dataclass(frozen=True, slots=True)
class KVLayout:
    """How an engine stores KV, which fixes the shape and size of its pages.

    A page's payload is the K and V of its tokens for every layer, C order, shape
    ``(num_layers, 2, num_tokens, num_kv_heads, head_dim)`` (index 0 of the second axis is K).
    """

    block_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str

    @property
    def bytes_per_token(self) -> int:
        """KV bytes of one token over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * DTYPE_BYTES[self.dtype]

    def page_shape(self, num_tokens: int) -> tuple[int, ...]:
        """Payload shape of a page covering ``num_tokens`` tokens."""
        return (self.num_layers, 2, num_tokens, self.num_kv_heads, self.head_dim)


def page_tag(prev_tag: bytes, start: int, token_ids: Sequence[int]) -> bytes:
    """Tag of the page covering ``token_ids`` at positions ``start..start+len``.

    The tag chains the previous page's tag, because a page's K and V depend on every earlier
    token, not only on its own: equal tags mean equal token prefixes (up to hash collisions).
    """
    h = hashlib.blake2b(digest_size=16, person=_TAG_PERSON)
    h.update(prev_tag)
    h.update(struct.pack("<qq", start, start + len(token_ids)))
    h.update(np.asarray(token_ids, dtype="<i8").tobytes())
    return h.digest()


def page_tags(token_ids: Sequence[int], block_size: int, end: int | None = None) -> list[bytes]:
    """Tags of the pages covering positions ``[0, end)`` (default: all tokens)."""
    stop = len(token_ids) if end is None else end
    tags: list[bytes] = []
    prev = ROOT_TAG
    for start in range(0, stop, block_size):
        prev = page_tag(prev, start, token_ids[start : min(start + block_size, stop)])
        tags.append(prev)
    return tags


@dataclass(frozen=True, slots=True)
class KVPage:
    """One KV page of one request, as it leaves and enters an engine.

    A page covers positions ``[start_position, end_position)``; pages start on block
    boundaries, so page ``i`` starts at ``i * block_size`` and only a request's last page may be
    partial. ``token_tag`` ties the page to the token prefix it was computed from (see
    :func:`page_tag`); ``checksum`` (CRC-32 over the header fields and the payload) catches
    corruption and partial transfer.
    """

    request_id: str
    page_index: int
    start_position: int
    end_position: int
    token_tag: bytes
    dtype: str
    shape: tuple[int, ...]
    payload: bytes
    checksum: int

    @classmethod
    def create(
        cls,
        *,
        request_id: str,
        page_index: int,
        start_position: int,
        end_position: int,
        token_tag: bytes,
        dtype: str,
        shape: tuple[int, ...],
        payload: bytes,
    ) -> KVPage:
        """Build a page and compute its checksum."""
        checksum = _page_checksum(
            request_id, page_index, start_position, end_position, token_tag, dtype, shape, payload
        )
        return cls(
            request_id=request_id,
            page_index=page_index,
            start_position=start_position,
            end_position=end_position,
            token_tag=token_tag,
            dtype=dtype,
            shape=tuple(shape),
            payload=payload,
            checksum=checksum,
        )

    @property
    def num_tokens(self) -> int:
        """Positions the page covers."""
        return self.end_position - self.start_position

    @property
    def expected_nbytes(self) -> int:
        """Payload size implied by ``shape`` and ``dtype``."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count * DTYPE_BYTES.get(self.dtype, 0)

    def verify(self) -> bool:
        """Whether the page is complete and uncorrupted (size, shape and checksum agree)."""
        if self.dtype not in DTYPE_BYTES or self.num_tokens <= 0 or self.start_position < 0:
            return False
        if len(self.shape) != 5 or self.shape[2] != self.num_tokens:
            return False
        if len(self.payload) != self.expected_nbytes:
            return False
        return self.checksum == _page_checksum(
            self.request_id,
            self.page_index,
            self.start_position,
            self.end_position,
            self.token_tag,
            self.dtype,
            self.shape,
            self.payload,
        )

    def matches(self, token_ids: Sequence[int], prev_tag: bytes) -> bool:
        """Whether the page was computed from ``token_ids`` (the request's full history)."""
        if self.end_position > len(token_ids):
            return False
        expected = page_tag(
            prev_tag, self.start_position, token_ids[self.start_position : self.end_position]
        )
        return expected == self.token_tag

    def to_bytes(self) -> bytes:
        """Self-describing wire form: magic, header length, JSON header, payload."""
        header = json.dumps(
            {
                "request_id": self.request_id,
                "page_index": self.page_index,
                "start_position": self.start_position,
                "end_position": self.end_position,
                "token_tag": self.token_tag.hex(),
                "dtype": self.dtype,
                "shape": list(self.shape),
                "checksum": self.checksum,
            },
            separators=(",", ":"),
        ).encode()
        return _PAGE_MAGIC + struct.pack("<I", len(header)) + header + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> KVPage:
        """Parse :meth:`to_bytes` output. The page may still fail :meth:`verify`.

        Raises:
            ValueError: the bytes do not start with a page header.
        """
        if data[:4] != _PAGE_MAGIC or len(data) < 8:
            raise ValueError("not a KV page: bad magic")
        (header_len,) = struct.unpack_from("<I", data, 4)
        try:
            header = json.loads(data[8 : 8 + header_len])
            return cls(
                request_id=str(header["request_id"]),
                page_index=int(header["page_index"]),
                start_position=int(header["start_position"]),
                end_position=int(header["end_position"]),
                token_tag=bytes.fromhex(header["token_tag"]),
                dtype=str(header["dtype"]),
                shape=tuple(int(d) for d in header["shape"]),
                payload=bytes(data[8 + header_len :]),
                checksum=int(header["checksum"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a KV page: bad header ({exc})") from exc


def _page_checksum(
    request_id: str,
    page_index: int,
    start: int,
    end: int,
    tag: bytes,
    dtype: str,
    shape: Sequence[int],
    payload: bytes,
) -> int:
    header = f"{request_id}\x00{page_index}\x00{start}\x00{end}\x00{dtype}\x00{tuple(shape)}"
    crc = zlib.crc32(header.encode())
    crc = zlib.crc32(tag, crc)
    return zlib.crc32(payload, crc)
