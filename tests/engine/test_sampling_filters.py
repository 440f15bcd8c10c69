"""Top-k and nucleus filtering in the sampler, and seeded draws that survive a resume."""

from __future__ import annotations

import pytest

from lumen.executor.engine.interface import RequestOutput, RequestSpec, SamplingParams

from .conftest import EngineFactory

torch = pytest.importorskip("torch")

from lumen.executor.engine.sampling import processed_probs  # noqa: E402


def test_top_k_keeps_the_k_most_likely_tokens() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 5.0, 0.0, 0.0, 1.0]])
    probs = processed_probs(logits, 1.0, 1.0, top_k=2)
    assert (probs[0] > 0).tolist() == [False, True, False, True, False]
    assert (probs[1] > 0).tolist() == [True, True, False, False, False]  # ties by token id
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    full = torch.softmax(logits[0], -1)
    assert torch.isclose(probs[0, 1] / probs[0, 3], full[1] / full[3])


def test_top_k_then_top_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    # top-k 3 renormalises to 0.526, 0.316, 0.158; the nucleus at 0.8 keeps the first two
    probs = processed_probs(logits, 1.0, 0.8, top_k=3)
    assert (probs > 0).tolist() == [True, True, False, False]
    assert processed_probs(logits, 1.0, 1.0, top_k=0).gt(0).all()  # 0: off


def test_invalid_top_k_is_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=-1)


def _spec(top_k: int, top_p: float, out: tuple[int, ...] = ()) -> RequestSpec:
    params = SamplingParams(temperature=1.0, top_p=top_p, top_k=top_k, seed=11, max_new_tokens=16)
    return RequestSpec("r", (3, 1, 4, 1, 5), params, out)


def test_top_k_one_is_greedy_and_sampling_resumes_identically(
    make_engine: EngineFactory,
) -> None:
    greedy = make_engine().generate(
        [RequestSpec("r", (3, 1, 4, 1, 5), SamplingParams(max_new_tokens=16))]
    )["r"]
    assert make_engine().generate([_spec(1, 1.0)])["r"] == greedy
    sampled = make_engine().generate([_spec(8, 0.9)])["r"]
    assert sampled != greedy
    # A request resumed after 7 tokens on a fresh engine draws exactly the same rest.
    resumed = make_engine().generate([_spec(8, 0.9, tuple(sampled[:7]))])["r"]
    assert list(resumed)[-9:] == list(sampled)[7:]


def test_logprobs_of_the_emitted_tokens(make_engine: EngineFactory) -> None:
    engine = make_engine()
    params = SamplingParams(max_new_tokens=6, logprobs=3)
    engine.add_request(RequestSpec("g", (7, 8, 9), params))
    outs: list[RequestOutput] = []
    while engine.has_unfinished():
        outs.extend(engine.step().outputs)
    tokens = [t for o in outs for t in o.new_token_ids]
    logprobs = [lp for o in outs for lp in o.logprobs]
    assert len(logprobs) == len(tokens) == 6
    for token, lp in zip(tokens, logprobs, strict=True):
        assert len(lp.top) == 3 and lp.top[0][0] == token  # greedy: the most likely token
        assert lp.logprob == pytest.approx(lp.top[0][1]) and lp.logprob <= 0
        assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
    engine.add_request(RequestSpec("n", (7, 8, 9), SamplingParams(max_new_tokens=3)))
    while engine.has_unfinished():
        assert all(o.logprobs == () for o in engine.step().outputs)  # not asked: none
