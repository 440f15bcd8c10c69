"""`lumen solve` and `lumen compare-solvers` end to end (small instances)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lumen.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("problem", "method"),
    [("recovery", "greedy"), ("recovery", "auto"), ("placement", "cpsat"), ("pairing", "lumen")],
)
def test_solve_writes_a_checked_plan(tmp_path: Path, problem: str, method: str) -> None:
    out = tmp_path / "plan.json"
    result = runner.invoke(
        app,
        [
            "solve",
            "failures-8w-x2",
            "--problem",
            problem,
            "--method",
            method,
            "--time-limit",
            "5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "plan checker" in result.output and "feasible" in result.output
    doc = json.loads(out.read_text())
    assert doc["scenario"]["name"] == "failures-8w-x2"  # the resolved configuration
    assert doc["checker"]["feasible"] is True
    assert doc["result"]["objective"] == pytest.approx(doc["checker"]["objective"], rel=1e-6)
    assert doc["plan"] is not None


def test_solve_rejects_bad_names() -> None:
    bad_problem = runner.invoke(app, ["solve", "failures-8w-x2", "--problem", "routing"])
    assert bad_problem.exit_code == 2 and "placement, recovery, pairing" in bad_problem.output
    bad_method = runner.invoke(app, ["solve", "failures-8w-x2", "--method", "simplex"])
    assert bad_method.exit_code == 2 and "cpsat" in bad_method.output
    missing = runner.invoke(app, ["solve", "no-such-scenario"])
    assert missing.exit_code == 1 and "no bundled scenario" in missing.output


def test_compare_solvers_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "compare-solvers",
            "--sizes",
            "4,8",
            "--instances",
            "1",
            "--time-limit",
            "2",
            "--problems",
            "placement,pairing",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "## Optimality gaps of the heuristics" in text
    assert "| placement | uniform |" in text and "| pairing |" in text
    assert "Where exact stops proving optimality" in text
    for name in ("gaps.png", "scaling.png", "rows.json"):
        assert (out / name).stat().st_size > 0
    assert runner.invoke(app, ["compare-solvers", "--sizes", "x"]).exit_code == 2
