"""The simulator's per-request table: inputs and outcomes as plain lists indexed by request id.

Plain Python lists rather than numpy arrays: the workers read and write single entries on
every event, where list indexing is several times faster than array indexing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestTable"]


@dataclass(slots=True)
class RequestTable:
    """Per-request inputs and outcomes as plain Python lists indexed by request id.

    ``first_token_s`` and ``finish_s`` are NaN until the event happens; ``worker`` is -1 until
    the gateway dispatches the request. ``context_tokens`` and ``todo_tokens`` are what the
    serving worker prefills and then emits: the prompt and the output for a fresh request, the
    context so far and the rest of the output for a resumed one (:meth:`resume`), of which the
    first ``restored`` tokens come from a checkpoint. ``holder`` is the worker holding the
    request's KV checkpoint for its current attempt (-1: none); ``admit_s`` and
    ``prefill_end_s`` time the current attempt's prefill (NaN until they happen).
    """

    arrival_s: list[float]
    prompt_tokens: list[int]
    output_tokens: list[int]
    first_token_s: list[float]
    finish_s: list[float]
    worker: list[int]
    context_tokens: list[int]
    todo_tokens: list[int]
    restored: list[int]
    holder: list[int]
    admit_s: list[float]
    prefill_end_s: list[float]

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
            [0] * n,
            [-1] * n,
            [nan] * n,
            [nan] * n,
        )

    def generated(self, rid: int) -> int:
        """Output tokens of ``rid`` emitted before its current (or next) serving attempt."""
        return self.output_tokens[rid] - self.todo_tokens[rid]

    def resume(self, rid: int, generated: int, restored: int = 0) -> None:
        """Serve ``rid`` again with ``generated`` output tokens already emitted: its next
        attempt prefills ``prompt + generated - restored`` tokens after ``restored`` ones
        copied from a checkpoint, and emits the remaining ones."""
        out = self.output_tokens[rid]
        if not 0 <= generated < out:
            raise ValueError(f"request {rid}: cannot resume after {generated} of {out} tokens")
        context = self.prompt_tokens[rid] + generated
        if not 0 <= restored < context:
            raise ValueError(f"request {rid}: cannot restore {restored} of {context} tokens")
        self.context_tokens[rid] = context
        self.todo_tokens[rid] = out - generated
        self.restored[rid] = restored
        self.admit_s[rid] = self.prefill_end_s[rid] = float("nan")

    def __len__(self) -> int:
        return len(self.arrival_s)
