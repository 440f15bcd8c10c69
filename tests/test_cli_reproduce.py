"""`lumen reproduce` on a small scenario: the report's sections, its numbers against a direct
`lumen simulate` of the same configuration, the readings it parses and the input it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from lumen.cli import app
from lumen.cli.reproduce_cmds import paper_scenarios
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.golden import shrink
from lumen.simulator.reproduce import (
    DEFAULT_READING,
    Reading,
    alternative_readings,
    parse_readings,
    with_reading,
)

runner = CliRunner()
POLICIES = "stop-and-restart,fixed-checkpointing,lumen,lumen-optimal"


def _write(tmp: Path, name: str, readings: dict[str, str] | None = None) -> Path:
    """paper-4w-qwen3-32b shrunk to 300 requests (failure inside), with ``readings``."""
    loaded, _ = shrink(load_scenario("paper-4w-qwen3-32b"), 300, 50)
    data = loaded.scenario.model_dump(mode="json", exclude_none=True)
    data["name"] = "small-4w"
    data["readings"] = {**data["readings"], **(readings or {})}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("scenario"), "small-4w")


@pytest.fixture(scope="module")
def report(small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("reproduce")
    result = runner.invoke(
        app,
        [
            "reproduce",
            "--quick",
            "--scenarios",
            str(small),
            "--readings",
            "assist=synchronous",
            "--requests",
            "300",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def _metrics(runs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["policy"], r["seed"]): r["metrics"] for r in runs}


def test_reproduce_writes_the_report_with_every_section(report: tuple[Path, str]) -> None:
    out, output = report
    assert "reproducing" in output and "8/8" in output  # progress bar: 2 readings x 4 policies
    for name in ("report.md", "report.json", "headline.md", "ttft_vs_stop-and-restart.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    for section in (
        "# Reproducing the paper",
        "--requests 300",
        "## The paper's numbers beside ours (default reading)",
        "## Failure-free reference (default reading)",
        "## Sensitivity to the readings",
        "### small-4w",
        "`assist=synchronous`",
        "Moves it most",
        "## Our policies: lumen-optimal beside lumen",
        "### Mechanism counters",
        "verify_steps",
    ):
        assert section in md, section
    assert "-44.4 %" in md  # the paper's TTFT change against Stop-and-Restart
    doc = json.loads((out / "report.json").read_text())
    assert doc["num_requests"] == 300 and doc["seeds"] == 1
    (scenario,) = doc["scenarios"]
    assert list(scenario["readings"]) == ["default", "assist=synchronous"]
    assert scenario["policies"] == POLICIES.split(",")
    assert {m["baseline"] for m in scenario["most_moving"]} <= {
        "stop-and-restart",
        "fixed-checkpointing",
    }


@pytest.mark.parametrize(
    ("reading", "fields"), [("default", None), ("assist=synchronous", {"assist": "synchronous"})]
)
def test_reproduce_matches_a_direct_simulate(
    report: tuple[Path, str], tmp_path: Path, reading: str, fields: dict[str, str] | None
) -> None:
    scenario = _write(tmp_path, "same", fields)
    sim = tmp_path / "sim"
    args = ["simulate", str(scenario), "--policies", POLICIES, "--seeds", "1"]
    result = runner.invoke(app, [*args, "--requests", "300", "--out", str(sim)])
    assert result.exit_code == 0, result.output
    direct = json.loads((sim / "summary.json").read_text())
    doc = json.loads((report[0] / "report.json").read_text())
    ours = doc["scenarios"][0]["readings"][reading]["summary"]
    assert _metrics(ours["runs"]) == _metrics(direct["runs"])
    assert ours["comparisons"] == direct["comparisons"]


def test_readings_are_parsed_with_the_default_first() -> None:
    every = parse_readings(None)
    assert every == parse_readings("all") == parse_readings("default,all")
    assert [r.name for r in every] == [
        "default",
        "assist=synchronous",
        "draft_load=serial",
        "assisted_batches=alternate",
        "gateway=least-requests",
        "gateway=round-robin",
    ]
    assert every[1:] == alternative_readings()
    assert parse_readings("default") == [DEFAULT_READING]
    two = parse_readings("gateway=round-robin+draft_load=serial")
    assert two[1] == Reading((("gateway", "round-robin"), ("draft_load", "serial")))
    assert two[1].name == "gateway=round-robin+draft_load=serial"


def test_a_reading_replaces_only_its_fields() -> None:
    loaded = load_scenario("paper-4w-qwen3-32b")
    changed = with_reading(loaded, Reading((("gateway", "round-robin"),)))
    assert changed.scenario.readings.gateway == "round-robin"
    assert changed.scenario.readings.assist == loaded.scenario.readings.assist
    assert changed.scenario.model_copy(update={"readings": loaded.scenario.readings}) == (
        loaded.scenario
    )
    assert with_reading(loaded, DEFAULT_READING) is loaded


def test_every_paper_scenario_is_reproduced_by_default() -> None:
    names = paper_scenarios()
    assert "paper-4w-qwen3-32b" in names and "scale-64w-llama3-70b" in names
    assert all(load_scenario(n).scenario.paper_reference is not None for n in names)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--scenarios", "no-such-scenario"], 1, "no bundled scenario of that name"),
        (["--readings", "assist=sometimes"], 2, "unknown value 'sometimes' for reading assist"),
        (["--readings", "colour=red"], 2, "unknown reading 'colour=red'"),
        (["--readings", ","], 2, "--readings needs at least one reading"),
        (["--scenarios", "paper-4w-qwen3-32b,paper-4w-qwen3-32b"], 2, "listed twice"),
        (["--seeds", "0"], 2, "--seeds takes a number"),
        (["--requests", "0"], 2, "--requests must be >= 1"),
    ],
)
def test_bad_input_is_refused_in_one_paragraph(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["reproduce", *args, "--out", str(tmp_path)])
    assert result.exit_code == code, result.output
    assert result.output.startswith("error:") and message in result.output
    assert "Traceback" not in result.output and "reproducing" not in result.output
