"""``make gpu-check``: LUMEN on vLLM workers, end to end, on one GPU machine (docs/vllm.md).

1. install: a virtual environment (``--venv``, default ``.venv-vllm``) with ``pip install -e
   '.[vllm]'`` (vLLM and its own CUDA torch; never the CPU ``[executor]`` extra), then the
   script runs again inside it;
2. checkpoint: a tiny random-weight Qwen3 model written in Hugging Face format by LUMEN's own
   saver (``lumen.executor.engine.weights.save_checkpoint``), no hub download;
3. reference: a planner, a gateway and three vLLM workers (``--engine vllm``) serve greedy
   requests without a failure;
4. failure: the same cluster and requests under the ``lumen`` policy; worker 0 is SIGKILLed
   mid-generation and restarted;
5. checks: every output is token-identical to the reference, restored requests loaded a
   non-empty checkpointed prefix through the connector (not a full recompute); prints the
   restore GB/s, TTFT and the recovery times, and exits 1 when a check fails.

``--dry-run`` prints the plan and checks the environment (Python, GPU, disk) without installing
or starting anything; it needs only the standard library.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Size of the tiny model (the Qwen3 architecture vLLM runs, head_dim its kernels support).
MODEL_SHAPE = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "intermediate_size": 512,
    "vocab_size": 4096,
    "max_position_embeddings": 4096,
}


@dataclass(frozen=True)
class Plan:
    """What one ``make gpu-check`` does."""

    venv: Path
    out: Path
    workers: int = 3
    requests: int = 48
    prompt_tokens: tuple[int, int] = (64, 512)
    max_tokens: int = 384
    arrival_gap_s: float = 0.05
    kill_at_s: float = 1.5
    restart_after_s: float = 1.0
    gpu_share: float = 0.2
    block_size: int = 16
    install: bool = True
    wheelhouse: Path | None = None
    seed: int = 0
    steps: list[str] = field(default_factory=list)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__)
    p.add_argument("--venv", type=Path, default=ROOT / ".venv-vllm", help="environment to use")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "gpu-check", help="logs, model")
    p.add_argument("--workers", type=int, default=3, help="vLLM workers (>= 2)")
    p.add_argument("--requests", type=int, default=48, help="greedy requests per run")
    p.add_argument("--max-tokens", type=int, default=384, help="output tokens per request")
    p.add_argument("--kill-at-s", type=float, default=1.5, help="SIGKILL worker 0 this late")
    p.add_argument("--gpu-share", type=float, default=0.2, help="GPU memory share per worker")
    p.add_argument("--no-install", action="store_true", help="use the running Python as is")
    p.add_argument(
        "--wheelhouse",
        type=Path,
        default=None,
        help="install offline from these wheels (pip download '.[vllm]' -d DIR elsewhere)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, check, start nothing")
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan of ``args`` (ValueError when it cannot work)."""
    if args.workers < 2:
        raise ValueError("--workers: a failover needs at least 2 workers")
    if args.requests < 1 or args.max_tokens < 2:
        raise ValueError("--requests must be >= 1 and --max-tokens >= 2")
    if not 0.0 < args.gpu_share * args.workers <= 0.95:
        raise ValueError("--gpu-share times --workers must be in (0, 0.95]: they share one GPU")
    plan = Plan(
        venv=args.venv,
        out=args.out,
        workers=args.workers,
        requests=args.requests,
        max_tokens=args.max_tokens,
        kill_at_s=args.kill_at_s,
        gpu_share=args.gpu_share,
        install=not args.no_install,
        wheelhouse=args.wheelhouse,
    )
    if plan.install and plan.wheelhouse is not None and not plan.wheelhouse.is_dir():
        raise ValueError(f"--wheelhouse: {plan.wheelhouse} is not a directory")
    steps = []
    if plan.install:
        source = f" offline from {plan.wheelhouse}" if plan.wheelhouse else ""
        steps.append(
            f"install: {plan.venv} with pip install -e '.[vllm]'{source}, then rerun inside it"
        )
    steps += [
        f"checkpoint: tiny random Qwen3 {MODEL_SHAPE} -> {plan.out / 'model'}",
        f"reference: planner + gateway + {plan.workers} vLLM workers, {plan.requests} greedy "
        f"requests of {plan.prompt_tokens[0]}-{plan.prompt_tokens[1]} prompt tokens, "
        f"{plan.max_tokens} output tokens, no failure",
        f"failure: policy lumen, SIGKILL worker 0 at {plan.kill_at_s} s, restart it "
        f"{plan.restart_after_s} s later",
        "checks: outputs token-identical to the reference; restored requests loaded a "
        "non-empty prefix; print restore GB/s, TTFT, recovery times",
    ]
    return replace(plan, steps=steps)


