"""The vLLM worker's entry point and engine adapter, without vLLM: the one-line install hint,
the arguments vLLM is configured with, and the adapter's translation of vLLM's outputs."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lumen.executor.engine.config import EngineConfig
from lumen.executor.engine.interface import (
    FinishReason,
    RandomWeights,
    RequestSpec,
    SamplingParams,
)
from lumen.executor.engine.kv_page import KVLayout
from lumen.executor.vllm.core import BRIDGE_KEY, REQUEST_KEY, LumenKVBridge
from lumen.executor.vllm.engine import (
    VllmEngine,
    VllmMissingError,
    VllmOptions,
    engine_kwargs,
    finish_reason,
    kv_transfer_kwargs,
    require_vllm,
    sampling_kwargs,
)
from lumen.executor.worker.__main__ import main

from ..conftest import TINY as MODEL


@pytest.fixture
def no_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError


def test_engine_vllm_without_vllm_names_the_extra(
    no_vllm: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--engine", "vllm", "--model", str(tmp_path), "--worker-id", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install 'lumen-recovery[vllm]'" in err
    with pytest.raises(VllmMissingError, match=r"lumen-recovery\[vllm\]"):
        require_vllm()


def test_engine_vllm_refuses_drafts_and_random_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--engine", "vllm", "--worker-id", "0"]
    assert main([*argv, "--model", str(tmp_path), "--draft-weights", "random:1"]) == 2
    assert "no draft model" in capsys.readouterr().err
    assert main([*argv, "--weights", "random:0"]) == 2
    assert "Hugging Face folder" in capsys.readouterr().err
    assert main(["--worker-id", "0"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_vllm_is_configured_with_the_connector_and_in_process() -> None:
    transfer = kv_transfer_kwargs("b1")
    assert transfer["kv_connector"] == "LumenConnector"
    assert transfer["kv_connector_module_path"] == "lumen.executor.vllm.connector"
    assert transfer["kv_role"] == "kv_both"
    assert transfer["kv_load_failure_policy"] == "recompute"
    assert transfer["kv_connector_extra_config"] == {BRIDGE_KEY: "b1"}
    config = EngineConfig(block_size=16, num_kv_blocks=100, max_model_len=256)
    args = engine_kwargs("/m", config, MODEL, VllmOptions(gpu_memory_utilization=0.5))
    assert args["skip_tokenizer_init"] is True
    assert args["distributed_executor_backend"] == "uni"
    assert (args["block_size"], args["num_gpu_blocks_override"]) == (16, 100)
    assert (args["max_model_len"], args["gpu_memory_utilization"]) == (256, 0.5)
    assert args["dtype"] == "bfloat16"
    assert engine_kwargs("/m", EngineConfig(dtype="float32"), MODEL, VllmOptions())["dtype"] == (
        "float32"
    )
    with pytest.raises(ValueError):
        VllmOptions(gpu_memory_utilization=0)


def test_sampling_continues_a_resumed_request() -> None:
    spec = RequestSpec(
        "12",
        (1, 2, 3),
        SamplingParams(temperature=0.0, max_new_tokens=10, stop_token_ids=(7,), seed=4),
        output_token_ids=(5, 6),
    )
    kw = sampling_kwargs(spec)
    assert kw["max_tokens"] == 8
    assert kw["stop_token_ids"] == [7] and kw["ignore_eos"] is True
    assert kw["extra_args"] == {"kv_transfer_params": {REQUEST_KEY: "12"}}
    assert finish_reason(None) is None
    assert finish_reason("length") is FinishReason.LENGTH
    assert finish_reason("stop") is FinishReason.STOP
    assert finish_reason("abort") is FinishReason.ABORT


def test_engine_without_a_model(
    no_vllm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    engine = VllmEngine(EngineConfig(block_size=16))
    assert engine.num_kv_blocks == 0
    assert engine.role is None and engine.export_kv("1") == []
    with pytest.raises(ValueError, match="Hugging Face folder"):
        engine.load_weights(RandomWeights(MODEL))
    with pytest.raises(NotImplementedError):
        engine.load_weights(tmp_path, "draft")
    MODEL.to_json(tmp_path / "config.json")
    with pytest.raises(VllmMissingError):
        engine.load_weights(tmp_path)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # set before vLLM is imported
    assert engine.submit_proposals([]) == 0
    with pytest.raises(NotImplementedError):
        engine.propose([], 2)


class FakeLLM:
    """The part of vLLM's LLMEngine the adapter calls, replaying scripted outputs."""

    def __init__(self, num_gpu_blocks: int = 10) -> None:
        self.vllm_config = SimpleNamespace(
            cache_config=SimpleNamespace(num_gpu_blocks=num_gpu_blocks)
        )
        self.added: list[tuple[str, Any, Any]] = []
        self.aborted: list[str] = []
        self.script: list[list[Any]] = []

    def add_request(self, request_id: str, prompt: Any, params: Any) -> None:
        self.added.append((request_id, prompt, params))

    def abort_request(self, ids: list[str]) -> None:
        self.aborted.extend(ids)

    def step(self) -> list[Any]:
        return self.script.pop(0) if self.script else []

    def has_unfinished_requests(self) -> bool:
        return bool(self.script)


