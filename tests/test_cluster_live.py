"""A live cluster of processes on loopback: SIGKILLed workers, every output token-identical.

Each test starts the planner service, the gateway and three worker processes (tiny random
models on CPU), runs a short workload failure-free and again with workers killed mid-run,
and compares every request's tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lumen.executor.cluster.launcher import ClusterSpec, LocalCluster
from lumen.executor.cluster.loadgen import LoadRequest, LoadResult
from lumen.executor.cluster.probe import PathProbe, probe_cluster
from lumen.executor.cluster.run import (
    FailureInjection,
    mismatches,
    parse_injection,
    reference_spec,
    run_policy,
)

pytest.importorskip("torch")

#: Reload of the default tiny model at this bandwidth takes about half a second.
SSD_GBYTE_S = 1e-4


def _requests(n: int = 10) -> list[LoadRequest]:
    return [
        LoadRequest(0.1 * i, tuple((7 * i + k) % 250 + 1 for k in range(12 + i)), 20 + i)
        for i in range(n)
    ]


def _spec(tmp_path: Path, policy: str) -> ClusterSpec:
    return ClusterSpec(3, policy, ssd_gbyte_s=SSD_GBYTE_S, min_step_s=0.01, log_dir=tmp_path)


#: What the reference cluster's probe measured, and the cluster's workers after it.
PROBED: dict[str, object] = {}


def _probe(cluster: LocalCluster) -> None:
    PROBED["probe"] = probe_cluster(
        cluster, _requests(), idle_probes=4, busy_probes=2, start_kinds=(False,)
    )
    PROBED["workers_after"] = sorted(cluster.worker_addresses)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> LoadResult:
    """The failure-free run every test compares with (the outputs depend only on the
    requests and the weights, not on the policy); the request path is probed before it."""
    spec = _spec(tmp_path_factory.mktemp("reference"), "stop-and-restart")
    run = run_policy(reference_spec(spec), _requests(), None, timeout_s=120.0, before=_probe)
    assert run.load.ok == len(_requests())
    return run.load


def test_probing_the_request_path(reference: LoadResult) -> None:
    probe = PROBED["probe"]
    assert isinstance(probe, PathProbe)
    assert len(probe.ttft_s) == 4 and all(0 < t < 10 for t in probe.ttft_s)
    # Two warm-up rounds of one request per worker, two probes beside a request in flight.
    assert len(probe.warmup_ttft_s) == 2 * 3 and all(0 < t < 10 for t in probe.warmup_ttft_s)
    assert len(probe.busy_ttft_s) == 2 and all(0 < t < 10 for t in probe.busy_ttft_s)
    start = probe.start(progressive=False)
    assert start is not None and probe.start(progressive=True) is None
    # Probed from the spare's spawn until it served (and a little after), in order.
    assert math.isfinite(start.serving_s) and start.serving_s > 0
    assert start.since_spawn_s and list(start.since_spawn_s) == sorted(start.since_spawn_s)
    assert start.since_spawn_s[-1] >= start.serving_s
    assert all(0 < t < 10 for t in start.ttft_s)
    # The spare is gone again and the workload after it ran on the cluster's own workers.
    assert PROBED["workers_after"] == [0, 1, 2]


def test_injection_syntax() -> None:
    assert parse_injection("2.5:1") == FailureInjection(2.5, (1,), 0.0)
    assert parse_injection("3:2+0:1.5") == FailureInjection(3.0, (0, 2), 1.5)
    for bad in ("", "1", "x:1", "1:-1", "1:2:3:4", "nan:1"):
        with pytest.raises(ValueError, match="failure injection"):
            parse_injection(bad)
    with pytest.raises(ValueError, match="policy"):
        ClusterSpec(3, "dejavu")


@pytest.mark.parametrize(
    ("policy", "killed"),
    [
        ("lumen", (1,)),  # a worker dies mid-generation; checkpoints restored elsewhere
        ("fixed-checkpointing", (1, 2)),  # home and its ring holder die together: recompute
    ],
)
def test_sigkill_mid_generation_loses_nothing(
    tmp_path: Path, reference: LoadResult, policy: str, killed: tuple[int, ...]
) -> None:
    requests = _requests()
    spec = _spec(tmp_path / policy, policy)
    run = run_policy(spec, requests, FailureInjection(0.5, killed), timeout_s=120.0)
    assert run.load.errors == [None] * len(requests)
    assert mismatches(run.load, reference) == []
    assert [len(t) for t in run.load.token_ids] == [r.max_tokens for r in requests]
    assert math.isfinite(run.recovery_s) and run.recovery_s > 0
    summary = run.summary()
    assert summary["errors"] == 0 and summary["window_requests"] > 0
    # The kill did interrupt requests in flight, and the gateway resumed them.
    assert run.counter("lumen_gateway_worker_failures_total") >= len(killed)
    assert run.counter("lumen_gateway_resumed_requests_total") > 0


def test_hung_worker_and_dead_planner(tmp_path: Path, reference: LoadResult) -> None:
    # Worker 1 is SIGSTOPped (alive but silent: only heartbeats and forward progress can tell)
    # while the planner service is SIGKILLed: the gateway detects the hang, plans recovery
    # itself, and every output is still the failure-free one.
    requests = _requests()
    spec = _spec(tmp_path, "lumen-checkpoint-dispatch")
    failure = FailureInjection(0.5, (1,), restart_after_s=4.0, hang=True, kill_planner=True)
    run = run_policy(spec, requests, failure, timeout_s=120.0)
    assert run.load.errors == [None] * len(requests)
    assert mismatches(run.load, reference) == []
    assert run.counter("lumen_gateway_worker_failures_total") >= 1
    assert run.counter("lumen_gateway_planner_fallbacks_total") >= 1
    assert run.counter("lumen_gateway_resumed_requests_total") > 0
