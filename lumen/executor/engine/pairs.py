"""Synthetic draft/target model pairs whose agreement rate can be chosen.

**These are synthetic models, not real checkpoints.** Speculative decoding is only interesting
when the draft agrees with the target often but not always; downloaded weights are not available
here, so pairs are built instead:

- the *draft* is a random Qwen3 model (seeded);
- the *target* is the draft's layers followed by ``extra_layers`` random layers whose output
  projections (``o_proj`` and ``down_proj``) are scaled by ``epsilon``. Each extra layer adds a
  residual update of size proportional to ``epsilon``, so at ``epsilon = 0`` the target computes
  exactly the draft's function, and as ``epsilon`` grows its next-token choices drift away.

:func:`calibrate_pair` searches ``epsilon`` (bisection in log space) until the teacher-forced
greedy agreement (draft argmax equals target argmax at a position of random prompts) is close to
a requested rate. The acceptance rate seen during generation is close to it but not equal (it is
measured on the models' own continuations); benchmarks report the measured one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lumen.executor.engine.config import ModelConfig
from lumen.executor.engine.weights import (
    InMemoryWeights,
    build_model,
    random_layer,
    random_state_dict,
)

__all__ = ["ModelPair", "build_pair", "calibrate_pair", "greedy_agreement", "random_prompts"]


@dataclass(frozen=True, slots=True)
class ModelPair:
    """A synthetic draft/target pair (see the module docstring).

    Attributes:
        draft: the draft's configuration and weights.
        target: the target's (same vocabulary, ``extra_layers`` more layers).
        epsilon: scale of the extra layers' output projections.
        agreement: teacher-forced greedy agreement measured when calibrating, else ``None``.
    """

    draft: InMemoryWeights
    target: InMemoryWeights
    epsilon: float
    agreement: float | None = None


def build_pair(
    draft_config: ModelConfig,
    *,
    extra_layers: int,
    epsilon: float,
    seed: int = 0,
    init_std: float | None = None,
) -> ModelPair:
    """Build the pair for a given ``epsilon`` (0 makes the target equal the draft)."""
    if extra_layers < 1:
        raise ValueError(f"extra_layers must be >= 1, got {extra_layers}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    draft = random_state_dict(draft_config, seed, init_std)
    base = draft_config.num_hidden_layers
    target_config = draft_config.with_layers(base + extra_layers)
    target = dict(draft)
    # A generator of its own: the extra layers do not depend on epsilon, so calibration moves
    # along one family of targets instead of jumping between unrelated ones.
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    for index in range(base, base + extra_layers):
        for name, tensor in random_layer(target_config, index, gen, init_std).items():
            scaled = name.endswith(("o_proj.weight", "down_proj.weight"))
            target[name] = tensor * epsilon if scaled else tensor
    return ModelPair(
        draft=InMemoryWeights(draft_config, draft),
        target=InMemoryWeights(target_config, target),
        epsilon=epsilon,
    )


def random_prompts(vocab_size: int, num_prompts: int, length: int, seed: int = 0) -> torch.Tensor:
    """Uniform random token ids, shape ``(num_prompts, length)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (num_prompts, length), generator=gen)


@torch.inference_mode()
def _argmax(weights: InMemoryWeights, prompts: torch.Tensor) -> torch.Tensor:
    model = build_model(weights.config, weights.tensors, torch.device("cpu"), torch.float32)
    return model.forward_dense(prompts).argmax(dim=-1)


def greedy_agreement(
    draft: InMemoryWeights, target: InMemoryWeights, prompts: torch.Tensor
) -> float:
    """Fraction of positions of ``prompts`` where draft and target pick the same next token."""
    return float((_argmax(draft, prompts) == _argmax(target, prompts)).float().mean())


def calibrate_pair(
    draft_config: ModelConfig,
    *,
    agreement: float,
    extra_layers: int = 2,
    seed: int = 0,
    num_prompts: int = 8,
    prompt_len: int = 64,
    tolerance: float = 0.03,
    max_iter: int = 24,
) -> ModelPair:
    """Build a pair whose teacher-forced greedy agreement is about ``agreement``.

    Bisects ``log10(epsilon)`` in ``[-6, 2]``; returns the closest pair found within
    ``max_iter`` evaluations (its measured agreement is in :attr:`ModelPair.agreement`).
    """
    if not 0.0 <= agreement <= 1.0:
        raise ValueError(f"agreement must be in [0, 1], got {agreement}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    prompts = random_prompts(draft_config.vocab_size, num_prompts, prompt_len, seed + 7)
    if agreement >= 1.0:
        pair = build_pair(draft_config, extra_layers=extra_layers, epsilon=0.0, seed=seed)
        return _with_agreement(pair, 1.0)
    draft_argmax: torch.Tensor | None = None
    lo, hi = -6.0, 2.0
    best: ModelPair | None = None
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        pair = build_pair(draft_config, extra_layers=extra_layers, epsilon=10.0**mid, seed=seed)
        if draft_argmax is None:
            draft_argmax = _argmax(pair.draft, prompts)
        measured = float((draft_argmax == _argmax(pair.target, prompts)).float().mean())
        pair = _with_agreement(pair, measured)
        if best is None or abs(measured - agreement) < abs(_agreement(best) - agreement):
            best = pair
        if abs(measured - agreement) <= tolerance:
            break
        if measured > agreement:
            lo = mid  # target still too close to the draft: larger epsilon
        else:
            hi = mid
    if best is None:  # unreachable: max_iter >= 1 evaluates at least once
        raise RuntimeError("calibration evaluated no pair")
    return best


def _agreement(pair: ModelPair) -> float:
    return math.nan if pair.agreement is None else pair.agreement


def _with_agreement(pair: ModelPair, agreement: float) -> ModelPair:
    return ModelPair(pair.draft, pair.target, pair.epsilon, agreement)
