"""Synthetic KV pages for store tests: real tags and checksums, tiny payloads, no model."""

from __future__ import annotations

from collections.abc import Sequence

from lumen.executor.engine.kv_page import ROOT_TAG, KVPage, page_tag

#: Payload of one token: (layers=1, 2, tokens, heads=1, dim=2) float32 -> 16 bytes.
TOKEN_BYTES = 16


def make_pages(
    request_id: str, tokens: Sequence[int], block_size: int, end: int | None = None
) -> list[tuple[KVPage, tuple[int, ...]]]:
    """The pages (with their token ids) covering positions ``[0, end)`` of ``tokens``."""
    stop = len(tokens) if end is None else end
    out: list[tuple[KVPage, tuple[int, ...]]] = []
    prev = ROOT_TAG
    for index, start in enumerate(range(0, stop, block_size)):
        ids = tuple(tokens[start : min(start + block_size, stop)])
        prev = page_tag(prev, start, ids)
        n = len(ids)
        payload = bytes((start + i) % 251 for i in range(n * TOKEN_BYTES))
        page = KVPage.create(
            request_id=request_id,
            page_index=index,
            start_position=start,
            end_position=start + n,
            token_tag=prev,
            dtype="float32",
            shape=(1, 2, n, 1, 2),
            payload=payload,
        )
        out.append((page, ids))
    return out
