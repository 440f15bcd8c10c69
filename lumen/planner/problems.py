"""The planner's problems as frozen, typed values (definitions in docs/planner.md).

Problems hold read-only numpy arrays so that heuristics can work at 1,024 workers and 100,000
requests without copying; every constructor validates shapes and ranges and raises
:class:`ProblemError` naming the offending field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from lumen.planner.mode_times import ModeTimes, ModeTimesError, frozen_array

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Recovery modes, in the column order of :attr:`RecoveryProblem.mode_time_s`.
RECOVERY_MODES: tuple[str, ...] = ("restore", "transfer", "recompute", "wait")


class ProblemError(ValueError):
    """Invalid problem data; the message names the field."""


def _array(name: str, value: Any, dtype: type[np.generic], shape: tuple[int, ...]) -> Any:
    return frozen_array(name, value, dtype, shape, ProblemError)


def _nonneg(name: str, arr: Any, allow_inf: bool = False) -> None:
    if arr.size == 0:
        return
    if np.isnan(arr).any():
        raise ProblemError(f"{name}: NaN values")
    if (arr < 0).any():
        raise ProblemError(f"{name}: negative values (first at index {int(np.argmax(arr < 0))})")
    if not allow_inf and np.isinf(arr).any():
        raise ProblemError(f"{name}: infinite values")


@dataclass(frozen=True, eq=False)
class PlacementProblem:
    """Choose one checkpoint holder per request (docs/planner.md, section 1)."""

    node: IntArray
    wait_s: FloatArray
    budget_bytes: FloatArray
    can_hold: BoolArray
    fail_weight: FloatArray
    stream_cap_bytes_s: FloatArray
    home: IntArray
    reserve_bytes: FloatArray
    work_s: FloatArray
    stream_bytes_s: FloatArray
    current: IntArray
    move_cost_s: FloatArray
    alpha: float = 1.0
    require_other_node: bool = True

    @property
    def num_workers(self) -> int:
        return int(self.node.shape[0])

    @property
    def num_requests(self) -> int:
        return int(self.home.shape[0])

    @classmethod
    def build(
        cls,
        *,
        node: Any,
        wait_s: Any,
        budget_bytes: Any,
        home: Any,
        reserve_bytes: Any,
        work_s: Any,
        can_hold: Any = None,
        fail_weight: Any = None,
        stream_cap_bytes_s: Any = None,
        stream_bytes_s: Any = None,
        current: Any = None,
        move_cost_s: Any = None,
        alpha: float = 1.0,
        require_other_node: bool = True,
    ) -> PlacementProblem:
        """Validate and freeze; optional arrays default to: all may hold, uniform failure
        weights, no stream caps, zero stream rates, no current holders, zero move costs."""
        m = len(node)
        n = len(home)
        p = cls(
            node=_array("node", node, np.int64, (m,)),
            wait_s=_array("wait_s", wait_s, np.float64, (m,)),
            budget_bytes=_array("budget_bytes", budget_bytes, np.float64, (m,)),
            can_hold=_array(
                "can_hold", np.ones(m, bool) if can_hold is None else can_hold, np.bool_, (m,)
            ),
            fail_weight=_array(
                "fail_weight",
                np.full(m, 1.0 / max(m, 1)) if fail_weight is None else fail_weight,
                np.float64,
                (m,),
            ),
            stream_cap_bytes_s=_array(
                "stream_cap_bytes_s",
                np.full(m, np.inf) if stream_cap_bytes_s is None else stream_cap_bytes_s,
                np.float64,
                (m,),
            ),
            home=_array("home", home, np.int64, (n,)),
            reserve_bytes=_array("reserve_bytes", reserve_bytes, np.float64, (n,)),
            work_s=_array("work_s", work_s, np.float64, (n,)),
            stream_bytes_s=_array(
                "stream_bytes_s",
                np.zeros(n) if stream_bytes_s is None else stream_bytes_s,
                np.float64,
                (n,),
            ),
            current=_array(
                "current", np.full(n, -1) if current is None else current, np.int64, (n,)
            ),
            move_cost_s=_array(
                "move_cost_s",
                np.zeros(n) if move_cost_s is None else move_cost_s,
                np.float64,
                (n,),
            ),
            alpha=float(alpha),
            require_other_node=bool(require_other_node),
        )
        p.validate()
        return p

    def validate(self) -> None:
        m, n = self.num_workers, self.num_requests
        if m < 1:
            raise ProblemError("node: at least one worker is needed")
        for name in (
            "wait_s",
            "budget_bytes",
            "fail_weight",
            "reserve_bytes",
            "work_s",
            "stream_bytes_s",
            "move_cost_s",
        ):
            _nonneg(name, getattr(self, name))
        _nonneg("stream_cap_bytes_s", self.stream_cap_bytes_s, allow_inf=True)
        _nonneg("budget_bytes", self.budget_bytes, allow_inf=False)
        if (self.node < 0).any():
            raise ProblemError("node: ids must be >= 0")
        if n and ((self.home < 0) | (self.home >= m)).any():
            raise ProblemError(f"home: worker ids must be in 0..{m - 1}")
        if n and ((self.current < -1) | (self.current >= m)).any():
            raise ProblemError(f"current: holder ids must be -1 (none) or in 0..{m - 1}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ProblemError(f"alpha: must be finite and >= 0, got {self.alpha}")

    def allowed(self) -> BoolArray:
        """n x m matrix of holder choices allowed by the structural rules (not by capacity)."""
        ok = np.broadcast_to(self.can_hold, (self.num_requests, self.num_workers)).copy()
        ok[np.arange(self.num_requests), self.home] = False
        if self.require_other_node:
            ok &= self.node[None, :] != self.node[self.home][:, None]
        return ok


@dataclass(frozen=True, eq=False)
class RecoveryProblem:
    """Assign interrupted requests to machines and order them (docs/planner.md, section 2).

    ``modes`` holds the time of each mode of :data:`RECOVERY_MODES` for each (request, machine)
    pair, ``inf`` where a mode is unavailable, in factored form (:class:`ModeTimes`: per machine
    class, plus each request's own machine); ``mode_time_s`` is the same as an (n, m, 4) array,
    built on first use (1 GiB at 16,384 machines x 2,048 requests: large-scale code reads
    ``modes``).
    """

    ready_s: FloatArray
    queued: FloatArray
    kv_free_tokens: FloatArray
    kv_tokens: FloatArray
    modes: ModeTimes
    #: Requests running on each machine (the paper's rule counts waiting + running).
    running: FloatArray
    #: Whether each machine is a recovering worker (the target of ``wait`` mode).
    is_recovering: BoolArray
    #: Valid checkpointed prefix of each request (the paper rebalances the shortest first).
    prefix_tokens: FloatArray
    machine_ids: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    request_ids: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_machines(self) -> int:
        return int(self.ready_s.shape[0])

    @property
    def num_requests(self) -> int:
        return int(self.kv_tokens.shape[0])

    @cached_property
    def mode_time_s(self) -> FloatArray:
        """The (n, m, 4) mode times (read-only; built from ``modes`` on first use)."""
        dense = self.modes.dense()
        if dense.flags.writeable:
            dense.flags.writeable = False
        return dense

    @classmethod
    def build(
        cls,
        *,
        ready_s: Any,
        queued: Any,
        kv_free_tokens: Any,
        kv_tokens: Any,
        mode_time_s: Any = None,
        modes: ModeTimes | None = None,
        running: Any = None,
        is_recovering: Any = None,
        prefix_tokens: Any = None,
        machine_ids: Any = None,
        request_ids: Any = None,
    ) -> RecoveryProblem:
        """Validate and freeze. Mode times come either dense (``mode_time_s``, shape (n, m, 4))
        or factored (``modes``). ``machine_ids``/``request_ids`` map indices back to cluster ids
        (default: the indices themselves)."""
        m = len(ready_s)
        n = len(kv_tokens)
        if (mode_time_s is None) == (modes is None):
            raise ProblemError("mode_time_s: give either mode_time_s or modes, not both or none")
        try:
            if modes is None:
                dense = np.asarray(mode_time_s, np.float64)
                if dense.shape != (n, m, len(RECOVERY_MODES)):
                    raise ProblemError(
                        f"mode_time_s: expected shape {(n, m, len(RECOVERY_MODES))},"
                        f" got {dense.shape}"
                    )
                modes = ModeTimes.from_dense(dense)
        except ModeTimesError as exc:
            raise ProblemError(str(exc)) from None
        if (modes.num_requests, modes.num_machines) != (n, m):
            raise ProblemError(
                f"modes: expected {n} requests x {m} machines, got"
                f" {modes.num_requests} x {modes.num_machines}"
            )
        p = cls(
            ready_s=_array("ready_s", ready_s, np.float64, (m,)),
            queued=_array("queued", queued, np.float64, (m,)),
            kv_free_tokens=_array("kv_free_tokens", kv_free_tokens, np.float64, (m,)),
            kv_tokens=_array("kv_tokens", kv_tokens, np.float64, (n,)),
            modes=modes,
            running=_array(
                "running", np.zeros(m) if running is None else running, np.float64, (m,)
            ),
            is_recovering=_array(
                "is_recovering",
                np.zeros(m, bool) if is_recovering is None else is_recovering,
                np.bool_,
                (m,),
            ),
            prefix_tokens=_array(
                "prefix_tokens",
                np.zeros(n) if prefix_tokens is None else prefix_tokens,
                np.float64,
                (n,),
            ),
            machine_ids=_array(
                "machine_ids", np.arange(m) if machine_ids is None else machine_ids, np.int64, (m,)
            ),
            request_ids=_array(
                "request_ids", np.arange(n) if request_ids is None else request_ids, np.int64, (n,)
            ),
        )
        p.validate()
        return p

    def validate(self) -> None:
        if self.num_machines < 1:
            raise ProblemError("ready_s: at least one machine is needed")
        _nonneg("ready_s", self.ready_s)
        _nonneg("queued", self.queued)
        _nonneg("kv_free_tokens", self.kv_free_tokens, allow_inf=True)
        _nonneg("kv_tokens", self.kv_tokens)
        _nonneg("mode_time_s", self.modes.class_time_s, allow_inf=True)
        _nonneg("mode_time_s", self.modes.own_time_s, allow_inf=True)
        _nonneg("running", self.running)
        _nonneg("prefix_tokens", self.prefix_tokens)
        self._validate_wait()
        if len(set(self.machine_ids.tolist())) != self.num_machines:
            raise ProblemError("machine_ids: duplicate ids")
        if len(set(self.request_ids.tolist())) != self.num_requests:
            raise ProblemError("request_ids: duplicate ids")

    def with_modes(self, modes: ModeTimes, prefix_tokens: Any = None) -> RecoveryProblem:
        """The same problem with other mode times (and valid prefixes, if given)."""
        return RecoveryProblem.build(
            ready_s=self.ready_s,
            queued=self.queued,
            kv_free_tokens=self.kv_free_tokens,
            kv_tokens=self.kv_tokens,
            modes=modes,
            running=self.running,
            is_recovering=self.is_recovering,
            prefix_tokens=self.prefix_tokens if prefix_tokens is None else prefix_tokens,
            machine_ids=self.machine_ids,
            request_ids=self.request_ids,
        )

    def _validate_wait(self) -> None:
        if not self.num_requests:
            return
        wait = RECOVERY_MODES.index("wait")
        modes = self.modes
        # Classes with a serving machine must not offer wait mode, nor may own serving machines.
        serving = np.zeros(modes.num_classes, bool)
        serving[modes.machine_class[~self.is_recovering]] = True
        bad = np.isfinite(modes.class_time_s[:, serving, wait]).any()
        rows = np.flatnonzero(modes.has_own)
        own = modes.own_machine[rows]
        bad |= bool(np.isfinite(modes.own_time_s[rows, wait])[~self.is_recovering[own]].any())
        if bad:
            raise ProblemError("mode_time_s: wait mode is only available on recovering machines")

    def processing(self) -> tuple[FloatArray, IntArray]:
        """``p[i, j]`` (min over modes, inf when none is available) and the argmin mode index."""
        if self.num_requests == 0:
            return np.zeros((0, self.num_machines)), np.zeros((0, self.num_machines), np.int64)
        mode = np.argmin(self.mode_time_s, axis=2)
        p = np.take_along_axis(self.mode_time_s, mode[:, :, None], axis=2)[:, :, 0]
        return p, mode.astype(np.int64)


@dataclass(frozen=True, eq=False)
class PairingProblem:
    """Pair recovering workers with survivors 1:1 (docs/planner.md, section 3).

    ``saved_s[r, s]``: decode seconds saved when recovering worker r drafts for survivor s;
    ``-inf`` marks a forbidden pair.
    """

    saved_s: FloatArray
    recovering_ids: IntArray
    survivor_ids: IntArray
    #: Survivors' current queueing delay (the paper's rule pairs the longest-waiting first).
    survivor_wait_s: FloatArray

    @classmethod
    def build(
        cls,
        *,
        saved_s: Any,
        recovering_ids: Any = None,
        survivor_ids: Any = None,
        survivor_wait_s: Any = None,
    ) -> PairingProblem:
        arr = np.array(saved_s, dtype=np.float64)
        if arr.ndim != 2:
            raise ProblemError(f"saved_s: expected a 2-D matrix, got shape {arr.shape}")
        a, b = arr.shape
        p = cls(
            saved_s=_array("saved_s", arr, np.float64, (a, b)),
            recovering_ids=_array(
                "recovering_ids",
                np.arange(a) if recovering_ids is None else recovering_ids,
                np.int64,
                (a,),
            ),
            survivor_ids=_array(
                "survivor_ids",
                np.arange(b) if survivor_ids is None else survivor_ids,
                np.int64,
                (b,),
            ),
            survivor_wait_s=_array(
                "survivor_wait_s",
                np.zeros(b) if survivor_wait_s is None else survivor_wait_s,
                np.float64,
                (b,),
            ),
        )
        _nonneg("survivor_wait_s", p.survivor_wait_s)
        if np.isnan(p.saved_s).any() or (p.saved_s == np.inf).any():
            raise ProblemError("saved_s: NaN or +inf values")
        finite = p.saved_s[np.isfinite(p.saved_s)]
        if (finite < 0).any():
            raise ProblemError("saved_s: negative savings (use -inf to forbid a pair)")
        return p


def expected_tokens_per_step(acceptance_rate: float, depth: int) -> float:
    """Expected tokens produced per verify step with draft depth K: (1 - a^(K+1)) / (1 - a)."""
    a = acceptance_rate
    if not 0.0 <= a < 1.0 or depth < 0:
        raise ProblemError("acceptance_rate must be in [0, 1) and depth >= 0")
    return (1.0 - a ** (depth + 1)) / (1.0 - a)
