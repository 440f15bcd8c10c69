"""The service benchmark runs end to end in quick mode; kept out of the default run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_service.py"


@pytest.mark.benchmark
def test_service_benchmark_runs_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for heading in ("[1] PlanRecovery latency", "[2] sustained RPC/s", "[3] service resident"):
        assert heading in done.stdout, heading
    assert " 0 errors" in done.stdout
