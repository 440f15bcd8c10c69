"""Block manager: allocation, truncation, and a property test that no block ever leaks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.executor.engine.block_manager import BlockManager, OutOfBlocksError


def test_allocate_grows_table_and_maps_slots() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    assert bm.allocate("a", 5) == (0, 1)
    assert bm.allocate("b", 1) == (2,)
    assert bm.allocate("a", 8) == (0, 1)  # already covered: unchanged
    assert bm.allocate("a", 9) == (0, 1, 3)
    assert bm.slot("a", 0) == 0
    assert bm.slot("a", 5) == 1 * 4 + 1
    assert bm.slot("a", 8) == 3 * 4
    with pytest.raises(IndexError):
        bm.slot("a", 12)
    assert bm.num_free_blocks == 4
    bm.check_invariants()


def test_failed_allocation_changes_nothing() -> None:
    bm = BlockManager(num_blocks=3, block_size=2)
    bm.allocate("a", 4)
    with pytest.raises(OutOfBlocksError):
        bm.allocate("b", 4)
    assert not bm.has("b")
    assert bm.num_free_blocks == 1
    assert not bm.can_allocate("a", 7)
    assert bm.can_allocate("a", 6)
    bm.check_invariants()


def test_truncate_and_free_return_blocks() -> None:
    bm = BlockManager(num_blocks=6, block_size=2)
    bm.allocate("a", 11)
    assert bm.truncate("a", 3) == 4
    assert bm.block_table("a") == (0, 1)
    assert bm.free("a") == 2
    assert bm.free("a") == 0  # unknown now: a no-op
    assert bm.num_free_blocks == 6
    # Freed blocks are reused lowest first.
    assert bm.allocate("b", 2) == (0,)
    bm.check_invariants()


def test_invalid_construction() -> None:
    with pytest.raises(ValueError):
        BlockManager(0, 4)
    with pytest.raises(ValueError):
        BlockManager(4, 0)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["allocate", "truncate", "free"]),
        st.sampled_from(["r0", "r1", "r2", "r3", "r4"]),
        st.integers(min_value=0, max_value=40),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    num_blocks=st.integers(min_value=1, max_value=12),
    block_size=st.integers(min_value=1, max_value=5),
    ops=_ops,
)
def test_block_manager_never_leaks(
    num_blocks: int, block_size: int, ops: list[tuple[str, str, int]]
) -> None:
    bm = BlockManager(num_blocks, block_size)
    expected: dict[str, int] = {}  # blocks each request should own
    for op, rid, tokens in ops:
        if op == "allocate":
            need = max(expected.get(rid, 0), bm.blocks_for(tokens))
            grow = need - expected.get(rid, 0)
            if grow > bm.num_free_blocks:
                with pytest.raises(OutOfBlocksError):
                    bm.allocate(rid, tokens)
            else:
                table = bm.allocate(rid, tokens)
                assert len(table) == need
                expected[rid] = need
        elif op == "truncate":
            if rid in expected:
                expected[rid] = min(expected[rid], bm.blocks_for(tokens))
            bm.truncate(rid, tokens)
        else:
            bm.free(rid)
            expected.pop(rid, None)
        bm.check_invariants()
        assert bm.num_free_blocks == num_blocks - sum(expected.values())
        for owner, count in expected.items():
            assert len(bm.block_table(owner)) == count
    for rid in list(bm.request_ids()):
        bm.free(rid)
    assert bm.num_free_blocks == num_blocks
    bm.check_invariants()
