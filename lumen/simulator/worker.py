"""One serving worker: Sarathi-Serve style continuous batching on top of the event kernel.

Each engine iteration runs one decode token for every decoding request plus prompt chunks of
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

Failures (:meth:`Worker.fail`): the iteration in flight is cancelled (a pure-decode run keeps
the iterations that already ended: their tokens were emitted), every KV reservation is freed
and the unfinished requests are handed back with their progress. A request that resumes after
an interruption is served like a new one whose prompt is its whole context so far (prompt plus
the tokens it had generated, all re-prefilled) and whose output is what it still has to emit
(:meth:`RequestTable.resume`); the KV it reserves is the same ``prompt + output``.

Speed: per-iteration work is O(prefilling requests + requests that finish), never O(batch).
Decoding requests are tracked in aggregate (count and summed context, updated incrementally)
and by a heap of finishing steps. When nothing but decoding is left to do, the worker plans a
*run* of pure-decode iterations up to the next finish in one go (one event for the run) and
cuts it short at the next iteration boundary when a new request arrives.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

from lumen.planner.costmodel import BatchShape, CostModel
from lumen.simulator.kernel import EventHandle, Simulation

__all__ = ["RequestTable", "Worker"]

# Event priorities: at equal times arrivals are handled before iteration ends and worker
# starts, so that requests arriving together can join the same iteration.
ARRIVAL_PRIORITY = 0
ITERATION_PRIORITY = 1


@dataclass(slots=True)
class RequestTable:
    """Per-request inputs and outcomes as plain Python lists indexed by request id.

    ``first_token_s`` and ``finish_s`` are NaN until the event happens; ``worker`` is -1 until
    the gateway dispatches the request. ``context_tokens`` and ``todo_tokens`` are what the
    serving worker prefills and then emits: the prompt and the output for a fresh request, the
    context so far and the rest of the output for a resumed one (:meth:`resume`).
    """

    arrival_s: list[float]
    prompt_tokens: list[int]
    output_tokens: list[int]
    first_token_s: list[float]
    finish_s: list[float]
    worker: list[int]
    context_tokens: list[int]
    todo_tokens: list[int]

    @classmethod
    def create(
        cls, arrival_s: list[float], prompt_tokens: list[int], output_tokens: list[int]
    ) -> RequestTable:
        n = len(arrival_s)
        if len(prompt_tokens) != n or len(output_tokens) != n:
            raise ValueError("arrival_s, prompt_tokens and output_tokens differ in length")
        nan = float("nan")
        return cls(
            arrival_s,
            prompt_tokens,
            output_tokens,
            [nan] * n,
            [nan] * n,
            [-1] * n,
            list(prompt_tokens),
            list(output_tokens),
        )

    def generated(self, rid: int) -> int:
        """Output tokens of ``rid`` emitted before its current (or next) serving attempt."""
        return self.output_tokens[rid] - self.todo_tokens[rid]

    def resume(self, rid: int, generated: int) -> None:
        """Serve ``rid`` from scratch with ``generated`` output tokens already emitted: its next
        attempt re-prefills ``prompt + generated`` tokens and emits the remaining ones."""
        out = self.output_tokens[rid]
        if not 0 <= generated < out:
            raise ValueError(f"request {rid}: cannot resume after {generated} of {out} tokens")
        self.context_tokens[rid] = self.prompt_tokens[rid] + generated
        self.todo_tokens[rid] = out - generated

    def __len__(self) -> int:
        return len(self.arrival_s)


class Worker:
    """A model replica serving requests with continuous batching.

    Args:
        index: worker id (recorded per request).
        sim: the simulation that times this worker's iterations.
        cost_model: times each iteration (``batch_time``) and gives the KV capacity.
        requests: the shared request table the worker reads inputs from and writes outcomes to.
        max_batch_size: most requests admitted (prefilling plus decoding) at once.
        prefill_chunk_tokens: most new tokens (decode plus prefill) per iteration.
        kv_capacity_tokens: GPU KV cache in tokens; the cost model's figure when None.
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

        # Queues. ``_prefilled`` maps an admitted request in prefill to its computed tokens.
        self._waiting: deque[int] = deque()
        self._prefilling: dict[int, int] = {}
        self._decode_seqs = 0
        self._decode_context = 0  # summed over decoding requests, for the next iteration
        self._finish_heap: list[tuple[int, int]] = []  # (last decode step, request id)

        # Accounting read by the gateway and the tests.
        self.step = 0  # iterations completed
        self.kv_reserved_tokens = 0
        self.kv_peak_tokens = 0
        self.pending_prefill_tokens = 0  # prompt tokens not yet computed (waiting + prefilling)
        self.decode_tokens = 0  # output tokens emitted
        self.prefill_tokens = 0  # prompt tokens computed
        self.busy_s = 0.0

        # The run in flight: end times of its iterations (a single one for a mixed iteration).
        self._run_ends: list[float] = []
        self._run_decode_only = False
        self._run_chunks: list[tuple[int, int]] = []  # (request id, chunk) of a mixed iteration
        self._run_handle: EventHandle | None = None
        self._start_pending = False
        self._start_handle: EventHandle | None = None
        self._run_start = 0.0
        self.down = False  # failed and not yet reloaded: takes no requests
        self.failures = 0

    # -- queries ----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No iteration is in flight or about to start."""
        return self._run_handle is None and not self._start_pending

    @property
    def active_requests(self) -> int:
        """Requests on this worker that have not finished (waiting, prefilling, decoding)."""
        return len(self._waiting) + len(self._prefilling) + self._decode_seqs

    def iteration_remaining_s(self, now: float) -> float:
        """Time until the iteration in flight ends (when a new request could join), 0 if idle."""
        ends = self._run_ends
        if self._run_handle is None or not ends:
            return 0.0
        i = bisect_left(ends, now) if len(ends) > 1 else 0
        return ends[i] - now if i < len(ends) else 0.0

    def estimated_wait_s(self, now: float) -> float:
        """The gateway's waiting estimate for a new request: the rest of the current iteration
        plus every queued prompt token (waiting and part-prefilled requests) at the per-token
        time of a full prefill chunk. Decode load only enters through the tie-break."""
        return self.iteration_remaining_s(now) + (
            self.pending_prefill_tokens * self.prefill_s_per_token
        )

    @property
    def queue_length(self) -> int:
        """Requests waiting to be admitted."""
        return len(self._waiting)

    def _completed_in_run(self, now: float) -> int:
        """Iterations of the run in flight that ended before ``now`` (only a pure-decode run
        can have some: its end event fires at its last iteration). One ending exactly at
        ``now`` does not count: its end has not been processed yet."""
        if self._run_handle is None or not self._run_decode_only:
            return 0
        done = bisect_left(self._run_ends, now)
        assert done < len(self._run_ends), "the run's end event should have fired"
        return done

    def admitted(self, now: float) -> list[tuple[int, int, int]]:
        """``(request id, output tokens emitted, KV tokens computed)`` of every admitted
        request at ``now``, by request id; counts include the iterations of a pure-decode run
        that ended before ``now``."""
        req = self.requests
        out = [(rid, req.generated(rid), done) for rid, done in self._prefilling.items()]
        nxt = self.step + self._completed_in_run(now)
        for last, rid in self._finish_heap:
            emitted = req.todo_tokens[rid] - (last - nxt + 1)  # first token included
            out.append((rid, req.generated(rid) + emitted, req.context_tokens[rid] + emitted - 1))
        out.sort()
        return out

    def fail(self, now: float) -> list[tuple[int, int, int]]:
        """Stop at ``now``: cancel the iteration in flight, free all KV and return every
        unfinished request as ``(request id, output tokens emitted, KV tokens lost)``, by id.

        Iterations of a pure-decode run that ended before ``now`` still count (their tokens
        were emitted); the iteration in flight, or one ending exactly at ``now``, is lost. The
        worker takes no requests until :meth:`recover`.
        """
        req = self.requests
        lost = self.admitted(now)
        lost.extend((rid, req.generated(rid), 0) for rid in self._waiting)
        lost.sort()
        k = self._completed_in_run(now)
        self.decode_tokens += self._decode_seqs * k
        self.step += k
        if self._run_handle is not None:
            self.busy_s += now - self._run_start
            self.sim.cancel(self._run_handle)
        if self._start_handle is not None:
            self.sim.cancel(self._start_handle)
        self._waiting.clear()
        self._prefilling.clear()
        self._decode_seqs = 0
        self._decode_context = 0
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
        self.failures += 1
        return lost

    def recover(self) -> None:
        """Serve again (empty) after a reload."""
        self.down = False

    # -- requests ---------------------------------------------------------------------------

    def enqueue(self, rid: int) -> None:
        """Accept request ``rid`` (at the current simulation time)."""
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
        self._waiting.append(rid)
        self.pending_prefill_tokens += req.context_tokens[rid]
        if self.idle:
            self._start_pending = True
            self._start_handle = self.sim.at(self.sim.now, self._on_start, None, ITERATION_PRIORITY)
        elif self._run_decode_only:
            self._cut_run(self.sim.now)

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
        del ends[keep:]
        self._run_handle = self.sim.at(ends[-1], self._on_run_end, None, ITERATION_PRIORITY)

    def _plan(self, now: float) -> None:
        """Choose and schedule the next iteration (or run of decode iterations)."""
        self._run_start = now
        budget = self.prefill_chunk_tokens - self._decode_seqs
        chunks: list[tuple[int, int]] = []
        if budget > 0 and (self._prefilling or self._waiting):
            chunks = self._take_prefill(budget)
        b = self._decode_seqs
        ctx = self._decode_context
        if not chunks:
            if b == 0:
                self._run_ends = []
                self._run_handle = None
                return
            # Pure decode until the next request finishes (or a new one arrives).
            n = self._finish_heap[0][0] - self.step + 1
            batch_time = self.cost_model.batch_time
            ends: list[float] = []
            t = now
            for _ in range(n):
                t += batch_time(
                    BatchShape(decode_seqs=b, decode_context_tokens=ctx, decode_query_tokens=b)
                )
                ends.append(t)
                ctx += b
            self._run_ends = ends
            self._run_decode_only = True
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
            decode_context_tokens=ctx,
            decode_query_tokens=b,
        )
        end = now + self.cost_model.batch_time(shape)
        self._run_ends = [end]
        self._run_decode_only = False
        self._run_chunks = chunks
        self._run_handle = self.sim.at(end, self._on_run_end, None, ITERATION_PRIORITY)

    def _take_prefill(self, budget: int) -> list[tuple[int, int]]:
        """Prompt chunks for the next iteration: part-prefilled requests first, then admissions."""
        chunks: list[tuple[int, int]] = []
        prompt = self.requests.context_tokens
        for rid, done in self._prefilling.items():
            chunk = min(prompt[rid] - done, budget)
            chunks.append((rid, chunk))
            budget -= chunk
            if budget == 0:
                return chunks
        waiting = self._waiting
        output = self.requests.todo_tokens
        running = len(self._prefilling) + self._decode_seqs
        while waiting and budget > 0 and running < self.max_batch_size:
            rid = waiting[0]
            need = prompt[rid] + output[rid]
            if self.kv_reserved_tokens + need > self.kv_capacity_tokens:
                break  # first come, first served: later requests wait behind this one
            waiting.popleft()
            self.kv_reserved_tokens += need
            if self.kv_reserved_tokens > self.kv_peak_tokens:
                self.kv_peak_tokens = self.kv_reserved_tokens
            self._prefilling[rid] = 0
            running += 1
            chunk = min(prompt[rid], budget)
            chunks.append((rid, chunk))
            budget -= chunk
        return chunks

    def _on_run_end(self, sim: Simulation, _: object) -> None:
        now = sim.now
        ends = self._run_ends
        n = len(ends)
        b = self._decode_seqs
        self.busy_s += now - self._run_start
        self.step += n
        self.decode_tokens += b * n
        self._decode_context += b * n
        req = self.requests
        prompt, output = req.context_tokens, req.todo_tokens
        # Requests whose last decode step was the final iteration of this run.
        heap = self._finish_heap
        last = self.step - 1
        while heap and heap[0][0] <= last:
            _, rid = heapq.heappop(heap)
            self._finish(rid, now)
            self._decode_seqs -= 1
            self._decode_context -= prompt[rid] + output[rid] - 1
        # Prompt chunks of a mixed iteration.
        for rid, chunk in self._run_chunks:
            done = self._prefilling[rid] + chunk
            self.prefill_tokens += chunk
            self.pending_prefill_tokens -= chunk
            if done < prompt[rid]:
                self._prefilling[rid] = done
                continue
            del self._prefilling[rid]
            if req.first_token_s[rid] != req.first_token_s[rid]:  # NaN: not emitted before
                req.first_token_s[rid] = now
            self.decode_tokens += 1
            if output[rid] == 1:
                self._finish(rid, now)
                continue
            # Decodes in iterations step .. step + output - 2 (``step`` is the next one).
            heapq.heappush(heap, (self.step + output[rid] - 2, rid))
            self._decode_seqs += 1
            self._decode_context += prompt[rid]
        self._run_chunks = []
        self._run_handle = None
        self._plan(now)

    def _finish(self, rid: int, now: float) -> None:
        req = self.requests
        req.finish_s[rid] = now
        self.kv_reserved_tokens -= req.context_tokens[rid] + req.todo_tokens[rid]
