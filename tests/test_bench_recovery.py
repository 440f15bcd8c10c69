"""The recovery benchmark runs end to end (quick mode); kept out of the default run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_recovery.py"


@pytest.mark.benchmark
def test_bench_recovery_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for heading in ("[1] heuristic latency", "[2] exact recovery", "[3] gap"):
        assert heading in done.stdout
    assert "proven optimal" in done.stdout
