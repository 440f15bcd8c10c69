"""The scenarios shipped with LUMEN, addressable by name as well as by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lumen.scenarios.loader import ScenarioError

#: Folders (inside this package) that hold bundled scenario files.
_BUNDLED_DIRS = ("paper", "examples")


def bundled_scenarios() -> dict[str, Path]:
    """Name (file stem) -> path of every bundled scenario, sorted by name."""
    root = Path(str(resources.files("lumen.scenarios")))
    found: dict[str, Path] = {}
    for folder in _BUNDLED_DIRS:
        for path in sorted((root / folder).glob("*.yaml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def find_scenario(ref: str | Path) -> Path:
    """Resolve a scenario reference: an existing path, or the name of a bundled scenario."""
    path = Path(ref)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    bundled = bundled_scenarios()
    if str(ref) in bundled:
        return bundled[str(ref)]
    raise ScenarioError(
        str(ref),
        [f"no such file and no bundled scenario of that name; bundled: {', '.join(bundled)}"],
    )
