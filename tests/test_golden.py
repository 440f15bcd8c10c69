"""Every bundled scenario against its golden summary (a shrunk run under every implemented
policy, see lumen.simulator.golden). A mismatch lists each metric that moved; after an
intended model change regenerate with `make golden` and review the diff."""

from __future__ import annotations

import json

import pytest

from lumen.planner.policies import POLICIES
from lumen.scenarios.catalog import bundled_scenarios
from lumen.simulator.golden import (
    GOLDEN_DIR,
    compare_golden,
    golden_path,
    golden_summary,
)

REGENERATE = "regenerate with `make golden` (python -m lumen.simulator.golden --update)"


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_scenario_matches_its_golden_summary(name: str) -> None:
    path = golden_path(name)
    assert path.exists(), f"no golden file {path}; {REGENERATE}"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert set(expected["policies"]) == set(POLICIES), (
        f"{path} covers {sorted(expected['policies'])}, the simulator implements"
        f" {sorted(POLICIES)}; {REGENERATE}"
    )
    diffs = compare_golden(expected, golden_summary(name))
    assert not diffs, f"{name} differs from {path} ({REGENERATE}):\n" + "\n".join(diffs)


def test_every_golden_file_belongs_to_a_bundled_scenario() -> None:
    stale = {p.stem for p in GOLDEN_DIR.glob("*.json")} - set(bundled_scenarios())
    assert not stale, f"golden files without a scenario: {sorted(stale)}"


def test_compare_golden_reports_each_difference() -> None:
    expected = {"a": 1.0, "b": {"c": [1, 2.0, None]}, "d": "x"}
    assert compare_golden(expected, {"a": 1.0 + 1e-9, "b": {"c": [1, 2.0, None]}, "d": "x"}) == []
    diffs = compare_golden(expected, {"a": 1.001, "b": {"c": [1, 2.0, 3.0]}, "e": 0})
    assert diffs == [
        "a: expected 1.0, got 1.001",
        "b.c[2]: expected None, got 3.0",
        "d: missing from this run (expected 'x')",
        "e: not in the golden file (got 0)",
    ]
