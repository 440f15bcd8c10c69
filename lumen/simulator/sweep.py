"""Fanning scenario x seed x policy simulations out over local processes or a Ray cluster.

A :class:`Task` is one policy and seed of one scenario: the run with failures and its
failure-free reference (:func:`lumen.simulator.experiment.run_pair`). Tasks are independent,
so they go to a :class:`concurrent.futures.ProcessPoolExecutor` (``spawn`` start method: the
parent may hold threads, such as a progress bar's, that ``fork`` would copy mid-flight) or, given
an address, to Ray (``pip install 'lumen-recovery[ray]'``), imported only then. Results come back
in task order whatever order they finish in, so a sweep's output does not depend on scheduling.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from lumen.scenarios.resolve import LoadedScenario
from lumen.simulator.experiment import ExperimentSummary, PairRun, RunMetrics, run_pair

__all__ = [
    "Plan",
    "RayUnavailableError",
    "Task",
    "check_ray",
    "plan_tasks",
    "run_sweep",
    "run_task",
    "run_tasks",
    "summarize_sweep",
]


class RayUnavailableError(RuntimeError):
    """``--ray-address`` was given but Ray is not installed."""


@dataclass(frozen=True)
class Task:
    """One policy and seed of a scenario, with the request cut of the experiment."""

    loaded: LoadedScenario
    policy: str
    seed: int
    num_requests: int | None = None
    keep_results: bool = False
    """Return the whole :class:`PairRun` (per-request arrays) instead of its metrics only."""


@dataclass(frozen=True)
class Plan:
    """A scenario with the policies and seeds to run it under."""

    loaded: LoadedScenario
    policies: tuple[str, ...]
    seeds: tuple[int, ...]


def plan_tasks(
    plans: Sequence[Plan], num_requests: int | None = None, keep_results: bool = False
) -> list[Task]:
    """Tasks for every scenario x policy x seed, in that nesting order."""
    return [
        Task(plan.loaded, policy, seed, num_requests, keep_results)
        for plan in plans
        for policy in plan.policies
        for seed in plan.seeds
    ]


def run_task(task: Task) -> PairRun | RunMetrics:
    """Run one task (in whichever process it landed)."""
    pair = run_pair(task.loaded, task.policy, task.seed, task.num_requests)
    return pair if task.keep_results else pair.metrics


#: Called with each task as it completes (in completion order).
OnDone = Callable[[Task], None]


def run_tasks(
    tasks: Sequence[Task],
    workers: int = 1,
    ray_address: str | None = None,
    on_done: OnDone | None = None,
) -> list[PairRun | RunMetrics]:
    """Run ``tasks`` in this process (``workers`` 1), over ``workers`` local processes, or on
    the Ray cluster at ``ray_address``; results in task order."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if ray_address is not None:
        return _run_ray(tasks, ray_address, on_done)
    if workers == 1 or len(tasks) <= 1:
        results: list[PairRun | RunMetrics] = []
        for task in tasks:
            results.append(run_task(task))
            if on_done is not None:
                on_done(task)
        return results
    slots: list[PairRun | RunMetrics | None] = [None] * len(tasks)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        futures = {pool.submit(run_task, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            slots[i] = future.result()
            if on_done is not None:
                on_done(tasks[i])
    return [r for r in slots if r is not None]


def check_ray() -> None:
    """Raise :class:`RayUnavailableError` unless Ray can be imported (check before running)."""
    _import_ray()


def _import_ray() -> Any:
    try:
        import ray  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise RayUnavailableError(
            "--ray-address needs Ray, which is not installed; install it with"
            " pip install 'lumen-recovery[ray]' (or pip install 'ray>=2.9'), or leave out"
            " --ray-address to run on local processes"
        ) from None
    return ray


def _run_ray(tasks: Sequence[Task], address: str, on_done: OnDone | None) -> list[Any]:
    ray = _import_ray()
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(run_task)
    refs = [remote.remote(task) for task in tasks]
    index = {ref: i for i, ref in enumerate(refs)}
    slots: list[Any] = [None] * len(tasks)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            i = index[ref]
            slots[i] = ray.get(ref)
            if on_done is not None:
                on_done(tasks[i])
    return slots


def summarize_sweep(
    scenarios: Sequence[LoadedScenario],
    metrics: Sequence[RunMetrics],
    num_requests: int | None = None,
) -> list[ExperimentSummary]:
    """One summary per scenario from the metrics of all its tasks."""
    out = []
    for loaded in scenarios:
        name = loaded.scenario.name
        mine = [m for m in metrics if m.scenario == name]
        if mine:
            out.append(ExperimentSummary.of(loaded, mine, num_requests))
    return out


def run_sweep(
    plans: Sequence[Plan],
    num_requests: int | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    on_done: OnDone | None = None,
) -> list[ExperimentSummary]:
    """Every planned scenario under its policies and seeds; one summary per scenario."""
    names = [plan.loaded.scenario.name for plan in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"a scenario is listed twice: {', '.join(names)}")
    tasks = plan_tasks(plans, num_requests)
    results = run_tasks(tasks, workers, ray_address, on_done)
    metrics = [r.metrics if isinstance(r, PairRun) else r for r in results]
    return summarize_sweep([plan.loaded for plan in plans], metrics, num_requests)
