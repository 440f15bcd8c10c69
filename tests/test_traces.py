"""Tests for lumen.workload.traces: the Trace record, the three loaders and bundled traces."""

import hashlib
import math
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.workload.traces import (
    BUNDLED_TRACES,
    Trace,
    TraceFormatError,
    detect_trace_format,
    load_azure_csv,
    load_burstgpt_csv,
    load_mooncake_jsonl,
    load_trace,
    resolve_trace_path,
)

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"


def make_trace(
    arrival: list[float],
    prompt: list[int] | None = None,
    output: list[int] | None = None,
    hash_ids: tuple[tuple[int, ...], ...] | None = None,
) -> Trace:
    n = len(arrival)
    return Trace(
        arrival_s=np.array(arrival, dtype=np.float64),
        prompt_tokens=np.array(prompt or [10] * n, dtype=np.int64),
        output_tokens=np.array(output or [5] * n, dtype=np.int64),
        hash_ids=hash_ids,
        source="test",
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


# --------------------------------------------------------------------------------------------
# Bundled traces
# --------------------------------------------------------------------------------------------

# SHA-256 of the upstream files (see lumen/data/NOTICE.md): the copies must stay unmodified.
BUNDLED_SHA256 = {
    "azure-conv-2023": "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
    "mooncake-synthetic": "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
}


@pytest.mark.parametrize("name", sorted(BUNDLED_SHA256))
def test_bundled_trace_is_unmodified_upstream_copy(name: str) -> None:
    digest = hashlib.sha256(BUNDLED_TRACES[name].read_bytes()).hexdigest()
    assert digest == BUNDLED_SHA256[name]


def test_azure_conv_trace_loads() -> None:
    trace = load_azure_csv(BUNDLED_TRACES["azure-conv-2023"])
    assert len(trace) == 19_366
    assert trace.arrival_s[0] == 0.0
    # 18:15:46.6805900 -> 19:14:08.4025270
    assert trace.duration_s == pytest.approx(3501.721937, abs=1e-6)
    assert trace.mean_rate_qps == pytest.approx(5.53, abs=0.01)
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.prompt_tokens.min() >= 1
    assert trace.output_tokens.min() >= 1
    assert trace.hash_ids is None
    # First rows of the file: "...46.6805900,374,44" and "...50.9951690,396,109".
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (374, 44)
    assert (trace.prompt_tokens[1], trace.output_tokens[1]) == (396, 109)
    assert trace.arrival_s[1] == pytest.approx(4.314579, abs=1e-9)
    # Last row: "2023-11-16 19:14:08.4025270,197,183".
    assert (trace.prompt_tokens[-1], trace.output_tokens[-1]) == (197, 183)


def test_mooncake_synthetic_trace_loads() -> None:
    trace = load_mooncake_jsonl(BUNDLED_TRACES["mooncake-synthetic"])
    assert len(trace) == 3_993
    assert trace.arrival_s[0] == 0.0
    assert trace.duration_s == pytest.approx(1022.025)
    assert trace.hash_ids is not None
    assert len(trace.hash_ids) == len(trace)
    assert all(
        len(blocks) == math.ceil(int(p) / 512)
        for blocks, p in zip(trace.hash_ids, trace.prompt_tokens, strict=True)
    )
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (40160, 6)
    assert trace.hash_ids[0] == tuple(range(79))


def test_load_trace_autodetects_bundled_formats() -> None:
    azure = load_trace(BUNDLED_TRACES["azure-conv-2023"])
    mooncake = load_trace(BUNDLED_TRACES["mooncake-synthetic"])
    assert (len(azure), len(mooncake)) == (19_366, 3_993)


@pytest.mark.benchmark
def test_azure_load_time() -> None:
    start = time.perf_counter()
    load_azure_csv(BUNDLED_TRACES["azure-conv-2023"])
    elapsed = time.perf_counter() - start
    print(f"azure conv trace: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0


def test_resolve_bundled_reference() -> None:
    path = resolve_trace_path("@azure-conv-2023")
    assert path == BUNDLED_TRACES["azure-conv-2023"]
    assert path.is_file()


def test_resolve_unknown_bundled_reference_lists_names() -> None:
    with pytest.raises(ValueError, match="@azure-conv-2023, @mooncake-synthetic"):
        resolve_trace_path("@no-such-trace")


def test_resolve_relative_path_against_base_dir(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    target = write(tmp_path / "traces", "t.csv", f"{AZURE_HEADER}\n")
    assert resolve_trace_path("traces/t.csv", base_dir=tmp_path) == target
    assert resolve_trace_path(str(target), base_dir=Path("/elsewhere")) == target


def test_resolve_relative_path_defaults_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write(tmp_path, "t.jsonl", "")
    monkeypatch.chdir(tmp_path)
    assert resolve_trace_path("t.jsonl").resolve() == target.resolve()


def test_resolve_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        resolve_trace_path("missing.csv", base_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# Malformed files: error names the file and the 1-based line
# --------------------------------------------------------------------------------------------

GOOD_AZURE_ROW = "2023-11-16 18:15:46.6805900,374,44"

AZURE_CASES = {
    "missing column": ([GOOD_AZURE_ROW, "2023-11-16 18:15:47.0000000,396"], 3, "expected 3"),
    "non-numeric count": ([GOOD_AZURE_ROW, "2023-11-16 18:15:47.0,abc,5"], 3, "'abc'"),
    "negative count": ([GOOD_AZURE_ROW, "2023-11-16 18:15:47.0,10,-5"], 3, ">= 0"),
    "zero prompt": ([GOOD_AZURE_ROW, "2023-11-16 18:15:47.0,0,5"], 3, ">= 1 token"),
    "bad timestamp": (["16/11/2023 18:15:46,374,44"], 2, "YYYY-MM-DD HH:MM:SS"),
    "impossible date": (["2023-13-16 18:15:46.0,374,44"], 2, "YYYY-MM-DD HH:MM:SS"),
    "backwards": ([GOOD_AZURE_ROW, "2023-11-16 18:15:45.0000000,10,5"], 3, "line 2"),
    "after blank line": ([GOOD_AZURE_ROW, "", "2023-11-16 18:15:47.0,x,5"], 4, "'x'"),
}


@pytest.mark.parametrize("case", sorted(AZURE_CASES))
def test_malformed_azure_row(tmp_path: Path, case: str) -> None:
    rows, line, detail = AZURE_CASES[case]
    path = write(tmp_path, "bad_azure.csv", "\r\n".join([AZURE_HEADER, *rows]) + "\r\n")
    with pytest.raises(TraceFormatError) as info:
        load_azure_csv(path)
    assert f"bad_azure.csv:{line}:" in str(info.value)
    assert detail in str(info.value)
    assert info.value.line == line


def test_azure_wrong_header_names_expected_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "hdr.csv", f"time,prompt,output\n{GOOD_AZURE_ROW}\n")
    with pytest.raises(TraceFormatError, match=r"hdr\.csv:1:.*TIMESTAMP,ContextTokens,Generated"):
        load_azure_csv(path)


def test_azure_header_only_and_empty(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="no requests"):
        load_azure_csv(write(tmp_path, "h.csv", AZURE_HEADER + "\n"))
    with pytest.raises(TraceFormatError, match="empty"):
        load_azure_csv(write(tmp_path, "e.csv", ""))


def test_azure_zero_output_kept_as_one_token_and_fraction_digits(tmp_path: Path) -> None:
    rows = ["2023-11-16 23:59:59.9999999,10,0", "2023-11-17 00:00:00.5,20,3"]
    trace = load_azure_csv(write(tmp_path, "z.csv", "\n".join([AZURE_HEADER, *rows])))
    assert trace.output_tokens.tolist() == [1, 3]
    assert trace.arrival_s[1] == pytest.approx(0.5000001, abs=1e-9)  # across midnight


MOONCAKE_ROW = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}'

MOONCAKE_CASES = {
    "bad json": ([MOONCAKE_ROW, '{"timestamp": 5, "input_length": 6'], 2, "invalid JSON"),
    "not an object": ([MOONCAKE_ROW, "[1, 2]"], 2, "JSON object"),
    "missing key": (
        [MOONCAKE_ROW, '{"timestamp": 5, "input_length": 6, "hash_ids": [0]}'],
        2,
        "output_length",
    ),
    "non-numeric length": (
        ['{"timestamp": 0, "input_length": "600", "output_length": 5, "hash_ids": [0, 1]}'],
        1,
        "input_length must be an integer",
    ),
    "negative output": (
        ['{"timestamp": 0, "input_length": 600, "output_length": -1, "hash_ids": [0, 1]}'],
        1,
        "output_length must be >= 0",
    ),
    "hash_ids mismatch": (
        [
            MOONCAKE_ROW,
            "",
            '{"timestamp": 9, "input_length": 1025, "output_length": 1, "hash_ids": [0, 1]}',
        ],
        3,
        "hash_ids has 2 entries, expected ceil(input_length / 512) = 3",
    ),
    "backwards": (
        [MOONCAKE_ROW.replace('"timestamp": 0', '"timestamp": 10'), MOONCAKE_ROW],
        2,
        "earlier than the one on line 1",
    ),
}


@pytest.mark.parametrize("case", sorted(MOONCAKE_CASES))
def test_malformed_mooncake_line(tmp_path: Path, case: str) -> None:
    rows, line, detail = MOONCAKE_CASES[case]
    path = write(tmp_path, "bad_mooncake.jsonl", "\n".join(rows) + "\n")
    with pytest.raises(TraceFormatError) as info:
        load_mooncake_jsonl(path)
    assert f"bad_mooncake.jsonl:{line}:" in str(info.value)
    assert detail in str(info.value)


def test_mooncake_skips_blank_lines_and_rebases_time(tmp_path: Path) -> None:
    rows = [
        '{"timestamp": 1000, "input_length": 1, "output_length": 0, "hash_ids": [7]}',
        "",
        '{"timestamp": 3500, "input_length": 512, "output_length": 2, "hash_ids": [7], "x": 1}',
    ]
    trace = load_mooncake_jsonl(write(tmp_path, "m.jsonl", "\n".join(rows) + "\n\n"))
    assert trace.arrival_s.tolist() == [0.0, 2.5]
    assert trace.output_tokens.tolist() == [1, 2]  # zero output kept as one token
    assert trace.hash_ids == ((7,), (7,))


def test_trace_format_error_pickles() -> None:
    error = TraceFormatError(Path("a.csv"), 3, "bad")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.line, copy.path) == (str(error), 3, Path("a.csv"))


# --------------------------------------------------------------------------------------------
# BurstGPT (no real file available: a small one in the published format)
# --------------------------------------------------------------------------------------------

BURSTGPT_ROWS = [
    "5,ChatGPT,472,18,490,Conversation log",
    "45,ChatGPT,1087,0,1087,Conversation log",  # failed: no response tokens
    "118,GPT-4,417,276,693,Conversation log",
    "120.5,ChatGPT,300,25,325,API log",
]


@pytest.fixture
def burstgpt_csv(tmp_path: Path) -> Path:
    return write(tmp_path, "BurstGPT_1.csv", "\n".join([BURSTGPT_HEADER, *BURSTGPT_ROWS]) + "\n")


def test_burstgpt_drops_failed_rows(burstgpt_csv: Path) -> None:
    trace = load_burstgpt_csv(burstgpt_csv)
    assert trace.arrival_s.tolist() == [0.0, 113.0, 115.5]
    assert trace.prompt_tokens.tolist() == [472, 417, 300]
    assert trace.output_tokens.tolist() == [18, 276, 25]


def test_burstgpt_include_failed_as_one_token(burstgpt_csv: Path) -> None:
    trace = load_burstgpt_csv(burstgpt_csv, include_failed=True)
    assert len(trace) == 4
    assert trace.output_tokens.tolist() == [18, 1, 276, 25]


def test_burstgpt_model_filter(burstgpt_csv: Path) -> None:
    gpt4 = load_burstgpt_csv(burstgpt_csv, model="GPT-4")
    assert (len(gpt4), gpt4.arrival_s[0], gpt4.prompt_tokens[0]) == (1, 0.0, 417)
    assert len(load_burstgpt_csv(burstgpt_csv, model="ChatGPT", include_failed=True)) == 3
    with pytest.raises(TraceFormatError, match="models in file: ChatGPT, GPT-4"):
        load_burstgpt_csv(burstgpt_csv, model="Claude")


def test_burstgpt_autodetected(burstgpt_csv: Path) -> None:
    assert detect_trace_format(burstgpt_csv) == "burstgpt"
    assert len(load_trace(burstgpt_csv)) == 3


@pytest.mark.parametrize(
    ("row", "detail"),
    [
        ("soon,ChatGPT,472,18,490,Conversation log", "'Timestamp'"),
        ("7,ChatGPT,472,many,490,Conversation log", "'Response tokens'"),
        ("7,ChatGPT,-3,18,490,Conversation log", "'Request tokens'"),
        ("1,ChatGPT,472,18,490,Conversation log", "earlier than the one on line 2"),
    ],
)
def test_malformed_burstgpt_row(tmp_path: Path, row: str, detail: str) -> None:
    path = write(tmp_path, "b.csv", "\n".join([BURSTGPT_HEADER, BURSTGPT_ROWS[0], row]))
    with pytest.raises(TraceFormatError, match=rf"b\.csv:3:.*{detail}"):
        load_burstgpt_csv(path)


def test_burstgpt_wrong_header(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "Timestamp,Model,Prompt,Output\n5,ChatGPT,1,2\n")
    with pytest.raises(TraceFormatError, match=r"b\.csv:1:.*Request tokens,Response tokens"):
        load_burstgpt_csv(path)


def test_unknown_csv_header_is_rejected_by_autodetect(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "\n\na,b,c\n1,2,3\n")
    with pytest.raises(TraceFormatError, match=r"x\.csv:3:.*TIMESTAMP"):
        load_trace(path)
    jsonl = write(tmp_path, "trace.txt", MOONCAKE_ROW + "\n")
    assert detect_trace_format(jsonl) == "mooncake"


# --------------------------------------------------------------------------------------------
# Trace record
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arrival_s": np.array([0.0, 1.0])}, "differ in length"),
        ({"arrival_s": np.array([0, 1, 2])}, "float64"),
        ({"prompt_tokens": np.array([1.0, 2.0, 3.0])}, "int64"),
        ({"prompt_tokens": [1, 2, 3]}, "numpy array"),
        ({"arrival_s": np.array([0.5, 1.0, 2.0])}, "start at 0.0"),
        ({"arrival_s": np.array([0.0, 2.0, 1.0])}, "non-decreasing: index 2"),
        ({"arrival_s": np.array([0.0, np.nan, 1.0])}, "non-finite"),
        ({"output_tokens": np.array([1, 0, 1])}, "output_tokens must be >= 1"),
        ({"hash_ids": ((1,), (2,))}, "one entry per request"),
        ({"hash_ids": ((1,), (2,), [3])}, r"hash_ids\[2\]"),
        (
            {
                "arrival_s": np.zeros(0),
                "prompt_tokens": np.zeros(0, np.int64),
                "output_tokens": np.zeros(0, np.int64),
            },
            "at least one",
        ),
    ],
)
def test_trace_validation(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        "arrival_s": np.array([0.0, 1.0, 2.0]),
        "prompt_tokens": np.array([1, 2, 3], dtype=np.int64),
        "output_tokens": np.array([1, 2, 3], dtype=np.int64),
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Trace(**fields)  # type: ignore[arg-type]


def test_trace_arrays_are_private_read_only_copies() -> None:
    arrival = np.array([0.0, 1.0])
    trace = Trace(arrival, np.array([1, 1], np.int64), np.array([1, 1], np.int64))
    arrival[1] = 5.0
    assert trace.arrival_s[1] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        trace.arrival_s[0] = 3.0


def test_rate_of_degenerate_traces() -> None:
    assert math.isnan(make_trace([0.0]).mean_rate_qps)
    assert make_trace([0.0, 0.0]).mean_rate_qps == math.inf
    with pytest.raises(ValueError, match="at least two requests"):
        make_trace([0.0]).rescale(1.0)
    with pytest.raises(ValueError, match="at least two requests"):
        make_trace([0.0, 0.0]).tile(5)


def test_rescale_real_trace() -> None:
    trace = load_azure_csv(BUNDLED_TRACES["azure-conv-2023"])
    faster = trace.rescale(20.0)
    assert faster.mean_rate_qps == pytest.approx(20.0, rel=1e-12)
    np.testing.assert_array_equal(faster.prompt_tokens, trace.prompt_tokens)
    np.testing.assert_array_equal(faster.output_tokens, trace.output_tokens)
    np.testing.assert_array_equal(
        np.argsort(faster.arrival_s, kind="stable"), np.arange(len(trace))
    )
    assert "rescale(20 qps)" in faster.source


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf])
def test_rescale_rejects_bad_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        make_trace([0.0, 1.0]).rescale(rate)


