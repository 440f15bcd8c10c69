"""Random failure-time recovery instances (docs/planner.md, section 2) with realistic magnitudes.

One or more workers have failed; their interrupted requests must resume on the machines of the
problem: the survivors and the recovering (reloading) workers. Magnitudes follow an A100-class
deployment of a 70B-parameter model:

- context 100-8,000 tokens (log-uniform); full recompute (prefill) 0.1-3 s, growing with context;
- a live checkpoint covers most of the context (85-100 %); restoring it on its holder is a
  host->GPU copy of 5-100 ms plus re-prefill of the uncheckpointed tail; transferring it to another
  survivor first moves it over the network (0.1-1 s), then restores it;
- survivors are ready at 0-2 s with 0-50 queued and 0-64 running requests;
- recovering workers are ready after their reload (30-120 s) and serve only in ``wait`` mode;
- some checkpoints are dead (their holder failed too, or streaming had not started): those
  requests can only be recomputed.

"Homogeneous survivors" (the default) means a request's transfer and recompute times are the same
on every survivor, as in a cluster of identical workers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from lumen.planner.mode_times import ModeTimes
from lumen.planner.problems import RecoveryProblem

#: Instance families accepted by :func:`random_recovery_problem`.
FAMILIES: tuple[str, ...] = ("uniform", "skewed", "tight-kv", "multi-failure")


@dataclass(frozen=True)
class RecoveryFamily:
    """The knobs of one instance family; ``random_recovery_problem(**overrides)`` replaces them."""

    #: Range of the number of recovering machines (inclusive), capped at ``machines - 1``.
    recovering: tuple[int, int] = (1, 2)
    #: Fraction of requests whose checkpoint is lost even though its holder survived.
    dead_fraction: float = 0.05
    #: Fraction of survivors that are busy (long queue, late ready time).
    busy_fraction: float = 0.0
    #: Survivors' total free KV as a multiple of the interrupted requests' total KV.
    kv_slack: float = 4.0
    #: Relative spread of the survivors' free KV around the mean (uniform +-).
    kv_spread: float = 0.3
    #: Every survivor has room for at least this multiple of the largest request (at 1,024
    #: machines the slack alone would leave each survivor a sliver).
    kv_floor: float = 1.5
    #: Identical survivors: a request's transfer/recompute time is the same on all of them.
    homogeneous: bool = True
    #: Reload time range of a recovering worker, seconds.
    reload_s: tuple[float, float] = (30.0, 120.0)
    #: Longest context, tokens (log-uniform from 100): long-context instances raise it, and the
    #: recompute and checkpoint times grow with it as at 8,000.
    max_context: float = 8000.0


_FAMILY_DEFAULTS: dict[str, RecoveryFamily] = {
    "uniform": RecoveryFamily(),
    "skewed": RecoveryFamily(busy_fraction=0.3),
    "tight-kv": RecoveryFamily(kv_slack=1.15, kv_spread=0.4, kv_floor=0.6),
    "multi-failure": RecoveryFamily(recovering=(2, 4), dead_fraction=0.1),
}


def family_parameters(family: str, **overrides: Any) -> RecoveryFamily:
    """The parameters of ``family`` with ``overrides`` applied (unknown names raise)."""
    try:
        base = _FAMILY_DEFAULTS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}") from None
    known = {f.name for f in dataclasses.fields(RecoveryFamily)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(base, **overrides)


def random_recovery_problem(
    rng: np.random.Generator,
    machines: int,
    requests: int,
    family: str = "uniform",
    **overrides: Any,
) -> RecoveryProblem:
    """A random recovery instance of ``family`` (see :data:`FAMILIES`) with ``machines`` machines
    (survivors and recovering workers) and ``requests`` interrupted requests.

    ``overrides`` replace fields of :class:`RecoveryFamily`, e.g. ``homogeneous=False``. Every
    instance is feasible: recovering workers accept every request in ``wait`` mode and have room
    for all of them, so only the survivors' KV can bind.
    """
    if machines < 2:
        raise ValueError("machines: at least 2 (one survivor and one recovering worker)")
    if requests < 0:
        raise ValueError("requests: must be >= 0")
    fam = family_parameters(family, **overrides)
    m, n = machines, requests
    lo, hi = fam.recovering
    n_rec = min(max(1, int(rng.integers(lo, hi + 1))), m - 1)
    recovering = np.zeros(m, bool)
    recovering[rng.choice(m, size=n_rec, replace=False)] = True
    rec_idx = np.flatnonzero(recovering)
    surv_idx = np.flatnonzero(~recovering)
    n_surv = len(surv_idx)

    # Survivors: ready time, queue and running batch; busy ones have more of each.
    ready = rng.uniform(0.0, 2.0, m)
    queued = rng.integers(0, 51, m).astype(float)
    running = rng.integers(0, 65, m).astype(float)
    busy = np.zeros(m, bool)
    n_busy = round(fam.busy_fraction * n_surv)
    if n_busy:
        busy[rng.choice(surv_idx, size=n_busy, replace=False)] = True
        ready[busy] = rng.uniform(1.0, 2.0, n_busy)
        queued[busy] = rng.integers(30, 51, n_busy)
        running[busy] = rng.integers(48, 65, n_busy)
    ready[rec_idx] = rng.uniform(*fam.reload_s, n_rec)
    queued[rec_idx] = 0.0
    running[rec_idx] = 0.0

    # Requests: context, recompute and checkpoint times.
    top = fam.max_context
    context = np.floor(np.exp(rng.uniform(np.log(100.0), np.log(top), n)))
    frac = (context - 100.0) / 7900.0
    recompute = (0.1 + 2.9 * frac**1.2) * rng.uniform(0.9, 1.1, n)
    prefix = np.floor(context * rng.uniform(0.85, 1.0, n))
    tail_s = recompute * (context - prefix) / context
    restore = 0.005 + 0.095 * prefix / 8000.0 + tail_s
    transfer = 0.1 + 0.9 * prefix / 8000.0 + restore
    home = rec_idx[rng.integers(0, n_rec, n)]
    holder = rng.integers(0, m - 1, n)
    holder = holder + (holder >= home)  # any machine but the request's home
    dead = recovering[holder] | (rng.random(n) < fam.dead_fraction)
    prefix[dead] = 0.0

    # Per-machine speed (1 for homogeneous survivors). Machine classes: identical survivors
    # share class 0 (uneven ones get a class each) and the recovering workers share the last.
    speed = np.ones(m) if fam.homogeneous else rng.uniform(0.8, 1.25, m)
    surv_class = np.zeros(n_surv, np.int64) if fam.homogeneous else np.arange(n_surv)
    n_cls = int(surv_class.max(initial=-1)) + 2
    machine_class = np.full(m, n_cls - 1, np.int64)
    machine_class[surv_idx] = surv_class
    class_speed = np.ones(n_cls)
    class_speed[surv_class] = speed[surv_idx]
    times = np.full((n, n_cls, 4), np.inf)
    times[:, :-1, 2] = recompute[:, None] * class_speed[None, :-1]
    live = np.flatnonzero(~dead)
    times[live[:, None], np.arange(n_cls - 1)[None, :], 1] = (
        transfer[live, None] * class_speed[None, :-1]
    )
    # Recovering workers: the request waits for the reload, then recomputes there.
    times[:, -1, 3] = recompute
    # A live checkpoint's holder restores it (no transfer there) or recomputes.
    own = np.where(dead, -1, holder)
    own_times = np.full((n, 4), np.inf)
    own_times[live, 0] = restore[live] * speed[holder[live]]
    own_times[live, 2] = recompute[live] * speed[holder[live]]
    modes = ModeTimes.build(
        machine_class=machine_class, class_time_s=times, own_machine=own, own_time_s=own_times
    )

    kv = context + rng.integers(16, 513, n)  # context plus room for the tokens still to come
    total = float(kv.sum())
    kv_free = np.empty(m)
    mean = fam.kv_slack * max(total, 1.0) / n_surv
    spread = rng.uniform(1.0 - fam.kv_spread, 1.0 + fam.kv_spread, n_surv)
    floor = fam.kv_floor * float(kv.max(initial=0.0))
    kv_free[surv_idx] = np.floor(np.maximum(mean * spread, floor))
    kv_free[rec_idx] = max(total, 1.0)
    return RecoveryProblem.build(
        ready_s=ready,
        queued=queued,
        kv_free_tokens=kv_free,
        kv_tokens=kv,
        modes=modes,
        running=running,
        is_recovering=recovering,
        prefix_tokens=prefix,
    )
