"""``python -m lumen.cli``: the ``lumen`` command (used where the console script is not on
``PATH``, such as child processes of the local cluster launcher)."""

from lumen.cli.app import main

main()
