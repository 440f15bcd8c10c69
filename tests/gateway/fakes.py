"""In-process fake workers for the gateway tests (no engine, no torch).

A fake's token at output position ``i`` is a pure function of the prompt, ``i`` and (when
sampling) the seed (:func:`fake_token`), so a request resumed anywhere with its token history
continues exactly as it would have: the failure-free output is known in advance
(:func:`expected_output`). Fakes can be killed (streams raise ``WorkerUnavailableError``
mid-stream, heartbeats fail), hung (streams block, ``steps`` stops growing, heartbeats still
answer), made unresponsive (heartbeats time out) and revived. A recovering fake (``stage =
"draft-loading"``) refuses ``set_stage("assisting", ...)`` with FAILED_PRECONDITION until
``draft_ready``, as a real worker does before its draft is loaded. A :class:`FakeCluster`
shares the checkpoint inventory: a request's home records its valid prefix on its holder as it
decodes, and a killed holder loses what it held.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from lumen.executor.worker.api import (
    GenerationRequest,
    TokenEvent,
    TokenLogprob,
    WorkerStatus,
    WorkerUnavailableError,
)

#: Checkpoint pages hold this many tokens (a prefix is valid page by page).
PAGE_TOKENS = 4


def fake_token(prompt: Sequence[int], position: int, seed: int | None, temperature: float) -> int:
    """Output token ``position`` of ``prompt``: a lowercase ASCII letter (readable as text)."""
    salt = f"|{seed}" if temperature > 0 else ""
    key = (",".join(map(str, prompt)) + f"|{position}{salt}").encode()
    return 97 + zlib.crc32(key) % 26


def fake_logprob(token: int, alternatives: int) -> TokenLogprob:
    """The log probability a fake reports for ``token``: a pure function of it, with
    ``alternatives`` made-up runners-up (the token itself first)."""
    lp = -0.25 - (token % 5) / 10
    top = tuple((token if k == 0 else 97 + (token + k) % 26, lp - k) for k in range(alternatives))
    return TokenLogprob(lp, top)


def expected_output(
    prompt: Sequence[int], max_tokens: int, seed: int | None = None, temperature: float = 0.0
) -> tuple[int, ...]:
    return tuple(fake_token(prompt, i, seed, temperature) for i in range(max_tokens))


class FakeRefusal(Exception):
    """A call the fake refuses, with the status code's name (like ``ExecutorError``)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


