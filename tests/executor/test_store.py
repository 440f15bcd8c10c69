"""The checkpoint store: budgets, staging and atomic activation, longest valid prefix, release."""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.executor.worker.store import (
    BudgetExceededError,
    CheckpointStore,
    NotReservedError,
    PageOutcome,
)

from .pages import TOKEN_BYTES, make_pages

TOKENS = tuple(range(100, 130))  # 30 tokens
BS = 4


def test_reserve_refuses_over_budget_with_a_clear_error() -> None:
    store = CheckpointStore(1_000)
    store.reserve("a", 600)
    with pytest.raises(BudgetExceededError, match=r"needs 500 bytes.*only 400 of 1000 are free"):
        store.reserve("b", 500)
    assert store.reserved_bytes == 600
    assert store.reserve("a", 300) == 600  # never shrinks
    store.reserve("a", 1_000)  # grows within the budget
    assert store.reserved_bytes == 1_000
    assert store.release("a") == 1_000
    assert store.reserved_bytes == 0
    store.reserve("b", 500)


def test_pages_activate_in_order_and_the_valid_prefix_grows() -> None:
    store = CheckpointStore(10_000)
    store.reserve("r", 30 * TOKEN_BYTES)
    pages = make_pages("r", TOKENS, BS, end=12)
    for i, (page, ids) in enumerate(pages):
        result = store.add_page(page, ids)
        assert result.outcome is PageOutcome.ACTIVATED
        assert result.valid_tokens == (i + 1) * BS
    assert store.valid_prefix_tokens("r") == 12
    assert [p.page_index for p in store.pages("r")] == [0, 1, 2]
    assert [p.page_index for p in store.pages("r", 5, 9)] == [1, 2]
    assert store.held_bytes == 12 * TOKEN_BYTES
    assert store.inventory() == {"r": 12}


