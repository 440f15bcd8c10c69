"""Module boundaries of the executor: stubs only in the adapters, no torch where none belongs,
the simulator only behind the bridge."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The executor's gRPC adapters (also listed in tests/test_proto.py's ADAPTERS).
ADAPTERS = frozenset(
    {
        "lumen/executor/worker/client.py",
        "lumen/executor/worker/servicer.py",
        "lumen/executor/worker/wire.py",
        "lumen/executor/worker/assist_link.py",
    }
)
#: Our executor modules (the engine and the gateway have their own rules).
OWN = ("lumen/executor/worker",)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_adapters_import_generated_stubs() -> None:
    sources = [
        p
        for own in OWN
        for p in sorted((REPO / own).rglob("*.py") if (REPO / own).is_dir() else [REPO / own])
    ]
    assert len(sources) > 5
    offenders = [
        f"{p.relative_to(REPO).as_posix()}: {name}"
        for p in sources
        if p.relative_to(REPO).as_posix() not in ADAPTERS
        for name in sorted(_imports(p))
        if name.startswith("lumen.proto.gen")
    ]
    assert offenders == []


def test_the_store_the_api_and_the_client_never_import_torch() -> None:
    code = (
        "import sys\n"
        "import lumen.executor.worker.api, lumen.executor.worker.store\n"
        "import lumen.executor.worker.client, lumen.executor.worker.metrics\n"
        "import lumen.executor.worker, lumen.executor.worker.wire\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"


#: The one executor module that runs the simulator (the bridge to it).
SIMULATOR_BRIDGE = "lumen/executor/bridge/prediction.py"


def test_only_the_bridge_imports_the_simulator() -> None:
    offenders: list[str] = []
    for path in sorted((REPO / "lumen/executor").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel == SIMULATOR_BRIDGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                offenders += [
                    f"{rel}: {a.name}" for a in node.names if a.name.startswith("lumen.simulator")
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "lumen.simulator"
            ):
                offenders.append(f"{rel}: {node.module}")
    assert offenders == []


def test_the_executor_packages_import_neither_torch_nor_the_simulator() -> None:
    code = (
        "import sys\n"
        "import lumen.executor, lumen.executor.cluster, lumen.executor.bridge\n"
        "print(sorted(m for m in ('torch', 'lumen.simulator') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
