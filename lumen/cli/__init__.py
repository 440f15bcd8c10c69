"""The ``lumen`` command line."""

from lumen.cli.app import app, main

__all__ = ["app", "main"]
