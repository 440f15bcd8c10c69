"""The vLLM-free core of LumenConnector: block <-> page mapping, restore matching, the
scheduler's bookkeeping and the worker side, checked against the holder's own store."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from lumen.executor.engine.kv_page import ROOT_TAG, KVLayout, KVPage, page_tag, page_tags
from lumen.executor.vllm.core import (
    CachedRequest,
    LumenKVBridge,
    NewRequest,
    SchedulerBook,
    StepPlan,
    WorkerSide,
    get_bridge,
    matchable_tokens,
    register_bridge,
    unregister_bridge,
    valid_restore_prefix,
)
from lumen.executor.worker.store import CheckpointStore, PageOutcome

#: 4-token blocks, 2 layers, 1 KV head of dim 2, float32: 4 * 2 * 2 * 1 * 2 * 4 = 128 bytes/page.
LAYOUT = KVLayout(block_size=4, num_layers=2, num_kv_heads=1, head_dim=2, dtype="float32")
PAGE_BYTES = LAYOUT.bytes_per_token * LAYOUT.block_size


class FakeBlocks:
    """A paged KV cache of opaque page payloads (a BlockIO without tensors)."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}
        self.reads: list[tuple[int, ...]] = []

    def fill(self, block_id: int, seed: int) -> None:
        self.blocks[block_id] = bytes((seed * 7 + i) % 256 for i in range(PAGE_BYTES))

    def read_blocks(self, block_ids: Sequence[int]) -> list[bytes]:
        self.reads.append(tuple(block_ids))
        return [self.blocks[b] for b in block_ids]

    def write_blocks(self, block_ids: Sequence[int], payloads: Sequence[bytes]) -> None:
        for b, p in zip(block_ids, payloads, strict=True):
            self.blocks[b] = p


def pages_for(rid: str, tokens: Sequence[int], n_pages: int, seed: int = 0) -> list[KVPage]:
    tags = page_tags(tokens, LAYOUT.block_size, n_pages * LAYOUT.block_size)
    size = LAYOUT.block_size
    return [
        KVPage.create(
            request_id=rid,
            page_index=i,
            start_position=i * size,
            end_position=(i + 1) * size,
            token_tag=tags[i],
            dtype="float32",
            shape=LAYOUT.page_shape(size),
            payload=bytes(((seed + i) * 7 + k) % 256 for k in range(PAGE_BYTES)),
        )
        for i in range(n_pages)
    ]


TOKENS = list(range(100, 118))  # 18 tokens: 4 whole blocks and 2 more


# ---- mapping and matching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("valid", "length", "expected"),
    [(0, 10, 0), (3, 10, 0), (8, 18, 8), (16, 18, 16), (16, 17, 16), (16, 16, 12), (20, 9, 8)],
)
def test_matchable_tokens_whole_blocks_below_length(valid: int, length: int, expected: int) -> None:
    assert matchable_tokens(valid, length, 4) == expected


def test_valid_restore_prefix_stops_at_the_first_bad_page() -> None:
    pages = pages_for("7", TOKENS, 4)
    assert len(valid_restore_prefix(pages, TOKENS, LAYOUT)) == 4
    assert len(valid_restore_prefix(reversed(pages), TOKENS, LAYOUT)) == 4  # order-free
    corrupt = dataclasses.replace(pages[2], payload=bytes(PAGE_BYTES))
    assert len(valid_restore_prefix([*pages[:2], corrupt, pages[3]], TOKENS, LAYOUT)) == 2
    assert len(valid_restore_prefix([pages[0], pages[2]], TOKENS, LAYOUT)) == 1  # gap
    other = [*TOKENS[:5], 1, *TOKENS[6:]]  # differs in page 1
    assert len(valid_restore_prefix(pages, other, LAYOUT)) == 1
    wrong_layout = KVLayout(4, 3, 1, 2, "float32")
    assert valid_restore_prefix(pages, TOKENS, wrong_layout) == []


def test_bridge_offer_keeps_whole_blocks_below_the_length() -> None:
    bridge = LumenKVBridge(LAYOUT)
    assert bridge.offer_restore("1", TOKENS[:16], pages_for("1", TOKENS, 4)) == 12
    assert bridge.restorable_tokens("1") == 12
    assert bridge.restore_page("1", 2) is not None and bridge.restore_page("1", 3) is None
    assert bridge.offer_restore("1", TOKENS, []) == 0
    assert bridge.restorable_tokens("1") == 0