@dataclass
class FakeCluster:
    """Checkpoint inventory shared by fakes: holder -> request id -> valid prefix tokens."""

    checkpoints: dict[int, dict[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, holder: int, request_id: int, tokens: int) -> None:
        with self.lock:
            self.checkpoints.setdefault(holder, {})[request_id] = tokens

    def held(self, holder: int) -> dict[int, int]:
        with self.lock:
            return dict(self.checkpoints.get(holder, {}))

    def drop_holder(self, holder: int) -> None:
        with self.lock:
            self.checkpoints.pop(holder, None)

    def drop_request(self, request_id: int) -> None:
        with self.lock:
            for held in self.checkpoints.values():
                held.pop(request_id, None)


class FakeWorker:
    """A deterministic worker implementing ``WorkerAPI`` (module docstring)."""

    def __init__(
        self, worker_id: int, cluster: FakeCluster | None = None, step_s: float = 0.003
    ) -> None:
        self._id = worker_id
        self.cluster = cluster or FakeCluster()
        self.step_s = step_s
        self.stage = "serving"
        self.steps = 0
        self.killed = False
        self.hung = False
        self.unresponsive = False
        self.waiting_time_s = 0.0
        self.draft_ready = True
        self.survivor: int | None = None
        #: Status code every submission is refused with (None: accepted).
        self.refuse_with: str | None = None
        #: (stage, survivor) of every set_stage call, refused ones included.
        self.stage_calls: list[tuple[str, int | None]] = []
        self.submissions: list[GenerationRequest] = []
        #: (request id, restore_from, prefix the holder had) per submission with a restore.
        self.restores: list[tuple[int, int, int]] = []
        self._running: dict[int, GenerationRequest] = {}
        self._lock = threading.Lock()
        self._killed = threading.Event()
        self._released = threading.Event()

    @property
    def worker_id(self) -> int:
        return self._id

    # -- failure injection -----------------------------------------------------------------------

    def kill(self) -> None:
        """Die: streams raise, heartbeats fail, held checkpoints are lost."""
        self.killed = True
        self._killed.set()
        self.cluster.drop_holder(self._id)

    def hang(self) -> None:
        """Stop making progress: streams block, ``steps`` stops, heartbeats still answer."""
        self.hung = True

    def revive(self) -> None:
        """A restarted process: empty, serving, ``steps`` from zero."""
        with self._lock:
            self._running.clear()
            self.steps = 0
        self.killed = self.hung = self.unresponsive = False
        self._killed.clear()

    def running_ids(self) -> list[int]:
        with self._lock:
            return list(self._running)

    # -- WorkerAPI -------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        with self._lock:
            self.submissions.append(request)
        if request.restore_from is not None:
            prefix = self.cluster.held(request.restore_from).get(request.request_id, 0)
            self.restores.append((request.request_id, request.restore_from, prefix))
        return self._generate(request)

    def _generate(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        if self.refuse_with is not None:
            raise FakeRefusal(self.refuse_with, "the worker refuses this request")
        if self.killed:
            raise WorkerUnavailableError(f"worker {self._id} is dead")
        rid = request.request_id
        with self._lock:
            self._running[rid] = request
        prompt = request.prompt_token_ids
        position = len(request.generated_token_ids)
        try:
            while position < request.max_tokens:
                if self._killed.wait(self.step_s):
                    raise WorkerUnavailableError(f"worker {self._id} died")
                if self.hung:
                    self._released.wait(30.0)
                    raise WorkerUnavailableError(f"worker {self._id} was hung")
                token = fake_token(prompt, position, request.seed, request.temperature)
                position += 1
                with self._lock:
                    self.steps += 1
                holder = request.checkpoint_holder
                if holder is not None:
                    context = len(prompt) + position - 1  # the newest token has no KV yet
                    self.cluster.record(holder, rid, context // PAGE_TOKENS * PAGE_TOKENS)
                finished = position >= request.max_tokens or token in request.stop_token_ids
                if finished:
                    self.cluster.drop_request(rid)
                logprobs = (
                    (fake_logprob(token, request.logprobs),) if request.logprobs is not None else ()
                )
                yield TokenEvent(rid, (token,), position, finished, logprobs)
                if finished:
                    return
        finally:
            with self._lock:
                self._running.pop(rid, None)

    def status(self, timeout_s: float = 1.0) -> WorkerStatus:
        if self.unresponsive:
            time.sleep(timeout_s)
            raise WorkerUnavailableError(f"worker {self._id}: status timed out")
        if self.killed:
            raise WorkerUnavailableError(f"worker {self._id} is dead")
        with self._lock:
            running = len(self._running)
            used = sum(len(r.prompt_token_ids) + r.max_tokens for r in self._running.values())
            steps = self.steps
        return WorkerStatus(
            worker_id=self._id,
            stage=self.stage,
            queue_length=0,
            running=running,
            waiting_time_s=self.waiting_time_s,
            kv_used_tokens=used,
            kv_capacity_tokens=200_000,
            host_budget_bytes=80 * 10**9,
            host_reserved_bytes=0,
            steps=steps,
            checkpoints=self.cluster.held(self._id),
        )

    def set_stage(self, stage: str, survivor: int | None = None) -> str:
        self.stage_calls.append((stage, survivor))
        if stage == "assisting" and not self.draft_ready:
            raise FakeRefusal("FAILED_PRECONDITION", "the draft model is not loaded yet")
        self.stage = stage
        self.survivor = survivor
        return stage

    def close(self) -> None:
        self._released.set()


def make_fakes(n: int, step_s: float = 0.003) -> list[FakeWorker]:
    cluster = FakeCluster()
    return [FakeWorker(k, cluster, step_s) for k in range(n)]
