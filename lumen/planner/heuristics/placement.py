"""Placement heuristics: the paper's rule, the Fixed-Checkpointing ring and our greedy.

All three place requests one at a time with capacities charged as they go, and report the
objective of docs/planner.md section 1 through :func:`placement_objective`. A request that no
allowed worker can take any more ends the run with ``NO_SOLUTION`` and names the request ("could
not place" is not a proof); ``INFEASIBLE`` only when a request fits on no allowed worker even
alone (a cheap proof, as for the recovery heuristics).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from lumen.planner.placement_eval import home_mask, placement_objective, unplaceable_requests
from lumen.planner.plans import PlacementPlan
from lumen.planner.problems import FloatArray, IntArray, PlacementProblem
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination

#: The greedy's local search stops after this much work, counted in vector cells evaluated
#: (:class:`Work`), never after a wall-clock time: the same input always gives the same plan.
#: About half a second on one core; time limits under one second scale it down in proportion
#: (a function of the settings, so still deterministic).
LOCAL_SEARCH_CELLS = 24_000_000
#: Cells charged per evaluation on top of its vector length: the fixed cost of a few numpy
#: calls, so that many evaluations of short vectors are not free.
CALL_CELLS = 4_000
#: Swaps cost O(n) per request; beyond this many requests the search only moves.
SWAP_MAX_REQUESTS = 5_000
#: Up to this many requests the greedy also starts from two more orders (see solve_greedy).
MULTI_START_MAX_REQUESTS = 20_000
#: Up to this many (request x worker) pairs it also starts from this many shuffled orders
#: (drawn from ``settings.seed``): small instances with binding budgets have local optima that
#: one order misses, and each start is cheap there.
SHUFFLED_MAX_CELLS = 4_000
SHUFFLED_STARTS = 32
#: Iterated local search on those small instances (:func:`_iterated`): at most this many
#: kicks, ending after ILS_PATIENCE in a row without improvement.
ILS_ROUNDS = 400
ILS_PATIENCE = 80


def _result(
    name: str,
    problem: PlacementProblem,
    holder: IntArray,
    failed: int,
    start: float,
    message: str = "",
) -> SolveResult[PlacementPlan]:
    if failed >= 0:
        # Not placing a request proves nothing unless some request fits nowhere even alone.
        proof = unplaceable_requests(problem).size > 0
        return SolveResult(
            name,
            Termination.INFEASIBLE if proof else Termination.NO_SOLUTION,
            Limit.NONE if proof else Limit.HEURISTIC,
            wall_time_s=time.perf_counter() - start,
            message=f"could not place request {failed}: no allowed worker has its budget"
            " and stream capacity left"
            + (" (some request fits on no worker)" if proof else " (the instance may be feasible)"),
        )
    return SolveResult(
        name,
        Termination.FEASIBLE,
        Limit.HEURISTIC,
        objective=placement_objective(problem, holder),
        wall_time_s=time.perf_counter() - start,
        plan=PlacementPlan.of(holder),
        message=message,
    )


def _sequential(
    problem: PlacementProblem, order: IntArray, rule: str, start: IntArray | None = None
) -> tuple[IntArray, FloatArray, int]:
    """Place requests in ``order``, each on the feasible worker of least score:

    - ``"lumen"``: ``wait_s[j] + alpha * (L[f][j] + work)`` (the paper's rule);
    - ``"greedy"``: ``alpha * max(M_f, L[f][j] + work) + wait_s[j] / n_f``, the exact increase
      of ``J`` with ``n_f`` the final count of home ``f`` (a batch knows it up front);
    - ``"pack"``: the room left on ``j``, budget and stream cap each relative to its largest
      value (best fit in both dimensions: feasibility first, ``J`` ignored).

    ``start`` (-1: unplaced) keeps its placed requests where they are, capacities charged.
    Returns the holders, the per-(home, holder) loads and the first request that could not be
    placed (-1 when all were)."""
    m, n = problem.num_workers, problem.num_requests
    budget = problem.budget_bytes.copy()
    stream = problem.stream_cap_bytes_s.copy()
    capped = bool(np.isfinite(stream).any())
    load = np.zeros((m, m))
    worst = np.zeros(m)
    greedy, pack = rule == "greedy", rule == "pack"
    count = np.bincount(problem.home, minlength=m)
    wait: FloatArray = problem.wait_s * (0.0 if pack else 1.0)
    if greedy:
        wait = problem.wait_s[None, :] / np.maximum(count, 1)[:, None]
    # cost[f, j]: the part of the score that depends on j alone; inf where j may not hold f's
    # requests or has no room even for the smallest request. Capacity is checked only on the
    # chosen worker (the fast path) and masked in full only when that worker is too full.
    cost = np.where(home_mask(problem), wait, np.inf)
    least_reserve = float(problem.reserve_bytes.min(initial=0.0))
    least_rate = float(problem.stream_bytes_s.min(initial=0.0))
    alpha = problem.alpha
    budget_scale = max(float(budget.max(initial=0.0)), 1.0)
    finite_caps = stream[np.isfinite(stream)]
    stream_scale = max(float(finite_caps.max(initial=0.0)), 1.0)
    holder = np.full(n, -1, dtype=np.int64)
    if start is not None:
        holder[:] = start
        kept = np.flatnonzero(start >= 0)
        j_kept = start[kept]
        budget -= np.bincount(j_kept, weights=problem.reserve_bytes[kept], minlength=m)
        stream -= np.bincount(j_kept, weights=problem.stream_bytes_s[kept], minlength=m)
        np.add.at(load, (problem.home[kept], j_kept), problem.work_s[kept])
        worst = load.max(axis=1)
        cost[:, (budget < least_reserve) | (stream < least_rate)] = np.inf
    score, full = np.empty(m), np.empty(m, dtype=bool)
    homes, works = problem.home.tolist(), problem.work_s.tolist()
    reserves, rates = problem.reserve_bytes.tolist(), problem.stream_bytes_s.tolist()
    for i in order.tolist():
        f, w, r, s = homes[i], works[i], reserves[i], rates[i]
        row = load[f]
        if pack:
            np.multiply(budget, 1.0 / budget_scale, out=score)
            if capped:
                score += np.where(np.isfinite(stream), stream / stream_scale, 0.0)
            score += cost[f]
        else:
            np.add(row, w, out=score)
            if greedy:
                np.maximum(score, worst[f], out=score)
            if alpha != 1.0:
                score *= alpha
            score += cost[f]
        j = int(score.argmin())
        for _ in range(2):  # a nearly full favourite or two: skip them one by one
            if budget[j] >= r and stream[j] >= s:
                break
            score[j] = np.inf
            j = int(score.argmin())
        if budget[j] < r or stream[j] < s:
            np.less(budget, r, out=full)
            np.copyto(score, np.inf, where=full)
            if capped:
                np.less(stream, s, out=full)
                np.copyto(score, np.inf, where=full)
            j = int(score.argmin())
        if score[j] == np.inf:
            return holder, load, i
        holder[i] = j
        row[j] += w
        if row[j] > worst[f]:
            worst[f] = row[j]
        budget[j] -= r
        stream[j] -= s
        if budget[j] < least_reserve or stream[j] < least_rate:
            cost[:, j] = np.inf
    return holder, load, -1


def _top3(load: FloatArray) -> tuple[FloatArray, IntArray]:
    """The three largest entries of each row and their columns (padded with zeros at column -1
    when a row is shorter: loads are never negative, so 0 is a safe floor)."""
    rows, m = load.shape
    if m < 3:
        load = np.hstack([load, np.zeros((rows, 3 - m))])
    idx = np.argpartition(-load, 2, axis=1)[:, :3]
    val = np.take_along_axis(load, idx, axis=1)
    order = np.argsort(-val, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    idx[idx >= m] = -1
    return np.take_along_axis(val, order, axis=1), idx


class _LocalSearch:
    """Moves and swaps over a complete placement (see :func:`improve`)."""

    def __init__(self, problem: PlacementProblem, holder: IntArray, load: FloatArray) -> None:
        m = problem.num_workers
        self.p, self.holder, self.load = problem, holder, load
        self.mask = home_mask(problem)
        self.budget = problem.budget_bytes - np.bincount(
            holder, weights=problem.reserve_bytes, minlength=m
        )
        self.stream = problem.stream_cap_bytes_s - np.bincount(
            holder, weights=problem.stream_bytes_s, minlength=m
        )
        self.worst = load.max(axis=1)
        count = np.bincount(problem.home, minlength=m)
        #: Weight of the worst-load term and of one wait, per home.
        self.worst_coef = problem.fail_weight * problem.alpha
        self.wait_coef = problem.fail_weight / np.maximum(count, 1)
        self.top_val, self.top_idx = _top3(load)
        self.cols = np.arange(m)
        self.moved_cost = problem.move_cost_s * (problem.current >= 0)
        by_home = np.argsort(problem.home, kind="stable")
        splits = np.cumsum(count)[:-1]
        self.members: list[IntArray] = np.split(by_home, splits)

    def _refresh(self, f: int) -> None:
        self.worst[f] = self.load[f].max()
        val, idx = _top3(self.load[f : f + 1])
        self.top_val[f], self.top_idx[f] = val[0], idx[0]

    def move_deltas(self, i: int) -> FloatArray:
        """Change of ``J`` when request ``i`` moves to each worker (capacity not checked)."""
        p = self.p
        f, h, w = int(p.home[i]), int(self.holder[i]), float(p.work_s[i])
        row = self.load[f]
        row[h] -= w
        top = int(row.argmax())
        first = row[top]
        row[top] = -np.inf
        second = row.max()
        row[top] = first
        new_worst = np.maximum(row + w, first)
        new_worst[top] = max(row[top] + w, second)
        row[h] += w
        delta: FloatArray = self.worst_coef[f] * (new_worst - self.worst[f])
        delta += self.wait_coef[f] * (p.wait_s - p.wait_s[h])
        cur = int(p.current[i])
        if cur >= 0 and self.moved_cost[i] > 0.0:
            delta += self.moved_cost[i] * ((self.cols != cur).astype(float) - float(h != cur))
        return delta

    def best_move(self, i: int, delta: FloatArray) -> tuple[float, int]:
        p = self.p
        f, h = int(p.home[i]), int(self.holder[i])
        ok = self.mask[f] & (self.budget >= p.reserve_bytes[i])
        ok &= self.stream >= p.stream_bytes_s[i]
        ok[h] = False
        scored = np.where(ok, delta, np.inf)
        j = int(scored.argmin())
        return float(scored[j]), j

    def best_swap(self, i: int, move: FloatArray) -> tuple[float, int]:
        """Best exchange of holders between ``i`` and another request, over all of them."""
        p = self.p
        f, h = int(p.home[i]), int(self.holder[i])
        wi, ri, si = float(p.work_s[i]), float(p.reserve_bytes[i]), float(p.stream_bytes_s[i])
        g, jk, wk = p.home, self.holder, p.work_s
        ok = (jk != h) & self.mask[f, jk] & self.mask[g, h]
        ok &= (self.budget[jk] + p.reserve_bytes - ri >= 0) & (
            self.budget[h] + ri >= p.reserve_bytes
        )
        ok &= (self.stream[jk] + p.stream_bytes_s - si >= 0) & (
            self.stream[h] + si >= p.stream_bytes_s
        )
        if not ok.any():
            return np.inf, -1
        a, t = self.top_idx[g], self.top_val[g]
        free1 = (a[:, 0] != jk) & (a[:, 0] != h)
        free2 = (a[:, 1] != jk) & (a[:, 1] != h)
        rest = np.where(free1, t[:, 0], np.where(free2, t[:, 1], t[:, 2]))
        # Request k's own move from jk to h (its home's row unchanged by i when homes differ).
        out_k = self.load[g, jk] - wk
        in_k = self.load[g, h] + wk
        same = g == f
        in_k = np.where(same, in_k - wi, in_k)
        out_k = np.where(same, out_k + wi, out_k)
        worst_g = np.maximum(np.maximum(out_k, in_k), rest)
        delta = self.worst_coef[g] * (worst_g - self.worst[g])
        delta += np.where(same, 0.0, self.wait_coef[g] * (p.wait_s[h] - p.wait_s[jk]))
        cur = p.current
        delta += self.moved_cost * ((cur != h).astype(float) - (jk != cur))
        # Request i's part: its move vector where homes differ; when they are the same row,
        # the worst load above already covers both, and only i's move cost remains.
        cur_i = int(p.current[i])
        own_cost = 0.0 if cur_i < 0 else float(self.moved_cost[i])
        i_cost = own_cost * ((jk != cur_i).astype(float) - float(h != cur_i))
        delta += np.where(same, i_cost, move[jk])
        delta[~ok] = np.inf
        k = int(delta.argmin())
        return float(delta[k]), k

    def rearrange(self, f: int, eps: float) -> bool:
        """Reassign home ``f``'s bundles (its requests grouped by holder) to distinct workers,
        the largest bundle first, each to the cheapest one with room: the worst load is
        unchanged (loads only trade places) while the waits, counted per request, drop when
        the big bundles sit on the low-wait workers. Taken only if it lowers ``J``."""
        p = self.p
        members = self.members[f]
        used, inv = np.unique(self.holder[members], return_inverse=True)
        count = np.bincount(inv)
        reserve = np.bincount(inv, weights=p.reserve_bytes[members])
        rate = np.bincount(inv, weights=p.stream_bytes_s[members])
        cost = self.wait_coef[f] * count[:, None] * p.wait_s[None, :]
        moving = self.moved_cost[members] > 0.0
        for b, i in zip(inv[moving].tolist(), members[moving].tolist(), strict=True):
            cost[b] += self.moved_cost[i] * (self.cols != p.current[i])
        old = float(cost[np.arange(used.size), used].sum())
        budget, stream = self.budget.copy(), self.stream.copy()
        budget[used] += reserve
        stream[used] += rate
        free = self.mask[f].copy()
        target = np.empty(used.size, dtype=np.int64)
        new = 0.0
        for b in np.argsort(-count, kind="stable").tolist():
            ok = free & (budget >= reserve[b]) & (stream >= rate[b])
            scored = np.where(ok, cost[b], np.inf)
            j = int(scored.argmin())
            if scored[j] == np.inf:
                return False
            target[b], free[j] = j, False
            budget[j] -= reserve[b]
            stream[j] -= rate[b]
            new += float(scored[j])
        if new >= old - eps:
            return False
        row = np.zeros_like(self.load[f])
        row[target] = self.load[f, used]
        self.load[f] = row
        self.holder[members] = target[inv]
        self.budget, self.stream = budget, stream
        self._refresh(f)
        return True

    def apply(self, i: int, j: int) -> None:
        """Move request ``i`` to worker ``j``."""
        p = self.p
        f, h = int(p.home[i]), int(self.holder[i])
        self.holder[i] = j
        self.load[f, h] -= p.work_s[i]
        self.load[f, j] += p.work_s[i]
        self.budget[h] += p.reserve_bytes[i]
        self.budget[j] -= p.reserve_bytes[i]
        self.stream[h] += p.stream_bytes_s[i]
        self.stream[j] -= p.stream_bytes_s[i]
        self._refresh(f)


@dataclass
class Work:
    """A work budget in cells: each evaluation spends :data:`CALL_CELLS` plus the length of the
    vectors it scores (``m`` for a move, ``n`` for a swap, ``m`` per bundle to rearrange)."""

    left: int

    def spend(self, cells: int) -> bool:
        """Charge ``cells``; False (nothing charged) when the budget cannot cover them."""
        cost = cells + CALL_CELLS
        if cost > self.left:
            return False
        self.left -= cost
        return True


def improve(
    problem: PlacementProblem,
    holder: IntArray,
    load: FloatArray,
    work: Work,
    cancel: threading.Event | None = None,
    swaps: bool = True,
) -> int:
    """Local search: for each request, the best move to another worker, else (``swaps``) the
    best exchange of holders with another request, taken when it decreases ``J``; sweeps repeat
    until none does or ``work`` is spent (a count of evaluations, not a time, so the result
    depends on the input alone; ``cancel`` is the caller's own stop). ``holder`` and ``load``
    (the m x m ``L``) are updated in place; returns the number of steps taken.

    All targets are scored at once: after moving request ``i`` (home ``f``) to ``j``, the worst
    load of ``f`` is ``max(L'[j] + w, max_{k != j} L'[k])`` with ``L'`` the row without ``i``,
    and the inner max is the row's maximum except at its argmax (then the second largest).
    Swaps use each row's three largest entries the same way."""
    search = _LocalSearch(problem, holder, load)
    scale = float(problem.fail_weight.max(initial=0.0)) * (
        problem.alpha + float(problem.wait_s.max(initial=0.0))
    )
    # Smallest change worth taking: below it, float noise could make steps cycle.
    eps = 1e-12 * max(1.0, scale)
    steps = 0
    improved = True
    m, n = problem.num_workers, problem.num_requests
    count = np.bincount(problem.home, minlength=m)
    homes = np.flatnonzero(count > 1)
    while improved:
        improved = False
        for f in homes.tolist():
            if not work.spend(int(count[f]) * m):
                return steps
            if search.rearrange(f, eps):
                steps += 1
                improved = True
        for i in range(n):
            if (cancel is not None and cancel.is_set()) or not work.spend(m):
                return steps
            move = search.move_deltas(i)
            gain, j = search.best_move(i, move)
            if gain < -eps:
                search.apply(i, j)
            elif swaps:
                if not work.spend(n):
                    return steps
                gain, k = search.best_swap(i, move)
                if gain >= -eps:
                    continue
                j, h = int(holder[k]), int(holder[i])
                search.apply(i, j)
                search.apply(k, h)
            else:
                continue
            steps += 1
            improved = True
    return steps


def solve_lumen(problem: PlacementProblem, settings: SolveSettings) -> SolveResult[PlacementPlan]:
    """The paper's rule (docs/architecture.md), request by request in index order:
    ``holder(r) = argmin_j wait_s[j] + alpha * RestorePressure_j(r)`` over allowed workers with
    budget and stream capacity left, ties to the lowest index.

    Our reading of ``RestorePressure_j(r)``: the checkpoint bytes ``j`` would copy host->GPU if
    ``r``'s home failed, divided by the host->GPU bandwidth. That is the restore work of the
    requests with the same home already placed on ``j`` plus ``r``'s own, ``L[f][j] +
    work_s[r]``, since ``work_s`` already is bytes over bandwidth. The rule never looks at
    ``fail_weight``, ``n_f`` or move costs."""
    start = time.perf_counter()
    order = np.arange(problem.num_requests)
    holder, _, failed = _sequential(problem, order, "lumen")
    return _result("lumen", problem, holder, failed, start)


def solve_fixed_ring(
    problem: PlacementProblem, settings: SolveSettings
) -> SolveResult[PlacementPlan]:
    """Fixed-Checkpointing (DejaVu style): each request's holder is the first worker after its
    home in ring order (home + 1, home + 2, ... mod m) that is allowed and has budget and stream
    capacity left; requests in index order."""
    start = time.perf_counter()
    m, n = problem.num_workers, problem.num_requests
    mask = home_mask(problem).tolist()
    budget = problem.budget_bytes.tolist()
    stream = problem.stream_cap_bytes_s.tolist()
    reserves, rates = problem.reserve_bytes.tolist(), problem.stream_bytes_s.tolist()
    holder = np.full(n, -1, dtype=np.int64)
    for i, f in enumerate(problem.home.tolist()):
        for step in range(1, m):
            j = (f + step) % m
            if mask[f][j] and budget[j] >= reserves[i] and stream[j] >= rates[i]:
                holder[i] = j
                budget[j] -= reserves[i]
                stream[j] -= rates[i]
                break
        else:
            return _result("fixed-ring", problem, holder, i, start)
    return _result("fixed-ring", problem, holder, -1, start)


def solve_greedy(problem: PlacementProblem, settings: SolveSettings) -> SolveResult[PlacementPlan]:
    """Objective-aware greedy construction, then local search; the best of a few starts.

    1. Construction (:func:`_sequential`): each request, in a given order, on the feasible
       worker that increases ``J`` the least, counting the worst load exactly (``max(M_f,
       L[f][j] + work)``) and each home's final ``n_f``. Failure domains enter through the
       per-home candidate mask. Orders: decreasing restore work (LPT, also LPT within each
       home); then, up to ``MULTI_START_MAX_REQUESTS`` requests, homes by decreasing weight per
       request (the ones that gain most from scarce low-wait room) and decreasing reservation;
       up to ``SHUFFLED_MAX_CELLS`` pairs also ``SHUFFLED_STARTS`` orders shuffled with
       ``settings.seed`` (deterministic).
       At scale only the first runs, the last as a fallback if capacity runs out; if all
       fail, best-fit packings (feasibility first) seed the search.
    2. Local search (:func:`improve`) after each construction: bundle rearrangement per home,
       moves, and (up to ``SWAP_MAX_REQUESTS`` requests) swaps, all strictly decreasing ``J``,
       within ``LOCAL_SEARCH_CELLS`` cells of work in all (scaled down by time limits under a
       second), shared among the fixed orders: the plan is a function of the input and
       settings. The shuffled orders share a second budget of the same size.
    3. Up to ``SHUFFLED_MAX_CELLS`` pairs, iterated local search from the best plan
       (:func:`_iterated`) with the work left in both.
    """
    start = time.perf_counter()
    n, m = problem.num_requests, problem.num_workers
    idx = np.arange(n)
    small = n <= MULTI_START_MAX_REQUESTS
    per_request = problem.fail_weight / np.maximum(np.bincount(problem.home, minlength=m), 1)
    orders = [np.lexsort((idx, -problem.work_s))]
    if small:
        orders.append(np.lexsort((idx, -problem.work_s, -per_request[problem.home])))
    orders.append(np.lexsort((idx, -problem.reserve_bytes)))
    fixed = len(orders)
    if n * m <= SHUFFLED_MAX_CELLS:
        rng = np.random.default_rng(settings.seed)
        orders += [rng.permutation(n) for _ in range(SHUFFLED_STARTS)]
    runs = [(order, "greedy") for order in orders]
    # Feasibility fallbacks: best fit by decreasing reservation, stream rate, and both.
    caps = problem.stream_cap_bytes_s[np.isfinite(problem.stream_cap_bytes_s)]
    both = problem.reserve_bytes / max(float(problem.budget_bytes.max(initial=0.0)), 1.0)
    both = both + problem.stream_bytes_s / max(float(caps.max(initial=0.0)), 1.0)
    for key in (problem.reserve_bytes, problem.stream_bytes_s, both):
        runs.append((np.lexsort((idx, -key)), "pack"))
    # Two pools of work: the fixed orders share one (as much as without the small-instance
    # extras), the shuffled orders and the iterated search the other.
    pools = [int(LOCAL_SEARCH_CELLS * min(1.0, settings.time_limit_s))] * 2
    best: IntArray | None = None
    best_value, failed, steps = np.inf, -1, 0
    for k, (order, rule) in enumerate(runs):
        if best is not None and (not small or rule == "pack"):
            break  # fallbacks only run while nothing has fitted
        holder, load, failed_k = _sequential(problem, order, rule)
        if failed_k >= 0:
            failed = failed_k if failed < 0 else failed
            continue
        pool = 0 if k < fixed else 1
        shares = max((fixed if k < fixed else len(orders)) - k, 1) if small else 1
        work = Work(pools[pool] // shares)
        steps += improve(problem, holder, load, work, settings.cancel, n <= SWAP_MAX_REQUESTS)
        pools[pool] -= pools[pool] // shares - work.left
        value = placement_objective(problem, holder)
        if value < best_value:
            best, best_value = holder, value
    if best is None:
        return _result("greedy", problem, np.full(n, -1, dtype=np.int64), failed, start)
    if n * m <= SHUFFLED_MAX_CELLS:
        best, more = _iterated(problem, best, settings, Work(sum(pools)))
        steps += more
    return _result("greedy", problem, best, -1, start, f"local search: {steps} improving steps")


def _iterated(
    problem: PlacementProblem, best: IntArray, settings: SolveSettings, work: Work
) -> tuple[IntArray, int]:
    """Iterated local search on small instances, where budgets bind and one request at a time
    cannot get out of a local optimum: take every request off two random workers and a tenth of
    the others, re-insert them by the greedy rule (:func:`_sequential` from the rest) in random
    order or, half the time, largest reservation first (with noise), improve
    (:func:`improve`) and keep the result if ``J`` drops. At most :data:`ILS_ROUNDS` rounds,
    ending after :data:`ILS_PATIENCE` in a row without improvement or when ``work`` is spent;
    the draws come from ``settings.seed``: deterministic."""
    n, m = problem.num_requests, problem.num_workers
    rng = np.random.default_rng([settings.seed, 1])
    value = placement_objective(problem, best)
    steps = stale = 0
    for _ in range(ILS_ROUNDS):
        if stale >= ILS_PATIENCE or work.left <= CALL_CELLS:
            break
        if settings.cancel is not None and settings.cancel.is_set():
            break
        stale += 1
        out = best.copy()
        drop = np.isin(out, rng.choice(m, size=min(2, m), replace=False)) | (rng.random(n) < 0.1)
        out[drop] = -1
        dropped = np.flatnonzero(drop)
        # Half the kicks re-insert the largest first (noisy), to re-pack binding budgets.
        key = problem.reserve_bytes[dropped] * rng.uniform(0.7, 1.3, dropped.size)
        order = dropped[np.argsort(-key)] if rng.random() < 0.5 else rng.permutation(dropped)
        holder, load, failed = _sequential(problem, order, "greedy", out)
        if failed >= 0:
            continue
        steps += improve(problem, holder, load, work, settings.cancel, n <= SWAP_MAX_REQUESTS)
        cand = placement_objective(problem, holder)
        if cand < value - 1e-12 * max(1.0, abs(value)):
            best, value, stale = holder, cand, 0
    return best, steps
