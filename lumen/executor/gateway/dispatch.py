"""Where requests run and where their checkpoints go.

:class:`WorkerBoard` keeps each worker's last status and whether it is up. New and resumed
requests go to the least-loaded serving worker: load is the number of the gateway's requests
on it (the gateway is the only source of requests, so this count is exact and fresher than any
status), ties broken by the waiting time the worker last reported, then by id.

:class:`HolderPlacer` picks each request's checkpoint holder by the policy's placement rule
(``greedy``, ``lumen`` or ``fixed-ring``; none for Stop-and-Restart) through the planner's
incremental :class:`~lumen.planner.placement_state.PlacementState`, or asks the planner service
(``PlannerClient.place_request``) when one is configured and reachable, recording its answer in
the local state as well so that a fallback starts from the true loads. The state is rebuilt
whenever a worker fails or returns (a failed worker holds nothing); budgets are the workers'
reported host budgets, reserved only by this gateway's requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lumen.executor.gateway.history import TrackedRequest
from lumen.executor.gateway.planner_link import PlannerLink
from lumen.executor.worker.api import WorkerStatus
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import Request
from lumen.planner.placement_state import PlacementState
from lumen.planner.service.client import PlannerClient, PlannerError


class WorkerBoard:
    """Workers' last statuses, up/down, and the gateway's requests on each (module docstring)."""

    def __init__(self, worker_ids: Sequence[int]) -> None:
        self.ids = tuple(worker_ids)
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"duplicate worker ids in {list(self.ids)}")
        self.index = {w: k for k, w in enumerate(self.ids)}
        self._status: dict[int, WorkerStatus | None] = dict.fromkeys(self.ids)
        self._up = dict.fromkeys(self.ids, False)
        self._on: dict[int, set[TrackedRequest]] = {w: set() for w in self.ids}
        self._lock = threading.Lock()

    def update(self, status: WorkerStatus) -> None:
        with self._lock:
            self._status[status.worker_id] = status

    def status(self, worker_id: int) -> WorkerStatus | None:
        with self._lock:
            return self._status[worker_id]

    def max_model_len(self) -> int | None:
        """The smallest context limit the workers reported (None: none reported one)."""
        with self._lock:
            known = [s.max_model_len for s in self._status.values() if s and s.max_model_len]
        return min(known) if known else None

    def set_up(self, worker_id: int, up: bool) -> None:
        with self._lock:
            self._up[worker_id] = up

    def is_up(self, worker_id: int) -> bool:
        with self._lock:
            return self._up[worker_id]

    def serving(self, worker_id: int) -> bool:
        """Up and running the target model (stage "serving")."""
        with self._lock:
            status = self._status[worker_id]
            return self._up[worker_id] and status is not None and status.stage == "serving"

    def attach(self, request: TrackedRequest, worker_id: int) -> None:
        with self._lock:
            self._on[worker_id].add(request)

    def detach(self, request: TrackedRequest, worker_id: int) -> None:
        with self._lock:
            self._on[worker_id].discard(request)

    def requests_on(self, worker_id: int) -> list[TrackedRequest]:
        with self._lock:
            return list(self._on[worker_id])

    def running(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._on.values())

    def full(self, worker_id: int, cap: int | None) -> bool:
        """Whether ``worker_id`` runs ``cap`` of the gateway's requests already."""
        with self._lock:
            return cap is not None and len(self._on[worker_id]) >= cap

    def least_loaded(self, exclude: Sequence[int] = (), cap: int | None = None) -> int | None:
        """The serving worker with the fewest of the gateway's requests (None: none serves,
        or every serving worker runs ``cap`` requests already)."""
        best: tuple[int, float, int] | None = None
        with self._lock:
            for w in self.ids:
                status = self._status[w]
                if w in exclude or not self._up[w] or status is None:
                    continue
                if status.stage != "serving" or (cap is not None and len(self._on[w]) >= cap):
                    continue
                key = (len(self._on[w]), status.waiting_time_s, w)
                if best is None or key < best:
                    best = key
        return None if best is None else best[2]


