"""The PyTorch engine end to end: batching, chunked prefill, preemption, sampling, lifecycle."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from lumen.executor.engine import create_engine
from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.executor.engine.interface import (
    FinishReason,
    NoModelLoadedError,
    Proposal,
    RandomWeights,
    RequestOutput,
    RequestSpec,
    SamplingParams,
    UnknownRequestError,
)

from .conftest import EngineFactory


def workload() -> list[RequestSpec]:
    """Six requests of different lengths; half greedy, half sampled (seeded, with top-p)."""
    specs = []
    for i in range(6):
        prompt = tuple((7 * i + 3 * j) % 256 for j in range(3 + 4 * i))
        sampling = (
            SamplingParams(max_new_tokens=12 + i)
            if i % 2 == 0
            else SamplingParams(temperature=0.9, top_p=0.9, seed=100 + i, max_new_tokens=12 + i)
        )
        specs.append(RequestSpec(f"r{i}", prompt, sampling))
    return specs


def test_batched_equals_unbatched(make_engine: EngineFactory) -> None:
    alone = {}
    for spec in workload():
        alone.update(make_engine(max_num_batched_tokens=512).generate([spec]))
    # Small budget: prefill chunks of several requests interleave with decodes.
    engine = make_engine(max_num_batched_tokens=7, max_num_seqs=4)
    batched = engine.generate(workload())
    assert batched == alone
    assert engine.num_free_blocks == engine.num_kv_blocks


def test_preemption_under_kv_pressure_keeps_outputs(make_engine: EngineFactory) -> None:
    want = make_engine().generate(workload())
    engine = make_engine(num_kv_blocks=16, max_num_batched_tokens=64)
    for spec in workload():
        engine.add_request(spec)
    got: dict[str, list[int]] = {}
    preempted = 0
    while engine.has_unfinished():
        step = engine.step()
        preempted += step.stats.num_preempted
        for out in step.outputs:
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
    assert preempted > 0
    assert got == want
    assert engine.num_free_blocks == 16


def test_seeded_sampling_is_reproducible_and_seed_dependent(make_engine: EngineFactory) -> None:
    def spec(seed: int | None, rid: str = "r") -> RequestSpec:
        return RequestSpec(
            rid, (1, 2, 3), SamplingParams(temperature=1.0, seed=seed, max_new_tokens=20)
        )

    a = make_engine().generate([spec(1)])["r"]
    assert make_engine().generate([spec(1)])["r"] == a
    assert make_engine().generate([spec(2)])["r"] != a
    # No seed: derived from the request id and the engine seed.
    b = make_engine().generate([spec(None)])["r"]
    assert make_engine().generate([spec(None)])["r"] == b
    assert make_engine(seed=5).generate([spec(None)])["r"] != b


def test_top_p_small_is_greedy(make_engine: EngineFactory) -> None:
    greedy = make_engine().generate(
        [RequestSpec("r", (4, 5, 6), SamplingParams(max_new_tokens=10))]
    )
    nucleus = make_engine().generate(
        [
            RequestSpec(
                "r",
                (4, 5, 6),
                SamplingParams(temperature=1.0, top_p=1e-6, seed=3, max_new_tokens=10),
            )
        ]
    )
    assert nucleus == greedy


def test_stop_tokens_and_finish_reasons(make_engine: EngineFactory) -> None:
    engine = make_engine()
    free_run = engine.generate([RequestSpec("a", (9, 8, 7), SamplingParams(max_new_tokens=10))])[
        "a"
    ]
    stop = free_run[3]
    engine.add_request(
        RequestSpec("b", (9, 8, 7), SamplingParams(max_new_tokens=10, stop_token_ids=(stop,)))
    )
    outs: list[RequestOutput] = []
    while engine.has_unfinished():
        outs.extend(engine.step().outputs)
    assert outs[-1].finish_reason is FinishReason.STOP
    tokens = [t for o in outs for t in o.new_token_ids]
    assert tokens == free_run[: free_run.index(stop) + 1]


def test_max_model_len_finishes_with_length(make_engine: EngineFactory) -> None:
    engine = make_engine(max_model_len=12)
    out = engine.generate([RequestSpec("a", tuple(range(8)), SamplingParams(max_new_tokens=50))])
    assert len(out["a"]) == 4


def test_abort_frees_blocks(make_engine: EngineFactory) -> None:
    engine = make_engine()
    engine.add_request(RequestSpec("a", tuple(range(20))))
    engine.step()
    assert engine.num_free_blocks < engine.num_kv_blocks
    engine.abort("a")
    engine.abort("never-added")
    assert engine.num_free_blocks == engine.num_kv_blocks
    assert not engine.has_unfinished()
    with pytest.raises(UnknownRequestError):
        engine.export_kv("a")


def test_roles_load_and_unload(tiny_config: ModelConfig) -> None:
    engine = create_engine(
        "torch", config=EngineConfig(device="cpu", block_size=4, num_kv_blocks=64)
    )
    assert engine.role is None and not engine.has_unfinished()
    with pytest.raises(NoModelLoadedError):
        engine.add_request(RequestSpec("a", (1,)))
    engine.load_weights(RandomWeights(tiny_config), role="draft")
    assert engine.role == "draft"
    assert engine.kv_layout.bytes_per_token == tiny_config.kv_bytes_per_token("float32")
    with pytest.raises(NoModelLoadedError):
        engine.submit_proposals([Proposal("a", 1, 1, (2,))])
    assert len(engine.propose([RequestSpec("a", (1, 2, 3))], k=3)[0].token_ids) == 3
    engine.load_weights(RandomWeights(tiny_config), role="target")
    assert engine.role == "target"
    with pytest.raises(NoModelLoadedError):
        engine.propose([RequestSpec("a", (1,))], k=2)
    engine.add_request(RequestSpec("a", (1, 2)))
    engine.unload()
    assert engine.role is None and not engine.has_unfinished()
    with pytest.raises(ValueError):
        engine.load_weights(RandomWeights(tiny_config), role="other")  # type: ignore[arg-type]
