"""Soak: a live cluster under steady load while random workers are SIGKILLed and restarted.

Marked ``slow`` (out of the default run): ``pytest -m slow tests/test_cluster_soak.py``.
``LUMEN_SOAK_S`` sets the duration (default 300 s: five minutes of kills). Every request must
complete with exactly the tokens the workers' model produces for it alone.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster
from lumen.executor.cluster.loadgen import LoadRequest, run_load

pytest.importorskip("torch")

WORKERS = 4
KILL_EVERY_S = 15.0
RESTART_AFTER_S = 2.0


def _reference(requests: list[LoadRequest]) -> list[list[int]]:
    """Greedy tokens of each request from an in-process engine with the workers' weights."""
    from lumen.executor.engine.config import EngineConfig
    from lumen.executor.engine.interface import RandomWeights, RequestSpec, SamplingParams
    from lumen.executor.engine.torch_engine import TorchEngine
    from lumen.executor.worker.__main__ import DEFAULT_RANDOM_MODEL

    engine = TorchEngine(EngineConfig(device="cpu"), RandomWeights(DEFAULT_RANDOM_MODEL, 0))
    specs = [
        RequestSpec(
            f"r{i}",
            prompt_token_ids=r.prompt_token_ids,
            sampling=SamplingParams(max_new_tokens=r.max_tokens),
        )
        for i, r in enumerate(requests)
    ]
    out = engine.generate(specs)
    return [out[f"r{i}"] for i in range(len(requests))]


@pytest.mark.slow
def test_random_kills_lose_no_request(tmp_path: Path) -> None:
    duration = float(os.environ.get("LUMEN_SOAK_S", "300"))
    rng = random.Random(0)
    n = int(duration * 2)
    requests = [
        LoadRequest(
            0.5 * i,
            tuple(rng.randrange(1, 256) for _ in range(rng.randrange(4, 40))),
            rng.randrange(4, 40),
        )
        for i in range(n)
    ]
    spec = ClusterSpec(WORKERS, "lumen", ssd_gbyte_s=1e-4, min_step_s=0.01, log_dir=tmp_path)
    killed: list[tuple[float, int]] = []
    with LocalCluster(spec) as cluster:
        t0 = time.monotonic()

        def kill() -> None:
            w = rng.randrange(WORKERS)
            killed.append((time.monotonic() - t0, w))
            cluster.kill_worker(w)
            timer = threading.Timer(RESTART_AFTER_S, cluster.restart_worker, args=(w,))
            timer.daemon = True
            timer.start()

        kills = [(KILL_EVERY_S * (k + 1), kill) for k in range(int(duration // KILL_EVERY_S))]
        load = run_load(cluster.gateway_url, requests, timeout_s=duration + 180.0, at_time=kills)
    assert len(killed) == len(kills) > 0
    assert load.errors == [None] * n, [e for e in load.errors if e][:5]
    assert load.token_ids == _reference(requests)