@dataclass(frozen=True)
class _Placed:
    home: int
    holder: int
    reserve_bytes: float
    work_s: float


class HolderPlacer:
    """Checkpoint holders by the policy's rule, locally or through the planner (module doc)."""

    def __init__(
        self,
        rule: str | None,
        board: WorkerBoard,
        cost: CostModel,
        workers_per_node: int = 1,
        link: PlannerLink | None = None,
        report: Callable[[], None] | None = None,
    ) -> None:
        self.rule = rule
        self.board = board
        self.cost = cost
        self.workers_per_node = workers_per_node
        self.link = link
        self._report = report
        self._placed: dict[int, _Placed] = {}
        self._lock = threading.Lock()
        self._state: PlacementState | None = None

    def rebuild(self) -> None:
        """A fresh state from the board; every live placement is recorded again."""
        if self.rule is None:
            return
        ids = self.board.ids
        statuses = [self.board.status(w) for w in ids]
        with self._lock:
            state = PlacementState(
                node=[k // self.workers_per_node for k in range(len(ids))],
                wait_s=[s.waiting_time_s if s is not None else 0.0 for s in statuses],
                budget_bytes=[s.host_budget_bytes if s is not None else 0 for s in statuses],
                can_hold=[self.board.serving(w) for w in ids],
                rule=self.rule,
            )
            for p in self._placed.values():
                state.assign(p.home, p.holder, p.reserve_bytes, p.work_s)
            self._state = state

    def update_wait(self, worker_id: int, wait_s: float) -> None:
        with self._lock:
            if self._state is not None:
                self._state.set_wait(self.board.index[worker_id], wait_s)

    def choose(self, request: TrackedRequest, home: int, resumed: bool) -> int | None:
        """The holder of ``request`` running on ``home`` (None: no checkpoint)."""
        if self.rule is None:
            return None
        self.release(request)
        reserve = float(len(request.prompt_token_ids) + request.max_tokens)
        reserve *= self.cost.kv_bytes_per_token
        work = self.cost.kv_restore_time(request.context_tokens)
        holder: int | None = None
        asked = False
        if self.link is not None and not resumed:
            placed = self._ask_planner(request, home)
            if placed is not False:
                asked = True
                holder = placed
        with self._lock:
            if self._state is None:
                return None
            h = self.board.index[home]
            if asked:
                j = -1 if holder is None else self.board.index.get(holder, -1)
            else:
                j = self._state.choose(h, reserve, work)
            if j < 0:
                return None
            self._state.assign(h, j, reserve, work)
            self._placed[request.request_id] = _Placed(h, j, reserve, work)
            return self.board.ids[j]

    def _ask_planner(self, request: TrackedRequest, home: int) -> int | bool | None:
        """The planner's holder (None: nothing fits), or False when it could not answer."""
        assert self.link is not None and self.rule is not None
        rule = self.rule
        domain = Request(
            request.request_id,
            home,
            len(request.prompt_token_ids),
            len(request.history),
            request.max_tokens,
        )

        def place(client: PlannerClient) -> tuple[int | None]:
            try:
                return (client.place_request(domain, rule=rule).holder,)
            except PlannerError as exc:
                if exc.code != "FAILED_PRECONDITION" or self._report is None:
                    raise
            self._report()  # the planner has no view yet (it restarted): report, then retry
            return (client.place_request(domain, rule=rule).holder,)

        got = self.link.call("placement", place)
        return False if got is None else got[0]

    def release(self, request: TrackedRequest) -> None:
        """Forget the request's reservation (it ended or moved)."""
        with self._lock:
            p = self._placed.pop(request.request_id, None)
            if p is not None and self._state is not None:
                self._state.release(p.home, p.holder, p.reserve_bytes, p.work_s)
