"""Every benchmark script runs end to end in quick mode; kept out of the default run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.benchmark
@pytest.mark.parametrize(
    ("script", "headings"),
    [
        (
            "bench_placement.py",
            (
                "[1] incremental placement",
                "[2] batch placement",
                "[3] gap",
                "[4] time limits",
                "goal",
            ),
        ),
        (
            "bench_recovery.py",
            (
                "[1] heuristic latency",
                "[1b] greedy recovery",
                "[2] exact recovery",
                "[3] gap",
                "[4] time limits",
                "goal",
            ),
        ),
        ("bench_engine.py", ("tok/s", "GB/s", "speed-up")),
        ("bench_simulator.py", ("(a) paper-sim-10w-llama3-70b", "(b) 64 workers", "(c) scale")),
        ("reproduce_paper.py", ("lumen reproduce --quick", "wall time")),
        ("bench_hostile_problem.py", ("client got", "service peak RSS")),
    ],
)
def test_benchmark_runs_quick(script: str, headings: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for heading in headings:
        assert heading in done.stdout, heading
