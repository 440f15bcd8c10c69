"""Speculation-assisted progressive recovery: pairing recovering workers with survivors.

A recovering worker of a progressive policy goes DraftLoading -> Assisting -> Switching ->
Serving (DESIGN.md section 2 (3)). Its timeline after the failure at ``t0``:

- ``t0 .. t0 + draft_load``: the draft model is read from SSD and copied to the GPUs;
- ``.. + ssd_to_host``: the target weights stream SSD -> host (the SSD is free again only
  after the draft load, so the target arrives ``draft_load`` later than without a draft);
  meanwhile the worker drafts for the survivor the pairing plan gave it (:class:`Assist`);
- ``.. + host_to_gpu``: Switching, the draft is freed and the target copied to the GPUs;
- then Serving.

Workers that fail together are paired together: one pairing problem
(:func:`lumen.planner.builders.pairing_problem`) over them and the survivors that no draft
assists yet, solved by the policy's planner method.
"""

from __future__ import annotations

from collections.abc import Sequence

from lumen.planner.builders import pairing_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState
from lumen.planner.plans import PairingPlan
from lumen.planner.problems import PairingProblem
from lumen.planner.result import SolveSettings
from lumen.planner.solve import solve

__all__ = ["pair_survivors"]


def pair_survivors(
    state: ClusterState,
    cost_model: CostModel,
    recovering: Sequence[int],
    taken: set[int],
    acceptance_rate: float,
    depth: int,
    method: str,
    settings: SolveSettings | None = None,
) -> list[tuple[int, int]]:
    """``(recovering worker, survivor)`` pairs for the drafts ready now; survivors in ``taken``
    (already assisted) are left out. A survivor only verifies when that pays
    (:meth:`lumen.simulator.worker.Worker.set_assist`), so a pair worth nothing costs nothing."""
    full = pairing_problem(state, cost_model, recovering, acceptance_rate, depth)
    keep = [k for k, s in enumerate(full.survivor_ids.tolist()) if s not in taken]
    if not keep or len(full.recovering_ids) == 0:
        return []
    problem = PairingProblem.build(
        saved_s=full.saved_s[:, keep],
        recovering_ids=full.recovering_ids,
        survivor_ids=full.survivor_ids[keep],
        survivor_wait_s=full.survivor_wait_s[keep],
    )
    result = solve(problem, method, settings)
    plan = result.plan
    if not isinstance(plan, PairingPlan):
        return []
    rec_ids = problem.recovering_ids.tolist()
    sur_ids = problem.survivor_ids.tolist()
    return [(int(rec_ids[r]), int(sur_ids[s])) for r, s in plan.pairs]
