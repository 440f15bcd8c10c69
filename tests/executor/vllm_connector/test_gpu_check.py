"""``make gpu-check``'s script, as far as it runs without a GPU: its plan and its checks of the
environment (``--dry-run``), and its refusal of plans that cannot work."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_dry_run_prints_the_plan_and_the_environment(
    gpu_check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    venv = tmp_path / "venv"
    assert gpu_check.main(["--dry-run", "--venv", str(venv), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert f"install: {venv} with pip install -e '.[vllm]'" in out
    assert "SIGKILL worker 0 at 1.5 s" in out
    assert "3 vLLM workers" in out and "token-identical" in out
    assert "python >= 3.11" in out and "nvidia-smi" in out
    assert "[ok] pinned [vllm] extra" in out
    assert not venv.exists()  # nothing installed


def test_dry_run_without_install(
    gpu_check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dry-run", "--no-install", "--workers", "4", "--gpu-share", "0.2"]
    assert gpu_check.main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "install:" not in out and "4 vLLM workers" in out


def test_dry_run_offline_from_a_wheelhouse(
    gpu_check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    argv = ["--dry-run", "--wheelhouse", str(wheels), "--out", str(tmp_path / "o")]
    assert gpu_check.main([*argv, "--venv", str(tmp_path / "venv")]) == 0
    assert f"offline from {wheels}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--wheelhouse", "/nonexistent/wheels"], "not a directory"),
        (["--workers", "1"], "at least 2"),
        (["--gpu-share", "0.5"], "share one GPU"),
        (["--max-tokens", "1"], "--max-tokens"),
    ],
)
def test_plans_that_cannot_work_are_refused(
    gpu_check: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.main(["--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_tiny_checkpoint_is_a_qwen3_hf_folder(gpu_check: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import json

    from lumen.executor.engine.weights import load_checkpoint

    model = gpu_check.write_checkpoint(tmp_path, seed=0)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    assert (tmp_path / "model.safetensors").exists()
    loaded, tensors = load_checkpoint(tmp_path)
    assert loaded == model and "model.layers.3.self_attn.k_proj.weight" in tensors
    plan = gpu_check.make_plan(gpu_check.build_parser().parse_args(["--requests", "5"]))
    requests = gpu_check.make_requests(plan, model.vocab_size)
    assert len(requests) == 5
    assert all(64 <= len(r.prompt_token_ids) <= 512 for r in requests)
    assert all(0 < t < model.vocab_size for r in requests for t in r.prompt_token_ids)


def test_the_launcher_starts_vllm_workers_with_metrics() -> None:
    from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster

    spec = ClusterSpec(
        3,
        weights="/models/tiny",
        draft_weights=None,
        engine="vllm",
        worker_args=("--gpu-memory-utilization", "0.2"),
        worker_metrics=True,
    )
    cluster = LocalCluster(spec)
    argv = cluster._worker_argv(1, "serving")
    assert argv[argv.index("--engine") + 1] == "vllm" and "--device" not in argv
    assert argv[argv.index("--weights") + 1] == "/models/tiny"
    assert argv[argv.index("--metrics-port") + 1] == str(cluster.worker_metrics_ports[1])
    assert argv[-2:] == ["--gpu-memory-utilization", "0.2"]
    assert set(cluster.worker_metrics_urls) == {0, 1, 2}
    builtin = LocalCluster(ClusterSpec(3))._worker_argv(0, "serving")
    assert "--engine" not in builtin and "--metrics-port" not in builtin
    assert builtin[builtin.index("--device") + 1] == "cpu"
    with pytest.raises(ValueError, match="engine"):
        ClusterSpec(3, engine="tgi")
