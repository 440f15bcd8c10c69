"""One serving worker: Sarathi-Serve style continuous batching on top of the event kernel.

Each engine iteration runs one decode step for every decoding request plus prompt chunks of
requests still in prefill, so that decode and prefill tokens together stay within
``prefill_chunk_tokens`` (decode tokens always run; prefill gets what is left). At most
``max_batch_size`` requests are admitted (prefilling plus decoding) at once; the waiting queue is
served first come, first served, without skipping a request that does not fit.

KV admission: a request reserves ``prompt + output`` tokens of GPU KV cache when it is admitted
and frees them when it finishes. The simulator knows each request's output length from the
trace, so reserving its full final context up front never over-commits memory and never needs
preemption; the price is that memory a request will only fill later is held from the start
(conservative next to vLLM's on-demand paging, which instead preempts under pressure).

Token timing: the iteration that computes a prompt's last chunk also emits its first output
token (TTFT = end of that iteration); each later decode iteration emits one more token. The
decode step of a request with ``d`` tokens already decoded attends to ``prompt + d - 1`` cached
tokens (the KV of the newest token is written by that step).

Draft assistance (:meth:`SimWorker.set_assist`): while a recovering worker drafts for this one,
a decode step may be a verify step: ``K + 1`` query positions per decoding request. With a
concurrent draft (the paper: the survivor never waits) the step costs no more than that and
yields the tokens the draft's lead allows (:mod:`lumen.planner.speculation`); with a synchronous
one it is preceded by the draft's ``K`` proposal steps and yields
``E = (1 - a^(K+1)) / (1 - a)`` tokens per request in expectation. The worker verifies only when
that is expected to emit tokens faster than a plain step (``t_verify / E < t_plain``). Decode
progress is therefore counted in a real-valued clock (:attr:`SimWorker.progress`, tokens per
decoding request): a plain step adds 1, a verify step ``E``; a request finishes once the
clock has advanced by its remaining tokens. This is the expectation of speculative decoding,
not a draw per step: the run stays deterministic.

Failures (:meth:`SimWorker.fail`): the iteration in flight is cancelled (a pure-decode run keeps
the iterations that already ended: their tokens were emitted), every KV reservation is freed
and the unfinished requests are handed back with their progress. A request that resumes after
an interruption is served like a new one whose prompt is its whole context so far (prompt plus
the tokens it had generated) and whose output is what it still has to emit
(:meth:`RequestTable.resume`); the first ``restored`` context tokens come from a KV checkpoint
and are not prefilled again. Restores are copied host -> GPU one after the other on the
worker's own channel (:meth:`SimWorker.enqueue` with a ``delay``) before the request queues.

Checkpoint streaming: KV produced for requests that have a checkpoint holder is streamed over
the worker's network link, modelled as a FIFO fluid queue of ``link_bytes_s``
(:class:`lumen.simulator.stream.StreamHistory`); see
:mod:`lumen.simulator.checkpoint` for how the valid prefix at a failure follows from it.

Speed: per-iteration work is O(prefilling requests + requests that finish), never O(batch).
Decoding requests are tracked in aggregate (count and summed context, updated incrementally)
and by a heap of finishing clock values. When nothing but decoding is left to do, the worker
plans a *run* of pure-decode iterations up to the next finish in one go (one event for the
run) and cuts it short at the next iteration boundary when a new request arrives.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lumen.planner.costmodel import BatchShape, CostModel, RooflineCostModel
from lumen.planner.speculation import concurrent_tokens_per_step
from lumen.simulator.kernel import EventHandle, Simulation
from lumen.simulator.requests import RequestTable
from lumen.simulator.stream import StreamHistory

__all__ = ["Assist", "RequestTable", "SimWorker"]

# Event priorities: at equal times arrivals are handled before iteration ends and worker
# starts, so that requests arriving together can join the same iteration.
ARRIVAL_PRIORITY = 0
ITERATION_PRIORITY = 1
# Slack on the decode clock: a request whose remaining tokens are within EPS of the clock is done.
EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Assist:
    """A draft model drafting for a worker's decoding requests (lumen.planner.speculation).

    Attributes:
        depth: K, the proposals one verify step checks.
        tokens_per_step: expected tokens per request of a synchronous verify step, E.
        draft: times the draft's proposal steps (on the assisting worker's hardware).
        acceptance_rate: a, the probability a proposal is accepted.
        concurrent: the draft runs beside the survivor, which never waits for it (the paper);
            otherwise the survivor waits for the draft's K proposal steps before verifying.
        alternate: the survivor schedules prefill and decode in separate iterations while it
            is assisted (otherwise mixed, as always).
    """

    depth: int
    tokens_per_step: float
    draft: CostModel
    acceptance_rate: float = 0.6
    concurrent: bool = True
    #: While assisted, the worker runs prompt chunks and decode (verify) steps in separate
    #: iterations, taking turns, instead of Sarathi-style mixed iterations.
    alternate: bool = False


# Hooks the cluster gives workers: a request was admitted (returns whether it is checkpointed
# now) / ended on this worker (finished; failures are handled by the cluster itself).
AdmitHook = Callable[["SimWorker", int], bool]
EndHook = Callable[["SimWorker", int], None]


def _no_admit(worker: SimWorker, rid: int) -> bool:
    return False


def _no_end(worker: SimWorker, rid: int) -> None:
    return None


class SimWorker:
    """A model replica serving requests with continuous batching.

    Args:
        index: worker id (recorded per request).
        sim: the simulation that times this worker's iterations.
        cost_model: times each iteration (``batch_time``) and gives the KV capacity.
        requests: the shared request table the worker reads inputs from and writes outcomes to.
        max_batch_size: most requests admitted (prefilling plus decoding) at once.
        prefill_chunk_tokens: most new tokens (decode plus prefill) per iteration.
        kv_capacity_tokens: GPU KV cache in tokens; the cost model's figure when None.
        link_bytes_s: bandwidth of the network link checkpoint pages leave on.
        on_admit, on_end: checkpoint placement hooks (see :data:`AdmitHook`).
    """

    def __init__(
        self,
        index: int,
        sim: Simulation,
        cost_model: CostModel,
        requests: RequestTable,
        max_batch_size: int = 512,
        prefill_chunk_tokens: int = 1024,
        kv_capacity_tokens: int | None = None,
        link_bytes_s: float = math.inf,
        on_admit: AdmitHook = _no_admit,
        on_end: EndHook = _no_end,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if prefill_chunk_tokens < 1:
            raise ValueError(f"prefill_chunk_tokens must be >= 1, got {prefill_chunk_tokens}")
        self.index = index
        self.sim = sim
        self.cost_model = cost_model
        self.requests = requests
        self.max_batch_size = max_batch_size
        self.prefill_chunk_tokens = prefill_chunk_tokens
        capacity = (
            cost_model.gpu_kv_capacity_tokens()
            if kv_capacity_tokens is None
            else kv_capacity_tokens
        )
        if capacity < 1:
            raise ValueError(f"KV capacity must be >= 1 token, got {capacity}")
        self.kv_capacity_tokens = capacity
        # Seconds per prompt token of a full prefill chunk: the gateway's waiting estimate.
        self.prefill_s_per_token = (
            cost_model.prefill_time(prefill_chunk_tokens) / prefill_chunk_tokens
        )
        # The cost model's shortcut for the end times of a run of plain decode iterations.
        self._decode_run_ends = (
            cost_model.decode_run_ends if isinstance(cost_model, RooflineCostModel) else None
        )
        self.on_admit = on_admit
        self.on_end = on_end
        self.stream = StreamHistory(link_bytes_s, cost_model.kv_bytes_per_token)

        # Queues. ``_prefilling`` maps an admitted request in prefill to its computed tokens.
        self._waiting: deque[int] = deque()
        self._prefilling: dict[int, int] = {}
        self._decode_seqs = 0
        self._decode_ckpt = 0  # decoding requests with a checkpoint holder
        self._decode_context = 0.0  # summed over decoding requests, for the next iteration
        self._finish_heap: list[tuple[float, int]] = []  # (clock value when done, request id)
        self._restores: dict[int, EventHandle] = {}  # request id -> its enqueue after a restore
        self._restore_free_s = 0.0  # when the host -> GPU channel is free again

        # Accounting read by the gateway and the tests.
        self.step = 0  # iterations completed
        self.progress = 0.0  # decode clock: tokens per decoding request so far
        self.kv_reserved_tokens = 0
        self.kv_peak_tokens = 0
        self.pending_prefill_tokens = 0  # prompt tokens not yet computed (waiting + prefilling)
        self.decode_tokens = 0.0  # output tokens emitted
        self.prefill_tokens = 0  # prompt tokens computed
        self.verify_steps = 0  # iterations that verified draft tokens
        self.busy_s = 0.0

        # The run in flight: end times of its iterations (a single one for a mixed iteration).
        self._run_ends: list[float] = []
        self._run_decode_only = False
        self._run_rate = 1.0  # decode clock advance per iteration of the run in flight
        self._prefill_turn = False  # alternate scheduling: the next iteration is prompt chunks
        self._run_chunks: list[tuple[int, int]] = []  # (request id, chunk) of a mixed iteration
        self._run_handle: EventHandle | None = None
        self._start_pending = False
        self._start_handle: EventHandle | None = None
        self._run_start = 0.0
        self.down = False  # failed and not yet reloaded: takes no requests
        self.failures = 0
        self.assist: Assist | None = None
        # (set, key) pairs: ``key`` goes into ``set`` whenever the waiting estimate's inputs
        # change (queued prompt tokens, the run in flight, down) -- see :meth:`watch`.
        self._watchers: list[tuple[set[int], int]] = []

    # -- queries ----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No iteration is in flight or about to start."""
        return self._run_handle is None and not self._start_pending

    @property
    def active_requests(self) -> int:
        """Requests on this worker that have not finished (restoring, waiting, prefilling,
        decoding)."""
        return len(self._restores) + len(self._waiting) + len(self._prefilling) + self._decode_seqs

    @property
    def decoding(self) -> int:
        return self._decode_seqs

    def iteration_remaining_s(self, now: float) -> float:
        """Time until the iteration in flight ends (when a new request could join), 0 if idle."""
        ends = self._run_ends
        if self._run_handle is None or not ends:
            return 0.0
        i = bisect_left(ends, now) if len(ends) > 1 else 0
        return ends[i] - now if i < len(ends) else 0.0

    def iteration_ends(self) -> list[float]:
        """End times of the iterations of the run in flight (empty if idle); read-only."""
        return self._run_ends if self._run_handle is not None else []

    def estimated_wait_s(self, now: float) -> float:
        """The gateway's waiting estimate for a new request: the rest of the current iteration
        plus every queued prompt token (waiting and part-prefilled requests) at the per-token
        time of a full prefill chunk. Decode load only enters through the tie-break."""
        return self.iteration_remaining_s(now) + (
            self.pending_prefill_tokens * self.prefill_s_per_token
        )

    def watch(self, changed: set[int], key: int) -> None:
        """Add ``key`` to ``changed`` whenever an input of :meth:`estimated_wait_s` other
        than ``now`` changes (queued prompt tokens, the run in flight, :attr:`down`); the
        gateway keeps its waiting estimates up to date from this."""
        self._watchers.append((changed, key))

    def _changed(self) -> None:
        for changed, key in self._watchers:
            changed.add(key)

    @property
    def queue_length(self) -> int:
        """Requests waiting to be admitted (restoring ones included)."""
        return len(self._waiting) + len(self._restores)

    def _completed_in_run(self, now: float) -> int:
        """Iterations of the run in flight that ended before ``now`` (only a pure-decode run
        can have some: its end event fires at its last iteration). One ending exactly at
        ``now`` does not count: its end has not been processed yet."""
        if self._run_handle is None or not self._run_decode_only:
            return 0
        done = bisect_left(self._run_ends, now)
        assert done < len(self._run_ends), "the run's end event should have fired"
        return done

    def clock(self, now: float) -> float:
        """The decode clock at ``now`` (iterations of a pure-decode run that ended count)."""
        return self.progress + self._completed_in_run(now) * self._run_rate

    def admitted(self, now: float) -> list[tuple[int, int, int]]:
        """``(request id, output tokens emitted, KV tokens computed)`` of every admitted
        request at ``now``, by request id; counts include the iterations of a pure-decode run
        that ended before ``now``."""
        req = self.requests
        out = [(rid, req.generated(rid), done) for rid, done in self._prefilling.items()]
        cur = self.clock(now)
        for done_at, rid in self._finish_heap:
            todo = req.todo_tokens[rid]
            start = done_at - (todo - 1)  # the clock when its first token came out
            emitted = min(todo - 1, 1 + math.floor(cur - start + EPS))
            out.append((rid, req.generated(rid) + emitted, req.context_tokens[rid] + emitted - 1))
        out.sort()
        return out

    def fail(self, now: float) -> list[tuple[int, int, int]]:
        """Stop at ``now``: cancel the iteration in flight, free all KV and return every
        unfinished request as ``(request id, output tokens emitted, KV tokens lost)``, by id.

        Iterations of a pure-decode run that ended before ``now`` still count (their tokens
        were emitted); the iteration in flight, or one ending exactly at ``now``, is lost.
        Requests still being restored are returned too (nothing of them was on the GPU yet).
        The worker takes no requests until :meth:`recover`.
        """
        req = self.requests
        lost = self.admitted(now)
        lost.extend((rid, req.generated(rid), 0) for rid in self._waiting)
        lost.extend((rid, req.generated(rid), 0) for rid in self._restores)
        lost.sort()
        k = self._completed_in_run(now)
        self.decode_tokens += self._decode_seqs * k * self._run_rate
        self.progress += k * self._run_rate
        self.step += k
        if self._run_handle is not None:
            self.busy_s += now - self._run_start
            self.sim.cancel(self._run_handle)
        if self._start_handle is not None:
            self.sim.cancel(self._start_handle)
        for handle in self._restores.values():
            self.sim.cancel(handle)
        self._restores.clear()
        self._waiting.clear()
        self._prefilling.clear()
        self._decode_seqs = 0
        self._decode_ckpt = 0
        self._decode_context = 0.0
        self._finish_heap = []
        self.kv_reserved_tokens = 0
        self.pending_prefill_tokens = 0
        self._run_ends = []
        self._run_decode_only = False
        self._run_chunks = []
        self._run_handle = None
        self._start_handle = None
        self._start_pending = False
        self.down = True
        self._changed()
        self.failures += 1
        self.assist = None
        self.stream.reset(now)
        return lost

    def recover(self) -> None:
        """Serve again (empty) after a reload."""
        self.down = False
        self._changed()

    # -- requests ---------------------------------------------------------------------------

    def enqueue(self, rid: int, delay: float = 0.0) -> None:
        """Accept request ``rid`` now; with ``delay`` > 0 it first takes the worker's host ->
        GPU channel for that long (a checkpoint restore, after the restores before it)."""
        if self.down:
            raise RuntimeError(f"worker {self.index} is down and cannot take request {rid}")
        req = self.requests
        need = req.context_tokens[rid] + req.todo_tokens[rid]
        if need > self.kv_capacity_tokens:
            raise ValueError(
                f"request {rid} needs {need} KV tokens but worker {self.index} holds only "
                f"{self.kv_capacity_tokens}"
            )
        req.worker[rid] = self.index
        if delay > 0.0:
            ready = max(self.sim.now, self._restore_free_s) + delay
            self._restore_free_s = ready
            self._restores[rid] = self.sim.at(ready, self._on_restored, rid, ARRIVAL_PRIORITY)
            return
        self._queue(rid)

    def _on_restored(self, sim: Simulation, rid: int) -> None:
        del self._restores[rid]
        self._queue(rid)

    def _queue(self, rid: int) -> None:
        req = self.requests
        self._waiting.append(rid)
        self.pending_prefill_tokens += req.context_tokens[rid] - req.restored[rid]
        self._changed()
        self._wake()

    def _wake(self) -> None:
        """Re-plan at the next iteration boundary (start now if idle)."""
        if self.idle:
            self._start_pending = True
            self._start_handle = self.sim.at(self.sim.now, self._on_start, None, ITERATION_PRIORITY)
        elif self._run_decode_only:
            self._cut_run(self.sim.now)

    def set_assist(self, assist: Assist | None) -> None:
        """Start (or with None, stop) verifying a draft's tokens from the next iteration on."""
        self.assist = assist
        if not self.down:
            self._wake()

    def drop_checkpoint(self, rid: int) -> None:
        """``rid`` (on this worker) lost its checkpoint holder: stop streaming its KV."""
        req = self.requests
        if req.holder[rid] < 0:
            return
        req.holder[rid] = -1
        if rid not in self._prefilling and rid not in self._waiting and rid not in self._restores:
            self._decode_ckpt -= 1

    # -- scheduling -------------------------------------------------------------------------

    def _on_start(self, sim: Simulation, _: object) -> None:
        self._start_pending = False
        self._start_handle = None
        self._plan(sim.now)

    def _cut_run(self, now: float) -> None:
        """End a pure-decode run after the iteration in flight, so a new request can join."""
        ends = self._run_ends
        keep = bisect_left(ends, now) + 1
        if keep >= len(ends):
            return
        assert self._run_handle is not None
        self.sim.cancel(self._run_handle)
        self._changed()
        del ends[keep:]
        self._run_handle = self.sim.at(ends[-1], self._on_run_end, None, ITERATION_PRIORITY)

    def _verify_time(self, shape: BatchShape, assist: Assist) -> tuple[float, float]:
        """An iteration doing ``shape`` with every decode step a verify step (``K + 1`` query
        positions per decoding request): its duration and the expected tokens per request.
        Synchronous drafting adds the draft's ``K`` proposal steps before it; a concurrent
        draft adds nothing and yields what its lead allows
        (:func:`lumen.planner.speculation.concurrent_tokens_per_step`)."""
        b = shape.decode_seqs
        verify_shape = BatchShape(
            prefill_tokens=shape.prefill_tokens,
            prefill_attention=shape.prefill_attention,
            prefill_seqs=shape.prefill_seqs,
            decode_seqs=b,
            decode_context_tokens=shape.decode_context_tokens,
            decode_query_tokens=b * (assist.depth + 1),
        )
        verify = self.cost_model.batch_time(verify_shape)
        draft_step = assist.draft.decode_step_time(b, int(shape.decode_context_tokens))
        if not assist.concurrent:
            return assist.depth * draft_step + verify, assist.tokens_per_step
        tokens = concurrent_tokens_per_step(
            assist.acceptance_rate, assist.depth, verify / draft_step
        )
        return verify, tokens

    def _step_time(self, shape: BatchShape) -> tuple[float, float]:
        """Duration and decode clock advance of an iteration doing ``shape`` (a verify step
        when a draft assists and that is expected to be faster per token)."""
        plain = self.cost_model.batch_time(shape)
        assist = self.assist
        b = shape.decode_seqs
        if assist is None or b == 0:
            return plain, 1.0
        verify, e = self._verify_time(shape, assist)
        # Verify when the extra time buys more than the plain decode steps it saves.
        decode_only = (
            plain
            if shape.prefill_tokens == 0
            else self.cost_model.batch_time(
                BatchShape(
                    decode_seqs=b,
                    decode_context_tokens=shape.decode_context_tokens,
                    decode_query_tokens=b,
                )
            )
        )
        if verify - plain < (e - 1.0) * decode_only:
            return verify, e
        return plain, 1.0

    def _plan(self, now: float) -> None:
        """Choose and schedule the next iteration (or run of decode iterations)."""
        # The run ended (or none was in flight) and the queued tokens may have changed: report
        # it before planning, as an admission inside may read this worker's estimate, and after,
        # for the new run.
        self._changed()
        self._plan_run(now)
        self._changed()

    def _plan_run(self, now: float) -> None:
        self._run_start = now
        b = self._decode_seqs
        ctx = self._decode_context
        # An assisted worker with alternate scheduling takes turns: prompt chunks alone, then
        # one decode (verify) step alone, while both kinds of work are pending.
        split = b > 0 and self.assist is not None and self.assist.alternate
        prefill_only = split and self._prefill_turn
        budget = self.prefill_chunk_tokens - (0 if prefill_only else b)
        chunks: list[tuple[int, int]] = []
        if budget > 0 and (self._prefilling or self._waiting) and (prefill_only or not split):
            chunks = self._take_prefill(budget)
        pending = bool(self._prefilling or self._waiting)
        self._prefill_turn = split and not prefill_only and pending
        if prefill_only and chunks:
            self._plan_prefill_only(now, chunks)
            return
        if not chunks:
            if b == 0:
                self._run_ends = []
                self._run_handle = None
                return
            # Pure decode until the next request finishes (or a new one arrives).
            # The run keeps the mode (plain or verify) its first iteration chose, so that every
            # iteration is timed as the kind of step the clock credits it for.
            shape = BatchShape(decode_seqs=b, decode_context_tokens=int(ctx), decode_query_tokens=b)
            step, rate = self._step_time(shape)
            assist = self.assist if rate != 1.0 else None
            n = max(1, math.ceil((self._finish_heap[0][0] - self.progress) / rate - EPS))
            if self._prefill_turn:  # alternate scheduling: prompt chunks come next
                n = 1
            ends = self._decode_ends(now + step, b, ctx, rate, n, assist)
            t = ends[-1]
            self._run_ends = ends
            self._run_decode_only = True
            self._run_rate = rate
            self._run_chunks = chunks
            self._run_handle = self.sim.at(t, self._on_run_end, None, ITERATION_PRIORITY)
            return
        tokens = pairs = 0
        prefilled = self._prefilling
        for rid, chunk in chunks:
            tokens += chunk
            pairs += chunk * prefilled[rid] + chunk * (chunk + 1) // 2
        shape = BatchShape(
            prefill_tokens=tokens,
            prefill_attention=pairs,
            prefill_seqs=len(chunks),
            decode_seqs=b,
            decode_context_tokens=int(ctx),
            decode_query_tokens=b,
        )
        step, rate = self._step_time(shape)
        end = now + step
        self._run_ends = [end]
        self._run_decode_only = False
        self._run_rate = rate
        self._run_chunks = chunks
        self._run_handle = self.sim.at(end, self._on_run_end, None, ITERATION_PRIORITY)

    def _decode_ends(
        self, first: float, b: int, ctx: float, rate: float, n: int, assist: Assist | None
    ) -> list[float]:
        """End times of a run of ``n`` decode iterations of ``b`` requests (the first ending
        at ``first``), the summed context ``ctx`` growing by ``b * rate`` per iteration."""
        ends = [first]
        if n == 1:
            return ends
        if assist is None and self._decode_run_ends is not None:  # plain steps, rate 1
            ends.extend(self._decode_run_ends(first, b, ctx, n - 1))
            return ends
        t = first
        batch_time = self.cost_model.batch_time
        for _ in range(n - 1):
            ctx += b * rate
            shape = BatchShape(decode_seqs=b, decode_context_tokens=int(ctx), decode_query_tokens=b)
            t += batch_time(shape) if assist is None else self._verify_time(shape, assist)[0]
            ends.append(t)
        return ends

    def _plan_prefill_only(self, now: float, chunks: list[tuple[int, int]]) -> None:
        """An iteration of prompt chunks alone: decoding requests wait (their clock stands)."""
        tokens = pairs = 0
        for rid, chunk in chunks:
            tokens += chunk
            pairs += chunk * self._prefilling[rid] + chunk * (chunk + 1) // 2
        shape = BatchShape(prefill_tokens=tokens, prefill_attention=pairs, prefill_seqs=len(chunks))
        end = now + self.cost_model.batch_time(shape)
        self._run_ends = [end]
        self._run_decode_only = False
        self._run_rate = 0.0
        self._run_chunks = chunks
        self._run_handle = self.sim.at(end, self._on_run_end, None, ITERATION_PRIORITY)

    def _take_prefill(self, budget: int) -> list[tuple[int, int]]:
        """Prompt chunks for the next iteration: part-prefilled requests first, then admissions."""
        chunks: list[tuple[int, int]] = []
        req = self.requests
        prompt = req.context_tokens
        for rid, done in self._prefilling.items():
            chunk = min(prompt[rid] - done, budget)
            chunks.append((rid, chunk))
            budget -= chunk
            if budget == 0:
                return chunks
        waiting = self._waiting
        output = req.todo_tokens
        running = len(self._prefilling) + self._decode_seqs
        now = self.sim.now
        while waiting and budget > 0 and running < self.max_batch_size:
            rid = waiting[0]
            need = prompt[rid] + output[rid]
            if self.kv_reserved_tokens + need > self.kv_capacity_tokens:
                break  # first come, first served: later requests wait behind this one
            waiting.popleft()
            self.kv_reserved_tokens += need
            if self.kv_reserved_tokens > self.kv_peak_tokens:
                self.kv_peak_tokens = self.kv_reserved_tokens
            restored = req.restored[rid]
            self._prefilling[rid] = restored
            req.admit_s[rid] = now
            running += 1
            if self.on_admit(self, rid) and restored:
                # The restored prefix is streamed to the new holder like freshly computed KV.
                self.stream.produce(now, restored, self.progress)
            chunk = min(prompt[rid] - restored, budget)
            chunks.append((rid, chunk))
            budget -= chunk
        return chunks

    def _on_run_end(self, sim: Simulation, _: object) -> None:
        now = sim.now
        ends = self._run_ends
        n = len(ends)
        b = self._decode_seqs
        rate = self._run_rate
        if rate > 1.0:
            self.verify_steps += n
        self.busy_s += now - self._run_start
        self.step += n
        self.progress += n * rate
        self.decode_tokens += b * n * rate
        self._decode_context += b * n * rate
        streamed = self._decode_ckpt * n * rate
        req = self.requests
        prompt, output = req.context_tokens, req.todo_tokens
        # Requests whose clock ran out in this run (a verify step may overshoot: the tokens
        # past the end were never emitted).
        heap = self._finish_heap
        clock = self.progress
        while heap and heap[0][0] <= clock + EPS:
            done_at, rid = heapq.heappop(heap)
            over = clock - done_at
            self.decode_tokens -= over
            self._decode_context -= prompt[rid] + output[rid] - 1 + over
            if req.holder[rid] >= 0:
                self._decode_ckpt -= 1
                streamed -= over
            self._decode_seqs -= 1
            self._finish(rid, now)
        # Prompt chunks of a mixed iteration.
        for rid, chunk in self._run_chunks:
            done = self._prefilling[rid] + chunk
            self.prefill_tokens += chunk
            self.pending_prefill_tokens -= chunk
            if req.holder[rid] >= 0:
                streamed += chunk
            if done < prompt[rid]:
                self._prefilling[rid] = done
                continue
            del self._prefilling[rid]
            req.prefill_end_s[rid] = now
            if req.first_token_s[rid] != req.first_token_s[rid]:  # NaN: not emitted before
                req.first_token_s[rid] = now
            self.decode_tokens += 1
            if output[rid] == 1:
                self._finish(rid, now)
                continue
            # Done once the clock has advanced by the remaining tokens.
            heapq.heappush(heap, (clock + output[rid] - 1, rid))
            self._decode_seqs += 1
            self._decode_context += prompt[rid]
            if req.holder[rid] >= 0:
                self._decode_ckpt += 1
        if streamed > 0:
            self.stream.produce(now, streamed, clock)
        self._run_chunks = []
        self._run_handle = None
        self._plan(now)

    def _finish(self, rid: int, now: float) -> None:
        req = self.requests
        req.finish_s[rid] = now
        self.kv_reserved_tokens -= req.context_tokens[rid] + req.todo_tokens[rid]
        self.on_end(self, rid)
