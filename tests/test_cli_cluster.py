"""``lumen cluster run`` and ``lumen demo``'s live part: live rows beside simulated rows.

The live runs are stubbed (a made-up :class:`PolicyRun` per policy) and the calibration is the
hand-made one of ``test_calibrate``, so these tests check the command and its table; the real
end-to-end run is marked slow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from rich.console import Console
from test_calibrate import fake_calibration
from typer.testing import CliRunner

import lumen.cli.cluster_cmds as cluster_cmds
from lumen.cli import app
from lumen.executor.bridge.calibrate import Calibration
from lumen.executor.bridge.prediction import LiveSetup, cost_model
from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster
from lumen.executor.cluster.loadgen import LoadRequest, LoadResult
from lumen.executor.cluster.probe import PathProbe
from lumen.executor.cluster.run import FailureInjection, PolicyRun

runner = CliRunner()


def _stub_run(differ: set[str] | None = None) -> tuple[list[str], object]:
    """A run_policy stand-in: every token 50 ms after arrival, then one per 10 ms; the
    policies in ``differ`` get one request with other tokens."""
    calls: list[str] = []

    def run_policy(
        spec: ClusterSpec,
        requests: Sequence[LoadRequest],
        failure: FailureInjection | None,
        timeout_s: float = 300.0,
        before: Callable[[LocalCluster], None] | None = None,
    ) -> PolicyRun:
        if before is not None:
            calls.append("probe")
            before(LocalCluster(spec))  # never started: the probe is stubbed too
        calls.append(spec.policy if failure is not None else "reference")
        arrival = [r.arrival_s for r in requests]
        first = [a + 0.05 for a in arrival]
        finish = [f + 0.01 * (r.max_tokens - 1) for f, r in zip(first, requests, strict=True)]
        tokens = [[1] * r.max_tokens for r in requests]
        if failure is not None and spec.policy in (differ or set()):
            tokens[0] = [2] * requests[0].max_tokens
        load = LoadResult(arrival, first, finish, tokens, [None] * len(requests))
        return PolicyRun(spec.policy, load, failure, 3.0 if failure else math.nan)

    return calls, run_policy


#: The stubbed probe's request path: 40 ms on top of each probe's prefill.
PATH_S = 0.04


def _stub_probe(
    cluster: LocalCluster, requests: Sequence[LoadRequest], **kwargs: object
) -> PathProbe:
    model = cost_model(fake_calibration(), LiveSetup())
    n = len(requests[0].prompt_token_ids)
    return PathProbe((n,), (model.prefill_time(n) + PATH_S,))


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls, stub = _stub_run()
    monkeypatch.setattr(cluster_cmds, "run_policy", stub)
    monkeypatch.setattr(cluster_cmds, "probe_cluster", _stub_probe)
    monkeypatch.setattr(cluster_cmds, "_calibration", fake_calibration)
    return calls


ARGS = [
    "cluster",
    "run",
    "paper-4w-qwen3-32b",
    "--inject-failure",
    "1:1",
    "--workers",
    "3",
    "--requests",
    "8",
    "--rate",
    "4",
    "--policies",
    "stop-and-restart,lumen",
]


def _rows(output: str) -> dict[tuple[str, str], list[str]]:
    """Table rows by (policy, run) -> their cells."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 9 and cells[1] in ("live", "simulated"):
            rows[(cells[0], cells[1])] = cells
    return rows


def test_run_prints_a_simulated_row_beside_each_live_row(fake_cluster: list[str]) -> None:
    result = runner.invoke(app, ARGS)
    assert result.exit_code == 0, result.output
    assert fake_cluster == [
        "probe",
        "reference",
        "probe",
        "stop-and-restart",
        "probe",
        "lumen",
    ]
    assert "calibrated (" in result.output
    assert "request path 40.0 ms idle" in result.output
    rows = _rows(result.output)
    assert set(rows) == {
        (name, run)
        for name in ("failure-free", "stop-and-restart", "lumen")
        for run in ("live", "simulated")
    }
    # Live figures are the stub's; simulated ones come from the simulator.
    assert rows[("lumen", "live")][2] == "50.0 ms" and rows[("lumen", "live")][7] == "3.00 s"
    assert rows[("lumen", "live")][8] == "identical"
    simulated = rows[("stop-and-restart", "simulated")]
    assert simulated[2].endswith(" ms") and simulated[8] == "-"
    recovery = float(simulated[7].removesuffix(" s"))
    assert recovery > 2.0  # the fake calibration's process start alone is 2 s
    # Lumen's restarted worker loads its draft first: a longer predicted reload.
    assert float(rows[("lumen", "simulated")][7].removesuffix(" s")) > recovery
    assert rows[("failure-free", "simulated")][7] == "-"
    # The simulated TTFT includes the probed path: above 40 ms, and not by much.
    free_ttft = float(rows[("failure-free", "simulated")][2].removesuffix(" ms"))
    assert 40.0 < free_ttft < 60.0


def test_run_without_verify_probes_a_cluster_of_its_own(fake_cluster: list[str]) -> None:
    result = runner.invoke(app, [*ARGS, "--no-verify"])
    assert result.exit_code == 0, result.output
    # The failure-free probe runs on a cluster with no workload; no reference rows.
    assert fake_cluster == ["probe", "reference", "probe", "stop-and-restart", "probe", "lumen"]
    assert ("failure-free", "live") not in _rows(result.output)


def test_run_fails_when_outputs_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    _, stub = _stub_run(differ={"lumen"})
    monkeypatch.setattr(cluster_cmds, "run_policy", stub)
    monkeypatch.setattr(cluster_cmds, "probe_cluster", _stub_probe)
    monkeypatch.setattr(cluster_cmds, "_calibration", fake_calibration)
    result = runner.invoke(app, ARGS)
    assert result.exit_code == 1
    assert _rows(result.output)[("lumen", "live")][8] == "1 differ"


def test_run_without_torch_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Calibration:
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(cluster_cmds, "_calibration", missing)
    result = runner.invoke(app, ARGS)
    assert result.exit_code == 1
    assert "executor extra" in result.output


def test_run_checks_its_options_first() -> None:
    bad = runner.invoke(app, [*ARGS[:4], "5:7"])
    assert bad.exit_code == 2 and "0..3" in bad.output


def test_demo_live_part(fake_cluster: list[str], tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    assert cluster_cmds.demo_live("paper-4w-qwen3-32b", console, tmp_path)
    text = console.export_text()
    assert fake_cluster == [
        "probe",
        "reference",
        *(x for p in cluster_cmds.DEMO_LIVE_POLICIES for x in ("probe", p)),
    ]
    rows = _rows(text)
    assert {p for p, _ in rows} == {"failure-free", *cluster_cmds.DEMO_LIVE_POLICIES}


def test_demo_live_part_is_skipped_without_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    console = Console(record=True, width=200)
    assert cluster_cmds.demo_live("paper-4w-qwen3-32b", console, tmp_path)
    assert "needs the executor extra" in console.export_text()


@pytest.mark.slow
def test_live_run_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    args = [*ARGS, "--reload-s", "1", "--log-dir", str(tmp_path)]
    args[args.index("8")] = "6"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    for policy in ("stop-and-restart", "lumen"):
        assert rows[(policy, "live")][8] == "identical"
        assert rows[(policy, "simulated")][7].endswith(" s")
