"""Stop strings on a stream of text: cut before the first match, never emit part of one.

:class:`StopMatcher` takes a choice's text as it is decoded and returns what can be sent: text
that cannot be the start of a stop string is released at once; a tail that could still grow
into one is held back until it does (the output ends before it, finish reason ``"stop"``) or
cannot any more. As in the OpenAI API and vLLM, the stop string itself is not returned.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher"]


class StopMatcher:
    """Stop-string matching for one choice (module docstring)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that can be sent now; sets :attr:`stopped` when a stop string matched."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = 0
        for s in self.stops:  # the longest tail that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(buffer)), keep, -1):
                if buffer.endswith(s[:k]):
                    keep = k
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, at the end of the output (no stop string came)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
