"""The shape of the code: no function in ``lumen`` (generated protobuf code aside) is longer than
:data:`MAX_FUNCTION_LINES` lines, from its ``def`` line to the end of its body (decorators not
counted, nested functions measured on their own as well)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "lumen"
EXCLUDED = (ROOT / "proto" / "gen",)
MAX_FUNCTION_LINES = 120


def long_functions(root: Path = ROOT, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (n lines)`` for every function under ``root`` over ``limit`` lines."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if any(path.is_relative_to(skip) for skip in EXCLUDED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_too_long() -> None:
    assert ROOT.is_dir()
    too_long = long_functions()
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_long_functions_are_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(5))
    (tmp_path / "m.py").write_text(
        f"@staticmethod\ndef short():\n{body}\n\n\nclass C:\n    async def inner(self):\n"
        + "\n".join(f"        y{i} = {i}" for i in range(6))
        + "\n",
        encoding="utf-8",
    )
    # short: 1 + 5 lines (its decorator not counted); inner: 1 + 6 lines.
    assert long_functions(tmp_path, limit=6) == [f"{tmp_path.name}/m.py:11 inner (7 lines)"]
