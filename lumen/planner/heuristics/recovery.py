"""Recovery heuristics (docs/planner.md, section 2): the paper's rule, the Stop-and-Restart
baseline and our marginal-cost greedy with local search.

Every backend has the signature ``(problem, settings) -> SolveResult[RecoveryPlan]``; a plan is
the SPT plan of its assignment with each request in its fastest mode at its machine. Results are
FEASIBLE with :attr:`Limit.HEURISTIC`; INFEASIBLE when a cheap proof says no plan exists (a
request with no finite mode, or without room, anywhere); NO_SOLUTION with a message when the rule
itself gets stuck although a plan may exist. The greedy keeps the time limit and the cancel
event (:mod:`.clock`): cut before it has a plan it is NO_SOLUTION, after it FEASIBLE, both with
that limit.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from lumen.planner.heuristics.clock import CHECK_EVERY, Clock, Stopped
from lumen.planner.heuristics.recovery_scale import classed_insertion
from lumen.planner.plans import RecoveryPlan
from lumen.planner.problems import FloatArray, IntArray, RecoveryProblem
from lumen.planner.recovery_eval import (
    AssignmentState,
    infeasibility_reason,
    plan_of,
    processing_times,
    recovery_objective,
    standalone_costs,
)
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination

Result = SolveResult[RecoveryPlan]

#: Local search stops after this many (request x machine) cells of cost matrices in total, so
#: its time grows at most linearly with the instance (one round at 512 x 1,024).
LOCAL_SEARCH_CELLS = 1_000_000
#: Total KV demand over the survivors' capacity above which large instances also try swaps.
TIGHT_KV = 0.7
#: Instances with at most this many (request x machine) pairs try several insertion orders.
MULTI_START_CELLS = 50_000
#: Iterated-local-search rounds under tight KV (up to 1,024 pairs; fewer above).
ILS_ROUNDS = 600
#: ... and it stops after this many rounds in a row without improvement.
ILS_PATIENCE = 120
#: Survivor packing (:func:`survivor_packing`) under tight KV: at most this many requests and
#: search nodes.
PACK_MAX_REQUESTS = 64
PACK_NODES = 4_000
#: Above this many (request x machine) pairs under loose KV, and above :data:`HUGE_CELLS`
#: always, the greedy works on machine classes, without matrices
#: (:mod:`lumen.planner.heuristics.recovery_scale`) ...
CLASSED_CELLS = 100_000
HUGE_CELLS = 4_000_000
#: ... when the mode times have at most one class per this many machines.
CLASSED_MACHINES_PER_CLASS = 8


def _result(
    method: str,
    problem: RecoveryProblem,
    machine: IntArray | None,
    start: float,
    p: FloatArray | None,
    message: str = "",
    clock: Clock | None = None,
) -> Result:
    """The result of ``machine`` (None: no plan, for ``message``); a ``clock`` that cut some
    work gives its limit and says what it cut."""
    if machine is None:
        return _no_plan(method, Limit.HEURISTIC, start, message)
    plan = plan_of(problem, machine, p)
    limit = Limit.HEURISTIC
    if clock is not None and clock.hit is not None:
        limit, message = clock.hit, "; ".join(filter(None, [message, clock.why]))
    return SolveResult(
        method,
        Termination.FEASIBLE,
        limit,
        objective=recovery_objective(problem, machine, p),
        wall_time_s=time.perf_counter() - start,
        plan=plan,
        message=message,
    )


def _no_plan(method: str, limit: Limit, start: float, message: str) -> Result:
    return SolveResult(
        method,
        Termination.NO_SOLUTION,
        limit,
        wall_time_s=time.perf_counter() - start,
        message=message,
    )


def _infeasible(method: str, reason: str, start: float) -> Result:
    return SolveResult(
        method, Termination.INFEASIBLE, wall_time_s=time.perf_counter() - start, message=reason
    )


def _least_loaded(load: FloatArray, ok: np.ndarray) -> int:
    """The index of the smallest load among ``ok`` machines (ties: lowest index), -1 if none."""
    if not ok.any():
        return -1
    return int(np.argmin(np.where(ok, load, np.inf)))


# --------------------------------------------------------------------------- the paper's rule


def solve_lumen(problem: RecoveryProblem, settings: SolveSettings) -> Result:
    """The paper's locality-aware recovery rule (docs/architecture.md, the three decisions).

    1. In index order, each request goes to its holder (the machine where ``restore`` is finite);
       if the holder is dead (no finite restore) it goes to the least-loaded survivor
       (non-recovering machine) with full recompute. Load = queued + running + newly assigned
       requests, counted.
    2. While the most loaded holder (among holders that still have a request placed there in
       step 1 and not yet moved) is above the mean load of the survivors, move its request with
       the shortest checkpointed prefix (``prefix_tokens``, ties by index) to the least-loaded
       survivor and recount. A move is made only when it narrows the gap (the receiver's load
       plus one stays below the holder's), so a request never swaps two loads and no receiver
       sheds what it was given; the paper's "above the mean" alone would also move 117 -> 116.
       A request moves at most once, so the loop ends.

    A moved request is re-prefilled on its new machine, as the paper describes (its checkpoint
    is not transferred: the rule runs on :func:`without_transfers`); our own policies keep the
    transfer mode. Wait mode is never used on purpose; a recovering machine is only used
    when it holds a live checkpoint itself. Deviation needed for feasibility: machines without
    KV room for a request are skipped in both steps (a holder without room sends the request to
    the least-loaded survivor with room; a request that fits nowhere else is not moved).
    """
    return _locality(problem, "lumen", rebalance=True, transfers=False)


def solve_restore_on_holder(problem: RecoveryProblem, settings: SolveSettings) -> Result:
    """Fixed-Checkpointing's recovery (DejaVu style): step 1 of :func:`solve_lumen` alone.
    Each request is restored on its holder whatever that holder's load; requests whose holder
    is dead (or has no KV room) are recomputed on the least-loaded survivor."""
    return _locality(problem, "restore-on-holder", rebalance=False)


def _locality(
    problem: RecoveryProblem, method: str, rebalance: bool, transfers: bool = True
) -> Result:
    start = time.perf_counter()
    p = processing_times(problem)
    reason = infeasibility_reason(problem, p)
    if reason:
        return _infeasible(method, reason, start)
    if not transfers:
        problem = without_transfers(problem)
        p = processing_times(problem)
        stuck = np.flatnonzero(~np.isfinite(p).any(axis=1)) if problem.num_requests else p[:0, 0]
        if stuck.size:
            return _result(
                method,
                problem,
                None,
                start,
                p,
                f"request {int(stuck[0])}: only a checkpoint transfer reaches a machine",
            )
    n = problem.num_requests
    holder = problem.modes.finite_machines(0)  # restore is finite on the holder alone
    survivor = ~problem.is_recovering
    kv = problem.kv_tokens
    room = problem.kv_free_tokens.astype(float).copy()
    load = (problem.queued + problem.running).astype(float)
    machine = np.full(n, -1, np.int64)
    movable = np.zeros(n, bool)
    for i in range(n):
        h = int(holder[i])
        if h >= 0 and room[h] >= kv[i]:
            j, movable[i] = h, True
        else:
            j = _least_loaded(load, survivor & np.isfinite(p[i]) & (room >= kv[i]))
            if j < 0:
                return _result(
                    method, problem, None, start, p, f"request {i}: no survivor has room for it"
                )
        machine[i] = j
        load[j] += 1
        room[j] -= kv[i]

    if not rebalance:
        return _result(method, problem, machine, start, p)
    mean = float(load[survivor].mean()) if survivor.any() else 0.0
    # Candidates per holder, shortest prefix first: the rule pops them in this order.
    queue: dict[int, list[int]] = {}
    for i in sorted(np.flatnonzero(movable).tolist(), key=lambda i: (problem.prefix_tokens[i], i)):
        queue.setdefault(int(machine[i]), []).append(i)
    # Most loaded holder first (ties: lowest index); stale heap entries are skipped.
    heap = [(-load[h], h) for h in queue]
    heapq.heapify(heap)
    while heap:
        neg, h = heapq.heappop(heap)
        if h not in queue or -neg != load[h]:
            continue
        if load[h] <= mean:
            break
        i = queue[h].pop(0)
        ok = survivor & np.isfinite(p[i]) & (room >= kv[i])
        ok[h] = False
        j = _least_loaded(load, ok)
        # A move must narrow the gap: from 117 to a machine at 116 it would only swap the two
        # loads, and the receiver, now above the mean, would shed a request of its own.
        if j >= 0 and load[j] + 1 < load[h]:
            machine[i] = j
            load[h] -= 1
            load[j] += 1
            room[h] += kv[i]
            room[j] -= kv[i]
            if j in queue:
                heapq.heappush(heap, (-load[j], j))
        # else: nowhere to go that narrows the gap, the request stays on its holder
        if queue[h]:
            heapq.heappush(heap, (-load[h], h))
        else:
            del queue[h]
    return _result(method, problem, machine, start, p)


# --------------------------------------------------------------------------- Stop-and-Restart


def without_transfers(problem: RecoveryProblem) -> RecoveryProblem:
    """A copy of ``problem`` whose transfer mode is unavailable: a request restores only on its
    holder and is otherwise recomputed (the paper's recovery rule)."""
    return problem.with_modes(problem.modes.modify(1, np.inf))


def without_checkpoints(problem: RecoveryProblem) -> RecoveryProblem:
    """A copy of ``problem`` without checkpoints: restore and transfer modes set to inf and no
    valid prefixes. This is the problem a checkpointless baseline solves."""
    modes = problem.modes.modify(slice(0, 2), np.inf)
    return problem.with_modes(modes, np.zeros(problem.num_requests))


def solve_stop_and_restart(problem: RecoveryProblem, settings: SolveSettings) -> Result:
    """Stop-and-Restart baseline (vLLM/TGI/Triton default): in index order, each request goes
    to the least-loaded survivor (load = queued + running + assigned, counted; ties by index)
    with KV room, where it is recomputed from scratch.

    A checkpointless baseline never restores: the plan is built on
    :func:`without_checkpoints` ``(problem)``, so every request is in recompute mode, which the
    original problem also allows at the same time (docs/planner.md), so the plan checks against
    either problem with the same objective. INFEASIBLE when the original problem has no plan;
    NO_SOLUTION when only checkpoints made one possible.
    """
    start = time.perf_counter()
    method = "stop-and-restart"
    reason = infeasibility_reason(problem, processing_times(problem))
    if reason:
        return _infeasible(method, reason, start)
    bare = without_checkpoints(problem)
    p = processing_times(bare)
    n = problem.num_requests
    survivor = ~bare.is_recovering
    kv = bare.kv_tokens
    room = bare.kv_free_tokens.astype(float).copy()
    load = (bare.queued + bare.running).astype(float)
    machine = np.full(n, -1, np.int64)
    for i in range(n):
        j = _least_loaded(load, survivor & np.isfinite(p[i]) & (room >= kv[i]))
        if j < 0:
            return _result(
                method, bare, None, start, p, f"request {i}: no survivor can recompute it"
            )
        machine[i] = j
        load[j] += 1
        room[j] -= kv[i]
    return _result(method, bare, machine, start, p, "")


# --------------------------------------------------------------------------- our greedy


def greedy_assignment(
    problem: RecoveryProblem,
    p: FloatArray,
    order: IntArray,
    alone: FloatArray | None = None,
    start: IntArray | None = None,
    clock: Clock | None = None,
) -> IntArray | None:
    """Insert requests in ``order``, each on the machine with the least exact increase of ``J``
    (see :func:`recovery_eval.insertion_cost`) among those with KV room; None if one has none.
    ``start`` (-1: unassigned) keeps its assigned requests where they are. A ``clock`` whose
    limit is reached (asked every :data:`.clock.CHECK_EVERY` requests) raises
    :class:`.clock.Stopped`.

    Vectorized over machines; the assigned requests are kept in flat arrays so that the shared
    term ``sum_k min(p_kj, x_j)`` is one gather and one ``bincount`` per request.
    """
    n, m = problem.num_requests, problem.num_machines
    if alone is None:
        alone = standalone_costs(problem, p)
    kv = problem.kv_tokens
    machine = np.full(n, -1, np.int64) if start is None else start.copy()
    placed = np.flatnonzero(machine >= 0)
    room = problem.kv_free_tokens - np.bincount(machine[placed], kv[placed], minlength=m)
    done_m = np.empty(n, np.int64)  # machines of the assigned requests, in insertion order
    done_t = np.empty(n)  # their processing times there
    c = len(placed)
    done_m[:c] = machine[placed]
    done_t[:c] = p[placed, machine[placed]]
    for k, i in enumerate(order.tolist()):
        if clock is not None and k % CHECK_EVERY == 0:
            clock.check(f"after inserting {k} of {n} requests")
        if machine[i] >= 0:
            continue
        row = p[i]
        if c:
            mk = done_m[:c]
            cost = alone[i] + np.bincount(mk, np.minimum(done_t[:c], row[mk]), minlength=m)
        else:
            cost = alone[i].copy()
        j = int(np.argmin(cost))
        if room[j] < kv[i]:  # mask full machines only when the cheapest one is full
            cost[room < kv[i]] = np.inf
            j = int(np.argmin(cost))
        if not np.isfinite(cost[j]):
            return None
        machine[i] = j
        room[j] -= kv[i]
        done_m[c] = j
        done_t[c] = row[j]
        c += 1
    return machine


def ruin_and_recreate(
    problem: RecoveryProblem,
    p: FloatArray,
    machine: IntArray,
    orders: list[IntArray],
    rng: np.random.Generator,
    alone: FloatArray,
) -> IntArray | None:
    """A kick for iterated local search: take every request off two random machines and a
    tenth of the others, and insert them again in one of the start ``orders``."""
    n, m = problem.num_requests, problem.num_machines
    out = machine.copy()
    emptied = rng.choice(m, size=min(2, m), replace=False)
    out[np.isin(out, emptied) | (rng.random(n) < 0.1)] = -1
    return greedy_assignment(problem, p, orders[int(rng.integers(len(orders)))], alone, out)


def regret(alone: FloatArray) -> FloatArray:
    """Second-cheapest minus cheapest standalone cost of each request (inf: one place only)."""
    n = alone.shape[0]
    if n == 0 or alone.shape[1] < 2:
        return np.full(n, np.inf)
    rows = np.arange(n)
    first = np.argmin(alone, axis=1)
    best = alone[rows, first]
    alone[rows, first] = np.inf  # in place and restored: a copy costs more at 512 x 1,024
    second = alone.min(axis=1)
    alone[rows, first] = best
    out: FloatArray = np.where(np.isfinite(second), second - best, np.inf)
    return out


def start_orders(
    problem: RecoveryProblem, p: FloatArray, alone: FloatArray, many: bool
) -> list[IntArray]:
    """Insertion orders for the greedy. Decreasing regret first: requests with one clearly best
    place claim it before others crowd it (on 512 x 1,024 it beats SPT order by 2-5 % after one
    local-search round). With ``many`` also shortest best time first (SPT list scheduling),
    longest first, largest KV first and regret per KV token (the last two pack tight KV): each
    wins on some instances."""
    n = problem.num_requests
    idx = np.arange(n)
    loss = regret(alone)
    orders = [np.lexsort((idx, -loss))]
    if many and n:
        best = p.min(axis=1)
        orders += [
            np.lexsort((idx, best)),
            np.lexsort((idx, -best)),
            np.lexsort((idx, -problem.kv_tokens)),
            np.lexsort((idx, -loss / np.maximum(problem.kv_tokens, 1e-9))),
        ]
    return orders


def local_search(
    problem: RecoveryProblem,
    p: FloatArray,
    machine: IntArray,
    max_cells: int = LOCAL_SEARCH_CELLS,
    swaps: bool = True,
    recheck: bool = True,
    alone: FloatArray | None = None,
    eject: bool = True,
    clock: Clock | None = None,
) -> IntArray:
    """Improve a feasible assignment by moves (a request to another machine), swaps (two
    requests trade machines) and ejections (a request moves to a machine without room after one
    of that machine's requests moves elsewhere), all with exact gains.

    Each round computes every move and swap gain for the round's start (the insertion cost of
    :func:`recovery_eval.insertion_cost` for all pairs: on the occupied machines by grouping,
    on an empty machine its standalone ``a_j + p_ij (1 + q_j)``), then applies the improving
    ones best first; one that touches a machine changed earlier in the round is re-evaluated
    exactly first (``recheck``; else it waits for the next round, which is faster on large
    instances where many candidates collide on the same few machines). When nothing improves,
    one improving ejection is searched among the moves that KV blocked. Stops when none is
    found or after ``max_cells`` matrix cells (at least one round). With a ``clock``, it also
    stops (and records it there) when the limit is reached between the steps of a round, or
    every :data:`.clock.CHECK_EVERY` candidates applied, and before a round that would reach it
    at the previous round's rate per cell: the limit holds to within one step (the slowest,
    the swap gains, took up to 1.9 s at 1,024 x 3,900 with n = 3,900).
    """
    cell_s = 0.0  # seconds per cell of the last round
    n, m = problem.num_requests, problem.num_machines
    if n < 2 or m < 2:
        return machine
    state = AssignmentState(problem, p, machine)
    kv, cap = problem.kv_tokens, problem.kv_free_tokens
    rows = np.arange(n)
    if alone is None:
        alone = standalone_costs(problem, p)
    spent = 0
    while True:
        mach, used = state.machine, state.used
        occ = np.unique(mach)
        k = len(occ)
        cells = n * (k + (2 * n if swaps else n)) + (n * m if k < m else 0)
        if spent and spent + cells > max_cells:
            break
        if clock is not None and (limit := clock.allows(cells * cell_s)) is not None:
            clock.stop(limit, f"local search stopped before a round of {cells:,} cells")
            break
        spent += cells
        began = time.perf_counter()
        col = np.full(m, -1, np.int64)
        col[occ] = np.arange(k)
        c = col[mach]
        t = p[rows, mach]
        # pair[l, i] = min(t_i, p[l, machine[i]]): what i shares with l on i's machine.
        pair = np.minimum(t[None, :], p[:, mach])
        by_col = np.argsort(c, kind="stable")
        starts = np.searchsorted(c[by_col], np.arange(k))
        cost = alone[:, occ] + np.add.reduceat(pair[:, by_col], starts, axis=1)
        cost[rows, c] -= t  # a request does not share its machine with itself
        if _cut(clock, "in a round, after its move costs"):
            break
        gain_out = cost[rows, c]  # what leaving its machine saves
        eps = 1e-9 * max(1.0, float(gain_out.sum()))
        move = cost - gain_out[:, None]
        move[rows, c] = np.inf
        blocked = np.where(used[occ][None, :] + kv[:, None] > cap[occ][None, :], move, np.inf)
        move[np.isfinite(blocked)] = np.inf
        best_c = np.argmin(move, axis=1)
        best_move = move[rows, best_c]
        best_j = occ[best_c]
        if k < m:  # the best empty machine, if better
            empty = np.where((col >= 0)[None, :], np.inf, alone)
            e_j = np.argmin(empty, axis=1)
            e_move = empty[rows, e_j] - gain_out
            better = e_move < best_move
            best_move = np.where(better, e_move, best_move)
            best_j = np.where(better, e_j, best_j)
        if _cut(clock, "in a round, after its empty-machine moves"):
            break
        cand: list[tuple[float, list[tuple[int, int]]]] = [
            (float(best_move[i]), [(i, int(best_j[i]))])
            for i in np.flatnonzero(best_move < -eps).tolist()
        ]
        if swaps:
            half = cost[:, c] - pair - gain_out[None, :]  # [l, i]: l replaces i on i's machine
            swap = half + half.T
            if _cut(clock, "in a round, computing its swaps"):
                break
            fits = kv[:, None] <= ((cap - used)[mach] + kv)[None, :]
            swap[~(fits & fits.T) | (c[:, None] == c[None, :])] = np.inf
            sw_i, sw_l = np.nonzero(np.triu(swap < -eps, 1))
            if len(sw_i) > 2 * n:  # the best ones; the rest rarely survive the round
                keep = np.argpartition(swap[sw_i, sw_l], 2 * n)[: 2 * n]
                sw_i, sw_l = sw_i[keep], sw_l[keep]
            cand += [
                (float(swap[i, o]), [(i, int(mach[o])), (o, int(mach[i]))])
                for i, o in zip(sw_i.tolist(), sw_l.tolist(), strict=True)
            ]
        if _cut(clock, "in a round, after its swaps"):
            break
        cand.sort(key=lambda g: g[0])
        busy = np.zeros(m, bool)
        applied = 0
        for tried, (_, moves) in enumerate(cand):
            if tried % CHECK_EVERY == 0 and _cut(clock, f"after {applied} moves of a round"):
                return state.machine
            touched = [int(mach[i]) for i, _ in moves] + [b for _, b in moves]
            collides = bool(busy[touched].any())
            if collides and not (recheck and state.fits(moves) and state.change(moves) < -eps):
                continue
            busy[touched] = True
            state.apply(moves)
            applied += 1
        if not applied and not (eject and _eject(state, cost, occ, alone, blocked, eps)):
            break
        cell_s = (time.perf_counter() - began) / cells
    return state.machine


def _cut(clock: Clock | None, where: str) -> bool:
    """Whether the ``clock``'s limit is reached; if so it records that local search stopped
    ``where`` (the assignment is then the one at the round's start, or after its applied
    moves, each of which keeps it feasible)."""
    if clock is None or (limit := clock.limit()) is None:
        return False
    clock.stop(limit, f"local search stopped {where}")
    return True


def _eject(
    state: AssignmentState,
    cost: FloatArray,
    occ: IntArray,
    alone_fit: FloatArray,
    blocked: FloatArray,
    eps: float,
    tries: int = 64,
) -> bool:
    """Apply the first improving ejection among the best KV-blocked moves: request i moves to b
    after some l on b (whose leaving makes room) moves to one of its three best other machines.
    ``cost``/``blocked`` are the round's matrices over the occupied machines ``occ``."""
    rows = np.flatnonzero(np.isfinite(blocked).any(axis=1))
    if len(rows) == 0:
        return False
    best = np.argmin(blocked[rows], axis=1)
    gains = blocked[rows, best]
    kv, cap = state.problem.kv_tokens, state.problem.kv_free_tokens
    full = alone_fit.copy()
    full[:, occ] = cost
    for r in np.argsort(gains)[:tries].tolist():
        i, b = int(rows[r]), int(occ[best[r]])
        for o in list(state.members[b]):
            if state.used[b] - kv[o] + kv[i] > cap[b]:
                continue
            dest = np.argsort(full[o])[:4]
            for c in dest[dest != b][:3].tolist():
                moves = [(o, c), (i, b)]
                if state.fits(moves) and state.change(moves) < -eps:
                    state.apply(moves)
                    return True
    return False


def _tight(problem: RecoveryProblem) -> bool:
    """Whether the requests' KV is above :data:`TIGHT_KV` of what the survivors can give."""
    demand = float(problem.kv_tokens.sum())
    room = float(np.minimum(problem.kv_free_tokens, demand)[~problem.is_recovering].sum())
    return demand > TIGHT_KV * room


def uses_classes(problem: RecoveryProblem) -> bool:
    """Whether :func:`solve_greedy` works on machine classes (:mod:`.recovery_scale`): at most
    one class per :data:`CLASSED_MACHINES_PER_CLASS` machines, and either more than
    :data:`HUGE_CELLS` (request x machine) pairs, or more than :data:`CLASSED_CELLS` under
    loose KV (tight KV needs the swaps and ejections of the matrix search)."""
    n, m = problem.num_requests, problem.num_machines
    if problem.modes.num_classes * CLASSED_MACHINES_PER_CLASS > m:
        return False
    return n * m > HUGE_CELLS or (n * m > CLASSED_CELLS and not _tight(problem))


def solve_greedy(problem: RecoveryProblem, settings: SolveSettings) -> Result:
    """Marginal-cost greedy, then local search.

    Requests are inserted one by one, each on the machine with the least exact increase of
    ``J`` among those with KV room (:func:`greedy_assignment`), then improved by
    :func:`local_search`. Small instances (n x m up to :data:`MULTI_START_CELLS`) try five
    insertion orders (:func:`start_orders`), keep the best, and under tight KV (demand above
    :data:`TIGHT_KV` of the survivors' room) continue with iterated local search seeded by
    ``settings.seed``, also starting from a packing of the survivors
    (:func:`survivor_packing`). Large ones use the regret order only, one local-search round
    (:data:`LOCAL_SEARCH_CELLS`) and swaps only under tight KV: 19 ms at 512 x 1,024.
    Larger ones with few machine classes (:func:`uses_classes`) insert on the classes instead
    and improve by a pass of single moves (:func:`.recovery_scale.classed_insertion`: no
    (n, m) matrix; at 1,024 x 512 and above it beats the matrix search by 1-2 % under loose
    KV, in half the time).
    """
    start = time.perf_counter()
    method = "greedy"
    clock = Clock.of(settings, start)
    if uses_classes(problem):
        reason = infeasibility_reason(problem)
        if reason:
            return _infeasible(method, reason, start)
        try:
            machine = classed_insertion(problem, clock=clock)
        except Stopped as exc:
            return _no_plan(method, exc.limit, start, str(exc))
        message = "" if machine is not None else "greedy insertion ran out of KV room"
        return _result(method, problem, machine, start, None, message, clock)
    try:
        return _matrix_greedy(problem, settings, clock, start)
    except Stopped as exc:
        return _no_plan(method, exc.limit, start, str(exc))


def _matrix_greedy(
    problem: RecoveryProblem, settings: SolveSettings, clock: Clock, start: float
) -> Result:
    """:func:`solve_greedy` on the (n, m) matrix of processing times. The clock is asked after
    each costly step: before the first plan a reached limit raises :class:`.clock.Stopped`;
    after, the best plan so far is kept."""
    method = "greedy"
    p = processing_times(problem)
    reason = infeasibility_reason(problem, p)
    if reason:
        return _infeasible(method, reason, start)
    clock.check("after computing processing times")
    small = problem.num_requests * problem.num_machines <= MULTI_START_CELLS
    alone = standalone_costs(problem, p)
    orders = start_orders(problem, p, alone, small)
    found: list[IntArray] = []
    for order in orders:
        try:
            machine = greedy_assignment(problem, p, order, alone, clock=clock)
        except Stopped as exc:
            if not found:
                raise
            clock.stop(exc.limit, f"insertion {exc}")
            break
        if machine is not None:
            found.append(machine)
    if not found:
        return _result(method, problem, None, start, p, "greedy insertion ran out of KV room")
    tight = _tight(problem)
    improved = [
        local_search(problem, p, a, swaps=small or tight, recheck=small, alone=alone, clock=clock)
        for a in found
    ]
    if small and tight and clock.hit is None:
        packed = survivor_packing(problem, p, alone)
        if packed is not None:
            improved.append(local_search(problem, p, packed, alone=alone, clock=clock))
    best = min(improved, key=lambda a: recovery_objective(problem, a, p))
    if small and tight and clock.hit is None:
        best = _iterated(problem, p, best, orders, alone, settings, clock)
    return _result(method, problem, best, start, p, clock=clock)


def survivor_packing(
    problem: RecoveryProblem, p: FloatArray, alone: FloatArray, limit: int = PACK_NODES
) -> IntArray | None:
    """Every request on a survivor, found by depth-first search: requests largest KV first,
    each tried on the survivors with room in order of its standalone cost. When KV is nearly
    exhausted, insertion and single moves leave a request waiting for a recovering worker
    (tens of seconds) although an exact packing of the survivors exists; this finds one.
    None when there are more than :data:`PACK_MAX_REQUESTS` requests, when none exists, or
    after ``limit`` search nodes (deterministic, no clock)."""
    n, kv = problem.num_requests, problem.kv_tokens
    if n == 0 or n > PACK_MAX_REQUESTS:
        return None
    survivors = np.flatnonzero(~problem.is_recovering)
    order = np.lexsort((np.arange(n), -kv)).tolist()
    room = problem.kv_free_tokens.astype(float).copy()
    # Each request's survivors with a finite time, cheapest standalone first (ties: index).
    choices: list[list[int]] = []
    for i in range(n):
        ok = survivors[np.isfinite(p[i, survivors])]
        choices.append(ok[np.lexsort((ok, alone[i, ok]))].tolist())
    machine = np.full(n, -1, np.int64)
    nodes = 0
    # Iterative DFS: tried[d] is the next choice index of the request at depth d.
    tried = [0] * n
    d = 0
    while 0 <= d < n:
        i = order[d]
        if machine[i] >= 0:  # backtracking into i: undo its placement
            room[machine[i]] += kv[i]
            machine[i] = -1
        nodes += 1
        if nodes > limit:
            return None
        options = choices[i]
        k = tried[d]
        while k < len(options) and room[options[k]] < kv[i]:
            k += 1
        if k == len(options):
            tried[d] = 0
            d -= 1
            continue
        j = options[k]
        tried[d] = k + 1
        machine[i] = j
        room[j] -= kv[i]
        d += 1
    return machine if d == n else None


def _iterated(
    problem: RecoveryProblem,
    p: FloatArray,
    best: IntArray,
    orders: list[IntArray],
    alone: FloatArray,
    settings: SolveSettings,
    clock: Clock | None = None,
) -> IntArray:
    """Iterated local search under tight KV, where single moves, swaps and ejections stall:
    kick (:func:`ruin_and_recreate`), improve by moves and swaps (ejections, the costly part,
    only on the final best), keep the best. :data:`ILS_ROUNDS` rounds up to 1,024 pairs, fewer
    above (at least 3; time limits under one second scale the rounds down in proportion, so an
    exact backend's hint stays inside its limit), ending early after :data:`ILS_PATIENCE`
    rounds without improvement; the kicks draw from ``settings.seed``, so the plan is
    deterministic for given settings (unless the ``clock``'s limit cuts the rounds)."""
    clock = clock if clock is not None else Clock()
    rng = np.random.default_rng(settings.seed)
    value = recovery_objective(problem, best, p)
    rounds = int(
        np.clip(
            ILS_ROUNDS * 1024 // max(problem.num_requests * problem.num_machines, 1), 3, ILS_ROUNDS
        )
        * min(1.0, settings.time_limit_s)
    )
    stale = 0
    for done in range(rounds):
        if stale >= ILS_PATIENCE:
            break
        if (limit := clock.limit()) is not None:
            clock.stop(limit, f"iterated local search stopped after {done} of {rounds} rounds")
            break
        stale += 1
        kicked = ruin_and_recreate(problem, p, best, orders, rng, alone)
        if kicked is None:
            continue
        cand = local_search(problem, p, kicked, alone=alone, eject=False)
        cand_value = recovery_objective(problem, cand, p)
        if cand_value < value - 1e-9 * max(1.0, value):
            best, value, stale = cand, cand_value, 0
    return local_search(problem, p, best, alone=alone, clock=clock)