def test_a_page_cut_mid_transfer_is_never_activated() -> None:
    store = CheckpointStore(10_000)
    store.reserve("r", 30 * TOKEN_BYTES)
    (p0, t0), (p1, t1) = make_pages("r", TOKENS, BS, end=8)
    cut = dataclasses.replace(p1, payload=p1.payload[: len(p1.payload) // 2])
    assert store.add_page(p0, t0).outcome is PageOutcome.ACTIVATED
    result = store.add_page(cut, t1)
    assert result.outcome is PageOutcome.REJECTED
    assert "incomplete or corrupt" in result.reason
    assert store.valid_prefix_tokens("r") == BS
    assert len(store.pages("r")) == 1
    # the whole page, re-sent, is accepted
    assert store.add_page(p1, t1).outcome is PageOutcome.ACTIVATED
    assert store.valid_prefix_tokens("r") == 2 * BS


def test_a_corrupt_byte_or_a_wrong_token_chain_is_refused() -> None:
    store = CheckpointStore(10_000)
    store.reserve("r", 30 * TOKEN_BYTES)
    (p0, t0), _ = make_pages("r", TOKENS, BS, end=8)
    flipped = bytes([p0.payload[0] ^ 1]) + p0.payload[1:]
    assert store.add_page(dataclasses.replace(p0, payload=flipped), t0).outcome is (
        PageOutcome.REJECTED
    )
    assert store.add_page(p0, (9, 9, 9, 9)).reason == "tag does not chain"
    other = make_pages("r", (1,) * 30, BS, end=8)  # a different history
    store.add_page(p0, t0)
    assert store.add_page(*other[1]).outcome is PageOutcome.REJECTED
    assert store.valid_prefix_tokens("r") == BS


def test_out_of_order_pages_are_staged_then_activated_together() -> None:
    store = CheckpointStore(10_000)
    store.reserve("r", 30 * TOKEN_BYTES)
    pages = make_pages("r", TOKENS, BS, end=12)
    assert store.add_page(*pages[2]).outcome is PageOutcome.STAGED
    assert store.add_page(*pages[1]).outcome is PageOutcome.STAGED
    assert store.valid_prefix_tokens("r") == 0
    with pytest.raises(NotReservedError):
        store.pages("x")
    assert store.pages("r") == []
    assert store.held_bytes == 8 * TOKEN_BYTES  # staged pages count against the reservation
    result = store.add_page(*pages[0])
    assert result.outcome is PageOutcome.ACTIVATED
    assert result.valid_tokens == 12


def test_a_partial_last_page_is_replaced_by_a_longer_copy() -> None:
    store = CheckpointStore(10_000)
    store.reserve("r", 30 * TOKEN_BYTES)
    short = make_pages("r", TOKENS, BS, end=6)
    full = make_pages("r", TOKENS, BS, end=10)
    for page, ids in short:
        store.add_page(page, ids)
    assert store.valid_prefix_tokens("r") == 6
    assert store.add_page(*full[2]).outcome is PageOutcome.STAGED  # page 1 still partial
    assert store.add_page(*short[1]).outcome is PageOutcome.DUPLICATE
    assert store.add_page(*full[1]).outcome is PageOutcome.REPLACED
    assert store.valid_prefix_tokens("r") == 10
    assert store.held_bytes == 10 * TOKEN_BYTES


def test_pages_never_exceed_the_reservation_and_release_frees_everything() -> None:
    store = CheckpointStore(10_000)
    store.reserve("r", 6 * TOKEN_BYTES)
    pages = make_pages("r", TOKENS, BS, end=12)
    assert store.add_page(*pages[0]).accepted
    result = store.add_page(*pages[1])
    assert result.outcome is PageOutcome.REJECTED
    assert "reservation" in result.reason
    assert store.held_bytes == 4 * TOKEN_BYTES
    with pytest.raises(NotReservedError, match="reserve first"):
        store.add_page(*make_pages("q", TOKENS, BS, end=4)[0])
    store.release("r")
    assert store.stats().held_bytes == store.stats().reserved_bytes == 0
    assert store.valid_prefix_tokens("r") == 0
    assert store.release("r") == 0


def test_concurrent_senders_stay_within_budget() -> None:
    store = CheckpointStore(40 * 30 * TOKEN_BYTES)
    errors: list[Exception] = []

    def sender(n: int) -> None:
        rid = f"r{n}"
        try:
            store.reserve(rid, 30 * TOKEN_BYTES)
        except BudgetExceededError:
            return
        for page, ids in make_pages(rid, TOKENS, BS):
            store.add_page(page, ids)
            if store.held_bytes > store.reserved_bytes or store.reserved_bytes > store.budget_bytes:
                errors.append(AssertionError("accounting"))
        if n % 2:
            store.release(rid)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = store.stats()
    assert stats.reserved_bytes <= stats.budget_bytes
    assert all(v == 30 for v in store.inventory().values())


# (kind, request, amount or page index, page variant)
_op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 3), st.integers(0, 40 * TOKEN_BYTES), st.just("")),
    st.tuples(
        st.just("page"), st.integers(0, 3), st.integers(0, 7), st.sampled_from(["ok", "cut", "bad"])
    ),
    st.tuples(st.just("release"), st.integers(0, 3), st.just(0), st.just("")),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=60), budget=st.integers(0, 80 * TOKEN_BYTES))
def test_random_operations_never_exceed_the_budget_nor_activate_cut_pages(
    ops: list[tuple[str, int, int, str]], budget: int
) -> None:
    store = CheckpointStore(budget)
    all_pages = {f"r{n}": make_pages(f"r{n}", tuple(range(n, n + 32)), BS) for n in range(4)}
    for kind, n, amount, variant in ops:
        rid = f"r{n}"
        if kind == "reserve":
            with contextlib.suppress(BudgetExceededError):
                store.reserve(rid, amount)
        elif kind == "release":
            store.release(rid)
        else:
            page, ids = all_pages[rid][amount]
            if variant == "cut":
                page = dataclasses.replace(page, payload=page.payload[:-1])
            elif variant == "bad":
                ids = tuple(t + 1 for t in ids)
            try:
                result = store.add_page(page, ids)
            except NotReservedError:
                continue
            if variant == "cut":
                assert result.outcome is PageOutcome.REJECTED
            elif variant == "bad":  # may wait staged for its predecessor; never activated
                assert result.outcome in (PageOutcome.REJECTED, PageOutcome.STAGED)
        stats = store.stats()
        assert 0 <= stats.held_bytes <= stats.reserved_bytes <= budget
        for name in all_pages:
            valid = store.valid_prefix_tokens(name)
            held = store.pages(name) if store.has(name) else []
            assert valid == (held[-1].end_position if held else 0)
            # every visible page is complete, verified and exactly the one that was made
            expected = [p for p, _ in all_pages[name][: len(held)]]
            assert held == expected
            assert all(p.verify() for p in held)