def check_environment(plan: Plan) -> list[tuple[str, bool, str]]:
    """(what, ok, detail) for each precondition of the run."""
    checks = []
    version = sys.version_info
    checks.append(("python >= 3.11", version >= (3, 11), sys.version.split()[0]))
    smi = shutil.which("nvidia-smi")
    detail = "not on PATH"
    if smi:
        try:
            res = subprocess.run(
                [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            detail = res.stdout.strip() or res.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            detail = str(exc)
    checks.append(("an NVIDIA GPU (nvidia-smi)", bool(smi) and "NVIDIA" in detail, detail))
    target = plan.venv if plan.venv.exists() else plan.venv.parent
    free_gb = shutil.disk_usage(target).free / 1e9 if target.exists() else 0.0
    need = 15.0 if plan.install else 1.0
    checks.append((f"{need:.0f} GB free disk", free_gb >= need, f"{free_gb:.1f} GB at {target}"))
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    checks.append(("pinned [vllm] extra", 'vllm = ["vllm==' in pyproject, "pyproject.toml"))
    return checks


def install(plan: Plan, argv: list[str]) -> int:
    """Create the environment, install ``.[vllm]`` and run this script again inside it."""
    python = plan.venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(plan.venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    if plan.wheelhouse is not None:
        pip += ["--no-index", "--find-links", str(plan.wheelhouse.resolve())]
    else:
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[vllm]"], check=True, cwd=ROOT)
    again = [str(python), str(Path(__file__).resolve()), *argv, "--no-install"]
    return subprocess.run(again, cwd=ROOT, check=False).returncode


def write_checkpoint(directory: Path, seed: int) -> Any:
    """The tiny model in Hugging Face format (LUMEN's saver); returns its ModelConfig."""
    from lumen.executor.engine.config import ModelConfig
    from lumen.executor.engine.weights import random_state_dict, save_checkpoint

    model = ModelConfig(**MODEL_SHAPE)  # type: ignore[arg-type]
    save_checkpoint(directory, model, random_state_dict(model, seed))
    return model


def make_requests(plan: Plan, vocab_size: int) -> list[Any]:
    """Greedy requests with prompts of many blocks, so a failure interrupts long contexts."""
    import random

    from lumen.executor.cluster.loadgen import LoadRequest

    rng = random.Random(plan.seed)
    low, high = plan.prompt_tokens
    return [
        LoadRequest(
            arrival_s=i * plan.arrival_gap_s,
            prompt_token_ids=tuple(
                rng.randrange(1, vocab_size) for _ in range(rng.randint(low, high))
            ),
            max_tokens=plan.max_tokens,
            seed=i,
        )
        for i in range(plan.requests)
    ]


def run_cluster(plan: Plan, spec: Any, requests: list[Any], fail: bool) -> dict[str, Any]:
    """One run: the load, then (with ``fail``) worker 0's kill and restart; metrics at the end."""
    from lumen.executor.cluster.launcher import LocalCluster
    from lumen.executor.cluster.loadgen import run_load
    from lumen.executor.cluster.run import scrape

    out: dict[str, Any] = {"reload_s": float("nan")}
    with LocalCluster(spec) as cluster:
        killed: list[float] = []

        def crash() -> None:
            killed.append(time.monotonic())
            cluster.kill_worker(0)

        at = [(plan.kill_at_s, crash)] if fail else []
        out["load"] = run_load(cluster.gateway_url, requests, timeout_s=420.0, at_time=at)
        if fail and killed:
            time.sleep(plan.restart_after_s)
            cluster.restart_worker(0)
            cluster.wait_worker(0, time.monotonic() + 300.0, stage="serving")
            out["reload_s"] = time.monotonic() - killed[0]
        out["gateway"] = scrape(f"{cluster.gateway_url}/metrics")
        out["workers"] = {i: scrape(url) for i, url in cluster.worker_metrics_urls.items()}
    return out


def summarize(reference: dict[str, Any], failed: dict[str, Any]) -> tuple[list[str], bool]:
    """The report lines and whether every check passed."""
    import numpy as np

    from lumen.executor.cluster.run import mismatches

    ref, run = reference["load"], failed["load"]
    wrong = mismatches(run, ref)
    errors = [e for e in run.errors if e is not None]
    workers = failed["workers"]
    loaded = sum(m.get("lumen_worker_connector_loaded_bytes", 0.0) for m in workers.values())
    seconds = sum(m.get("lumen_worker_connector_load_seconds", 0.0) for m in workers.values())
    restored = sum(m.get("lumen_worker_connector_restored_tokens", 0.0) for m in workers.values())
    gw = failed["gateway"]
    resumed = gw.get("lumen_gateway_resumed_requests_total", 0.0)
    rec_n = gw.get("lumen_gateway_recovery_seconds_count", 0.0)
    rec_s = gw.get("lumen_gateway_recovery_seconds_sum", 0.0) / rec_n if rec_n else float("nan")
    ttft_ref, ttft_run = ref.ttft_s(), run.ttft_s()
    lines = [
        f"requests: {len(run.token_ids)}, errors: {len(errors)}, token mismatches: {len(wrong)}",
        f"resumed requests: {resumed:.0f}; KV positions loaded by LumenConnector: {restored:.0f}",
        f"restore: {loaded / 1e9:.4f} GB in {seconds:.4f} s = "
        f"{(loaded / seconds / 1e9) if seconds else float('nan'):.2f} GB/s",
        f"TTFT mean / p99: reference {np.nanmean(ttft_ref):.4f} / "
        f"{np.nanpercentile(ttft_ref, 99):.4f} s, with failure {np.nanmean(ttft_run):.4f} / "
        f"{np.nanpercentile(ttft_run, 99):.4f} s",
        f"recovery: gateway replanning {rec_s:.3f} s; worker 0 kill -> serving again "
        f"{failed['reload_s']:.1f} s",
    ]
    ok = not wrong and not errors and resumed > 0 and restored > 0
    lines.append("RESULT: " + ("PASS" if ok else "FAIL"))
    return lines, ok


def run_check(plan: Plan) -> int:
    from lumen.executor.cluster.launcher import ClusterSpec

    plan.out.mkdir(parents=True, exist_ok=True)
    model_dir = plan.out / "model"
    model = write_checkpoint(model_dir, plan.seed)
    requests = make_requests(plan, model.vocab_size)
    worker_args = (
        "--gpu-memory-utilization",
        str(plan.gpu_share),
        "--block-size",
        str(plan.block_size),
    )
    spec = ClusterSpec(
        plan.workers,
        "lumen",
        weights=str(model_dir),
        draft_weights=None,
        engine="vllm",
        worker_args=worker_args,
        worker_metrics=True,
        log_dir=plan.out / "failure",
        start_timeout_s=420.0,
    )
    started = time.monotonic()
    reference = run_cluster(
        plan,
        replace(spec, policy="stop-and-restart", log_dir=plan.out / "reference"),
        requests,
        False,
    )
    failed = run_cluster(plan, spec, requests, True)
    lines, ok = summarize(reference, failed)
    lines.append(f"runs took {time.monotonic() - started:.0f} s (logs in {plan.out})")
    text = "\n".join(lines)
    print(text)
    (plan.out / "report.txt").write_text(text + "\n", encoding="utf-8")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        plan = make_plan(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("plan:")
        for i, step in enumerate(plan.steps, 1):
            print(f"  {i}. {step}")
        print("environment:")
        for what, ok, detail in check_environment(plan):
            print(f"  [{'ok' if ok else 'missing'}] {what}: {detail}")
        return 0
    if plan.install and Path(sys.prefix).resolve() != plan.venv.resolve():
        return install(plan, argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return run_check(plan)


if __name__ == "__main__":
    sys.exit(main())
