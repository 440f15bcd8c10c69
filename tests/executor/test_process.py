"""``python -m lumen.executor.worker`` as a real process: serve, crash, stop gracefully."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumen.executor.worker.api import GenerationRequest, WorkerUnavailableError
from lumen.executor.worker.client import ExecutorClient

ARGS = ("--weights", "random:0", "--device", "cpu", "--block-size", "4", "--log-level", "WARNING")


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    pytest.importorskip("torch")
    port_file = tmp_path / "port"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lumen.executor.worker", "--worker-id", "4", *ARGS,
         "--address", "127.0.0.1:0", "--port-file", str(port_file), "--min-step-s", "0.02"],
        env=env,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"worker did not start: {err.decode()[-2000:]}")
        time.sleep(0.05)
    try:
        yield proc, f"127.0.0.1:{port_file.read_text().strip()}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_sigkill_mid_request_raises_worker_unavailable(
    worker_process: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, target = worker_process
    with ExecutorClient(target, 4, timeout_s=2) as client:
        assert client.health() == "SERVING"
        events = client.submit(GenerationRequest(1, (1, 2, 3), max_tokens=400))
        first = next(events)
        assert first.token_ids and not first.finished
        proc.send_signal(signal.SIGKILL)
        with pytest.raises(WorkerUnavailableError):
            for _ in events:
                pass
        with pytest.raises(WorkerUnavailableError):
            client.status(timeout_s=0.5)


def test_sigterm_stops_gracefully(worker_process: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, target = worker_process
    with ExecutorClient(target, 4, timeout_s=2) as client:
        assert client.status().worker_id == 4
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
