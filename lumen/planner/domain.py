"""Domain model shared by the planner, the simulator and the executor layer.

Everything here is a plain value: workers, requests and per-worker load are frozen dataclasses,
and :class:`ClusterState` is an immutable snapshot that the planner reads. Mutating the cluster
means building a new snapshot (``with_request``, ``with_worker_state``...), which keeps plans
reproducible: a plan always names the exact state it was made for.

Identifiers are small non-negative integers. Workers are grouped into *nodes*; a node is a
failure domain (a node failure takes all of its workers), which is why checkpoint placement may
require a holder outside its request's home node.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType


class DomainError(ValueError):
    """An inconsistent domain value (unknown id, duplicate id, violated invariant)."""


class WorkerState(enum.Enum):
    """Lifecycle of a worker; the recovery stages follow docs/architecture.md."""

    SERVING = "serving"
    FAILED = "failed"
    RELOADING = "reloading"
    DRAFT_LOADING = "draft-loading"
    ASSISTING = "assisting"
    SWITCHING = "switching"

    @property
    def alive(self) -> bool:
        """Whether the worker's process is up (it may still be recovering)."""
        return self is not WorkerState.FAILED

    @property
    def serves_target(self) -> bool:
        """Whether the worker runs the target model and accepts new requests."""
        return self is WorkerState.SERVING

    @property
    def recovering(self) -> bool:
        """Whether the worker is in one of the staged-recovery states."""
        return self in _RECOVERING


_RECOVERING = frozenset(
    {
        WorkerState.RELOADING,
        WorkerState.DRAFT_LOADING,
        WorkerState.ASSISTING,
        WorkerState.SWITCHING,
    }
)


def _check_id(kind: str, value: int) -> None:
    if value < 0:
        raise DomainError(f"{kind} must be a non-negative integer, got {value}")


@dataclass(frozen=True, slots=True)
class Worker:
    """One model replica (one or more GPUs, one process)."""

    id: int
    node: int
    hardware: str
    state: WorkerState = WorkerState.SERVING

    def __post_init__(self) -> None:
        _check_id("worker id", self.id)
        _check_id("node id", self.node)
        if not self.hardware:
            raise DomainError(f"worker {self.id}: hardware profile name must not be empty")


@dataclass(frozen=True, slots=True)
class Request:
    """An in-flight request as the planner sees it.

    ``checkpointed_tokens`` is the length of the *valid* KV prefix held by ``checkpoint_holder``:
    pages become valid only once fully received, so it never exceeds the request's context.
    """

    id: int
    home: int
    prompt_tokens: int
    generated_tokens: int
    max_tokens: int
    checkpoint_holder: int | None = None
    checkpointed_tokens: int = 0

    def __post_init__(self) -> None:
        _check_id("request id", self.id)
        _check_id(f"request {self.id}: home worker", self.home)
        if self.prompt_tokens < 1:
            raise DomainError(f"request {self.id}: prompt_tokens must be >= 1")
        if self.max_tokens < 1:
            raise DomainError(f"request {self.id}: max_tokens must be >= 1")
        if not 0 <= self.generated_tokens <= self.max_tokens:
            raise DomainError(
                f"request {self.id}: generated_tokens must be in [0, max_tokens={self.max_tokens}],"
                f" got {self.generated_tokens}"
            )
        if self.checkpoint_holder is not None:
            _check_id(f"request {self.id}: checkpoint holder", self.checkpoint_holder)
            if self.checkpoint_holder == self.home:
                raise DomainError(
                    f"request {self.id}: checkpoint holder must differ from its home worker"
                )
        elif self.checkpointed_tokens:
            raise DomainError(f"request {self.id}: checkpointed tokens but no checkpoint holder")
        if not 0 <= self.checkpointed_tokens <= self.context_tokens:
            raise DomainError(
                f"request {self.id}: checkpointed_tokens must be in"
                f" [0, context={self.context_tokens}], got {self.checkpointed_tokens}"
            )

    @property
    def context_tokens(self) -> int:
        """Tokens whose KV currently exists: prompt plus generated output."""
        return self.prompt_tokens + self.generated_tokens

    @property
    def max_context_tokens(self) -> int:
        """Upper bound of the context; checkpoint reservations are sized for it."""
        return self.prompt_tokens + self.max_tokens

    @property
    def remaining_tokens(self) -> int:
        """Output tokens still to generate (at most; the request may stop earlier)."""
        return self.max_tokens - self.generated_tokens

    @property
    def uncheckpointed_tokens(self) -> int:
        """Context tokens that a restore from the checkpoint would have to re-prefill."""
        return self.context_tokens - self.checkpointed_tokens


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """Load and memory accounting of one worker at snapshot time.

    Byte and token counts are absolute; ``waiting_time_s`` is the estimated queueing delay a
    newly arriving request would see (the paper's ``Wait_j``).
    """

    queue_length: int = 0
    waiting_time_s: float = 0.0
    gpu_kv_used_tokens: int = 0
    gpu_kv_capacity_tokens: int = 0
    host_budget_bytes: int = 0
    host_reserved_bytes: int = 0

    def __post_init__(self) -> None:
        for name in (
            "queue_length",
            "gpu_kv_used_tokens",
            "gpu_kv_capacity_tokens",
            "host_budget_bytes",
            "host_reserved_bytes",
        ):
            if getattr(self, name) < 0:
                raise DomainError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.waiting_time_s >= 0.0:  # also rejects NaN
            raise DomainError(f"waiting_time_s must be >= 0, got {self.waiting_time_s}")

    @property
    def gpu_kv_free_tokens(self) -> int:
        return max(0, self.gpu_kv_capacity_tokens - self.gpu_kv_used_tokens)

    @property
    def host_free_bytes(self) -> int:
        return max(0, self.host_budget_bytes - self.host_reserved_bytes)


