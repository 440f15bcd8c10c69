"""The discrete-event kernel: ordering, determinism, cancellation, follow-ups, the clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.simulator.kernel import FollowUp, Simulation


def _recorder(log: list[Any]) -> Any:
    def handler(sim: Simulation, payload: Any) -> None:
        log.append((sim.now, payload))

    return handler


def test_events_run_by_time_then_priority_then_order() -> None:
    sim = Simulation()
    log: list[Any] = []
    rec = _recorder(log)
    sim.at(2.0, rec, "late")
    sim.at(1.0, rec, "b", priority=1)
    sim.at(1.0, rec, "a", priority=0)
    sim.at(1.0, rec, "c", priority=1)  # same key as "b": scheduling order breaks the tie
    assert sim.run() == 4
    assert [p for _, p in log] == ["a", "b", "c", "late"]
    assert sim.now == 2.0


def test_follow_ups_returned_by_handlers_are_scheduled() -> None:
    log: list[float] = []

    def tick(sim: Simulation, remaining: int) -> list[FollowUp]:
        log.append(sim.now)
        return [FollowUp(0.5, tick, remaining - 1)] if remaining > 1 else []

    sim = Simulation()
    sim.after(1.0, tick, 3)
    sim.run()
    assert log == [1.0, 1.5, 2.0]


def test_run_until_stops_the_clock_there_and_keeps_later_events() -> None:
    sim = Simulation()
    log: list[Any] = []
    sim.at(1.0, _recorder(log), 1)
    sim.at(5.0, _recorder(log), 5)
    assert sim.run(until=3.0) == 1
    assert sim.now == 3.0 and sim.peek() == 5.0
    assert sim.run(max_events=1) == 1 and sim.now == 5.0


def test_cancelled_events_never_run() -> None:
    sim = Simulation()
    log: list[Any] = []
    handle = sim.at(1.0, _recorder(log), "cancelled")
    sim.at(2.0, _recorder(log), "kept")
    sim.cancel(handle)
    sim.run()
    assert log == [(2.0, "kept")]


def test_time_never_goes_backwards() -> None:
    sim = Simulation(start=10.0)
    with pytest.raises(ValueError, match="before the current time"):
        sim.at(5.0, _recorder([]))
    with pytest.raises(ValueError, match="delay"):
        sim.after(-1.0, _recorder([]))
    with pytest.raises(ValueError, match="finite"):
        sim.at(float("nan"), _recorder([]))


def test_ids_and_random_numbers_depend_only_on_the_seed() -> None:
    a, b = Simulation(seed=7), Simulation(seed=7)
    assert [a.next_id("req") for _ in range(3)] == [0, 1, 2]
    assert a.next_id("worker") == 0
    assert a.rng.random() == b.rng.random()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2)), min_size=1, max_size=40))
def test_processing_order_is_the_sorted_schedule(events: list[tuple[int, int]]) -> None:
    sim = Simulation()
    log: list[Any] = []
    for k, (t, prio) in enumerate(events):
        sim.at(float(t), _recorder(log), (t, prio, k), priority=prio)
    sim.run()
    assert [p for _, p in log] == sorted((t, prio, k) for k, (t, prio) in enumerate(events))
    assert sim.events_processed == len(events)
