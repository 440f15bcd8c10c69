"""Scenario files: every bundled one is valid; bad input gets one clear paragraph, no traceback."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lumen.scenarios.catalog import bundled_scenarios, find_scenario
from lumen.scenarios.loader import MAX_FILE_BYTES, ScenarioError, load_scenario_file
from lumen.scenarios.resolve import build_trace, load_scenario
from lumen.scenarios.schema import Scenario

GOOD: dict[str, Any] = {
    "name": "tiny",
    "cluster": {
        "workers": 4,
        "workers_per_node": 2,
        "hardware": "A100-80GB",
        "model": "Qwen3-14B",
        "draft_model": "Qwen3-1.7B",
        "checkpoint_budget_gb": 80,
    },
    "workload": {
        "num_requests": 100,
        "synthetic": {
            "rate_qps": 2.0,
            "prompt_tokens": {"distribution": "constant", "value": 128},
            "output_tokens": {"distribution": "uniform", "low": 4, "high": 64},
        },
    },
    "failures": {"events": [{"at_s": 10, "workers": [1]}]},
}


def _write(tmp_path: Path, doc: Any, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def _error(tmp_path: Path, doc: Any) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(_write(tmp_path, doc))
    msg = str(info.value)
    assert "\n" not in msg, "the error must be one paragraph"
    assert "Traceback" not in msg
    return msg


def _edit(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    fn(doc)
    return doc


def test_bundled_scenarios_are_all_valid() -> None:
    found = bundled_scenarios()
    names = set(found)
    # The paper-reproduction set named by the foundation issue.
    assert {
        "paper-4w-qwen3-32b",
        "paper-8w-qwen3-14b",
        "paper-sim-10w-llama3-70b",
        "failures-8w-x1",
        "failures-8w-x2",
        "failures-8w-x4",
    } <= names
    assert {f"scale-{w:02d}w-llama3-70b" for w in (4, 8, 16, 32, 64)} <= names
    for name, path in found.items():
        loaded = load_scenario(path)
        assert loaded.scenario.name == name, "file stem and scenario name must agree"
        trace = build_trace(loaded)
        assert len(trace) == loaded.scenario.workload.num_requests


def test_good_minimal_scenario_gets_defaults(tmp_path: Path) -> None:
    s = load_scenario(_write(tmp_path, GOOD)).scenario
    assert s.speculation.depth == 4
    assert s.metrics.bin_size == 200
    assert [p.value for p in s.policies] == [
        "stop-and-restart",
        "fixed-checkpointing",
        "lumen",
        "lumen-optimal",
    ]
    assert s.cluster.nodes == 2


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # 1. a typo in a key: unknown key, with a suggestion and the allowed keys
        (
            _edit(lambda d: d["cluster"].update(wokers=4)),
            ["cluster.wokers: unknown key", "did you mean 'workers'?", "allowed keys:"],
        ),
        # 2. out of range
        (
            _edit(lambda d: d["cluster"].update(workers=0)),
            ["cluster.workers", "greater than or equal to 1", "got 0"],
        ),
        # 3. a string where a number belongs (no silent coercion)
        (_edit(lambda d: d["workload"].update(num_requests="100")), ["workload.num_requests"]),
        # 4. unknown model: the allowed names are listed
        (
            _edit(lambda d: d["cluster"].update(model="GPT-5")),
            ["cluster", "unknown model 'GPT-5'", "Qwen3-32B", "Llama-3.1-70B"],
        ),
        # 5. a draft of another family
        (
            _edit(lambda d: d["cluster"].update(draft_model="Llama-3.1-8B")),
            ["cluster", "cannot draft for"],
        ),
        # 6. a failure of a worker that does not exist
        (
            _edit(lambda d: d["failures"]["events"][0].update(workers=[9])),
            ["failures.events[0].workers", "no worker 9", "0..3"],
        ),
        # 7. every worker failing at once
        (
            _edit(lambda d: d["failures"]["events"][0].update(workers=[0, 1, 2, 3])),
            ["at least one must survive"],
        ),
        # 8. two workload sources
        (
            _edit(lambda d: d["workload"].update(trace={"file": "@azure-conv-2023"})),
            ["workload", "exactly one workload source"],
        ),
        # 9. both rate forms
        (
            _edit(lambda d: d["workload"]["synthetic"].update(rate_qps_per_worker=1.0)),
            ["workload.synthetic", "either rate_qps or rate_qps_per_worker"],
        ),
        # 10. a distribution missing its parameter
        (
            _edit(
                lambda d: d["workload"]["synthetic"].update(
                    prompt_tokens={"distribution": "uniform", "low": 3}
                )
            ),
            ["workload.synthetic.prompt_tokens", "needs high"],
        ),
        # 11. a value outside a literal set
        (
            _edit(lambda d: d["workload"]["synthetic"].update(arrivals="weibull")),
            ["workload.synthetic.arrivals", "'poisson' or 'gamma'", "got 'weibull'"],
        ),
        # 12. an unknown policy
        (
            _edit(lambda d: d.update(policies=["lumen", "magic"])),
            ["policies[1]", "stop-and-restart", "got 'magic'"],
        ),
        # 13. a missing required key
        (
            _edit(lambda d: d["cluster"].pop("hardware")),
            ["cluster.hardware: required key is missing"],
        ),
        # 14. an acceptance rate of 1 (speculation would never stop)
        (
            _edit(lambda d: d.update(speculation={"acceptance_rate": 1.0})),
            ["speculation.acceptance_rate", "less than 1"],
        ),
        # 15. lumen without a draft model
        (
            _edit(lambda d: d["cluster"].pop("draft_model")),
            ["set cluster.draft_model"],
        ),
        # 16. a model that does not fit its GPUs
        (
            _edit(lambda d: d["cluster"].update(model="Llama-3.1-70B", draft_model="Llama-3.1-8B")),
            ["cluster:"],
        ),
        # 17. a failure selector given twice
        (
            _edit(lambda d: d["failures"]["events"][0].update(count=1)),
            ["failures.events[0]", "exactly one of workers, nodes, count or fraction_of_workers"],
        ),
        # 18. a bundled trace that does not exist
        (
            _edit(
                lambda d: d["workload"]["synthetic"].update(
                    prompt_tokens={"distribution": "trace", "file": "@nope"}
                )
            ),
            ["workload.synthetic.prompt_tokens.file", "azure-conv-2023"],
        ),
        # 19. a typo in a key of a nested list element
        (
            _edit(lambda d: d["failures"]["events"][0].update(at_sec=3)),
            ["failures.events[0].at_sec: unknown key", "did you mean 'at_s'?"],
        ),
        # 20. a typo in a nested mapping keyed by policy
        (
            _edit(
                lambda d: d.update(
                    paper_reference={
                        "citation": "x",
                        "against": {"stop-and-restart": {"ttft": -3.0}},
                    }
                )
            ),
            ["paper_reference.against.stop-and-restart.ttft: unknown key", "ttft_pct"],
        ),
    ],
)
def test_bad_input_names_the_field_and_what_is_allowed(
    tmp_path: Path, doc: dict[str, Any], expected: list[str]
) -> None:
    msg = _error(tmp_path, doc)
    for fragment in expected:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_nan_and_infinity_are_rejected(tmp_path: Path) -> None:
    text = yaml.safe_dump(GOOD).replace("checkpoint_budget_gb: 80", "checkpoint_budget_gb: .nan")
    assert "cluster.checkpoint_budget_gb" in _error(tmp_path, text)
    text = yaml.safe_dump(GOOD).replace("at_s: 10", "at_s: .inf")
    assert "failures.events[0].at_s" in _error(tmp_path, text)


def test_yaml_problems_are_reported_with_line_numbers(tmp_path: Path) -> None:
    assert "line 2" in _error(tmp_path, "name: x\ncluster: [unclosed\n")
    dup = "name: a\nname: b\n"
    msg = _error(tmp_path, dup)
    assert "duplicate key 'name'" in msg and "line 2" in msg
    alias = "name: &n x\ndescription: *n\n"
    assert "aliases" in _error(tmp_path, alias)
    assert "empty" in _error(tmp_path, "")
    assert "top level must be a mapping" in _error(tmp_path, "- a\n- b\n")


def test_python_object_tags_are_refused(tmp_path: Path) -> None:
    # yaml.safe_load semantics: no arbitrary object construction.
    msg = _error(tmp_path, "name: !!python/object/apply:os.system ['true']\n")
    assert "python/object" in msg


def test_size_and_encoding_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ScenarioError, match="limited to"):
        load_scenario_file(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ScenarioError, match="UTF-8"):
        load_scenario_file(binary)
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario_file(tmp_path / "missing.yaml")


def test_unknown_bundled_name_lists_the_bundled_ones() -> None:
    with pytest.raises(ScenarioError, match="paper-4w-qwen3-32b"):
        find_scenario("paper-4w")


def test_trace_shorter_than_requested_needs_repeat(tmp_path: Path) -> None:
    doc = _edit(lambda d: d["workload"].pop("synthetic"))
    doc["workload"]["trace"] = {"file": "@mooncake-synthetic"}
    doc["workload"]["num_requests"] = 5000  # the Mooncake trace holds 3,993
    path = _write(tmp_path, doc)
    with pytest.raises(ScenarioError, match="repeat: true"):
        build_trace(load_scenario(path))
    doc["workload"]["trace"]["repeat"] = True
    trace = build_trace(load_scenario(_write(tmp_path, doc)))
    assert len(trace) == 5000


def test_relative_trace_paths_resolve_against_the_scenario_file(tmp_path: Path) -> None:
    sub = tmp_path / "traces"
    sub.mkdir()
    (sub / "t.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
    )
    doc = _edit(lambda d: d["workload"].pop("synthetic"))
    doc["workload"]["trace"] = {"file": "traces/t.csv"}
    doc["workload"]["num_requests"] = 2
    loaded = load_scenario(_write(tmp_path, doc))
    assert list(build_trace(loaded).prompt_tokens) == [374, 396]
    doc["workload"]["trace"] = {"file": "traces/missing.csv"}
    msg = _error(tmp_path, doc)
    assert "workload.trace.file" in msg and "missing.csv" in msg


def test_json_schema_is_complete() -> None:
    schema = Scenario.model_json_schema()
    text = json.dumps(schema)
    for key in ("cluster", "workload", "failures", "policies", "metrics", "speculation"):
        assert key in schema["properties"]
    assert "additionalProperties" in text  # unknown keys are forbidden in the schema too
    assert "Number of workers" in text  # field docs become descriptions
