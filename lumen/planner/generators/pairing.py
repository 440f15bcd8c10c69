"""Random pairing instances: a few recovering workers against many survivors."""

from __future__ import annotations

import numpy as np

from lumen.planner.problems import PairingProblem, expected_tokens_per_step

FAMILIES: tuple[str, ...] = ("uniform", "skewed", "restricted")


def random_pairing_problem(
    rng: np.random.Generator, recovering: int, survivors: int, family: str = "uniform"
) -> PairingProblem:
    """Savings from a simple speculative-decoding model with random survivor backlogs.

    ``uniform``: similar backlogs; ``skewed``: a few very busy survivors; ``restricted``: a third
    of the pairs forbidden (for example a draft that cannot reach a survivor's node).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    window = rng.uniform(30.0, 120.0, size=recovering)  # seconds of assistance before switching
    if family == "skewed":
        backlog = rng.pareto(1.5, size=survivors) * 20.0
    else:
        backlog = rng.uniform(0.0, 60.0, size=survivors)
    accept = rng.uniform(0.5, 0.8, size=survivors)
    speedup = np.array([expected_tokens_per_step(a, 4) for a in accept]) / 1.15
    fraction = np.clip(1.0 - 1.0 / speedup, 0.0, None)
    saved = np.minimum(window[:, None], backlog[None, :]) * fraction[None, :]
    if family == "restricted":
        saved = np.where(rng.random(saved.shape) < 1 / 3, -np.inf, saved)
    wait = backlog * rng.uniform(0.5, 1.0, size=survivors)
    return PairingProblem.build(saved_s=saved, survivor_wait_s=wait)
