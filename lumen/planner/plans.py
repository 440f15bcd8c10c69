"""Plans: what a solver decided, as plain values (no solver import anywhere near them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lumen.planner.problems import (
    RECOVERY_MODES,
    IntArray,
    PairingProblem,
    ProblemError,
    RecoveryProblem,
)


def _frozen_ints(name: str, value: Any, n: int) -> IntArray:
    arr = np.array(value, dtype=np.int64, copy=True)
    if arr.shape != (n,):
        raise ProblemError(f"{name}: expected shape ({n},), got {arr.shape}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class PlacementPlan:
    """``holder[i]``: the worker index holding request i's checkpoint."""

    holder: IntArray

    @classmethod
    def of(cls, holder: Any) -> PlacementPlan:
        arr = np.array(holder, dtype=np.int64, copy=True)
        if arr.ndim != 1:
            raise ProblemError(f"holder: expected a 1-D array, got shape {arr.shape}")
        arr.flags.writeable = False
        return cls(arr)

    def to_dict(self) -> dict[str, Any]:
        return {"holder": self.holder.tolist()}


@dataclass(frozen=True, eq=False)
class RecoveryPlan:
    """Per request: its machine index and mode index (into :data:`RECOVERY_MODES`); per machine:
    the order in which it resumes its requests."""

    machine: IntArray
    mode: IntArray
    order: tuple[tuple[int, ...], ...]

    @classmethod
    def from_assignment(cls, problem: RecoveryProblem, machine: Any) -> RecoveryPlan:
        """The plan for an assignment, each machine in shortest-processing-time order (ties by
        request index) and each request in its fastest mode there."""
        n, m = problem.num_requests, problem.num_machines
        mach = _frozen_ints("machine", machine, n)
        p, best = problem.processing()
        if n and ((mach < 0) | (mach >= m)).any():
            raise ProblemError(f"machine: indices must be in 0..{m - 1}")
        rows = np.arange(n)
        mode = best[rows, mach] if n else np.zeros(0, np.int64)
        times = p[rows, mach] if n else np.zeros(0)
        order: list[list[int]] = [[] for _ in range(m)]
        for i in sorted(range(n), key=lambda i: (times[i], i)):
            order[int(mach[i])].append(i)
        return cls(mach, _frozen_ints("mode", mode, n), tuple(tuple(o) for o in order))

    def mode_names(self) -> list[str]:
        return [RECOVERY_MODES[k] for k in self.mode.tolist()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine.tolist(),
            "mode": self.mode_names(),
            "order": [list(o) for o in self.order],
        }


@dataclass(frozen=True, eq=False)
class PairingPlan:
    """Pairs ``(r, s)`` of recovering-worker index and survivor index."""

    pairs: tuple[tuple[int, int], ...]

    def total_saved_s(self, problem: PairingProblem) -> float:
        return float(sum(problem.saved_s[r, s] for r, s in self.pairs))

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": [list(p) for p in self.pairs]}
