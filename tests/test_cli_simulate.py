"""`lumen simulate` and `lumen sweep` end to end on short runs, and their errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lumen.cli import app
from lumen.cli.sim_cmds import demo_headline
from lumen.scenarios.resolve import load_scenario
from lumen.simulator.experiment import implemented_policies
from lumen.simulator.golden import shrink

runner = CliRunner()


@pytest.fixture(scope="module")
def small_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """paper-4w-qwen3-32b shrunk to 300 requests (failure inside), written as a file."""
    loaded, _ = shrink(load_scenario("paper-4w-qwen3-32b"), 300, 50)
    data = loaded.scenario.model_dump(mode="json", exclude_none=True)
    data["name"] = "small-4w"
    path = tmp_path_factory.mktemp("scenario") / "small-4w.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_simulate_writes_every_output(small_scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = runner.invoke(
        app,
        [
            "simulate",
            str(small_scenario),
            "--policies",
            "stop-and-restart",
            "--seeds",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "simulating small-4w" in result.output and "4/4" in result.output  # progress bar
    assert f"wrote {out}" in result.output
    for name in (
        "config.yaml",
        "requests.csv",
        "summary.json",
        "report.md",
        "ttft_over_time.png",
        "ttft_cdf.png",
        "tpot_cdf.png",
    ):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "summary.json").read_text())
    assert doc["scenario"] == "small-4w" and doc["seeds"] == [0, 1]
    assert doc["policies"] == ["stop-and-restart"]


def test_simulate_defaults_to_the_scenarios_implemented_policies(
    small_scenario: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["simulate", str(small_scenario), "--requests", "150", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "summary.json").read_text())
    scenario = load_scenario(small_scenario).scenario
    assert doc["policies"] == [p for p in scenario.policies if p in implemented_policies()]
    assert doc["num_requests"] == 150


def test_simulate_over_processes_gives_the_same_results(
    small_scenario: Path, tmp_path: Path
) -> None:
    docs = []
    for workers in ("1", "2"):
        out = tmp_path / workers
        args = ["simulate", str(small_scenario), "--requests", "150", "--seeds", "2"]
        args += ["--policies", "stop-and-restart,fixed-checkpointing"]
        result = runner.invoke(app, [*args, "--workers", workers, "--out", str(out)])
        assert result.exit_code == 0, result.output
        docs.append(json.loads((out / "summary.json").read_text()))
        assert (out / "requests.csv").read_text().count("\n") == 1 + 2 * 2 * 2 * 150
    assert docs[0]["policy_metrics"] == docs[1]["policy_metrics"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["simulate", "no-such-scenario"], 1, "no bundled scenario of that name"),
        (["simulate", "paper-4w-qwen3-32b", "--policies", "fastest"], 2, "unknown policy"),
        (["simulate", "paper-4w-qwen3-32b", "--seeds", "many"], 2, "--seeds takes a number"),
        (["simulate", "paper-4w-qwen3-32b", "--seeds", "0"], 2, "--seeds takes a number"),
        (["simulate", "paper-4w-qwen3-32b", "--requests", "0"], 2, "--requests must be >= 1"),
        (["sweep", "paper-4w-qwen3-32b", "paper-4w-qwen3-32b"], 2, "listed twice"),
        (["sweep", "paper-4w-qwen3-32b", "--workers", "0"], 2, "--workers must be >= 1"),
    ],
)
def test_bad_arguments_get_one_paragraph_and_no_traceback(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == code, result.output
    assert message in result.output and result.output.startswith("error:")
    assert "Traceback" not in result.output


def test_unwritable_out_is_refused_before_simulating(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["simulate", "paper-4w-qwen3-32b", "--out", str(blocker / "x")])
    assert result.exit_code == 2
    assert "is not a writable folder" in result.output and "simulating" not in result.output


def test_sweep_over_processes_writes_one_combined_summary(
    small_scenario: Path, tmp_path: Path
) -> None:
    other = load_scenario(small_scenario).scenario.model_dump(mode="json", exclude_none=True)
    other["name"] = "small-4w-copy"
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(other, sort_keys=False))
    result = runner.invoke(
        app,
        [
            "sweep",
            str(small_scenario),
            str(copy),
            "--policies",
            "stop-and-restart",
            "--seeds",
            "2",
            "--requests",
            "200",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "sweep"),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [s["scenario"] for s in doc["scenarios"]] == ["small-4w", "small-4w-copy"]
    # Same workload and failures under another name: the same numbers, whatever process ran them.
    a, b = (s["policy_metrics"]["stop-and-restart"]["ttft_mean_s"] for s in doc["scenarios"])
    assert a == b and a["n"] == 2
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| small-4w | stop-and-restart | 2 |" in table


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_sweep_on_ray_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["sweep", "paper-4w-qwen3-32b", "--ray-address", "auto", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "pip install 'lumen-recovery[ray]'" in result.output
    assert "Traceback" not in result.output


def test_demo_headline_shows_every_policy_and_the_paper() -> None:
    table = demo_headline(num_requests=400)
    policies = list(table.columns[0].cells)
    assert set(implemented_policies()) <= set(policies)
    paper = list(table.columns[3].cells)  # TTFT (paper)
    if "lumen" in implemented_policies():
        assert "-44.4 %" in paper
