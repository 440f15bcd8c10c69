"""Assisting: the recovering worker's draft proposes tokens for its survivor's requests.

While the target reloads, the recovering worker's draft mirrors the running requests of the
survivor it was paired with and proposes K tokens for each; the survivor verifies them inside its
own next step (:meth:`~lumen.executor.engine.Engine.submit_proposals`). The survivor is the source
of truth: a proposal made from a history that has moved on is dropped by its engine, and every
token it emits is one its target chose, so outputs are exactly the target's alone. Only greedy
requests are mirrored: for sampled ones the rejection rule keeps the target's distribution but
not the exact draws of its seed, and LUMEN's outputs must not depend on whether a draft helped.

The survivor is reached through an :class:`AssistLink`. :class:`~.core.WorkerCore` is one (the
in-process link, used by tests and single-process clusters); across processes it is
:class:`~lumen.executor.worker.assist_link.GrpcAssistLink` (the survivor's ``MirrorRequests`` and
``SubmitProposals`` calls). A link with a ``close()`` method is closed when the assistant stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lumen.executor.engine.interface import Engine, Proposal, RequestSpec

__all__ = ["AssistLink", "AssistStats", "Assistant", "Mirror"]

log = logging.getLogger(__name__)

#: Tokens proposed per request and round (the paper's K).
DEFAULT_K = 4


@dataclass(frozen=True, slots=True)
class Mirror:
    """The survivor's requests past their prefill, as of engine step ``steps``."""

    steps: int
    specs: tuple[RequestSpec, ...]


class AssistLink(Protocol):
    """What an assisting worker needs of its survivor."""

    def mirrored_requests(self) -> Mirror: ...

    def accept_proposals(self, proposals: Sequence[Proposal]) -> int: ...


@dataclass(frozen=True, slots=True)
class AssistStats:
    rounds: int
    proposals: int
    queued: int


class Assistant:
    """A thread that proposes for the survivor once per survivor step.

    Args:
        draft: the draft engine (used only by this thread while it runs).
        link: the survivor.
        k: tokens per proposal.
        poll_s: pause while the survivor has not stepped since the last round.
    """

    def __init__(
        self, draft: Engine, link: AssistLink, k: int = DEFAULT_K, poll_s: float = 0.002
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.draft = draft
        self.link = link
        self.k = k
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._rounds = self._proposals = self._queued = 0
        self._thread = threading.Thread(target=self._run, name="lumen-assist", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop proposing (the draft engine is free to go afterwards)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._close_link()

    def stats(self) -> AssistStats:
        return AssistStats(self._rounds, self._proposals, self._queued)

    def _run(self) -> None:
        last_steps = -1
        mirrored: set[str] = set()
        while not self._stop.is_set():
            try:
                mirror = self.link.mirrored_requests()
                if mirror.steps == last_steps or not mirror.specs:
                    self._forget(mirrored - {s.request_id for s in mirror.specs})
                    mirrored &= {s.request_id for s in mirror.specs}
                    self._stop.wait(self.poll_s)
                    continue
                last_steps = mirror.steps
                current = {s.request_id for s in mirror.specs}
                self._forget(mirrored - current)
                mirrored = current
                proposals = self.draft.propose(mirror.specs, self.k)
                self._queued += self.link.accept_proposals(proposals)
                self._proposals += len(proposals)
                self._rounds += 1
            except Exception as exc:  # the survivor is gone or stopping: stop assisting
                log.warning("assisting stopped: %s", exc)
                self._close_link()
                return

    def _close_link(self) -> None:
        close = getattr(self.link, "close", None)
        if callable(close):
            close()

    def _forget(self, request_ids: set[str]) -> None:
        for request_id in request_ids:
            self.draft.abort(request_id)
