"""The launcher's children die with it, and ``lumen cluster up`` picks and names its policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

import lumen.cli.cluster_cmds as cluster_cmds
from lumen.cli import app
from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster, free_ports, supervised

runner = CliRunner()

#: A launcher that starts one long-lived child (a stdlib HTTP server) and prints its pid.
_LAUNCHER = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from lumen.executor.cluster.launcher import ProcessHandle

    def spawn():
        h = ProcessHandle("child", [sys.executable, "-m", "http.server", "0",
                                    "--bind", "127.0.0.1"], Path(sys.argv[1]))
        h.start()
        print(h.popen.pid, flush=True)

    t = threading.Thread(target=spawn)  # a thread that ends: the child must not care
    t.start(); t.join()
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_children_die_when_the_launcher_is_killed(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(tmp_path / "child.log")],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert launcher.stdout is not None
        child = int(launcher.stdout.readline())
        time.sleep(1.0)
        assert _alive(child), "the child should outlive the thread that started it"
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the child outlived its SIGKILLed launcher"
    finally:
        launcher.kill()


def test_supervised_needs_a_module() -> None:
    assert supervised(["py", "-m", "mod", "--x"], 7) == [
        "py",
        "-m",
        "lumen.executor.cluster.supervise",
        "--parent-fd",
        "7",
        "mod",
        "--x",
    ]
    with pytest.raises(ValueError, match="python -m"):
        supervised(["py", "script.py"], 7)


class _NoCluster:
    specs: ClassVar[list[ClusterSpec]] = []

    def __init__(self, spec: ClusterSpec) -> None:
        self.specs.append(spec)

    def start(self) -> None:
        raise RuntimeError("not started in tests")

    def stop(self) -> None:
        pass


def test_cluster_up_defaults_to_lumen_and_blames_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_cmds, "LocalCluster", _NoCluster)
    _NoCluster.specs.clear()
    got = runner.invoke(app, ["cluster", "up", "paper-8w-qwen3-14b"])
    assert got.exit_code == 1 and "not started in tests" in got.output
    assert [s.policy for s in _NoCluster.specs] == ["lumen"]
    bad = runner.invoke(app, ["cluster", "up", "paper-8w-qwen3-14b", "--policy", "bogus"])
    assert bad.exit_code == 2
    assert "--policy:" in bad.output and "--policies" not in bad.output
    assert len(_NoCluster.specs) == 1


def test_a_cluster_gets_distinct_ports() -> None:
    """Ports picked one at a time may repeat (the OS can hand a just-closed one out again):
    a gateway that got a worker's port would talk to the worker's gRPC server."""
    ports = free_ports(64)
    assert len(set(ports)) == 64
    cluster = LocalCluster(ClusterSpec(8, "lumen", worker_metrics=True))
    addresses = [cluster.planner_address, *cluster.worker_addresses.values()]
    taken = [int(str(a).rsplit(":", 1)[1]) for a in addresses]
    taken += [cluster.gateway_port, *cluster.worker_metrics_ports.values()]
    assert len(taken) == 1 + 8 + 1 + 8 and len(set(taken)) == len(taken)