def _out(rid: str, tokens: list[int], reason: str | None = None) -> Any:
    completion = SimpleNamespace(token_ids=tokens, finish_reason=reason)
    return SimpleNamespace(request_id=rid, outputs=[completion], finished=reason is not None)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)  # type: ignore[attr-defined]
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict  # type: ignore[attr-defined]
    sp = types.ModuleType("vllm.sampling_params")
    sp.RequestOutputKind = SimpleNamespace(DELTA="delta")  # type: ignore[attr-defined]
    for name, module in (("vllm", vllm), ("vllm.inputs", inputs), ("vllm.sampling_params", sp)):
        monkeypatch.setitem(sys.modules, name, module)


def test_adapter_translates_requests_outputs_and_pages(fake_vllm: None) -> None:
    engine = VllmEngine(EngineConfig(block_size=4))
    llm = FakeLLM()
    layout = KVLayout(4, 1, 1, 2, "float32")
    engine._llm, engine._bridge = llm, LumenKVBridge(layout)
    spec = RequestSpec("3", (1, 2, 3, 4, 5), SamplingParams(max_new_tokens=4), (9,))
    assert engine.import_kv(spec, []) == 0
    rid, prompt, params = llm.added[0]
    assert rid == "3" and prompt == {"prompt_token_ids": [1, 2, 3, 4, 5, 9]}
    assert params.max_tokens == 3 and params.output_kind == "delta"
    assert (engine.num_kv_blocks, engine.num_free_blocks) == (10, 8)  # 6 positions: 2 blocks
    llm.script = [[_out("3", [7]), _out("x", [1])], [_out("3", [8, 6], "length")]]
    first = engine.step().outputs
    assert engine.num_free_blocks == 8  # 7 positions
    assert [(o.request_id, o.new_token_ids, o.num_output_tokens) for o in first] == [("3", (7,), 2)]
    (last,) = engine.step().outputs
    assert last.num_output_tokens == 4 and last.finish_reason is FinishReason.LENGTH
    assert not engine.has_unfinished()
    assert engine.num_free_blocks == 10  # finished requests hold no blocks
    engine.add_request(RequestSpec("8", (1,), SamplingParams(max_new_tokens=2)))
    engine.abort("8")
    assert llm.aborted == ["8"]
    assert engine.kv_layout == layout


def test_the_engine_loop_copies_out_only_requests_with_a_holder(fake_vllm: None) -> None:
    from lumen.executor.worker.api import GenerationRequest
    from lumen.executor.worker.loop import EngineLoop

    engine = VllmEngine(EngineConfig(block_size=4))
    engine._llm, engine._bridge = FakeLLM(), LumenKVBridge(KVLayout(4, 1, 1, 2, "float32"))
    loop = EngineLoop(engine)
    loop.start()
    try:
        loop.submit(GenerationRequest(1, (1, 2, 3), 4), holder="127.0.0.1:1")
        loop.submit(GenerationRequest(2, (1, 2, 3), 4))
        assert engine._bridge.saving("1") and not engine._bridge.saving("2")
    finally:
        loop.stop()
