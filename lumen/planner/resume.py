"""The one rule for reading a recovery plan: where and how each interrupted request resumes.

The simulator and the live gateway both turn a :class:`~lumen.planner.decisions.RecoveryDecision`
into :class:`Resumption` records with :func:`resumptions`, so a plan means the same thing in
both (tests/gateway/test_resume_parity.py feeds one plan and state to both paths). Per planned mode:

- ``restore``: the holder's valid checkpointed prefix is copied host -> GPU on the holder, then
  the tail past it is re-prefilled;
- ``transfer``: the prefix is sent to the destination over the network, then restored there;
- ``recompute``: the whole context is prefilled again;
- ``wait``: the request waits for its recovering destination to serve again; there it restores
  the prefix (transferred from the live holder) only when that is faster than recomputing the
  whole context. This is the price the recovery problem gives wait mode
  (:func:`lumen.planner.builders.recovery_problem`: ``min(recompute, transfer + restore +
  tail)``), so the executed plan is the planned one.

A checkpoint is usable only while its holder is alive (a worker that failed lost its host
memory) and holds a non-empty prefix; otherwise every mode recomputes. Requests the decision
does not cover, or all of them when there is no decision, come back with ``worker`` None: the
executor's own fallback decides (the gateway sends them to its least-loaded serving worker, the
simulator lets each wait for its home to come back).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lumen.planner.builders import recompute_time
from lumen.planner.costmodel import CostModel
from lumen.planner.decisions import RecoveryAssignment, RecoveryDecision
from lumen.planner.domain import ClusterState

__all__ = ["Resumption", "resumptions"]


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where one interrupted request resumes.

    Attributes:
        request_id: the request.
        worker: its destination (None: not covered by the plan, the executor's fallback).
        mode: the planned mode (one of ``RECOVERY_MODES``).
        restore_from: the holder whose checkpoint is restored (None: recompute everything).
        restored: context tokens restored from that checkpoint.
        delay_s: seconds of checkpoint transfer and host -> GPU copy before the tail's prefill.
        wait: the destination is recovering; the request resumes once it serves again.
    """

    request_id: int
    worker: int | None
    mode: str = "recompute"
    restore_from: int | None = None
    restored: int = 0
    delay_s: float = 0.0
    wait: bool = False


def resumptions(
    decision: RecoveryDecision | None,
    state: ClusterState,
    cost: CostModel,
    interrupted: Sequence[int],
    alive: Iterable[int],
    chunk: int = 1024,
) -> list[Resumption]:
    """Where each of the ``interrupted`` request ids resumes (module docstring).

    Planned requests come first, in the decision's order (machine by machine, each machine's
    resume order), then the uncovered ones in ``interrupted`` order. ``alive`` are the workers
    whose host memory still holds checkpoints; ``chunk`` is the prefill chunk the recompute
    times assume.
    """
    live = set(alive)
    out: list[Resumption] = []
    seen: set[int] = set()
    if decision is not None:
        by_id = {a.request_id: a for a in decision.assignments}
        for _, order in decision.orders:
            for rid in order:
                if rid in by_id and rid not in seen and rid in state.requests:
                    out.append(_resume(by_id[rid], state, cost, live, chunk))
                    seen.add(rid)
    out.extend(Resumption(rid, None) for rid in interrupted if rid not in seen)
    return out


def _resume(
    a: RecoveryAssignment, state: ClusterState, cost: CostModel, live: set[int], chunk: int
) -> Resumption:
    r = state.request(a.request_id)
    holder, prefix = r.checkpoint_holder, r.checkpointed_tokens
    wait = a.mode == "wait"
    plain = Resumption(a.request_id, a.destination_worker, a.mode, wait=wait)
    if holder is None or holder not in live or prefix <= 0 or a.mode == "recompute":
        return plain
    if a.mode == "restore":
        delay = cost.kv_restore_time(prefix)
    else:
        delay = cost.kv_transfer_time(prefix) + cost.kv_restore_time(prefix)
        if wait:
            context = r.context_tokens
            tail = recompute_time(cost, context - prefix, prefix, chunk)
            if delay + tail >= recompute_time(cost, context, 0, chunk):
                return plain
    return Resumption(a.request_id, a.destination_worker, a.mode, holder, prefix, delay, wait)
