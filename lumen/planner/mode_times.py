"""The mode times of a recovery problem in factored form (docs/planner.md, section 2).

A recovery problem needs the time of each of the four modes for every (request, machine) pair.
Held densely that is an (n, m, 4) array: 1 GiB at 16,384 machines and 2,048 requests, although
a cluster of identical workers has only a few distinct columns. :class:`ModeTimes` stores

- a class per machine (``machine_class``, shape (m,)): machines of one class give every request
  the same mode times (``class_time_s``, shape (n, C, 4));
- at most one machine per request with times of its own (``own_machine``, shape (n,), -1 for
  none; ``own_time_s``, shape (n, 4)): typically the holder of its checkpoint, the only machine
  where it can be restored.

So a pair's times are ``own_time_s[i]`` when ``j == own_machine[i]``, else
``class_time_s[i, machine_class[j]]``. Identical survivors make one class and the recovering
workers another, so the storage is O(n + m) whatever the cluster size; a dense array is the
special case of one class per machine (:meth:`ModeTimes.from_dense`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Number of recovery modes (restore, transfer, recompute, wait).
NUM_MODES = 4


class ModeTimesError(ValueError):
    """Inconsistent factored mode times; the message names the field."""


def frozen_array(
    name: str,
    value: Any,
    dtype: type[np.generic],
    shape: tuple[int, ...],
    error: type[ValueError] = ModeTimesError,
) -> Any:
    """A read-only copy of ``value`` of the given dtype and shape (``error`` names ``name``)."""
    arr = np.array(value, dtype=dtype, copy=True)
    if arr.shape != shape:
        raise error(f"{name}: expected shape {shape}, got {arr.shape}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class ModeTimes:
    """Mode times of every (request, machine) pair: per machine class, plus one machine of its
    own per request (see the module docstring)."""

    machine_class: IntArray
    class_time_s: FloatArray
    own_machine: IntArray
    own_time_s: FloatArray

    @classmethod
    def build(
        cls,
        *,
        machine_class: Any,
        class_time_s: Any,
        own_machine: Any = None,
        own_time_s: Any = None,
    ) -> ModeTimes:
        """Validate and freeze (``own_*`` default to no own machine)."""
        times = np.asarray(class_time_s, dtype=np.float64)
        if times.ndim != 3 or times.shape[2] != NUM_MODES:
            raise ModeTimesError(
                f"class_time_s: expected shape (n, classes, {NUM_MODES}), got {times.shape}"
            )
        n, c = times.shape[0], times.shape[1]
        m = len(machine_class)
        out = cls(
            machine_class=frozen_array("machine_class", machine_class, np.int64, (m,)),
            class_time_s=frozen_array("class_time_s", times, np.float64, (n, c, NUM_MODES)),
            own_machine=frozen_array(
                "own_machine",
                np.full(n, -1) if own_machine is None else own_machine,
                np.int64,
                (n,),
            ),
            own_time_s=frozen_array(
                "own_time_s",
                np.full((n, NUM_MODES), np.inf) if own_time_s is None else own_time_s,
                np.float64,
                (n, NUM_MODES),
            ),
        )
        if m and ((out.machine_class < 0) | (out.machine_class >= c)).any():
            raise ModeTimesError(f"machine_class: classes must be in 0..{c - 1}")
        if n and ((out.own_machine < -1) | (out.own_machine >= m)).any():
            raise ModeTimesError(f"own_machine: machine ids must be -1 (none) or in 0..{m - 1}")
        return out

    @classmethod
    def from_dense(cls, mode_time_s: Any) -> ModeTimes:
        """One class per machine: the (n, m, 4) array itself is the class table."""
        dense = np.asarray(mode_time_s, dtype=np.float64)
        if dense.ndim != 3 or dense.shape[2] != NUM_MODES:
            raise ModeTimesError(
                f"mode_time_s: expected shape (n, m, {NUM_MODES}), got {dense.shape}"
            )
        return cls.build(machine_class=np.arange(dense.shape[1]), class_time_s=dense)

    @property
    def num_requests(self) -> int:
        return int(self.class_time_s.shape[0])

    @property
    def num_machines(self) -> int:
        return int(self.machine_class.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.class_time_s.shape[1])

    @cached_property
    def is_dense(self) -> bool:
        """One class per machine, in machine order, and no own machines."""
        return (
            self.num_classes == self.num_machines
            and bool((self.machine_class == np.arange(self.num_machines)).all())
            and not bool((self.own_machine >= 0).any())
        )

    @cached_property
    def has_own(self) -> BoolArray:
        """Requests with a machine of their own."""
        out: BoolArray = self.own_machine >= 0
        return out

    def dense(self) -> FloatArray:
        """The (n, m, 4) array (a new array unless the times are already dense)."""
        if self.is_dense:
            return self.class_time_s
        out: FloatArray = self.class_time_s[:, self.machine_class, :]
        rows = np.flatnonzero(self.has_own)
        out[rows, self.own_machine[rows]] = self.own_time_s[rows]
        return out

    def at(self, rows: Any, machines: Any) -> FloatArray:
        """Mode times of the pairs ``(rows[k], machines[k])``: shape (k, 4)."""
        rows = np.asarray(rows, np.int64)
        machines = np.asarray(machines, np.int64)
        out: FloatArray = self.class_time_s[rows, self.machine_class[machines]]
        own = self.own_machine[rows] == machines
        if own.any():
            out[own] = self.own_time_s[rows[own]]
        return out

    def processing_by_class(self) -> tuple[FloatArray, FloatArray]:
        """The fastest mode's time per (request, class), shape (n, C), and on each request's
        own machine, shape (n,) (inf where it has none or no finite mode)."""
        by_class: FloatArray = self.class_time_s.min(axis=2)
        own: FloatArray = self.own_time_s.min(axis=1)
        return by_class, own

    def processing(self) -> FloatArray:
        """``p[i, j]``: the fastest mode's time of every pair (inf when none), shape (n, m)."""
        by_class, own = self.processing_by_class()
        if self.is_dense:
            return by_class
        out: FloatArray = by_class[:, self.machine_class]
        rows = np.flatnonzero(self.has_own)
        out[rows, self.own_machine[rows]] = own[rows]
        return out

    def processing_at(self, rows: Any, machines: Any) -> FloatArray:
        """The fastest mode's time of the pairs ``(rows[k], machines[k])``."""
        out: FloatArray = self.at(rows, machines).min(axis=1)
        return out

    def modify(self, modes: Any, value: float) -> ModeTimes:
        """A copy with the given mode columns (indices or a slice) set to ``value``."""
        times = np.array(self.class_time_s, copy=True)
        own = np.array(self.own_time_s, copy=True)
        times[:, :, modes] = value
        own[:, modes] = value
        return ModeTimes.build(
            machine_class=self.machine_class,
            class_time_s=times,
            own_machine=self.own_machine,
            own_time_s=own,
        )

    def class_leaders(self, key: Any = None) -> tuple[IntArray, IntArray]:
        """Per class, its first and its second machine in increasing ``key`` (per machine;
        None: by index; ties by index), -1 where the class has fewer machines."""
        m, c, cls = self.num_machines, self.num_classes, self.machine_class
        if m == 0:
            none = np.full(c, -1, np.int64)
            return none, none.copy()
        order = np.lexsort((cls,) if key is None else (key, cls))  # stable: ties by index
        starts = np.searchsorted(cls[order], np.arange(c))
        size = np.bincount(cls, minlength=c)
        first: IntArray = np.where(size > 0, order[np.minimum(starts, m - 1)], -1)
        second: IntArray = np.where(size > 1, order[np.minimum(starts + 1, m - 1)], -1)
        return first, second

    def finite_machines(self, mode: int) -> IntArray:
        """Per request, the lowest machine index where ``mode`` is available (-1: none)."""
        n, m = self.num_requests, self.num_machines
        if n == 0 or m == 0:
            return np.full(n, -1, np.int64)
        # The lowest two machines of each class (m: none); classes without machines never count.
        first, second = (np.where(x >= 0, x, m) for x in self.class_leaders())
        best = np.where(np.isfinite(self.class_time_s[:, :, mode]), first[None, :], m)
        # A request's own machine has its own times: where it is the first of its class, the
        # class's time applies from the second machine on; the own time applies to it alone.
        rows = np.flatnonzero(self.has_own)
        j = self.own_machine[rows]
        k = self.machine_class[j]
        shadowed = (first[k] == j) & (best[rows, k] < m)
        best[rows[shadowed], k[shadowed]] = second[k[shadowed]]
        out = best.min(axis=1)
        own_ok = np.isfinite(self.own_time_s[rows, mode])
        out[rows[own_ok]] = np.minimum(out[rows[own_ok]], j[own_ok])
        result: IntArray = np.where(out < m, out, -1).astype(np.int64)
        return result
