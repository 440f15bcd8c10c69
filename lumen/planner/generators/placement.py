"""Random checkpoint-placement instances (docs/planner.md, section 1) for tests and benchmarks.

Magnitudes follow the model and hardware profiles (``lumen.planner.costmodel.profiles``):
queueing delays of 0-5 s, restore work of 0.01-0.5 s per request (host->GPU copies of a few GB
at ~26 GB/s), reservations of 0.1-2 GB (a maximum context times the KV bytes per token) and
host budgets of tens of GB, raised where needed so that the instance stays feasible unless the
family asks for binding capacity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lumen.planner.problems import FloatArray, IntArray, PlacementProblem

FAMILIES: tuple[str, ...] = ("uniform", "skewed", "tight", "multi-node")

GB = 1e9
MB = 1e6


def _multi_node(rng: np.random.Generator, m: int) -> IntArray:
    """2-4 consecutive workers per node, at least two nodes (else nothing may hold)."""
    if m < 4:
        return (np.arange(m) >= (m + 1) // 2).astype(np.int64)
    sizes: list[int] = []
    while sum(sizes) < m:
        sizes.append(min(int(rng.integers(2, 5)), m - sum(sizes)))
    if len(sizes) == 1:
        sizes = [m // 2, m - m // 2]
    return np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)


def _normalized(values: np.ndarray) -> FloatArray:
    return np.asarray(values / values.sum(), dtype=np.float64)


def random_placement_problem(
    rng: np.random.Generator,
    workers: int,
    requests: int,
    family: str = "uniform",
    **overrides: Any,
) -> PlacementProblem:
    """A random instance of ``family`` (see :data:`FAMILIES`).

    - ``uniform``: balanced waits and homes, one worker per node, ample budgets;
    - ``skewed``: a fifth of the workers are busy (waits of 2-5 s), homes follow a Zipf-like
      popularity (a few hot homes), heavier restore work, uneven failure weights;
    - ``tight``: budgets ~1.2x the mean reservation per worker and finite stream caps, so that
      capacity binds (an instance may then be infeasible);
    - ``multi-node``: 2-4 workers per node with ``require_other_node``.

    ``overrides`` replace any keyword of :meth:`PlacementProblem.build` (for example
    ``alpha=2.0`` or ``current=...``).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if workers < 2:
        raise ValueError("workers: at least two are needed (a holder differs from its home)")
    m, n = workers, requests
    node = _multi_node(rng, m) if family == "multi-node" else np.arange(m, dtype=np.int64)
    if family == "skewed":
        busy = rng.random(m) < 0.2
        wait = np.where(busy, rng.uniform(2.0, 5.0, m), rng.uniform(0.0, 0.5, m))
        popularity = _normalized(1.0 / np.arange(1, m + 1) ** 1.2)[rng.permutation(m)]
        home = rng.choice(m, size=n, p=popularity)
        work = np.clip(rng.lognormal(np.log(0.12), 0.8, n), 0.01, 0.5)
        fail_weight = _normalized(rng.uniform(0.5, 2.0, m))
    else:
        wait = rng.uniform(0.0, 3.0 if family != "uniform" else 2.0, m)
        home = rng.integers(0, m, size=n)
        work = rng.uniform(0.01, 0.5, n)
        fail_weight = (
            np.full(m, 1.0 / m) if family == "uniform" else _normalized(rng.uniform(0.5, 1.5, m))
        )
    # Whole bytes, as a real reservation would be (max context x KV bytes per token).
    reserve = np.round(rng.uniform(0.1, 2.0, n) * GB)
    stream = rng.uniform(2.0, 20.0, n) * MB
    per_worker = reserve.sum() / max(m - 1, 1)
    if family == "tight":
        budget = np.round(1.2 * per_worker * rng.uniform(0.9, 1.1, m))
        cap = 1.5 * stream.sum() / max(m - 1, 1) * np.ones(m)
    else:
        budget = np.round(np.maximum(rng.uniform(20.0, 80.0, m) * GB, 3.0 * per_worker))
        cap = np.full(m, np.inf)
    data: dict[str, Any] = {
        "node": node,
        "wait_s": wait,
        "budget_bytes": budget,
        "home": home,
        "reserve_bytes": reserve,
        "work_s": work,
        "fail_weight": fail_weight,
        "stream_cap_bytes_s": cap,
        "stream_bytes_s": stream,
        "alpha": 1.0,
        "require_other_node": True,
    }
    data.update(overrides)
    return PlacementProblem.build(**data)
