"""The pairing driver: a recovering worker whose draft is up drafts for a survivor.

Speculation-assisted recovery (docs/architecture.md) needs someone to pair each recovering worker
with a survivor once its draft model is loaded. The gateway does it, from what its heartbeats
see:

- a worker that is up and reports ``draft-loading`` is a candidate; so is one in
  ``assisting`` whose survivor is no longer serving (it failed, or the gateway never paired it);
- for each candidate, on a thread of its own every heartbeat interval, the driver picks a
  survivor among the serving workers no other draft assists: with a planner service through
  ``PlanPairing`` with the policy's pairing method; without one (or when the service cannot
  answer, or names a survivor that is taken) locally, ``pairing_problem`` on the cluster
  snapshot solved with that method; and when the snapshot cannot pose the problem (the cost
  model has no draft) by the paper's rule, the survivor with the longest waiting time;
- it then calls ``set_stage("assisting", survivor)``. The worker refuses (FAILED_PRECONDITION)
  until its draft is loaded, so the driver simply tries again next round: the worker's refusal
  is the readiness signal, and the pair is chosen on the loads of the moment the draft is up.

A policy without progressive recovery (``PolicySpec.pairing`` None: stop-and-restart,
fixed-checkpointing) gets no driver: its restarted workers reload the target by themselves.
Pairings are counted in ``lumen_gateway_pairings_total{source}``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from lumen.executor.gateway.dispatch import WorkerBoard
from lumen.executor.gateway.metrics import GatewayMetrics
from lumen.executor.gateway.planner_link import PlannerLink
from lumen.executor.worker.api import WorkerAPI
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState
from lumen.planner.policies import pair_survivors
from lumen.planner.result import SolveSettings
from lumen.planner.service.client import PlannerClient

__all__ = ["PairingDriver", "longest_waiting"]

log = logging.getLogger(__name__)


def longest_waiting(board: WorkerBoard, eligible: Sequence[int]) -> int | None:
    """The paper's rule: the eligible survivor with the longest waiting time (ties: lowest
    id); None when there is none."""
    best: tuple[float, int] | None = None
    for s in eligible:
        status = board.status(s)
        wait = status.waiting_time_s if status is not None else 0.0
        if best is None or (-wait, s) < (-best[0], best[1]):
            best = (wait, s)
    return None if best is None else best[1]


class PairingDriver:
    """Pairs recovering workers with survivors (module docstring).

    Args:
        workers: the gateway's workers by id.
        board: their statuses and who is up.
        method: the policy's pairing method (a planner backend name, e.g. ``lumen``).
        state: the cluster snapshot (the same the recovery planner sees).
        cost: the cost model ``pairing_problem`` poses the problem with.
        link: the planner service (None: plan locally).
        acceptance_rate, depth: the speculation parameters of the pairing problem.
        interval_s: how often candidates are tried.
    """

    def __init__(
        self,
        workers: Mapping[int, WorkerAPI],
        board: WorkerBoard,
        method: str,
        state: Callable[[], ClusterState],
        cost: CostModel,
        metrics: GatewayMetrics,
        *,
        link: PlannerLink | None = None,
        acceptance_rate: float = 0.6,
        depth: int = 4,
        interval_s: float = 0.5,
        time_limit_s: float = 1.0,
    ) -> None:
        self.workers = workers
        self.board = board
        self.method = method
        self.state = state
        self.cost = cost
        self.metrics = metrics
        self.link = link
        self.acceptance_rate = acceptance_rate
        self.depth = depth
        self.interval_s = interval_s
        self.time_limit_s = time_limit_s
        #: recovering worker -> the survivor its draft assists.
        self.pairs: dict[int, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lumen-pairing", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def observe(self, worker: int) -> None:
        """A heartbeat of ``worker`` arrived: wake the driver when it may need a survivor."""
        status = self.board.status(worker)
        if status is not None and status.stage in ("draft-loading", "assisting"):
            self._wake.set()

    def candidates(self) -> list[int]:
        """Recovering workers that need a survivor now (and forget pairs that ended)."""
        out: list[int] = []
        with self._lock:
            for w in self.board.ids:
                status = self.board.status(w)
                stage = status.stage if status is not None and self.board.is_up(w) else ""
                paired = self.pairs.get(w)
                if stage == "draft-loading" and paired is not None:
                    continue  # just paired: its heartbeat has not caught up yet
                if stage in ("draft-loading", "assisting") and (
                    paired is None or not self.board.serving(paired)
                ):
                    self.pairs.pop(w, None)
                    out.append(w)
                elif stage not in ("draft-loading", "assisting"):
                    self.pairs.pop(w, None)
        return out

    def step(self) -> list[tuple[int, int]]:
        """One round: try to pair every candidate; returns the pairs made."""
        made: list[tuple[int, int]] = []
        for w in self.candidates():
            with self._lock:
                taken = set(self.pairs.values())
            eligible = [
                s for s in self.board.ids if s != w and s not in taken and self.board.serving(s)
            ]
            if not eligible:
                continue
            survivor, source = self.choose(w, eligible)
            if survivor is None:
                continue
            try:
                self.workers[w].set_stage("assisting", survivor)
            except Exception as exc:  # draft not loaded yet (FAILED_PRECONDITION), or gone
                if getattr(exc, "code", "") == "FAILED_PRECONDITION":
                    log.debug("worker %d: draft not ready: %s", w, exc)
                else:
                    log.warning("pairing worker %d with %d failed: %s", w, survivor, exc)
                continue
            with self._lock:
                self.pairs[w] = survivor
            self.metrics.pairings.labels(source).inc()
            log.info("worker %d drafts for survivor %d (%s)", w, survivor, source)
            made.append((w, survivor))
        return made

    def choose(self, worker: int, eligible: Sequence[int]) -> tuple[int | None, str]:
        """The survivor for ``worker`` and where the choice came from: "planner", "local"
        (the policy's method on the snapshot) or "rule" (the longest-waiting survivor)."""
        state = self.state()
        if self.link is not None:
            method, limit = self.method, self.time_limit_s

            def ask(client: PlannerClient) -> int | None:
                outcome = client.plan_pairing(state, [worker], method=method, time_limit_s=limit)
                pairs = outcome.plan.pairs if outcome.plan is not None else ()
                return next(
                    (p.survivor_worker for p in pairs if p.recovering_worker == worker), None
                )

            got = self.link.call("pairing", ask)
            if got is not None and got in eligible:
                return got, "planner"
        taken = {s for s in self.board.ids if s not in eligible}
        try:
            pairs = pair_survivors(
                state,
                self.cost,
                [worker],
                taken,
                self.acceptance_rate,
                self.depth,
                self.method,
                SolveSettings(time_limit_s=self.time_limit_s),
            )
        except Exception as exc:  # the snapshot cannot pose the problem: the paper's rule
            log.debug("pairing problem for worker %d not posed (%s): longest waiting", worker, exc)
            return longest_waiting(self.board, eligible), "rule"
        survivor = next((s for r, s in pairs if r == worker and s in eligible), None)
        return survivor, "local"

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception:  # keep driving; the candidates are tried again next round
                log.exception("pairing round failed")
