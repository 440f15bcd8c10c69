"""What a cluster simulation takes beyond the trace (:class:`ClusterOptions`) and what it
returns (:class:`SimulationResult` with its :class:`SimulationSummary`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import numpy.typing as npt

from lumen.scenarios.schema import AssistedBatches, AssistTiming, DraftLoad, GatewayRule
from lumen.simulator.metrics import Distribution

__all__ = ["ClusterOptions", "SimulationResult", "SimulationSummary"]


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    """Headline figures of a run.

    Attributes:
        decode_tokens: output tokens produced (first tokens included).
        prefill_tokens: prompt tokens computed.
        makespan_s: simulated time until the last request finished.
        wall_s: host seconds the simulation took.
        events: kernel events processed.
    """

    requests: int
    ttft_s: Distribution
    tpot_s: Distribution
    e2e_s: Distribution
    decode_tokens: int
    prefill_tokens: int
    makespan_s: float
    wall_s: float
    events: int

    @property
    def decode_tokens_per_wall_s(self) -> float:
        return self.decode_tokens / self.wall_s if self.wall_s > 0 else math.inf


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Per-request outcomes, indexed by request id (the trace order), and their summary.

    ``tpot_s`` is ``(e2e - ttft) / (output_tokens - 1)``, NaN for single-token outputs (they
    are left out of the TPOT summary).

    Attributes:
        interrupted: per request, whether a failure interrupted it at least once.
        interrupted_requests: how many requests were interrupted (at least once).
        recomputed_tokens: KV tokens lost to failures and computed again (the prompt chunks a
            prefilling request had done; prompt plus output but the newest token for a
            decoding one) minus what checkpoints restored.
        restored_tokens, restored_bytes: KV restored from checkpoints after failures.
        checkpoint_bytes_sent: checkpoint bytes that left the workers' links;
            ``checkpoint_bytes_dropped``: bytes still queued on a link when its worker failed.
        unplaced_checkpoints: admissions that found no holder with budget.
        peak_checkpoint_reserved_bytes: the most host memory any holder had reserved.
        verify_steps: iterations that verified draft tokens (progressive recovery).
        drafts_loaded: recovering workers that loaded a draft model.
        recovery_modes: interrupted requests per recovery mode taken.
    """

    arrival_s: npt.NDArray[np.float64]
    ttft_s: npt.NDArray[np.float64]
    tpot_s: npt.NDArray[np.float64]
    e2e_s: npt.NDArray[np.float64]
    worker: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    worker_decode_tokens: npt.NDArray[np.int64]
    worker_kv_peak_tokens: npt.NDArray[np.int64]
    interrupted: npt.NDArray[np.bool_]
    interrupted_requests: int
    recomputed_tokens: int
    summary: SimulationSummary
    seed: int
    policy: str = "stop-and-restart"
    restored_tokens: int = 0
    restored_bytes: int = 0
    checkpoint_bytes_sent: int = 0
    checkpoint_bytes_dropped: int = 0
    unplaced_checkpoints: int = 0
    peak_checkpoint_reserved_bytes: int = 0
    verify_steps: int = 0
    drafts_loaded: int = 0
    recovery_modes: dict[str, int] = field(default_factory=dict)


#: Readings of the paper the simulator supports (the scenario's ``readings`` block).
ASSIST_TIMINGS: tuple[str, ...] = get_args(AssistTiming)
DRAFT_LOADS: tuple[str, ...] = get_args(DraftLoad)
GATEWAY_RULES: tuple[str, ...] = get_args(GatewayRule)
ASSISTED_BATCHES: tuple[str, ...] = get_args(AssistedBatches)


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """Cluster and policy parameters beyond the workers' batching.

    Attributes:
        workers_per_node: worker ``i`` is on node ``i // workers_per_node``.
        checkpoint_budget_bytes: host memory per worker for holding checkpoints.
        link_bytes_s: checkpoint link bandwidth per worker (None: the cost model's network).
        holder_outside_node: a holder is never on its home's node.
        alpha: weight of restore pressure in placement.
        speculation_depth, acceptance_rate: the draft's K and a.
        planner_time_limit_s: time limit of each planner solve.
        assist: draft timing, ``concurrent`` (the survivor never waits for drafts) or
            ``synchronous`` (it waits for the draft's proposal steps before verifying).
        draft_load: ``parallel`` (draft and target read from separate drives at once) or
            ``serial`` (the draft first).
        assisted_batches: an assisted survivor's iterations, ``mixed`` (prompt chunks and
            verify steps together) or ``alternate`` (separate iterations, taking turns).
        gateway: routing rule of new requests, ``least-waiting``, ``least-requests`` or
            ``round-robin``.
    """

    workers_per_node: int = 1
    checkpoint_budget_bytes: float = 0.0
    link_bytes_s: float | None = None
    holder_outside_node: bool = True
    alpha: float = 1.0
    speculation_depth: int = 4
    acceptance_rate: float = 0.6
    planner_time_limit_s: float = 1.0
    assist: str = "concurrent"
    draft_load: str = "parallel"
    assisted_batches: str = "mixed"
    gateway: str = "least-waiting"

    @property
    def concurrent_drafts(self) -> bool:
        """The survivor never waits for the draft (``assist == "concurrent"``)."""
        return self.assist == "concurrent"

    @property
    def parallel_draft_load(self) -> bool:
        """Draft and target are read at once (``draft_load == "parallel"``)."""
        return self.draft_load == "parallel"

    def __post_init__(self) -> None:
        if self.workers_per_node < 1:
            raise ValueError(f"workers_per_node must be >= 1, got {self.workers_per_node}")
        if not self.checkpoint_budget_bytes >= 0.0:
            raise ValueError("checkpoint_budget_bytes must be >= 0")
        if self.link_bytes_s is not None and not self.link_bytes_s > 0.0:
            raise ValueError("link_bytes_s must be > 0")
        if self.speculation_depth < 1 or not 0.0 <= self.acceptance_rate < 1.0:
            raise ValueError("speculation needs depth >= 1 and 0 <= acceptance_rate < 1")
        if not self.planner_time_limit_s > 0.0:
            raise ValueError("planner_time_limit_s must be > 0")
        for name, value, allowed in (
            ("assist", self.assist, ASSIST_TIMINGS),
            ("draft_load", self.draft_load, DRAFT_LOADS),
            ("assisted_batches", self.assisted_batches, ASSISTED_BATCHES),
            ("gateway", self.gateway, GATEWAY_RULES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