def test_truncate() -> None:
    trace = make_trace([0.0, 1.0, 3.0], prompt=[1, 2, 3], hash_ids=((1,), (2,), (3,)))
    two = trace.truncate(2)
    assert (len(two), two.prompt_tokens.tolist(), two.hash_ids) == (2, [1, 2], ((1,), (2,)))
    assert len(trace.truncate(3)) == 3
    with pytest.raises(ValueError, match="n >= 1"):
        trace.truncate(0)
    with pytest.raises(ValueError, match=r"only 3; use tile\(4\)"):
        trace.truncate(4)


def test_tile_shifts_copies_by_duration_plus_mean_gap() -> None:
    # duration 3 s over 2 gaps: mean gap 1.5 s, so copies start every 4.5 s.
    trace = make_trace([0.0, 1.0, 3.0], prompt=[1, 2, 3])
    tiled = trace.tile(7)
    assert tiled.arrival_s.tolist() == [0.0, 1.0, 3.0, 4.5, 5.5, 7.5, 9.0]
    assert tiled.prompt_tokens.tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert trace.tile(6).mean_rate_qps == pytest.approx(trace.mean_rate_qps)
    assert len(trace.tile(2)) == 2
    with pytest.raises(ValueError, match="n >= 1"):
        trace.tile(0)