def _group(
    requests: Iterable[Request], key: Callable[[Request], int | None]
) -> Mapping[int, tuple[Request, ...]]:
    groups: dict[int, list[Request]] = {}
    for r in requests:
        k = key(r)
        if k is not None:
            groups.setdefault(k, []).append(r)
    return MappingProxyType({k: tuple(v) for k, v in groups.items()})


@dataclass(frozen=True)
class ClusterState:
    """Immutable snapshot of the cluster: workers, their load and the in-flight requests.

    ``kv_bytes_per_token`` converts token counts into checkpoint bytes; host reservations are
    derived from the requests (each holder reserves its requests' maximum context) and checked
    against ``WorkerLoad.host_reserved_bytes`` only by :meth:`reservation_bytes`, which callers
    use to recompute rather than trust reported numbers.
    """

    workers: tuple[Worker, ...]
    loads: Mapping[int, WorkerLoad]
    requests: Mapping[int, Request]
    kv_bytes_per_token: int
    _by_id: Mapping[int, Worker] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[int, Worker] = {}
        for w in self.workers:
            if w.id in by_id:
                raise DomainError(f"duplicate worker id {w.id}")
            by_id[w.id] = w
        if self.kv_bytes_per_token < 1:
            raise DomainError("kv_bytes_per_token must be >= 1")
        unknown = set(self.loads) - set(by_id)
        if unknown:
            raise DomainError(f"load reported for unknown worker(s) {sorted(unknown)}")
        for rid, req in self.requests.items():
            if rid != req.id:
                raise DomainError(f"request keyed {rid} has id {req.id}")
            if req.home not in by_id:
                raise DomainError(f"request {rid}: unknown home worker {req.home}")
            if req.checkpoint_holder is not None and req.checkpoint_holder not in by_id:
                raise DomainError(
                    f"request {rid}: unknown checkpoint holder {req.checkpoint_holder}"
                )
        # Freeze the mappings so a snapshot cannot change under a plan made from it.
        object.__setattr__(self, "loads", MappingProxyType(dict(self.loads)))
        object.__setattr__(self, "requests", MappingProxyType(dict(self.requests)))
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    @classmethod
    def build(
        cls,
        workers: Iterable[Worker],
        requests: Iterable[Request] = (),
        loads: Mapping[int, WorkerLoad] | None = None,
        *,
        kv_bytes_per_token: int,
    ) -> ClusterState:
        """Build a snapshot from iterables; workers without a reported load get an empty one."""
        ws = tuple(workers)
        given = dict(loads or {})
        full = {w.id: given.pop(w.id, WorkerLoad()) for w in ws}
        full.update(given)  # unknown ids survive so that __post_init__ reports them
        reqs: dict[int, Request] = {}
        for r in requests:
            if r.id in reqs:
                raise DomainError(f"duplicate request id {r.id}")
            reqs[r.id] = r
        return cls(ws, full, reqs, kv_bytes_per_token)

    # -- lookups ---------------------------------------------------------------------------------

    def worker(self, worker_id: int) -> Worker:
        try:
            return self._by_id[worker_id]
        except KeyError:
            raise DomainError(f"unknown worker {worker_id}") from None

    def load(self, worker_id: int) -> WorkerLoad:
        self.worker(worker_id)
        return self.loads[worker_id]

    def request(self, request_id: int) -> Request:
        try:
            return self.requests[request_id]
        except KeyError:
            raise DomainError(f"unknown request {request_id}") from None

    @property
    def nodes(self) -> dict[int, tuple[int, ...]]:
        """Node id -> ids of the workers on that node (the failure domains)."""
        out: dict[int, list[int]] = {}
        for w in self.workers:
            out.setdefault(w.node, []).append(w.id)
        return {n: tuple(ids) for n, ids in sorted(out.items())}

    def alive_workers(self) -> Iterator[Worker]:
        return (w for w in self.workers if w.state.alive)

    def serving_workers(self) -> Iterator[Worker]:
        return (w for w in self.workers if w.state.serves_target)

    @cached_property
    def _homes(self) -> Mapping[int, tuple[Request, ...]]:
        """Requests by home worker, built on first use (one pass, not one per worker)."""
        return _group(self.requests.values(), lambda r: r.home)

    @cached_property
    def _holders(self) -> Mapping[int, tuple[Request, ...]]:
        """Requests by checkpoint holder, built on first use."""
        return _group(self.requests.values(), lambda r: r.checkpoint_holder)

    def requests_on(self, worker_id: int) -> list[Request]:
        """Requests whose home is ``worker_id`` (their KV lives in its GPU memory)."""
        return list(self._homes.get(worker_id, ()))

    def checkpoints_on(self, worker_id: int) -> list[Request]:
        """Requests whose checkpoint ``worker_id`` holds in host memory."""
        return list(self._holders.get(worker_id, ()))

    def reservation_bytes(self, worker_id: int) -> int:
        """Host bytes ``worker_id`` must reserve: the max context of every checkpoint it holds."""
        per_token = self.kv_bytes_per_token
        return sum(r.max_context_tokens * per_token for r in self.checkpoints_on(worker_id))

    # -- derived snapshots -----------------------------------------------------------------------

    def with_worker_state(self, worker_id: int, state: WorkerState) -> ClusterState:
        self.worker(worker_id)
        ws = tuple(replace(w, state=state) if w.id == worker_id else w for w in self.workers)
        return ClusterState(ws, self.loads, self.requests, self.kv_bytes_per_token)

    def with_request(self, request: Request) -> ClusterState:
        """A snapshot where ``request`` is added, or replaces the request with the same id."""
        reqs = dict(self.requests)
        reqs[request.id] = request
        return ClusterState(self.workers, self.loads, reqs, self.kv_bytes_per_token)

    def without_request(self, request_id: int) -> ClusterState:
        self.request(request_id)
        reqs = {k: v for k, v in self.requests.items() if k != request_id}
        return ClusterState(self.workers, self.loads, reqs, self.kv_bytes_per_token)

    def with_load(self, worker_id: int, load: WorkerLoad) -> ClusterState:
        self.worker(worker_id)
        loads = dict(self.loads)
        loads[worker_id] = load
        return ClusterState(self.workers, loads, self.requests, self.kv_bytes_per_token)
