"""The built-in byte tokenizer and the token history."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.executor.gateway.history import HistoryGapError, TokenHistory
from lumen.executor.gateway.tokenizer import REPLACEMENT, ByteTokenizer, TokenizerError


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_round_trips(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= t < 256 for t in ids)
    assert tok.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(st.text(), st.lists(st.integers(0, 64), max_size=8))
def test_streamed_decoding_equals_whole_decoding(text: str, cuts: list[int]) -> None:
    """However the ids are split into chunks, the chunks' text adds up to the text."""
    tok = ByteTokenizer()
    ids = tok.encode(text)
    bounds = sorted({min(c, len(ids)) for c in cuts} | {0, len(ids)})
    decoder = tok.decoder()
    out = "".join(decoder.feed(ids[a:b]) for a, b in itertools.pairwise(bounds))
    assert out + decoder.flush() == text


def test_multibyte_character_is_held_until_complete() -> None:
    tok = ByteTokenizer()
    ids = tok.encode("é")  # two bytes
    decoder = tok.decoder()
    assert decoder.feed(ids[:1]) == ""
    assert decoder.feed(ids[1:]) == "é"


def test_ids_without_a_byte_form_and_bad_input() -> None:
    tok = ByteTokenizer(vocab_size=1000)
    assert tok.decode([104, 300, 105]) == "h" + REPLACEMENT + "i"
    assert tok.decode([0xC3]) == REPLACEMENT  # a truncated sequence, flushed at the end
    with pytest.raises(TokenizerError, match=r"\[1\]: token id 1000 outside \[0, 1000\)"):
        tok.check([1, 1000])
    with pytest.raises(TokenizerError, match="not valid Unicode"):
        tok.encode("\ud800")
    with pytest.raises(ValueError, match="vocab_size"):
        ByteTokenizer(100)


def test_history_drops_repeats_and_refuses_gaps() -> None:
    h = TokenHistory()
    assert h.extend((5, 6), 2) == (5, 6)
    assert h.extend((6, 7), 3) == (7,)  # position 1 again: only the new token is kept
    assert h.extend((7,), 3) == ()
    with pytest.raises(HistoryGapError, match="position 4"):
        h.extend((9,), 5)
    assert h.ids == (5, 6, 7)
