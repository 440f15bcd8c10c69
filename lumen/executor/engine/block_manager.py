"""KV block accounting: a free list and per-request block tables (plain Python, no torch).

The KV cache is ``num_blocks`` blocks of ``block_size`` token slots. A request owns an ordered
block table; position ``p`` of the request lives in slot
``table[p // block_size] * block_size + p % block_size``. Every operation either succeeds
completely or changes nothing, so a failed allocation can never leak a block.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["BlockManager", "OutOfBlocksError"]


class OutOfBlocksError(RuntimeError):
    """Not enough free KV blocks for the requested allocation (nothing was allocated)."""


class BlockManager:
    """Hands out fixed-size KV blocks to requests and takes them back."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(
                f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}"
            )
        self._num_blocks = num_blocks
        self._block_size = block_size
        # A stack popped from the end; reversed so that block 0 goes out first, which keeps
        # allocation order (and so every test trace) easy to read.
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._tables: dict[str, list[int]] = {}

    @property
    def num_blocks(self) -> int:
        """Blocks in the cache."""
        return self._num_blocks

    @property
    def block_size(self) -> int:
        """Token slots per block."""
        return self._block_size

    @property
    def num_free_blocks(self) -> int:
        """Blocks owned by no request."""
        return len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` positions."""
        return -(-num_tokens // self._block_size)

    def num_new_blocks(self, request_id: str, num_tokens: int) -> int:
        """Blocks ``allocate(request_id, num_tokens)`` would take from the free list."""
        have = len(self._tables.get(request_id, ()))
        return max(0, self.blocks_for(num_tokens) - have)

    def can_allocate(self, request_id: str, num_tokens: int) -> bool:
        """Whether the request's table can grow to cover ``num_tokens`` positions."""
        return self.num_new_blocks(request_id, num_tokens) <= len(self._free)

    def allocate(self, request_id: str, num_tokens: int) -> tuple[int, ...]:
        """Grow the request's table to cover positions ``[0, num_tokens)``; return the table.

        Creates the table on first use. A table already large enough is left unchanged.

        Raises:
            OutOfBlocksError: too few free blocks; nothing is allocated.
        """
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        need = self.num_new_blocks(request_id, num_tokens)
        if need > len(self._free):
            raise OutOfBlocksError(
                f"request {request_id!r} needs {need} more blocks, {len(self._free)} free"
            )
        table = self._tables.setdefault(request_id, [])
        for _ in range(need):
            table.append(self._free.pop())
        return tuple(table)

    def truncate(self, request_id: str, num_tokens: int) -> int:
        """Free the request's trailing blocks not needed for ``num_tokens`` positions.

        Used after speculative verification rejects draft positions that had blocks reserved.
        Returns the number of blocks freed.
        """
        table = self._tables.get(request_id)
        if table is None:
            return 0
        keep = self.blocks_for(max(0, num_tokens))
        freed = table[keep:]
        del table[keep:]
        # Push in reverse so that the lowest freed block is reused first.
        self._free.extend(reversed(freed))
        return len(freed)

    def free(self, request_id: str) -> int:
        """Return all of the request's blocks; a no-op for unknown ids. Returns blocks freed."""
        table = self._tables.pop(request_id, None)
        if table is None:
            return 0
        self._free.extend(reversed(table))
        return len(table)

    def has(self, request_id: str) -> bool:
        """Whether the request owns a table (possibly empty)."""
        return request_id in self._tables

    def block_table(self, request_id: str) -> tuple[int, ...]:
        """The request's blocks in position order (empty for unknown ids)."""
        return tuple(self._tables.get(request_id, ()))

    def slot(self, request_id: str, position: int) -> int:
        """Cache slot of ``position`` of the request.

        Raises:
            IndexError: the position lies beyond the request's blocks.
        """
        table = self._tables.get(request_id, [])
        index = position // self._block_size
        if position < 0 or index >= len(table):
            raise IndexError(f"position {position} is not allocated for request {request_id!r}")
        return table[index] * self._block_size + position % self._block_size

    def request_ids(self) -> Iterator[str]:
        """Ids of the requests that own tables."""
        return iter(list(self._tables))

    def check_invariants(self) -> None:
        """Raise if any block is lost, owned twice, or both owned and free."""
        owned = [b for table in self._tables.values() for b in table]
        seen = set(owned)
        if len(seen) != len(owned):
            raise RuntimeError("a KV block is owned by two requests or twice by one")
        free = set(self._free)
        if len(free) != len(self._free):
            raise RuntimeError("a KV block is on the free list twice")
        if seen & free:
            raise RuntimeError("a KV block is both owned and free")
        if seen | free != set(range(self._num_blocks)):
            raise RuntimeError("a KV block leaked: neither owned nor free")
