"""The online controller behind the planner service: cluster state in, plans out.

The controller keeps the planner's view of the cluster (the last full snapshot an executor or
gateway reported, plus the requests placed since and the failures reported since), and turns
events into plans:

- ``report_state`` replaces the view (executors report load *and* checkpoint inventory: each
  request's holder and valid checkpointed prefix);
- ``place_request`` places one arriving request incrementally
  (:class:`~lumen.planner.placement_state.PlacementState`, O(m) per request);
- ``reoptimize`` (every ``reoptimize_interval_s`` when configured) solves batch placement over
  the current state and moves checkpoints where the plan says;
- ``report_failure`` marks workers failed, answers at once, and plans recovery and then draft
  pairing in the background;
- ``plan_placement`` / ``plan_recovery`` / ``plan_pairing`` answer queries for a given snapshot
  or the current view without changing it.

Every plan the controller makes on its own (placements, recovery and pairing after a failure,
re-optimizations) is published to subscribers (:class:`PlanBroadcaster`).

**State after a restart.** Nothing is persisted. The view is rebuilt from the executors'
reports: the first ``ReportClusterState`` after a restart carries the workers, their loads and
states (failed and reloading workers included), every in-flight request with its checkpoint
holder and valid prefix, so the incremental placement state is rebuilt from it on the next
placement. Until then, calls that need the view fail with :class:`NotReady`; calls that carry
their own snapshot work. Plan sequence numbers restart at 1, so a subscriber whose stream broke
resubscribes with ``after_sequence = 0``.

Solves never hold the controller's lock: they read an immutable snapshot and the result is
applied afterwards only if the view was not replaced in between. Every problem is sized from
the snapshot before it is built (:mod:`lumen.planner.service.budget`): one above the budget is
refused with :class:`~lumen.planner.service.budget.TooLarge`, and building stops with
:class:`OutOfTime` once the solve's cancel event is set (the call's deadline or cancellation).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lumen.planner.builders import (
    BuildCancelled,
    PlacementOptions,
    pairing_problem,
    placement_problem,
    recovery_problem,
)
from lumen.planner.costmodel import CostModel
from lumen.planner.costmodel.base import NoDraftModelError
from lumen.planner.decisions import (
    Decision,
    Outcome,
    PairingDecision,
    Placed,
    PlacementDecision,
    PlanUpdate,
    RecoveryDecision,
    Status,
    pairing_decision,
    placement_decision,
    recovery_decision,
)
from lumen.planner.domain import ClusterState, Request, Worker, WorkerLoad, WorkerState
from lumen.planner.placement_eval import unplaceable_requests
from lumen.planner.placement_state import PLACEMENT_RULES, PlacementState
from lumen.planner.problems import PairingProblem, PlacementProblem, RecoveryProblem
from lumen.planner.result import Limit, SolveResult, SolveSettings, Termination
from lumen.planner.service.broadcast import PlanBroadcaster, Subscription
from lumen.planner.service.budget import (
    ProblemBudget,
    TooLarge,
    estimate,
    pairing_cells,
    placement_cells,
    recovery_cells,
)
from lumen.planner.service.errors import AlreadyExists, InvalidField, NotFound, NotReady, OutOfTime
from lumen.planner.solve import Problem, methods, solve

log = logging.getLogger(__name__)

#: Backends for plans the controller makes on its own and for RPCs that name no method: the
#: greedy ones answer within milliseconds at 64 workers (a failure cannot wait for a proof).
DEFAULT_METHODS = {"placement": "greedy", "recovery": "greedy", "pairing": "matching"}

SolveHook = Callable[[str, SolveResult[Any]], None]
#: Called with (problem kind, reason) when a problem is not solved: ``too_large`` (refused by
#: the budget before building) or ``cancelled`` (building stopped by the cancel event).
AbandonHook = Callable[[str, str], None]


@dataclass(frozen=True)
class ControllerConfig:
    """Everything the controller needs besides the reports: the cost model and the settings."""

    cost: CostModel
    prefill_chunk_tokens: int = 1024
    placement: PlacementOptions = field(default_factory=PlacementOptions)
    acceptance_rate: float = 0.6
    depth: int = 4
    methods: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_METHODS))
    #: Default solve limit for RPCs that give none and for the controller's own plans.
    time_limit_s: float = 1.0
    #: Largest time limit an RPC may ask for.
    max_time_limit_s: float = 600.0
    #: Re-optimize placement this often (None: place on arrival only).
    reoptimize_interval_s: float | None = None
    #: The most memory and build time one problem may need (lumen/planner/service/budget.py).
    budget: ProblemBudget = field(default_factory=ProblemBudget)

    def __post_init__(self) -> None:
        for kind, name in self.methods.items():
            if name not in methods(kind):
                raise ValueError(f"methods[{kind}]: unknown method {name!r}")
        if not 0 < self.time_limit_s <= self.max_time_limit_s:
            raise ValueError("time_limit_s must be in (0, max_time_limit_s]")
        if self.reoptimize_interval_s is not None and not self.reoptimize_interval_s > 0:
            raise ValueError("reoptimize_interval_s must be > 0")

    @property
    def has_draft(self) -> bool:
        try:
            self.cost.draft_load_time()
        except NoDraftModelError:
            return False
        return True


class Controller:
    """Cluster state, incremental placement, re-optimization, failure plans (module docstring)."""

    def __init__(
        self,
        config: ControllerConfig,
        on_solve: SolveHook | None = None,
        on_abandon: AbandonHook | None = None,
    ) -> None:
        self.config = config
        self.broadcaster = PlanBroadcaster()
        self._on_solve = on_solve
        self._on_abandon = on_abandon
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The view: the last snapshot's workers and loads, requests kept in a dict so that a
        # placement is O(1); the immutable snapshot is rebuilt only when a plan needs it.
        self._workers: tuple[Worker, ...] = ()
        self._loads: dict[int, WorkerLoad] = {}
        self._requests: dict[int, Request] = {}
        self._kv_bytes_per_token = 0
        self._snapshot: ClusterState | None = None
        self._ready = False
        self._version = 0
        self._epoch = 0  # bumped when the view is replaced (report, failure)
        self._reoptimized_version = -1
        self._placement: PlacementState | None = None
        self._placement_key: tuple[float, bool, str] | None = None
        self._index: dict[int, int] = {}
        self._jobs = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lumen-plan")
        self._timer: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start periodic re-optimization (when configured)."""
        interval = self.config.reoptimize_interval_s
        if interval is not None and self._timer is None:
            self._timer = threading.Thread(
                target=self._reoptimize_loop, args=(interval,), name="lumen-reopt", daemon=True
            )
            self._timer.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel running solves, stop background work and end every subscription."""
        self._stop.set()
        self.broadcaster.close()
        self._jobs.shutdown(wait=True, cancel_futures=True)
        if self._timer is not None:
            self._timer.join(timeout_s)

    def _reoptimize_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._jobs.submit(self.reoptimize).result()
            except Exception:  # keep the loop alive; the next round retries
                log.exception("re-optimization failed")

    # -- the view --------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    @property
    def ready(self) -> bool:
        """Whether a cluster state has been reported since start."""
        return self._ready

    def snapshot(self) -> ClusterState | None:
        """The current view as an immutable snapshot (None before the first report)."""
        with self._lock:
            return self._snapshot_locked() if self._ready else None

    def _snapshot_locked(self) -> ClusterState:
        if self._snapshot is None:
            self._snapshot = ClusterState(
                self._workers, self._loads, self._requests, self._kv_bytes_per_token
            )
        return self._snapshot

    def _replace_view(self, state: ClusterState) -> None:
        self._workers = state.workers
        self._loads = dict(state.loads)
        self._requests = dict(state.requests)
        self._kv_bytes_per_token = state.kv_bytes_per_token
        self._index = {w.id: k for k, w in enumerate(state.workers)}
        self._snapshot = state
        self._ready = True
        self._version += 1
        self._epoch += 1
        self._placement = None

    def _current(self, path: str) -> ClusterState:
        with self._lock:
            if not self._ready:
                raise NotReady(path, "no cluster state reported yet: send ReportClusterState first")
            return self._snapshot_locked()

    def report_state(self, state: ClusterState) -> int:
        """Replace the view with a reported snapshot; returns the new state version."""
        with self._lock:
            self._replace_view(state)
            return self._version

    def report_failure(self, workers: Sequence[int]) -> int:
        """Mark ``workers`` failed (their checkpoints are lost with them), then plan recovery and
        pairing in the background and publish both; returns the new state version at once."""
        if not workers:
            raise InvalidField("failed_workers", "at least one worker id is needed")
        with self._lock:
            if not self._ready:
                raise NotReady("", "no cluster state reported yet: send ReportClusterState first")
            _check_ids("failed_workers", workers, self._index, "worker")
            failed = set(workers)
            states = {w.id: w.state for w in self._workers}
            if any(states[w] is not WorkerState.FAILED for w in failed) or any(
                r.checkpoint_holder in failed for r in self._requests.values()
            ):
                ws = tuple(
                    dataclasses.replace(w, state=WorkerState.FAILED) if w.id in failed else w
                    for w in self._workers
                )
                reqs = {
                    rid: (
                        dataclasses.replace(r, checkpoint_holder=None, checkpointed_tokens=0)
                        if r.checkpoint_holder in failed
                        else r
                    )
                    for rid, r in self._requests.items()
                }
                self._replace_view(ClusterState(ws, self._loads, reqs, self._kv_bytes_per_token))
            snapshot, version = self._snapshot_locked(), self._version
        self._jobs.submit(self._plan_failure, snapshot, sorted(failed), version)
        return version

    def _plan_failure(self, state: ClusterState, failed: list[int], version: int) -> None:
        settings = SolveSettings(time_limit_s=self.config.time_limit_s, cancel=self._stop)
        try:
            outcome = self.plan_recovery(state, failed, "", settings)
            if outcome.plan is not None:
                self._publish(outcome.plan, outcome.status, version)
            if self.config.has_draft:
                pairing = self.plan_pairing(state, failed, None, None, "", settings)
                if pairing.plan is not None:
                    self._publish(pairing.plan, pairing.status, version)
        except (OutOfTime, TooLarge) as exc:
            log.warning("no plan after the failure of workers %s: %s", failed, exc)
        except Exception:  # a background job has nobody to report to but the log
            log.exception("planning after the failure of workers %s failed", failed)

    def _publish(self, plan: Decision, status: Status, version: int) -> PlanUpdate:
        return self.broadcaster.publish(plan, status, version)

    def subscribe(self, after_sequence: int = 0) -> Subscription:
        return self.broadcaster.subscribe(after_sequence)

    # -- solving ---------------------------------------------------------------------------------

    def _method(self, kind: str, method: str) -> str:
        if not method:
            return self.config.methods.get(kind, DEFAULT_METHODS[kind])
        if method not in methods(kind):
            raise InvalidField(
                "options.method",
                f"unknown {kind} method {method!r}; choose from {', '.join(methods(kind))}",
            )
        return method

    def _pose(
        self,
        kind: str,
        method: str,
        cells: tuple[int, int],
        build: Callable[[], Problem],
    ) -> Problem:
        """Check the problem's estimated size against the budget, then build it; refusals and
        cancelled builds are reported to the abandon hook."""
        try:
            estimate(kind, self._method(kind, method), *cells).check(self.config.budget)
        except TooLarge:
            self._abandoned(kind, "too_large")
            raise
        try:
            return build()
        except BuildCancelled as exc:
            self._abandoned(kind, "cancelled")
            raise OutOfTime(f"{kind}: {exc} (deadline passed or call cancelled)") from None

    def _abandoned(self, kind: str, reason: str) -> None:
        log.warning("%s problem abandoned: %s", kind, reason)
        if self._on_abandon is not None:
            self._on_abandon(kind, reason)

    def _solve(
        self, kind: str, problem: Problem, method: str, settings: SolveSettings
    ) -> SolveResult[Any]:
        result = solve(problem, self._method(kind, method), settings)
        if self._on_solve is not None:
            self._on_solve(kind, result)
        if not result.has_plan and result.limit in (Limit.TIME, Limit.CANCELLED):
            raise OutOfTime(
                f"{kind}: the solver stopped ({result.limit.value}) before finding any plan",
                Status.of(result),
            )
        return result

    def plan_placement(
        self,
        state: ClusterState | None,
        request_ids: Sequence[int],
        options: PlacementOptions | None,
        method: str,
        settings: SolveSettings,
    ) -> Outcome[PlacementDecision]:
        """Batch placement of ``request_ids`` (empty: every request) of ``state`` (None: the
        current view). A query: the view does not change."""
        state = state if state is not None else self._current("state")
        _check_ids("request_ids", request_ids, state.requests, "request")
        chosen = (
            [state.requests[r] for r in request_ids]
            if request_ids
            else list(state.requests.values())
        )
        problem = self._pose(
            "placement",
            method,
            placement_cells(state, len(chosen)),
            lambda: placement_problem(
                state,
                self.config.cost,
                chosen,
                options or self._options(),
                cancel=settings.cancel,
            ),
        )
        assert isinstance(problem, PlacementProblem)
        result = self._solve("placement", problem, method, settings)
        plan = None
        if result.plan is not None:
            plan = placement_decision(
                result.plan, [r.id for r in chosen], [w.id for w in state.workers]
            )
        return Outcome(Status.of(result), plan)

    def plan_recovery(
        self,
        state: ClusterState | None,
        failed: Sequence[int],
        method: str,
        settings: SolveSettings,
    ) -> Outcome[RecoveryDecision]:
        """Recovery of the requests whose home is in ``failed`` (empty: the snapshot's failed
        workers)."""
        state = state if state is not None else self._current("state")
        failed = _failed_or_default(state, failed)
        problem = self._pose(
            "recovery",
            method,
            recovery_cells(state, failed),
            lambda: recovery_problem(
                state,
                self.config.cost,
                failed,
                chunk=self.config.prefill_chunk_tokens,
                cancel=settings.cancel,
            ),
        )
        assert isinstance(problem, RecoveryProblem)
        result = self._solve("recovery", problem, method, settings)
        plan = None if result.plan is None else recovery_decision(problem, result.plan)
        return Outcome(Status.of(result), plan)

    def plan_pairing(
        self,
        state: ClusterState | None,
        recovering: Sequence[int],
        acceptance_rate: float | None,
        depth: int | None,
        method: str,
        settings: SolveSettings,
    ) -> Outcome[PairingDecision]:
        """Draft pairing of ``recovering`` workers (empty: the snapshot's recovering ones)."""
        if not self.config.has_draft:
            raise NotReady("", "the planner's cost model has no draft model; pairing is off")
        state = state if state is not None else self._current("state")
        if recovering:
            _check_ids("recovering_workers", recovering, {w.id for w in state.workers}, "worker")
            _check_not_serving(state, recovering)
        else:
            recovering = [w.id for w in state.workers if w.state.recovering]
            if not recovering:
                raise InvalidField(
                    "recovering_workers", "empty, and the state has no recovering worker"
                )
        problem = self._pose(
            "pairing",
            method,
            pairing_cells(state, recovering),
            lambda: pairing_problem(
                state,
                self.config.cost,
                recovering,
                self.config.acceptance_rate if acceptance_rate is None else acceptance_rate,
                self.config.depth if depth is None else depth,
                cancel=settings.cancel,
            ),
        )
        assert isinstance(problem, PairingProblem)
        result = self._solve("pairing", problem, method, settings)
        plan = None if result.plan is None else pairing_decision(problem, result.plan)
        return Outcome(Status.of(result), plan)

    def _options(self) -> PlacementOptions:
        return self.config.placement

    # -- online placement ------------------------------------------------------------------------

    def place_request(
        self, request: Request, options: PlacementOptions | None = None, rule: str = "greedy"
    ) -> Placed:
        """Place one arriving request, add it to the view and publish the choice. ``rule`` is
        one of PLACEMENT_RULES: ``greedy`` (default) takes the holder that increases the
        placement objective the least (docs/planner.md, incremental form), ``lumen`` the paper's
        score, ``fixed-ring`` the next worker in ring order."""
        if rule not in PLACEMENT_RULES:
            raise InvalidField(
                "options.method",
                f"unknown incremental placement rule {rule!r};"
                f" choose from {', '.join(PLACEMENT_RULES)}",
            )
        opts = options or self._options()
        start = time.perf_counter()
        with self._lock:
            if not self._ready:
                raise NotReady("", "no cluster state reported yet: send ReportClusterState first")
            if request.id in self._requests:
                raise AlreadyExists("request.id", f"request {request.id} is already placed")
            home = self._index.get(request.home)
            if home is None:
                raise NotFound("request.home_worker", f"unknown worker {request.home}")
            if not self._workers[home].state.serves_target:
                raise NotReady(
                    "request.home_worker",
                    f"worker {request.home} is {self._workers[home].state.value}",
                )
            placement = self._placement_state(opts, rule)
            alone = ClusterState(
                self._workers, self._loads, {request.id: request}, self._kv_bytes_per_token
            )
            p = placement_problem(alone, self.config.cost, options=opts)
            j = placement.place(
                home, float(p.reserve_bytes[0]), float(p.work_s[0]), float(p.stream_bytes_s[0])
            )
            holder = self._workers[j].id if j >= 0 else None
            self._requests[request.id] = dataclasses.replace(
                request, checkpoint_holder=holder, checkpointed_tokens=0
            )
            self._snapshot = None
            self._version += 1
            version = self._version
            # Not placing it proves nothing unless it fits on no allowed worker even alone.
            proof = holder is None and unplaceable_requests(p).size > 0
            status = Status(
                method=f"incremental:{rule}",
                termination=Termination.FEASIBLE
                if holder is not None
                else (Termination.INFEASIBLE if proof else Termination.NO_SOLUTION),
                limit=Limit.NONE if proof else Limit.HEURISTIC,
                objective=placement.objective() if holder is not None else None,
                wall_time_s=time.perf_counter() - start,
                message=""
                if holder is not None
                else "no allowed worker has the host budget and stream capacity left",
            )
        if holder is not None:
            self._publish(PlacementDecision({request.id: holder}), status, version)
        return Placed(status, holder)

    def _placement_state(self, opts: PlacementOptions, rule: str) -> PlacementState:
        """The incremental placement state of the view, rebuilt after the view was replaced or
        re-optimized (or other settings are asked for): every held request is charged to its
        holder."""
        key = (opts.alpha, opts.require_other_node, rule)
        if self._placement is not None and self._placement_key == key:
            return self._placement
        state = self._snapshot_locked()
        placed = [r for r in state.requests.values() if r.checkpoint_holder is not None]
        # Every held request is in the problem, so its budgets are the workers' full budgets.
        problem = placement_problem(state, self.config.cost, placed, opts)
        ps = PlacementState(
            node=problem.node,
            wait_s=problem.wait_s,
            budget_bytes=problem.budget_bytes,
            can_hold=problem.can_hold,
            fail_weight=problem.fail_weight,
            stream_cap_bytes_s=problem.stream_cap_bytes_s,
            alpha=problem.alpha,
            require_other_node=problem.require_other_node,
            rule=rule,
        )
        for i, j in enumerate(problem.current.tolist()):
            ps.assign(
                int(problem.home[i]),
                j,
                float(problem.reserve_bytes[i]),
                float(problem.work_s[i]),
                float(problem.stream_bytes_s[i]),
            )
        self._placement, self._placement_key = ps, key
        return ps

    def reoptimize(self) -> PlanUpdate | None:
        """Batch placement over the view's requests whose home serves; moves the checkpoints the
        plan moves and publishes it. None when nothing changed since the last round, the solve
        found no plan, or the view was replaced while solving."""
        with self._lock:
            if not self._ready or self._version == self._reoptimized_version:
                return None
            state, epoch = self._snapshot_locked(), self._epoch
            self._reoptimized_version = self._version
        chosen = [r for r in state.requests.values() if state.worker(r.home).state.serves_target]
        if not chosen:
            return None
        settings = SolveSettings(time_limit_s=self.config.time_limit_s, cancel=self._stop)
        try:
            problem = self._pose(
                "placement",
                "",
                placement_cells(state, len(chosen)),
                lambda: placement_problem(
                    state, self.config.cost, chosen, self._options(), cancel=self._stop
                ),
            )
            assert isinstance(problem, PlacementProblem)
            result = self._solve("placement", problem, "", settings)
        except (OutOfTime, TooLarge):
            return None
        if result.plan is None:
            return None
        decision = placement_decision(
            result.plan, [r.id for r in chosen], [w.id for w in state.workers]
        )
        with self._lock:
            if self._epoch != epoch:
                return None
            moved = {}
            for rid, holder in decision.holder_by_request.items():
                r = self._requests.get(rid)
                if r is not None and r.checkpoint_holder != holder and r.home != holder:
                    moved[rid] = dataclasses.replace(
                        r, checkpoint_holder=holder, checkpointed_tokens=0
                    )
            if not moved:
                return None
            self._requests.update(moved)
            self._snapshot = None
            self._placement = None
            self._version += 1
            self._reoptimized_version = self._version
            version = self._version
        return self._publish(decision, Status.of(result), version)


def _check_ids(path: str, ids: Sequence[int], known: Any, what: str) -> None:
    seen: set[int] = set()
    for k, x in enumerate(ids):
        if x in seen:
            raise InvalidField(f"{path}[{k}]", f"duplicate {what} id {x}")
        seen.add(x)
        if x not in known:
            raise NotFound(f"{path}[{k}]", f"unknown {what} {x}")


def _check_not_serving(state: ClusterState, recovering: Sequence[int]) -> None:
    """Workers listed as recovering must be failed or recovering, not serving."""
    for k, x in enumerate(recovering):
        if state.worker(x).state.serves_target:
            raise InvalidField(
                f"recovering_workers[{k}]",
                f"worker {x} is serving; list failed or recovering workers only",
            )


def _failed_or_default(state: ClusterState, failed: Sequence[int]) -> list[int]:
    if failed:
        _check_ids("failed_workers", failed, {w.id for w in state.workers}, "worker")
        return list(failed)
    found = [w.id for w in state.workers if w.state is WorkerState.FAILED]
    if not found:
        raise InvalidField("failed_workers", "empty, and the state has no failed worker")
    return found
