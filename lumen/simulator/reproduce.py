"""Reproducing the paper: every paper scenario under every reading of what the paper leaves open.

A :class:`Reading` changes some fields of a scenario's ``readings`` block
(:class:`lumen.scenarios.schema.ReadingsConfig`, docs/simulator-model.md, "Readings of the
paper"); the empty reading is the scenario as written (the defaults for the bundled paper
scenarios). :func:`run_reproduction` runs each scenario under each reading with its policies
(plus ``lumen-optimal`` where the scenario leaves it out) and seeds, every pair beside its
failure-free reference, as the tasks of a sweep (:mod:`lumen.simulator.sweep`: one process or
many), and summarizes each scenario and reading as an :class:`ExperimentSummary`. The report is
written by :mod:`lumen.analysis.repro_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

from lumen.scenarios.resolve import LoadedScenario
from lumen.scenarios.schema import Policy, ReadingsConfig
from lumen.simulator.experiment import (
    ExperimentSummary,
    PairRun,
    implemented_policies,
    select_policies,
)
from lumen.simulator.sweep import OnDone, Plan, plan_tasks, run_tasks

__all__ = [
    "DEFAULT_READING",
    "EXTRA_POLICIES",
    "Reading",
    "ReadingResult",
    "ScenarioReproduction",
    "alternative_readings",
    "parse_readings",
    "reading_values",
    "reproduction_plans",
    "reproduction_policies",
    "run_reproduction",
    "with_reading",
]

#: Our own policies run beside the scenario's, when it does not list them.
EXTRA_POLICIES: tuple[str, ...] = (Policy.LUMEN_OPTIMAL.value,)


@dataclass(frozen=True, slots=True)
class Reading:
    """Fields of the ``readings`` block changed from the scenario's (none: the default)."""

    changes: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """``default``, or ``field=value`` joined by ``+``."""
        return "+".join(f"{k}={v}" for k, v in self.changes) or "default"

    @property
    def is_default(self) -> bool:
        return not self.changes


DEFAULT_READING = Reading()


def reading_values(field: str) -> tuple[str, ...]:
    """The values a readings field takes, its default first (from the schema's Literal)."""
    info = ReadingsConfig.model_fields[field]
    values = tuple(str(v) for v in get_args(info.annotation))
    default = str(info.default)
    return (default, *(v for v in values if v != default))


def alternative_readings() -> list[Reading]:
    """Every single-field alternative: one field changed from its default at a time."""
    return [
        Reading(((field, value),))
        for field in ReadingsConfig.model_fields
        for value in reading_values(field)[1:]
    ]


def _parse_one(item: str) -> Reading:
    changes: dict[str, str] = {}
    for part in item.split("+"):
        field, sep, value = (s.strip() for s in part.partition("="))
        if not sep or field not in ReadingsConfig.model_fields:
            fields = ", ".join(ReadingsConfig.model_fields)
            raise ValueError(
                f"unknown reading {item!r}; give default, all, or field=value with a field"
                f" among {fields} (join fields with +)"
            )
        allowed = reading_values(field)
        if value not in allowed:
            raise ValueError(
                f"unknown value {value!r} for reading {field}; it takes {', '.join(allowed)}"
            )
        if field in changes:
            raise ValueError(f"reading {item!r} sets {field} twice")
        changes[field] = value
    return Reading(tuple(changes.items()))


def parse_readings(text: str | None) -> list[Reading]:
    """``default``, ``all`` (the default: the default reading and every single-field
    alternative) or a comma-separated list of those and ``field=value`` readings (several fields
    in one reading joined by ``+``). The default reading always comes first, since every shift
    is measured from it. Raises ValueError with the known fields or values."""
    items = ["all"] if text is None else [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("--readings needs at least one reading: default, all or field=value")
    found: list[Reading] = [DEFAULT_READING]
    for item in items:
        if item == "all":
            found += alternative_readings()
        elif item != "default":
            found.append(_parse_one(item))
    return list(dict.fromkeys(found))


def with_reading(loaded: LoadedScenario, reading: Reading) -> LoadedScenario:
    """``loaded`` with the reading's fields replaced in its ``readings`` block, validated again."""
    if reading.is_default:
        return loaded
    s = loaded.scenario
    changed = s.model_copy(update={"readings": s.readings.model_copy(update=dict(reading.changes))})
    return LoadedScenario(type(s).model_validate(changed.model_dump()), loaded.source)


def reproduction_policies(scenario_policies: Sequence[str]) -> tuple[list[str], list[str]]:
    """The scenario's implemented policies plus :data:`EXTRA_POLICIES`, and those skipped."""
    chosen, skipped = select_policies(scenario_policies)
    implemented = implemented_policies()
    chosen += [p for p in EXTRA_POLICIES if p not in chosen and p in implemented]
    return chosen, skipped


@dataclass(frozen=True, slots=True)
class ReadingResult:
    """One scenario under one reading."""

    reading: Reading
    summary: ExperimentSummary


@dataclass(frozen=True, slots=True)
class ScenarioReproduction:
    """One scenario under every reading (the default reading first)."""

    loaded: LoadedScenario
    policies: tuple[str, ...]
    skipped: tuple[str, ...]
    results: tuple[ReadingResult, ...]

    @property
    def name(self) -> str:
        return self.loaded.scenario.name

    @property
    def default(self) -> ExperimentSummary:
        return self.results[0].summary


def reproduction_plans(
    scenarios: Sequence[LoadedScenario], readings: Sequence[Reading], seeds: int | None = None
) -> list[tuple[Reading, Plan, tuple[str, ...]]]:
    """Per scenario and reading (in that nesting order): the reading, the sweep plan (the
    scenario with the reading applied, its policies, its seeds) and the policies skipped."""
    out: list[tuple[Reading, Plan, tuple[str, ...]]] = []
    for loaded in scenarios:
        chosen, skipped = reproduction_policies(loaded.scenario.policies)
        n = seeds if seeds is not None else loaded.scenario.metrics.seeds
        for reading in readings:
            plan = Plan(with_reading(loaded, reading), tuple(chosen), tuple(range(n)))
            out.append((reading, plan, tuple(skipped)))
    return out


def run_reproduction(
    scenarios: Sequence[LoadedScenario],
    readings: Sequence[Reading],
    seeds: int | None = None,
    num_requests: int | None = None,
    workers: int = 1,
    on_done: OnDone | None = None,
) -> list[ScenarioReproduction]:
    """Run every scenario under every reading (module docstring); ``readings`` must start with
    the default reading (:func:`parse_readings` sees to it)."""
    if not readings or not readings[0].is_default:
        raise ValueError("the readings must start with the default reading")
    planned = reproduction_plans(scenarios, readings, seeds)
    tasks = plan_tasks([plan for _, plan, _ in planned], num_requests)
    results = run_tasks(tasks, workers, on_done=on_done)
    metrics = [r.metrics if isinstance(r, PairRun) else r for r in results]
    out: list[ScenarioReproduction] = []
    start = 0
    for k, loaded in enumerate(scenarios):
        mine = planned[k * len(readings) : (k + 1) * len(readings)]
        done: list[ReadingResult] = []
        for reading, plan, _ in mine:
            size = len(plan.policies) * len(plan.seeds)
            summary = ExperimentSummary.of(plan.loaded, metrics[start : start + size], num_requests)
            done.append(ReadingResult(reading, summary))
            start += size
        out.append(ScenarioReproduction(loaded, mine[0][1].policies, mine[0][2], tuple(done)))
    return out
