"""Speculative decoding: acceptance rules, draft proposals, and exactness of the output."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")

import torch

from lumen.executor.engine.config import ModelConfig
from lumen.executor.engine.interface import RandomWeights, RequestSpec, SamplingParams
from lumen.executor.engine.pairs import (
    build_pair,
    calibrate_pair,
    greedy_agreement,
    random_prompts,
)
from lumen.executor.engine.sampling import sample_from_probs
from lumen.executor.engine.speculative import (
    accept_greedy,
    accept_rejection,
    speculative_generate,
)

from .conftest import EngineFactory


def requests(sampling: SamplingParams, n: int = 4) -> list[RequestSpec]:
    return [
        RequestSpec(f"r{i}", tuple((13 * i + j) % 256 for j in range(5 + 3 * i)), sampling)
        for i in range(n)
    ]


def test_accept_greedy() -> None:
    assert accept_greedy([5, 6, 7, 8], [5, 6, 7]) == [5, 6, 7, 8]  # all accepted + bonus
    assert accept_greedy([5, 9, 7, 8], [5, 6, 7]) == [5, 9]  # first mismatch corrected
    assert accept_greedy([1, 2], [3]) == [1]
    with pytest.raises(ValueError):
        accept_greedy([1], [1])


@pytest.mark.parametrize("point_mass_draft", [False, True])
def test_rejection_rule_preserves_the_target_distribution(point_mass_draft: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    vocab, trials = 6, 20_000
    p = torch.softmax(torch.randn(2, vocab, generator=gen) * 1.5, -1)
    q = torch.softmax(torch.randn(1, vocab, generator=gen) * 1.5, -1)
    rng = random.Random(1)
    counts = torch.zeros(vocab)
    for _ in range(trials):
        draft = 2 if point_mass_draft else sample_from_probs(q[0], rng.random())
        out = accept_rejection(
            p,
            None if point_mass_draft else q,
            [draft],
            accept_uniforms=[rng.random()],
            residual_uniforms=[rng.random()],
            bonus_uniform=rng.random(),
        )
        counts[out[0]] += 1
    # Standard error of each frequency is at most 0.0035 at 20k trials; allow 4 sigma.
    assert torch.allclose(counts / trials, p[0], atol=0.014)


def test_speculative_greedy_equals_target_greedy(
    tiny_config: ModelConfig, make_engine: EngineFactory
) -> None:
    pair = calibrate_pair(tiny_config, agreement=0.7, extra_layers=2, num_prompts=4, prompt_len=32)
    assert pair.agreement is not None and abs(pair.agreement - 0.7) <= 0.03
    specs = requests(SamplingParams(max_new_tokens=24))
    want = make_engine(weights=pair.target).generate(specs)
    for k in (1, 4):
        target = make_engine(weights=pair.target)
        draft = make_engine(weights=pair.draft, role="draft")
        run = speculative_generate(target, draft, specs, k)
        assert run.outputs == want
        assert 0.3 < run.acceptance_rate < 1.0
        assert target.num_free_blocks == target.num_kv_blocks
        assert draft.num_free_blocks == draft.num_kv_blocks  # mirrors dropped on finish


def test_identical_and_unrelated_drafts(
    tiny_config: ModelConfig, make_engine: EngineFactory
) -> None:
    specs = requests(SamplingParams(max_new_tokens=16), n=2)
    weights = RandomWeights(tiny_config, seed=0)
    want = make_engine(weights=weights).generate(specs)
    same = speculative_generate(
        make_engine(weights=weights), make_engine(weights=weights, role="draft"), specs, 4
    )
    assert same.outputs == want and same.acceptance_rate == 1.0
    assert same.tokens_per_verification > 4  # K accepted plus the bonus, except near the end
    unrelated = speculative_generate(
        make_engine(weights=weights),
        make_engine(weights=RandomWeights(tiny_config, seed=99), role="draft"),
        specs,
        4,
    )
    assert unrelated.outputs == want and unrelated.acceptance_rate < 0.2


def test_verify_and_plain_decode_share_steps(
    tiny_config: ModelConfig, make_engine: EngineFactory
) -> None:
    pair = build_pair(tiny_config, extra_layers=1, epsilon=0.1)
    specs = requests(SamplingParams(max_new_tokens=20))
    want = make_engine(weights=pair.target).generate(specs)
    run = speculative_generate(
        make_engine(weights=pair.target),
        make_engine(weights=pair.draft, role="draft"),
        specs,
        3,
        mirrored=lambda rid: rid in ("r0", "r2"),
    )
    assert run.outputs == want
    assert run.mixed_steps > 0


def test_sampled_speculation_runs_to_completion(
    tiny_config: ModelConfig, make_engine: EngineFactory
) -> None:
    pair = build_pair(tiny_config, extra_layers=1, epsilon=0.05)
    specs = requests(SamplingParams(temperature=0.8, top_p=0.9, seed=3, max_new_tokens=20))
    first = speculative_generate(
        make_engine(weights=pair.target), make_engine(weights=pair.draft, role="draft"), specs, 4
    )
    again = speculative_generate(
        make_engine(weights=pair.target), make_engine(weights=pair.draft, role="draft"), specs, 4
    )
    assert first.outputs == again.outputs  # seeded end to end
    assert all(len(tokens) == 20 for tokens in first.outputs.values())
    assert first.acceptance_rate > 0.5


def test_draft_proposals_follow_the_draft_and_roll_back(
    tiny_config: ModelConfig, make_engine: EngineFactory
) -> None:
    spec = RequestSpec("a", (1, 2, 3, 4, 5), SamplingParams(max_new_tokens=30))
    own = make_engine().generate([spec])["a"]
    draft = make_engine(role="draft")
    (first,) = draft.propose([spec], k=4)
    assert list(first.token_ids) == own[:4] and first.base_len == 5 and first.draft_probs is None
    # The "target" took a different token at position 5: the mirror rolls back and follows it.
    diverged = RequestSpec("a", spec.prompt_token_ids, spec.sampling, (own[0] ^ 1,))
    (second,) = draft.propose([diverged], k=3)
    solo = make_engine(role="draft").propose([diverged], k=3)[0]
    assert second.token_ids == solo.token_ids and second.base_len == 6
    sampled = RequestSpec("b", (1, 2), SamplingParams(temperature=1.0, seed=1, max_new_tokens=30))
    (with_probs,) = draft.propose([sampled], k=3)
    assert with_probs.draft_probs is not None and with_probs.draft_probs.shape == (
        3,
        tiny_config.vocab_size,
    )


def test_pair_agreement_falls_with_epsilon(tiny_config: ModelConfig) -> None:
    prompts = random_prompts(tiny_config.vocab_size, 4, 32, seed=1)
    rates = [
        greedy_agreement(p.draft, p.target, prompts)
        for p in (build_pair(tiny_config, extra_layers=2, epsilon=e) for e in (0.0, 0.1, 1.0, 10.0))
    ]
    assert rates[0] == 1.0
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.3
