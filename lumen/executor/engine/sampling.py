"""Sampling: counter-based random draws and next-token distributions.

Every random draw is a pure function of ``(seed, position, stream, draw)`` (a SplitMix64 hash),
not of a generator's history. A request resumed on another engine, recomputed after preemption,
or batched differently therefore samples exactly the same tokens, and the draft's draws are
independent of the target's acceptance draws because they use different streams.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = [
    "STREAM_ACCEPT",
    "STREAM_DRAFT",
    "STREAM_SAMPLE",
    "derive_seed",
    "processed_probs",
    "sample_from_probs",
    "uniform",
]

#: Stream of the token sampled at a position (plain decode, bonus token).
STREAM_SAMPLE = 0
#: Stream of the draft model's own samples.
STREAM_DRAFT = 1
#: Stream of the target's accept/reject draws and residual samples during verification.
STREAM_ACCEPT = 2

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform(seed: int, position: int, stream: int = STREAM_SAMPLE, draw: int = 0) -> float:
    """A uniform number in ``[0, 1)`` determined by its arguments alone."""
    h = _splitmix64(seed & _MASK64)
    for value in (position, stream, draw):
        h = _splitmix64(h ^ (value & _MASK64))
    return (h >> 11) * (1.0 / (1 << 53))


def derive_seed(request_id: str, engine_seed: int) -> int:
    """Sampling seed of a request that gave none: stable across engines with the same seed."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, key=str(engine_seed).encode())
    return int.from_bytes(digest.digest(), "little") >> 1


def processed_probs(
    logits: torch.Tensor, temperature: float, top_p: float, top_k: int = 0
) -> torch.Tensor:
    """Next-token distribution(s) after temperature, top-k and nucleus filtering (float32).

    ``logits`` is ``(vocab,)`` or ``(rows, vocab)``. ``temperature`` must be positive. Top-k
    (``top_k`` > 0) keeps the ``top_k`` most likely tokens; the nucleus then keeps the most
    likely tokens until their mass reaches ``top_p`` (at least one). Ties are ordered by token
    id, so the result is deterministic.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    vocab = probs.shape[-1]
    if top_p >= 1.0 and not 0 < top_k < vocab:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    if 0 < top_k < vocab:
        sorted_probs[..., top_k:] = 0.0
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    if top_p < 1.0:
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return filtered / filtered.sum(dim=-1, keepdim=True)


def sample_from_probs(probs: torch.Tensor, u: float) -> int:
    """Inverse-CDF sample of a ``(vocab,)`` distribution with the uniform number ``u``.

    Never returns a zero-probability token: the CDF strictly increases at the chosen index.
    """
    cdf = torch.cumsum(probs.double().cpu(), dim=0)
    total = float(cdf[-1])
    target = torch.tensor([u * total], dtype=torch.float64)
    index = int(torch.searchsorted(cdf, target, right=True)[0])
    if index >= probs.shape[0]:  # u * total rounded up to the total: take the last live token
        index = int(torch.nonzero(probs).max())
    return index
