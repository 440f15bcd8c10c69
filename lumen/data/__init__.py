"""Data files shipped with LUMEN (request traces); see ``NOTICE.md`` for their sources."""

from importlib.resources import files
from pathlib import Path

__all__ = ["traces_dir"]


def traces_dir() -> Path:
    """Return the directory holding the bundled request traces.

    The package is installed as plain files (setuptools ``package-data``), so the resource
    root is a real directory; loaders need a filesystem path, not a zip member.
    """
    root = files(__name__) / "traces"
    if not isinstance(root, Path):
        raise RuntimeError(
            f"bundled traces are not on the filesystem ({root!r}); install lumen unzipped"
        )
    return root
