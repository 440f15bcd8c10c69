"""The wait-ordered placement (PlacementState.choose) picks the holder the vector form does.

``reference_choose`` is the vector algorithm :meth:`PlacementState.choose` used before the wait
order (score every worker, check the best two alone, then mask the full ones), written over the
state's public data; the walks below compare it with ``choose`` on random states with many
equal waits, full workers, binding stream caps, large nodes and rows, releases and wait changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lumen.planner.placement_state as ps
from lumen.planner.placement_state import STALE_LIMIT, PlacementState

BARRED = float(np.finfo(np.float64).max)


def reference_choose(
    state: PlacementState, home: int, reserve: float, work: float, rate: float = 0.0
) -> int:
    """The holder by the vector algorithm over all ``m`` workers (ties: lowest index)."""
    alpha, wait = state.alpha, state.wait_s
    row = state.row(home)
    if state.rule == "greedy":
        worst, k = float(state.worst[home]), 1.0 / (state.home_count[home] + 1)
        score = wait * k
        score += max(0.0 + work, worst) * alpha
        for j, (_, load) in row.items():
            score[j] = max(load + work, worst) * alpha + wait[j] * k
    else:
        score = wait + (0.0 + work) * alpha
        for j, (_, load) in row.items():
            score[j] = (load + work) * alpha + wait[j]
    score = np.maximum(score, np.where(state.can_hold, 0.0, BARRED))
    if state.require_other_node:
        score[state.node == state.node[home]] = BARRED
    score[home] = BARRED
    for _ in range(2):
        j = int(score.argmin())
        if score[j] >= BARRED:
            return -1
        if state.budget_left[j] >= reserve and (rate <= 0.0 or state.stream_left[j] >= rate):
            return j
        score[j] = BARRED
    full = state.budget_left < reserve
    if rate > 0.0:
        full |= state.stream_left < rate
    score = np.maximum(score, full * BARRED)
    j = int(score.argmin())
    return j if score[j] < BARRED else -1


def _state(rng: np.random.Generator, m: int, rule: str) -> PlacementState:
    """A random state with few distinct waits (many ties), uneven budgets and some stream
    caps, workers that may not hold, and nodes of 1 to ``m // 2`` workers."""
    per_node = int(rng.choice([1, 2, 4, max(1, m // 2)]))
    node = np.arange(m) // per_node
    stream = np.where(rng.random(m) < 0.3, rng.uniform(1.0, 6.0, m), np.inf)
    return PlacementState(
        node=node,
        wait_s=rng.integers(0, 4, m) * 0.5,
        budget_bytes=rng.integers(0, 8, m).astype(float),
        can_hold=rng.random(m) < 0.85,
        stream_cap_bytes_s=stream,
        alpha=float(rng.choice([0.0, 0.5, 1.0, 3.0])),
        require_other_node=bool(rng.random() < 0.7) and per_node < m,
        rule=rule,
    )


def _walk(rng: np.random.Generator, state: PlacementState, steps: int) -> int:
    """Random placements, releases and wait and hold changes; every choice is compared with
    the reference. Returns how many requests were placed."""
    m, done = state.num_workers, 0
    placed: list[tuple[int, int, float, float, float]] = []
    for _ in range(steps):
        op = rng.random()
        if op < 0.08:
            state.set_wait(int(rng.integers(m)), float(rng.integers(0, 5)) * 0.5)
        elif op < 0.1:
            state.update_wait(rng.integers(0, 4, m) * 0.5)
        elif op < 0.12:
            state.set_can_hold(int(rng.integers(m)), bool(rng.random() < 0.7))
        elif op < 0.25 and placed:
            state.release(*placed.pop(int(rng.integers(len(placed)))))
        else:
            home = int(rng.integers(m))
            reserve = float(rng.integers(0, 3))
            work = float(rng.integers(0, 4)) * 0.25
            rate = float(rng.choice([0.0, 0.0, 1.0, 2.0]))
            expected = reference_choose(state, home, reserve, work, rate)
            assert state.choose(home, reserve, work, rate) == expected
            assert state.choose_dense(home, reserve, work, rate) == expected
            if state.place(home, reserve, work, rate) >= 0:
                placed.append((home, expected, reserve, work, rate))
                done += 1
    return done


@pytest.mark.parametrize("rule", ["greedy", "lumen"])
@pytest.mark.parametrize("seed", range(12))
def test_choose_matches_the_vector_algorithm(rule: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.choice([2, 3, 5, 9, 24, 70]))
    assert _walk(rng, _state(rng, m, rule), 400) > 0


def test_fixed_ring_is_unchanged() -> None:
    rng = np.random.default_rng(5)
    state = _state(rng, 12, "fixed-ring")
    ring = PlacementState(
        node=state.node, wait_s=state.wait_s, budget_bytes=state.budget_left,
        can_hold=state.can_hold, stream_cap_bytes_s=state.stream_left,
        require_other_node=state.require_other_node, rule="fixed-ring",
    )  # fmt: skip
    for _ in range(60):
        home, reserve = int(rng.integers(12)), float(rng.integers(0, 3))
        assert state.place(home, reserve, 0.5) == ring.choose_dense(home, reserve, 0.5)
        ring.place(home, reserve, 0.5)


def test_a_larger_wait_that_rounds_to_the_same_score_wins_by_index() -> None:
    # 2**53 + 0.5 and 2**53 + 1.0 both round to 2**53: worker 0 (wait 1.0) ties worker 1 (wait
    # 0.5) and has the lower index, so it is the argmin although its wait is larger.
    for rule in ("greedy", "lumen"):
        state = PlacementState(
            node=[0, 1, 2], wait_s=[1.0, 0.5, 0.0], budget_bytes=[9.0, 9.0, 9.0], rule=rule
        )
        assert state.choose(2, 1.0, 2.0**53) == reference_choose(state, 2, 1.0, 2.0**53) == 0
        assert state.choose(2, 1.0, 1.0) == 1  # without the rounding, the least wait


def test_large_nodes_fall_back_to_the_vector_form(monkeypatch: pytest.MonkeyPatch) -> None:
    # The least waits are all on the home's node: more than SKIP_LIMIT workers are skipped.
    m = 2 * (ps.SKIP_LIMIT + 8)
    node = np.arange(m) >= m // 2
    state = PlacementState(node=node, wait_s=np.where(node, 1.0, 0.0), budget_bytes=np.ones(m))
    calls: list[int] = []
    dense = state.choose_dense

    def spy(*args: Any) -> int:
        calls.append(1)
        return dense(*args)

    monkeypatch.setattr(state, "choose_dense", spy)
    assert state.choose(0, 1.0, 0.5) == reference_choose(state, 0, 1.0, 0.5) == m // 2
    assert calls == [1]
    assert state.choose(m // 2, 1.0, 0.5) == 0  # the other way, found in the order
    assert calls == [1]


def test_vectors_are_written_only_through_methods() -> None:
    state = PlacementState(node=[0, 1, 2], wait_s=[0.0, 1.0, 2.0], budget_bytes=[5.0] * 3)
    for name in ("wait_s", "budget_left", "stream_left", "can_hold"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(state, name)[0] = 1
    state.set_wait(0, 3.0)
    assert state.wait_s.tolist() == [3.0, 1.0, 2.0]
    assert state.choose(2, 1.0, 0.5) == 1
    with pytest.raises(ValueError, match="nan"):
        state.set_wait(1, float("nan"))
    with pytest.raises(ValueError, match="nan"):
        state.update_wait([0.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="nan"):
        state.choose(0, float("nan"), 0.5)


def test_set_wait_keeps_choices_and_wait_sums_current() -> None:
    rng = np.random.default_rng(3)
    m = 30
    state = PlacementState(node=np.arange(m), wait_s=rng.uniform(0, 2, m), budget_bytes=[4.0] * m)
    for _ in range(40):
        state.place(int(rng.integers(m)), 1.0, float(rng.uniform(0.1, 1.0)))
    for step in range(3 * STALE_LIMIT):  # past the limit: the order is rebuilt on the way
        state.set_wait(int(rng.integers(m)), float(rng.uniform(0, 2)))
        fresh = PlacementState(node=np.arange(m), wait_s=state.wait_s, budget_bytes=[4.0] * m)
        for home in range(m):
            for j, (count, load) in state.row(home).items():
                for _ in range(count):
                    fresh.assign(home, j, 1.0, load / count)
        np.testing.assert_allclose(state.wait_sum, fresh.wait_sum, rtol=1e-12)
        assert state.objective() == pytest.approx(fresh.objective(), rel=1e-12)
        home = step % m
        assert state.choose(home, 1.0, 0.3) == reference_choose(state, home, 1.0, 0.3)
