"""Small hand-made and random traces shared by the simulator tests."""

from __future__ import annotations

import numpy as np

from lumen.workload.trace import Trace


def make_trace(arrival: list[float], prompt: list[int], output: list[int]) -> Trace:
    return Trace(
        np.asarray(arrival, dtype=np.float64),
        np.asarray(prompt, dtype=np.int64),
        np.asarray(output, dtype=np.int64),
    )


def random_trace(n: int, rate: float, seed: int) -> Trace:
    """Poisson arrivals at ``rate``, prompts of 1-2999 and outputs of 1-399 tokens."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return make_trace(
        np.cumsum(gaps).tolist(),
        rng.integers(1, 3000, n).tolist(),
        rng.integers(1, 400, n).tolist(),
    )
