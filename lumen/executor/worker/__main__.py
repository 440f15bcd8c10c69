"""``python -m lumen.executor.worker``: run one worker process until SIGTERM.

Example::

    python -m lumen.executor.worker --worker-id 1 --address 127.0.0.1:50061 \\
        --weights random:0 --draft-weights random:1 --checkpoint-budget-bytes 1073741824 \\
        --ssd-gbyte-s 2.0 --metrics-port 9101 --peers 0=127.0.0.1:50060,2=127.0.0.1:50062

On a GPU with vLLM installed (``pip install 'lumen-recovery[vllm]'``; docs/vllm.md)::

    python -m lumen.executor.worker --engine vllm --model /models/qwen3 --worker-id 1 ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lumen.executor.engine.config import EngineConfig, ModelConfig
from lumen.executor.engine.interface import RandomWeights, WeightSource

#: Model of ``random:SEED`` weights when no ``--model-config`` is given: a tiny Qwen3-shaped
#: model that runs anywhere (no meaningful text).
DEFAULT_RANDOM_MODEL = ModelConfig(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    vocab_size=256,
    max_position_embeddings=2048,
)

#: torch's intra-op threads in a worker (``--cpu-threads``): one, since a machine's workers
#: share its cores (the calibration measures with the same).
CPU_THREADS = 1


def parse_weights(text: str, model: ModelConfig) -> WeightSource:
    """``random:SEED`` (random weights of ``model``) or a checkpoint directory."""
    if text.startswith("random:"):
        try:
            return RandomWeights(model, int(text.removeprefix("random:")))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad random weights {text!r}: random:SEED") from None
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"weights {text!r}: not a directory nor random:SEED")
    return text


def parse_peers(text: str) -> dict[int, str]:
    """``id=host:port,...`` -> {id: address}."""
    peers: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, address = item.partition("=")
        if not sep or not key.strip().isdigit() or ":" not in address:
            raise argparse.ArgumentTypeError(f"bad peer {item!r}: expected ID=HOST:PORT")
        peers[int(key)] = address.strip()
    return peers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lumen.executor.worker", description=__doc__)
    p.add_argument("--worker-id", type=int, required=True, help="this worker's id")
    p.add_argument("--address", default="127.0.0.1:0", help="HOST:PORT to listen on")
    p.add_argument("--weights", help="target checkpoint DIR or random:SEED")
    p.add_argument(
        "--engine",
        choices=("torch", "vllm"),
        default="torch",
        help="torch: the built-in engine; vllm: vLLM with LumenConnector (GPU, docs/vllm.md)",
    )
    p.add_argument("--model", help="Hugging Face checkpoint DIR (same as --weights DIR)")
    p.add_argument(
        "--gpu-memory-utilization", type=float, default=0.85, help="vLLM's GPU memory share"
    )
    p.add_argument("--dtype", default="auto", help="vLLM compute and KV dtype (auto: bfloat16)")
    p.add_argument("--draft-weights", help="draft checkpoint DIR or random:SEED (assisting)")
    p.add_argument("--model-config", type=Path, help="config.json of random target weights")
    p.add_argument(
        "--draft-layers", type=int, default=1, help="layers of a random draft (default 1)"
    )
    p.add_argument("--checkpoint-budget-bytes", type=int, default=1 << 30)
    p.add_argument("--ssd-gbyte-s", type=float, help="emulated storage bandwidth of weight loads")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--peers", type=parse_peers, default={}, help="ID=HOST:PORT,... of the others")
    p.add_argument(
        "--start-stage",
        choices=("serving", "draft-loading"),
        default="serving",
        help="serving: load the target and serve; draft-loading: recover in stages",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=CPU_THREADS,
        help="torch's intra-op threads for the built-in engine (0: torch's default, one per"
        " core). 1 by default: workers sharing a machine's cores otherwise oversubscribe them,"
        " and spinning threads make every step many times slower",
    )
    p.add_argument("--block-size", type=int, default=16, help="KV block (page) size in tokens")
    p.add_argument("--num-kv-blocks", type=int, help="KV blocks (default: derived)")
    p.add_argument("--min-step-s", type=float, default=0.0, help="emulated minimum step time")
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    p.add_argument("--log-level", default="INFO")
    return p


def vllm_problem(args: argparse.Namespace, weights_text: str) -> str:
    """Why ``--engine vllm`` cannot start here (one line), or "" when it can."""
    from lumen.executor.vllm.engine import VllmMissingError, require_vllm

    if args.draft_weights:
        return "--engine vllm serves no draft model: drop --draft-weights (docs/vllm.md)"
    if not Path(weights_text).is_dir():
        return f"--engine vllm loads a Hugging Face folder; {weights_text!r} is not a directory"
    try:
        require_vllm()
    except VllmMissingError as exc:
        return str(exc)
    return ""


def vllm_engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``create_server`` arguments that run :class:`~lumen.executor.vllm.engine.VllmEngine`."""
    from lumen.executor.vllm.engine import VllmEngine, VllmOptions

    # vLLM's engine core and model runner run in this process (LumenConnector meets the
    # worker's store there); set before vLLM reads its environment.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    options = VllmOptions(gpu_memory_utilization=args.gpu_memory_utilization, dtype=args.dtype)

    def make_engine(config: EngineConfig, weights: Any = None, role: str = "target") -> Any:
        return VllmEngine(config, weights, role, options)  # type: ignore[arg-type]

    return {"make_engine": make_engine, "to_host": lambda source: source}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    from lumen.executor.worker.core import WorkerConfig
    from lumen.executor.worker.server import ServerConfig, create_server, serve

    weights_text = args.model or args.weights
    if not weights_text:
        print("error: give --weights DIR|random:SEED or --model DIR", file=sys.stderr)
        return 2
    engine_kwargs: dict[str, Any] = {}
    if args.engine == "vllm":
        problem = vllm_problem(args, weights_text)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        engine_kwargs = vllm_engine_kwargs(args)
    if args.cpu_threads < 0:
        print("error: --cpu-threads must be >= 0", file=sys.stderr)
        return 2
    if args.engine != "vllm" and args.cpu_threads > 0:
        import torch

        torch.set_num_threads(args.cpu_threads)
    model = ModelConfig.from_json(args.model_config) if args.model_config else DEFAULT_RANDOM_MODEL
    try:
        weights = parse_weights(weights_text, model)
        draft = (
            parse_weights(args.draft_weights, model.with_layers(args.draft_layers))
            if args.draft_weights
            else None
        )
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = WorkerConfig(
        worker_id=args.worker_id,
        weights=weights,
        draft_weights=draft,
        engine=EngineConfig(
            device=args.device, block_size=args.block_size, num_kv_blocks=args.num_kv_blocks
        ),
        checkpoint_budget_bytes=args.checkpoint_budget_bytes,
        ssd_gbyte_s=args.ssd_gbyte_s,
        peers=args.peers,
        start_stage=args.start_stage,
        min_step_s=args.min_step_s,
    )
    server, port = create_server(
        config,
        ServerConfig(address=args.address, metrics_port=args.metrics_port),
        **engine_kwargs,
    )
    port_file: Path | None = args.port_file

    def announce() -> None:
        if port_file is not None:
            port_file.write_text(f"{port}\n", encoding="utf-8")

    serve(server, announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
