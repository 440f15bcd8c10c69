"""Gateway settings, and a request waiting in the gateway's pending list."""

from __future__ import annotations

from dataclasses import dataclass, field

from lumen.executor.gateway.health import HealthSettings
from lumen.executor.gateway.history import TrackedRequest
from lumen.planner.policies import check_policy


@dataclass(frozen=True)
class GatewayConfig:
    """Gateway settings.

    Attributes:
        policy: failure policy, as in the simulator (``lumen.planner.policies.POLICIES``):
            its placement rule picks checkpoint holders, its recovery method plans recovery.
        scenario: bundled scenario or path whose cost model poses the planner's problems
            (used when no cost model is given).
        workers_per_node: consecutive workers sharing a node (a failure domain).
        planner_retry_s: after the planner service could not be reached, answer locally for
            this long before trying it again.
        wait_timeout_s: how long a request planned to wait for its recovering worker waits
            before it goes to the least-loaded serving worker instead.
        report_interval_s: how often the cluster state is reported to the planner service.
        max_resumes: a request resumed more often than this ends with an error.
        acceptance_rate, speculation_depth: the draft's expected acceptance rate and the
            tokens it proposes per step (K), with which the pairing problem is posed.
        max_model_len: the model's context (prompt and output tokens); None: the smallest
            the workers report. Longer requests are refused (HTTP 400).
        max_streams_per_worker: requests running on one worker at most; the rest wait in
            the gateway's queue, so a burst never takes every handler thread of a worker
            (its heartbeat answers would queue behind token streams).
    """

    policy: str = "lumen"
    model: str = "lumen"
    vocab_size: int = 256
    health: HealthSettings = field(default_factory=HealthSettings)
    workers_per_node: int = 1
    scenario: str = "paper-8w-qwen3-14b"
    planner_retry_s: float = 5.0
    recovery_time_limit_s: float = 1.0
    prefill_chunk_tokens: int = 1024
    wait_timeout_s: float = 120.0
    report_interval_s: float = 5.0
    max_resumes: int = 16
    max_tokens_limit: int = 4096
    max_prompt_tokens: int = 32768
    acceptance_rate: float = 0.6
    speculation_depth: int = 4
    max_model_len: int | None = None
    max_streams_per_worker: int = 48

    def __post_init__(self) -> None:
        check_policy(self.policy)
        if self.workers_per_node < 1 or self.max_resumes < 0:
            raise ValueError("workers_per_node must be >= 1 and max_resumes >= 0")
        if self.max_streams_per_worker < 1:
            raise ValueError("max_streams_per_worker must be >= 1")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("max_model_len must be >= 2")
        if not 0.0 < self.acceptance_rate < 1.0 or self.speculation_depth < 1:
            raise ValueError("acceptance_rate must be in (0, 1) and speculation_depth >= 1")


@dataclass
class Pending:
    """A request waiting for a worker: ``target`` (None: the least-loaded serving worker)
    once it serves, or any worker after ``deadline_s``; restoring from ``restore_from``; not
    before ``not_before_s`` (a back-off after a stream broke on a live worker)."""

    request: TrackedRequest
    target: int | None = None
    restore_from: int | None = None
    deadline_s: float = 0.0
    resumed: bool = False
    not_before_s: float = 0.0
