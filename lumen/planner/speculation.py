"""Expected tokens per verify step of draft-assisted decoding, synchronous or concurrent.

A recovering worker runs a small draft model and proposes tokens for the requests a survivor
decodes; the survivor verifies proposals inside its own decode step (``depth + 1`` query
positions per request) and emits the accepted ones plus one token of its own. Each proposal is
accepted with probability ``a`` independently (the standard model of speculative decoding).

- **Synchronous**: the survivor waits for the draft's ``K`` proposal steps before each verify
  step, so every step verifies ``K`` fresh proposals: ``E = (1 - a^(K+1)) / (1 - a)`` tokens
  (:func:`lumen.planner.problems.expected_tokens_per_step`).
- **Concurrent** (:func:`concurrent_tokens_per_step`): the draft runs beside the survivor, which
  never waits. The draft keeps proposing ahead of the survivor's confirmed position, ``g``
  tokens per survivor step (survivor step time over draft step time), at most ``2 K + 1``
  ahead (so that ``K`` are ready again after a step accepted ``K + 1``); a survivor step
  verifies the proposals that are ready (at most ``K``). When a proposal is
  rejected, or the survivor's own token differs from the draft's next one, the draft was on a
  wrong path: it restarts from the survivor's token and has nothing ready for the next step,
  which then emits one token. A draft that cannot keep up (``g <= 1``) never gets ahead and
  helps nothing. The expected tokens per step are those of the stationary distribution of
  this Markov chain over the draft's lead (in quarter tokens).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["concurrent_tokens_per_step"]

#: Lead states per token: the chain tracks the draft's lead in quarter tokens.
QUANTA = 4


def concurrent_tokens_per_step(
    acceptance_rate: float, depth: int, draft_tokens_per_step: float
) -> float:
    """Expected tokens per request per survivor step with a concurrent draft (module docstring).

    Args:
        acceptance_rate: probability ``a`` that a proposal is accepted, in ``[0, 1)``.
        depth: ``K``, the proposals one verify step checks at most.
        draft_tokens_per_step: ``g``, proposals the draft makes per request while the survivor
            runs one step.
    """
    if not 0.0 <= acceptance_rate < 1.0:
        raise ValueError(f"acceptance_rate must be in [0, 1), got {acceptance_rate}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not (math.isfinite(draft_tokens_per_step) and draft_tokens_per_step >= 0.0):
        raise ValueError(
            f"draft_tokens_per_step must be finite and >= 0, got {draft_tokens_per_step}"
        )
    g = math.floor(draft_tokens_per_step * QUANTA)  # in quanta, rounded down (conservative)
    return _stationary_tokens(round(acceptance_rate, 12), depth, min(g, 4 * depth * QUANTA))


@lru_cache(maxsize=4096)
def _stationary_tokens(a: float, depth: int, g: int) -> float:
    cap = (2 * depth + 1) * QUANTA  # K ready for the next step after K + 1 accepted
    states = cap + 1
    move = np.zeros((states, states))
    tokens = np.zeros(states)
    for h in range(states):
        v = min(depth, h // QUANTA)  # proposals ready for this step
        # j accepted: P(j = k) = a^k (1 - a) for k < v, P(j = v) = a^v; emits j + 1.
        for k in range(v):
            p = a**k * (1.0 - a)
            tokens[h] += p * (k + 1)
            move[h, 0] += p
        p_all = a**v
        tokens[h] += p_all * (v + 1)
        # All ready proposals accepted: the draft stays on the path when its next token, if it
        # has made it, equals the survivor's own (probability a).
        lead = min(cap, h + g) - (v + 1) * QUANTA
        if lead >= 0:
            move[h, lead] += p_all * a
            move[h, 0] += p_all * (1.0 - a)
        else:
            move[h, 0] += p_all
    pi = np.full(states, 1.0 / states)
    for _ in range(10_000):
        nxt = pi @ move
        if float(np.abs(nxt - pi).sum()) < 1e-13:
            pi = nxt
            break
        pi = nxt
    return float(pi @ tokens)
