"""Run a module as a child that dies with its launcher: ``python -m ... supervise --parent-fd N
MODULE ARGS...``.

The launcher keeps the write end of a pipe and hands each child the read end (fd ``N``). The
write end is the launcher's alone, so the read end sees end-of-file exactly when the launcher
is gone, however it ended (SIGKILL included) and whichever of its threads started the child.
A watcher thread waits for that end-of-file, then sends the child SIGTERM (its own graceful
stop runs) and, if it is still alive ``grace_s`` later, exits it hard. The module then runs as
``__main__`` in this process (``runpy``), with ``sys.argv`` = ``[MODULE, *ARGS]``.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["watch_parent"]

#: Seconds between SIGTERM and a hard exit once the launcher is gone.
GRACE_S = 10.0


def watch_parent(fd: int, grace_s: float = GRACE_S) -> threading.Thread:
    """Start the watcher of the launcher's pipe (module docstring)."""

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(grace_s)
        os._exit(1)

    t = threading.Thread(target=watch, name="lumen-parent-watch", daemon=True)
    t.start()
    return t


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lumen.executor.cluster.supervise")
    p.add_argument("--parent-fd", type=int, required=True, help="read end of the launcher pipe")
    p.add_argument("module", help="module to run as __main__")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = p.parse_args(argv)
    watch_parent(args.parent_fd)
    sys.argv = [args.module, *args.args]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