def test_tile_offsets_hash_ids_per_copy() -> None:
    trace = make_trace([0.0, 1.0], hash_ids=((5, 6), (5, 7)))
    tiled = trace.tile(5)
    assert tiled.hash_ids == ((5, 6), (5, 7), (8, 9), (8, 10), (11, 12))


def test_tile_real_mooncake_trace() -> None:
    trace = load_mooncake_jsonl(BUNDLED_TRACES["mooncake-synthetic"])
    tiled = trace.tile(10_000)
    assert len(tiled) == 10_000
    assert tiled.hash_ids is not None
    first = {i for blocks in tiled.hash_ids[: len(trace)] for i in blocks}
    second = {i for blocks in tiled.hash_ids[len(trace) : 2 * len(trace)] for i in blocks}
    assert not first & second


gaps = st.lists(
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1, max_size=50
).filter(lambda g: sum(g) > 1e-3)


@settings(max_examples=50, deadline=None)
@given(gaps=gaps, rate=st.floats(min_value=1e-3, max_value=1e4), n=st.integers(1, 300))
def test_trace_transform_properties(gaps: list[float], rate: float, n: int) -> None:
    trace = make_trace([0.0, *np.cumsum(gaps).tolist()], prompt=list(range(1, len(gaps) + 2)))
    scaled = trace.rescale(rate)
    assert scaled.mean_rate_qps == pytest.approx(rate, rel=1e-9)
    assert np.all(np.diff(scaled.arrival_s) >= 0)
    np.testing.assert_array_equal(scaled.prompt_tokens, trace.prompt_tokens)
    tiled = trace.tile(n)
    assert len(tiled) == n
    assert np.all(np.diff(tiled.arrival_s) >= 0)
    assert tiled.prompt_tokens.tolist() == [(i % len(trace)) + 1 for i in range(n)]
