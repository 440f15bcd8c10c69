"""The `lumen` command line: exit codes, messages, and no tracebacks for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from lumen.cli import app
from lumen.scenarios.catalog import bundled_scenarios

runner = CliRunner()


def test_validate_all_bundled_scenarios() -> None:
    result = runner.invoke(app, ["validate", "--all"])
    assert result.exit_code == 0, result.output
    for name in bundled_scenarios():
        assert f"ok {name} " in result.output


def test_validate_reports_bad_files_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ncluster: {workers: 0}\n")
    result = runner.invoke(app, ["validate", "paper-4w-qwen3-32b", str(bad)])
    assert result.exit_code == 1
    assert "ok paper-4w-qwen3-32b" in result.output
    assert "cluster.workers" in result.output and "workload: required key is missing" in (
        result.output
    )
    assert "1 of 2 scenario(s) invalid" in result.output
    assert "Traceback" not in result.output


def test_validate_without_arguments_is_a_usage_error() -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2


def test_scenario_show_json_has_resolved_config_and_derived_numbers() -> None:
    result = runner.invoke(app, ["scenario", "show", "paper-4w-qwen3-32b", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["scenario"]["cluster"]["prefill_chunk_tokens"] == 1024  # a default, filled in
    derived = doc["derived"]
    assert derived["kv_bytes_per_token"] == 262_144  # Qwen3-32B: 256 KiB per token
    assert derived["checkpoint_capacity_tokens"] == 160_000_000_000 // 262_144
    assert derived["reload_total_s"] > derived["draft_load_s"] > 0
    assert derived["requests"] == 15_000
    assert derived["failures"] == [{"at_s": 300.0, "workers": [1]}]


def test_scenario_show_tables() -> None:
    result = runner.invoke(app, ["scenario", "show", "paper-sim-10w-llama3-70b"])
    assert result.exit_code == 0, result.output
    for fragment in ("KV per token", "327,680 bytes", "reload", "draft load", "checkpoints"):
        assert fragment in result.output


def test_scenario_list_and_schema(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["scenario", "list"])
    assert listed.exit_code == 0 and "paper-8w-qwen3-14b" in listed.output
    printed = runner.invoke(app, ["schema"])
    assert printed.exit_code == 0
    assert json.loads(printed.output)["title"] == "Scenario"
    out = tmp_path / "schema.json"
    assert runner.invoke(app, ["schema", "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == json.loads(printed.output)


def test_demo_summarizes_every_bundled_scenario() -> None:
    # The live-cluster part is covered by tests/test_cluster_live.py and test_cli_cluster.py.
    result = runner.invoke(app, ["demo", "--no-live"])
    assert result.exit_code == 0, result.output
    for name in bundled_scenarios():
        assert name in result.output


def test_base_install_never_imports_torch() -> None:
    code = (
        "import sys, lumen.cli, lumen.scenarios.resolve, lumen.planner.costmodel, lumen.workload;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_numba_loads_with_the_first_compiled_solve_only() -> None:
    """Importing the CLI and the planner leaves numba (about 120 MiB) unloaded; the recovery
    greedy on machine classes loads it."""
    code = (
        "import sys, lumen.cli, lumen.planner.solve, lumen.simulator;"
        "from lumen.planner.heuristics.recovery_scale import warm_up;"
        "before = 'numba' in sys.modules; warm_up();"
        "sys.exit(0 if not before and 'numba' in sys.modules else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