def test_bridge_registry_names_the_worker_process() -> None:
    bridge = LumenKVBridge(LAYOUT)
    register_bridge("t-core", bridge)
    try:
        assert get_bridge("t-core") is bridge
    finally:
        unregister_bridge("t-core")
    with pytest.raises(LookupError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        get_bridge("t-core")


# ---- scheduler side: saves ---------------------------------------------------------------


def saving_bridge(*request_ids: str) -> LumenKVBridge:
    """A bridge that copies out the KV of ``request_ids`` (requests with a holder)."""
    bridge = LumenKVBridge(LAYOUT)
    for rid in request_ids:
        bridge.set_saving(rid, True)
    return bridge


def test_saves_cover_each_completed_block_once_in_order() -> None:
    book = SchedulerBook(saving_bridge("r"))
    tokens = list(TOKENS[:10])
    book.track("r", tokens)
    assert book.matched_tokens("r", tokens, 0) == 0
    # Step 1: chunked prefill of 6 tokens into blocks 5, 9.
    plan = book.plan_step([NewRequest("r", (5, 9, 11), 0)], [], {"r": 6})
    assert [(s.block_ids, s.first_page) for s in plan.saves] == [((5,), 0)]
    assert plan.saves[0].token_ids == tuple(tokens[:4])
    assert plan.saves[0].tags == (page_tag(ROOT_TAG, 0, tokens[:4]),)
    # Step 2: the other 4 prompt tokens: block 9 completes (positions 4..8).
    plan = book.plan_step([], [CachedRequest("r", (), 6)], {"r": 4})
    assert [(s.block_ids, s.first_page) for s in plan.saves] == [((9,), 1)]
    assert plan.saves[0].tags == tuple(page_tags(tokens, 4, 8)[1:])
    # Step 3: a decode with 3 speculative tokens: only known tokens count (11 known).
    tokens.append(1)
    plan = book.plan_step([], [CachedRequest("r", (), 10)], {"r": 4})
    assert plan.saves == ()
    tokens.extend([2, 3])  # 13 tokens known, 12 computed after a step of 2 -> block 11
    plan = book.plan_step([], [CachedRequest("r", (13,), 10)], {"r": 2})
    assert [(s.block_ids, s.first_page) for s in plan.saves] == [((11,), 2)]


def test_resumed_after_preemption_replaces_the_block_table() -> None:
    book = SchedulerBook(saving_bridge("r"))
    tokens = list(TOKENS[:9])
    book.track("r", tokens)
    book.plan_step([NewRequest("r", (1, 2, 3), 0)], [], {"r": 8})
    # Preempted, then resumed with new blocks: saved pages are not copied again.
    plan = book.plan_step([], [CachedRequest("r", (7, 8, 6), 0, resumed=True)], {"r": 9})
    assert plan.saves == ()
    tokens.extend([4, 5, 6, 7])
    plan = book.plan_step([], [CachedRequest("r", (), 9)], {"r": 4})
    assert [(s.block_ids, s.first_page) for s in plan.saves] == [((6,), 2)]


def test_requests_without_a_holder_are_not_copied_out() -> None:
    bridge = saving_bridge("r")
    book = SchedulerBook(bridge)
    book.track("r", TOKENS)
    book.track("q", TOKENS)
    plan = book.plan_step(
        [NewRequest("r", (1, 2), 0), NewRequest("q", (3, 4), 0)], [], {"r": 8, "q": 8}
    )
    assert [s.request_id for s in plan.saves] == ["r"]
    bridge.set_saving("r", False)
    assert book.plan_step([], [CachedRequest("r", (5,), 8)], {"r": 4}).saves == ()


def test_untracked_requests_are_ignored_and_finished_ones_forgotten() -> None:
    bridge = saving_bridge("r", "x")
    book = SchedulerBook(bridge)
    assert book.plan_step([NewRequest("x", (1,), 0)], [], {"x": 4}).saves == ()
    book.track("r", TOKENS)
    bridge.put_saved(pages_for("r", TOKENS, 1))
    book.finished("r")
    assert book.tracked_requests() == 0
    assert bridge.take_saved("r") == [] and not bridge.saving("r")


# ---- scheduler side: restores -------------------------------------------------------------


def test_restored_request_loads_its_prefix_and_saves_only_after_it() -> None:
    bridge = saving_bridge("r")
    book = SchedulerBook(bridge)
    assert bridge.offer_restore("r", TOKENS, pages_for("r", TOKENS, 3)) == 12
    assert book.matched_tokens("r", TOKENS, 0) == 12
    book.after_alloc("r", [20, 21, 22, 23, 24], 12)
    plan = book.plan_step([NewRequest("r", (20, 21, 22, 23, 24), 12)], [], {"r": 6})
    assert plan.loads[0].block_ids == (20, 21, 22) and plan.loads[0].first_page == 0
    # The tail (positions 12..18) completes block 23; the loaded blocks are not saved again.
    assert [(s.block_ids, s.first_page) for s in plan.saves] == [((23,), 3)]
    assert plan.saves[0].tags[0] == page_tags(TOKENS, 4, 16)[3]


def test_local_prefix_hit_loads_only_the_blocks_after_it() -> None:
    bridge = LumenKVBridge(LAYOUT)
    book = SchedulerBook(bridge)
    bridge.offer_restore("r", TOKENS, pages_for("r", TOKENS, 4))
    assert book.matched_tokens("r", TOKENS, 8) == 8  # vLLM's cache already had 2 blocks
    book.after_alloc("r", [30, 31, 32, 33, 34], 8)
    plan = book.plan_step([NewRequest("r", (30, 31, 32, 33, 34), 16)], [], {"r": 2})
    assert (plan.loads[0].block_ids, plan.loads[0].first_page) == ((32, 33), 2)
    assert book.matched_tokens("r", TOKENS, 16) == 0
    with pytest.raises(ValueError, match="blocks"):
        book.after_alloc("r", [30], 16)


def test_no_load_is_planned_without_external_tokens() -> None:
    book = SchedulerBook(LumenKVBridge(LAYOUT))
    book.track("r", TOKENS)
    book.after_alloc("r", [1, 2], 0)
    assert book.plan_step([], [], {}).loads == ()


# ---- worker side -------------------------------------------------------------------------


def test_saved_pages_activate_in_the_holders_store() -> None:
    """Pages cut from vLLM blocks are what the built-in engine sends: the holder's store
    verifies their checksums, chains their tags and activates them."""
    bridge = saving_bridge("9")
    book, worker, blocks = SchedulerBook(bridge), WorkerSide(bridge), FakeBlocks()
    for b in (3, 4, 5):
        blocks.fill(b, b)
    book.track("9", TOKENS)
    plan = book.plan_step([NewRequest("9", (3, 4, 5), 0)], [], {"9": 12})
    assert worker.save(plan, blocks) == 3
    pages = bridge.take_saved("9")
    assert [p.payload for p in pages] == [blocks.blocks[b] for b in (3, 4, 5)]
    store = CheckpointStore(1 << 20)
    store.reserve("9", 10 * PAGE_BYTES)
    outcomes = [store.add_page(p, TOKENS[p.start_position : p.end_position]) for p in pages]
    assert [o.outcome for o in outcomes] == [PageOutcome.ACTIVATED] * 3
    assert store.valid_prefix_tokens("9") == 12
    assert bridge.take_saved("9", from_position=12) == []  # sent pages are dropped
    assert bridge.stats().saved_pages == 3


def test_load_writes_store_pages_into_the_allocated_blocks() -> None:
    bridge = saving_bridge("4")
    book, worker, blocks = SchedulerBook(bridge), WorkerSide(bridge), FakeBlocks()
    held = pages_for("4", TOKENS, 4, seed=3)
    bridge.offer_restore("4", TOKENS, held)
    book.matched_tokens("4", TOKENS, 0)
    book.after_alloc("4", [8, 6, 7, 9, 10], 16)
    plan = book.plan_step([NewRequest("4", (8, 6, 7, 9, 10), 16)], [], {"4": 2})
    assert worker.load(plan, blocks) == 4 * PAGE_BYTES
    assert [blocks.blocks[b] for b in (8, 6, 7, 9)] == [p.payload for p in held]
    assert worker.take_failed() == set()
    stats = bridge.stats()
    assert (stats.restored_requests, stats.restored_tokens) == (1, 16)
    # The loaded pages become the request's first pages for its new holder.
    assert [p.page_index for p in bridge.take_saved("4")] == [0, 1, 2, 3]


def test_a_vanished_restore_page_is_reported_for_recompute() -> None:
    bridge = LumenKVBridge(LAYOUT)
    worker, blocks = WorkerSide(bridge), FakeBlocks()
    bridge.offer_restore("4", TOKENS, pages_for("4", TOKENS, 2))
    from lumen.executor.vllm.core import LoadSpec

    plan = StepPlan(loads=(LoadSpec("4", (1, 2, 3), 0),))
    worker.load(plan, blocks)
    assert worker.take_failed() == {3}
    assert sorted(blocks.blocks) == [1, 2]
    assert bridge.stats().load_errors == 1
