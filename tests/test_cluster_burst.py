"""A burst of 200 concurrent requests on a live 3-worker cluster: no healthy worker is
declared dead, every request succeeds, ``/healthz`` answers 200 throughout, and a prompt past
the context the workers report gets 400 ``context_length_exceeded``. Slow (a cluster
starts, about 20-40 s on a shared 2-core machine): ``pytest -m slow tests/test_cluster_burst.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gateway_burst.py"


@pytest.mark.slow
def test_a_burst_declares_no_healthy_worker_dead() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--workers", "3", "--requests", "200"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print(got)
    assert got["false_failures"] == 0
    assert got["ok"] == got["requests"] == 200
    assert got["health_not_200"] == 0
    # a prompt past the workers' context is refused at once, not retried
    assert got["too_long_prompt"]["status"] == 400
    assert got["too_long_prompt"]["code"] == "context_length_exceeded"
