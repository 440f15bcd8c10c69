"""Failure-handling policies: named compositions of planner methods, and draft pairing.

A policy says which planner function makes each of LUMEN's three decisions (docs/architecture.md):
the online checkpoint placement rule, the recovery method and the draft-pairing method. The
simulator, the live gateway, the launcher and the CLI all read policies from here, so a name
selects the same composition everywhere; the scenario schema's ``policies`` field takes the
values of :class:`Policy`.

:func:`pair_survivors` is the pairing step of a progressive policy: recovering workers whose
draft model is ready are paired with survivors by the policy's pairing method.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from lumen.planner.builders import pairing_problem
from lumen.planner.costmodel import CostModel
from lumen.planner.domain import ClusterState
from lumen.planner.plans import PairingPlan
from lumen.planner.problems import PairingProblem
from lumen.planner.result import SolveSettings
from lumen.planner.solve import solve

__all__ = [
    "POLICIES",
    "Policy",
    "PolicySpec",
    "check_policy",
    "pair_survivors",
]


class Policy(enum.StrEnum):
    """Recovery policies; the same names select the same planner compositions everywhere."""

    STOP_AND_RESTART = "stop-and-restart"
    FIXED_CHECKPOINTING = "fixed-checkpointing"
    LUMEN = "lumen"
    LUMEN_OPTIMAL = "lumen-optimal"
    #: Ablation: load-aware checkpointing and locality-aware dispatch, no progressive recovery.
    LUMEN_CHECKPOINT_DISPATCH = "lumen-checkpoint-dispatch"
    #: Ablation: speculation-assisted progressive recovery only, no checkpoints.
    LUMEN_PROGRESSIVE = "lumen-progressive"


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A failure-handling policy as planner functions.

    Attributes:
        placement: online checkpoint placement rule (None: no checkpoints).
        recovery: planner method for the recovery problem.
        pairing: planner method for draft pairing (None: no progressive recovery).
        draft_if_worth: load the draft only when the pairing problem posed at the failure
            predicts more decode time saved than the draft load delays the target reload
            (otherwise reload the target straight away); the paper's rule always loads it.
    """

    placement: str | None
    recovery: str
    pairing: str | None
    draft_if_worth: bool = False

    @property
    def checkpoints(self) -> bool:
        return self.placement is not None

    @property
    def progressive(self) -> bool:
        return self.pairing is not None


#: Every :class:`Policy` and its planner functions, keyed by the policy's name.
POLICIES: Mapping[str, PolicySpec] = MappingProxyType(
    {
        Policy.STOP_AND_RESTART.value: PolicySpec(None, "stop-and-restart", None),
        Policy.FIXED_CHECKPOINTING.value: PolicySpec("fixed-ring", "restore-on-holder", None),
        Policy.LUMEN.value: PolicySpec("lumen", "lumen", "lumen"),
        Policy.LUMEN_OPTIMAL.value: PolicySpec("greedy", "auto", "auto", draft_if_worth=True),
        Policy.LUMEN_CHECKPOINT_DISPATCH.value: PolicySpec("lumen", "lumen", None),
        Policy.LUMEN_PROGRESSIVE.value: PolicySpec(None, "stop-and-restart", "lumen"),
    }
)


def check_policy(policy: str) -> PolicySpec:
    """The planner functions of ``policy``; ValueError naming the supported ones otherwise."""
    try:
        return POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unsupported failure policy {policy!r}; supported: {', '.join(sorted(POLICIES))}"
        ) from None


def pair_survivors(
    state: ClusterState,
    cost_model: CostModel,
    recovering: Sequence[int],
    taken: set[int],
    acceptance_rate: float,
    depth: int,
    method: str,
    settings: SolveSettings | None = None,
    *,
    concurrent: bool = True,
    parallel_load: bool = True,
) -> list[tuple[int, int]]:
    """``(recovering worker, survivor)`` pairs for the drafts ready now.

    One pairing problem (:func:`lumen.planner.builders.pairing_problem`) over the ``recovering``
    workers and the survivors not in ``taken`` (already assisted by a draft), solved by
    ``method``. Workers that fail together are paired together. Empty when no survivor is free
    or the solver finds no plan. ``concurrent`` and ``parallel_load`` are the readings of draft
    timing and loading the gains assume (:func:`lumen.planner.builders.pairing_problem`).
    """
    full = pairing_problem(
        state,
        cost_model,
        recovering,
        acceptance_rate,
        depth,
        concurrent=concurrent,
        parallel_load=parallel_load,
    )
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
