"""The placement benchmark runs end to end (quick mode); kept out of the default run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_placement.py"


@pytest.mark.benchmark
def test_bench_placement_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for heading in ("[1] incremental placement", "[2] batch placement", "[3] gap"):
        assert heading in done.stdout
    assert "proven optimal" in done.stdout
