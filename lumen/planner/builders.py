"""From a cluster snapshot and the cost model to the planner's problems.

These functions are the single place where physical quantities (tokens, bytes, bandwidths,
step times) become problem data (seconds and bytes per decision), so the controller, the
simulator and ``lumen solve`` all pose exactly the same problems for the same state.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lumen.planner.costmodel import CostModel, progressive_timeline
from lumen.planner.domain import ClusterState, Request, WorkerState
from lumen.planner.mode_times import ModeTimes
from lumen.planner.problems import (
    PairingProblem,
    PlacementProblem,
    RecoveryProblem,
    expected_tokens_per_step,
)
from lumen.planner.speculation import concurrent_tokens_per_step


class BuildCancelled(Exception):
    """Posing a problem stopped because its ``cancel`` event was set (a deadline passed or the
    caller went away): no problem was built."""


def _check_cancel(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise BuildCancelled(f"posing the {what} problem was cancelled")


def recompute_time(cost: CostModel, tokens: int, context: int = 0, chunk: int = 1024) -> float:
    """Seconds to prefill ``tokens`` new tokens after ``context`` cached ones, chunk by chunk
    (Sarathi-Serve chunked prefill: each chunk attends to everything before it)."""
    total = 0.0
    done = 0
    while done < tokens:
        step = min(chunk, tokens - done)
        total += cost.prefill_time(step, context + done)
        done += step
    return total


@dataclass(frozen=True)
class PlacementOptions:
    alpha: float = 1.0
    require_other_node: bool = True
    #: Cap checkpoint streams into a holder at this fraction of its network bandwidth
    #: (None: no cap).
    stream_cap_fraction: float | None = 0.5
    #: Seconds charged for moving an existing checkpoint to another holder (re-streaming it).
    move_cost_s: float = 0.0


def placement_problem(
    state: ClusterState,
    cost: CostModel,
    requests: Sequence[Request] | None = None,
    options: PlacementOptions | None = None,
    tpot_s: float | None = None,
    cancel: threading.Event | None = None,
) -> PlacementProblem:
    """Pose checkpoint placement for ``requests`` (default: every request in the snapshot).

    Budgets are net of the reservations of requests that are not being placed; restore work is
    the host->GPU copy of the request's current context; the stream rate is one token's KV per
    decode step (``tpot_s``, default: a batch-1 decode step at the request's context).
    A set ``cancel`` event stops it with :class:`BuildCancelled`.
    """
    opts = options or PlacementOptions()
    workers = state.workers
    index = {w.id: k for k, w in enumerate(workers)}
    chosen = list(state.requests.values()) if requests is None else list(requests)
    chosen_ids = {r.id for r in chosen}
    kv = state.kv_bytes_per_token
    budget = np.array([state.load(w.id).host_budget_bytes for w in workers], dtype=np.float64)
    for r in state.requests.values():
        if r.id not in chosen_ids and r.checkpoint_holder is not None:
            budget[index[r.checkpoint_holder]] -= r.max_context_tokens * kv
    budget = np.maximum(budget, 0.0)
    network = cost.deployment.effective_network_bandwidth
    cap = (
        np.full(len(workers), math.inf)
        if opts.stream_cap_fraction is None
        else np.full(len(workers), opts.stream_cap_fraction * network)
    )

    def stream_rate(r: Request) -> float:
        _check_cancel(cancel, "placement")
        step = tpot_s if tpot_s is not None else cost.decode_step_time(1, r.context_tokens)
        return kv / step

    return PlacementProblem.build(
        node=[w.node for w in workers],
        wait_s=[state.load(w.id).waiting_time_s for w in workers],
        budget_bytes=budget,
        can_hold=[w.state is WorkerState.SERVING for w in workers],
        stream_cap_bytes_s=cap,
        home=[index[r.home] for r in chosen],
        reserve_bytes=[r.max_context_tokens * kv for r in chosen],
        work_s=[cost.kv_restore_time(r.context_tokens) for r in chosen],
        stream_bytes_s=[stream_rate(r) for r in chosen],
        current=[-1 if r.checkpoint_holder is None else index[r.checkpoint_holder] for r in chosen],
        move_cost_s=[opts.move_cost_s] * len(chosen),
        alpha=opts.alpha,
        require_other_node=opts.require_other_node,
    )


def recovery_problem(
    state: ClusterState,
    cost: CostModel,
    failed: Sequence[int],
    reload_s: float | None = None,
    chunk: int = 1024,
    cancel: threading.Event | None = None,
) -> RecoveryProblem:
    """Pose failure-time recovery for the requests whose home is in ``failed``.

    Machines are the serving survivors (ready now; their queue is delayed by recovery work put
    ahead of it) and the failed workers themselves as recovering machines, ready after a full
    reload (``reload_s``, default from the cost model) with an empty queue and all their KV free.
    A set ``cancel`` event stops it (checked once per request) with :class:`BuildCancelled`.
    """
    failed_set = set(failed)
    for f in failed_set:
        state.worker(f)
    survivors = [w for w in state.workers if w.id not in failed_set and w.state.serves_target]
    recovering = [state.worker(f) for f in sorted(failed_set)]
    machines = survivors + recovering
    survivor_ids = {w.id for w in survivors}
    reload = cost.reload_timeline().total_s if reload_s is None else reload_s
    capacity = cost.gpu_kv_capacity_tokens()
    interrupted = [r for r in state.requests.values() if r.home in failed_set]
    n = len(interrupted)
    _check_cancel(cancel, "recovery")
    # Two machine classes, the survivors (0) and the recovering workers (1), plus each
    # request's checkpoint holder as its own machine: O(n + m) whatever the cluster's size.
    position = {w.id: j for j, w in enumerate(machines)}
    times = np.full((n, 2, 4), np.inf)
    own = np.full(n, -1, np.int64)
    own_times = np.full((n, 4), np.inf)
    for i, r in enumerate(interrupted):
        _check_cancel(cancel, "recovery")
        ctx = r.context_tokens
        full = recompute_time(cost, ctx, 0, chunk)
        holder = r.checkpoint_holder
        # A checkpoint survives only on a serving survivor: a worker that failed earlier lost
        # its host memory with its process, even if it is reloading now.
        holder_alive = holder in survivor_ids and r.checkpointed_tokens > 0
        transfer = math.inf
        if holder is not None and holder_alive:
            prefix = r.checkpointed_tokens
            tail = recompute_time(cost, ctx - prefix, prefix, chunk)
            restore = cost.kv_restore_time(prefix) + tail
            transfer = cost.kv_transfer_time(prefix) + restore
            own[i] = position[holder]
            own_times[i, 0] = restore
            own_times[i, 2] = full
        times[i, 0, 1] = transfer
        times[i, 0, 2] = full
        times[i, 1, 3] = min(full, transfer)
    modes = ModeTimes.build(
        machine_class=[0] * len(survivors) + [1] * len(recovering),
        class_time_s=times,
        own_machine=own,
        own_time_s=own_times,
    )
    return RecoveryProblem.build(
        ready_s=[0.0] * len(survivors) + [reload] * len(recovering),
        queued=[state.load(w.id).queue_length for w in survivors] + [0] * len(recovering),
        kv_free_tokens=[state.load(w.id).gpu_kv_free_tokens for w in survivors]
        + [capacity] * len(recovering),
        kv_tokens=[r.context_tokens for r in interrupted],
        modes=modes,
        running=[len(state.requests_on(w.id)) for w in survivors] + [0] * len(recovering),
        is_recovering=[False] * len(survivors) + [True] * len(recovering),
        prefix_tokens=[
            r.checkpointed_tokens if r.checkpoint_holder is not None else 0 for r in interrupted
        ],
        machine_ids=[w.id for w in machines],
        request_ids=[r.id for r in interrupted],
    )


def pairing_problem(
    state: ClusterState,
    cost: CostModel,
    recovering: Sequence[int],
    acceptance_rate: float,
    depth: int,
    *,
    concurrent: bool = True,
    parallel_load: bool = True,
    cancel: threading.Event | None = None,
) -> PairingProblem:
    """Pose draft pairing: the decode seconds a recovering worker's draft saves each survivor.

    A recovering worker assists from the moment its draft is on the GPUs until its target
    weights are in host memory (window W, :func:`lumen.planner.costmodel.progressive_timeline`
    with ``parallel_load``). On survivor s with batch b and total context c, a plain decode step
    takes t_d = decode_step_time(b, c) for one token per sequence; a verify step takes
    t_v = decode_step_time(b, c, K + 1) and yields E tokens per sequence
    (:mod:`lumen.planner.speculation`): with a ``concurrent`` draft E follows from the draft's
    lead at g = t_v / draft.decode_step_time(b, c) proposals per step; otherwise the survivor
    first waits for the K proposal steps (added to t_v) and E = (1 - a^(K+1)) / (1 - a). Over
    the part of the window the survivor is busy (its backlog B: waiting time plus the time to
    decode its running requests' remaining tokens), the time saved is
    ``min(W, B) * max(0, 1 - t_v / (E * t_d))``.
    """
    window = progressive_timeline(cost, parallel=parallel_load).assist_window_s
    e_sync = expected_tokens_per_step(acceptance_rate, depth)
    draft = cost.draft_cost_model()
    rec = [state.worker(r) for r in recovering]
    rec_ids = {w.id for w in rec}
    survivors = [w for w in state.workers if w.id not in rec_ids and w.state.serves_target]
    saved = np.zeros((len(rec), len(survivors)))
    waits = []
    for s, w in enumerate(survivors):
        _check_cancel(cancel, "pairing")
        reqs = state.requests_on(w.id)
        load = state.load(w.id)
        waits.append(load.waiting_time_s)
        if not reqs or draft is None:
            continue
        b = len(reqs)
        ctx = sum(r.context_tokens for r in reqs)
        t_d = cost.decode_step_time(b, ctx)
        t_v = cost.decode_step_time(b, ctx, depth + 1)
        t_draft = draft.decode_step_time(b, ctx)
        if concurrent:
            e_tokens = concurrent_tokens_per_step(acceptance_rate, depth, t_v / t_draft)
        else:  # the K proposal steps come before the verify step
            t_v += depth * t_draft
            e_tokens = e_sync
        remaining = max(r.remaining_tokens for r in reqs)
        backlog = load.waiting_time_s + remaining * t_d
        fraction = max(0.0, 1.0 - t_v / (e_tokens * t_d))
        saved[:, s] = min(window, backlog) * fraction
    return PairingProblem.build(
        saved_s=saved,
        recovering_ids=[w.id for w in rec],
        survivor_ids=[w.id for w in survivors],
        survivor_wait_s=waits,
    )
