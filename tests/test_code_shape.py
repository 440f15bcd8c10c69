"""The shape of the code: no function in ``lumen`` (generated protobuf code aside) is longer than
:data:`MAX_FUNCTION_LINES` lines, from its ``def`` line to the end of its body (decorators not
counted, nested functions measured on their own as well), and every document the code cites is
in the repository."""

from __future__ import annotations

import ast
import re
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


#: Documents a docstring may cite: paths from the repository root ending in ``.md``.
CITED_DOC = re.compile(r"\b((?:docs|lumen)/[A-Za-z0-9_./-]+\.md)\b")
#: Guides that are not part of the repository and must never be cited.
OUTSIDE = re.compile(r"\b(?:DESIGN|STYLE)\.md\b")


def cited_documents(root: Path = ROOT.parent) -> tuple[list[str], list[str]]:
    """``(missing, outside)``: citations of repository documents that do not exist, and
    citations of documents outside the repository, as ``path:line doc``."""
    missing: list[str] = []
    outside: list[str] = []
    for folder in ("lumen", "tests", "benchmarks", "scripts"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in {".py", ".proto", ".yaml"} or not path.is_file():
                continue
            if path == Path(__file__).resolve():  # its own examples of bad citations
                continue
            where = path.relative_to(root)
            for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                missing += [
                    f"{where}:{k} {doc}"
                    for doc in CITED_DOC.findall(line)
                    if not (root / doc).is_file()
                ]
                outside += [f"{where}:{k} {m}" for m in OUTSIDE.findall(line)]
    return missing, outside


def test_every_cited_design_document_is_in_the_repository() -> None:
    missing, outside = cited_documents()
    assert not missing, "cited documents that do not exist:\n" + "\n".join(missing)
    assert not outside, "citations of documents outside the repository:\n" + "\n".join(outside)


def test_bad_citations_are_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# here\n", encoding="utf-8")
    (tmp_path / "lumen").mkdir()
    (tmp_path / "lumen" / "m.py").write_text(
        '"""See docs/here.md and docs/gone.md;\nthe rules of STYLE.md 3."""\n', encoding="utf-8"
    )
    missing, outside = cited_documents(tmp_path)
    assert missing == ["lumen/m.py:1 docs/gone.md"]
    assert outside == ["lumen/m.py:2 STYLE.md"]
