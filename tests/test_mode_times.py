"""Factored recovery mode times: every view agrees with the dense array built by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.planner.mode_times import ModeTimes, ModeTimesError
from lumen.planner.problems import ProblemError, RecoveryProblem
from lumen.planner.recovery_eval import infeasibility_reason, processing_times


def random_modes(seed: int, n: int = 7, m: int = 9, classes: int = 3) -> ModeTimes:
    """Random classes (some empty), about half the requests with an own machine, and a third
    of all times unavailable."""
    rng = np.random.default_rng(seed)
    times = rng.uniform(0.1, 5.0, (n, classes, 4))
    times[rng.random(times.shape) < 0.35] = np.inf
    own = np.where(rng.random(n) < 0.5, rng.integers(0, m, n), -1)
    own_times = rng.uniform(0.1, 5.0, (n, 4))
    own_times[rng.random(own_times.shape) < 0.35] = np.inf
    return ModeTimes.build(
        machine_class=rng.integers(0, classes, m),
        class_time_s=times,
        own_machine=own,
        own_time_s=own_times,
    )


def by_hand(modes: ModeTimes) -> np.ndarray:
    n, m = modes.num_requests, modes.num_machines
    out = np.empty((n, m, 4))
    for i in range(n):
        for j in range(m):
            own = modes.own_machine[i] == j
            out[i, j] = (
                modes.own_time_s[i] if own else modes.class_time_s[i, modes.machine_class[j]]
            )
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 100_000), st.integers(1, 6), st.integers(1, 8), st.integers(1, 4))
def test_every_view_matches_the_dense_array(seed: int, n: int, m: int, classes: int) -> None:
    modes = random_modes(seed, n, m, classes)
    dense = by_hand(modes)
    np.testing.assert_array_equal(modes.dense(), dense)
    np.testing.assert_array_equal(modes.processing(), dense.min(axis=2))
    rows = np.repeat(np.arange(n), m)
    cols = np.tile(np.arange(m), n)
    np.testing.assert_array_equal(modes.at(rows, cols), dense[rows, cols])
    np.testing.assert_array_equal(modes.processing_at(rows, cols), dense[rows, cols].min(axis=1))
    for mode in range(4):
        finite = np.isfinite(dense[:, :, mode])
        expected = np.where(finite.any(axis=1), np.argmax(finite, axis=1), -1)
        np.testing.assert_array_equal(modes.finite_machines(mode), expected)
    changed = dense.copy()
    changed[:, :, 0:2] = np.inf
    np.testing.assert_array_equal(modes.modify(slice(0, 2), np.inf).dense(), changed)
    again = ModeTimes.from_dense(dense)
    assert again.is_dense
    np.testing.assert_array_equal(again.dense(), dense)


def test_bad_factored_times_name_the_field() -> None:
    with pytest.raises(ModeTimesError, match="machine_class"):
        ModeTimes.build(machine_class=[0, 2], class_time_s=np.ones((1, 2, 4)))
    with pytest.raises(ModeTimesError, match="own_machine"):
        ModeTimes.build(machine_class=[0, 1], class_time_s=np.ones((1, 2, 4)), own_machine=[2])
    with pytest.raises(ModeTimesError, match="class_time_s"):
        ModeTimes.build(machine_class=[0], class_time_s=np.ones((1, 1, 3)))


def _problem(modes: ModeTimes, kv: np.ndarray, cap: np.ndarray) -> RecoveryProblem:
    m = modes.num_machines
    wait_ok = np.zeros(m, bool)
    # Wait mode is only allowed on recovering machines: drop it everywhere here.
    modes = modes.modify(3, np.inf)
    return RecoveryProblem.build(
        ready_s=np.zeros(m),
        queued=np.zeros(m),
        kv_free_tokens=cap,
        kv_tokens=kv,
        modes=modes,
        is_recovering=wait_ok,
    )


def test_a_problem_takes_dense_or_factored_times_and_not_both() -> None:
    modes = random_modes(3).modify(3, np.inf)
    dense = modes.dense()
    kw: dict[str, Any] = dict(
        ready_s=np.zeros(9), queued=np.zeros(9), kv_free_tokens=np.ones(9), kv_tokens=[1] * 7
    )
    a = RecoveryProblem.build(**kw, modes=modes)
    b = RecoveryProblem.build(**kw, mode_time_s=dense)
    np.testing.assert_array_equal(a.mode_time_s, b.mode_time_s)
    np.testing.assert_array_equal(processing_times(a), processing_times(b))
    with pytest.raises(ProblemError, match="either"):
        RecoveryProblem.build(**kw, modes=modes, mode_time_s=dense)
    with pytest.raises(ProblemError, match="either"):
        RecoveryProblem.build(**kw)
    with pytest.raises(ProblemError, match="requests x"):
        RecoveryProblem.build(**{**kw, "kv_tokens": [1] * 6}, modes=modes)
    waiting = ModeTimes.build(machine_class=[0] * 9, class_time_s=np.full((7, 1, 4), 1.0))
    with pytest.raises(ProblemError, match="wait mode"):
        RecoveryProblem.build(**kw, modes=waiting)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 100_000), st.floats(0.2, 3.0))
def test_the_class_proof_of_infeasibility_is_never_stronger_than_the_dense_one(
    seed: int, slack: float
) -> None:
    """Without ``p`` the proof works on classes; it may miss the total-KV proof (it counts
    machines generously) but never claims what the dense check does not."""
    rng = np.random.default_rng(seed)
    modes = random_modes(seed, 6, 8, 3)
    kv = rng.integers(10, 100, 6).astype(float)
    cap = np.floor(rng.uniform(0.0, 2.0, 8) * slack * kv.sum() / 8)
    problem = _problem(modes, kv, cap)
    dense = infeasibility_reason(problem, processing_times(problem))
    classed = infeasibility_reason(problem)
    if classed is not None or (dense is not None and "more KV" not in dense):
        assert classed == dense
