"""Scenario resolution: worker layout, rates, and seeded failure selection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lumen.scenarios.resolve import (
    build_trace,
    build_workers,
    checkpoint_budget_bytes,
    load_scenario,
    resolve_failures,
)

BASE: dict[str, Any] = {
    "name": "r",
    "cluster": {
        "workers": 10,
        "workers_per_node": 4,
        "hardware": "H100-80GB",
        "model": "Llama-3.1-8B",
        "checkpoint_budget_gb": 12.5,
    },
    "workload": {
        "num_requests": 2000,
        "seed": 3,
        "trace": {"file": "@azure-conv-2023", "rate_qps_per_worker": 1.4},
    },
    "policies": ["stop-and-restart", "fixed-checkpointing"],
}


def _load(tmp_path: Path, **updates: Any) -> Any:
    doc = {**BASE, **updates}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_scenario(path)


def test_workers_fill_nodes_in_order(tmp_path: Path) -> None:
    s = _load(tmp_path).scenario
    workers = build_workers(s)
    assert [w.node for w in workers] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert s.cluster.nodes == 3
    assert checkpoint_budget_bytes(s) == 12_500_000_000


def test_rate_per_worker_scales_with_the_cluster(tmp_path: Path) -> None:
    trace = build_trace(_load(tmp_path))
    assert len(trace) == 2000
    assert trace.mean_rate_qps == pytest.approx(14.0)
    # A replayed trace does not depend on the seed.
    again = build_trace(_load(tmp_path), seed_offset=1)
    assert (again.arrival_s == trace.arrival_s).all()


def test_synthetic_workloads_are_redrawn_per_seed(tmp_path: Path) -> None:
    workload = {
        "num_requests": 500,
        "seed": 1,
        "synthetic": {
            "rate_qps": 5.0,
            "prompt_tokens": {"distribution": "lognormal", "mean": 500, "cv": 1.0, "high": 4096},
            "output_tokens": {"distribution": "trace", "file": "@mooncake-synthetic"},
        },
    }
    loaded = _load(tmp_path, workload=workload)
    a, b, a2 = build_trace(loaded), build_trace(loaded, 1), build_trace(loaded)
    assert (a.arrival_s == a2.arrival_s).all() and (a.prompt_tokens == a2.prompt_tokens).all()
    assert not (a.arrival_s == b.arrival_s).all()
    assert a.prompt_tokens.max() <= 4096


def test_explicit_node_and_count_failures(tmp_path: Path) -> None:
    failures = {
        "events": [
            {"at_s": 5, "nodes": [2]},
            {"at_s": 1, "workers": [7, 3]},
            {"at_s": 9, "count": 3},
            {"at_s": 9, "fraction_of_workers": 0.25},
        ]
    }
    s = _load(tmp_path, failures=failures).scenario
    events = resolve_failures(s, horizon_s=100)
    assert [e.at_s for e in events] == [1, 5, 9, 9]
    assert events[0].workers == (3, 7)
    assert events[1].workers == (8, 9)  # node 2 holds the last two workers
    sizes = sorted(len(e.workers) for e in events[2:])
    assert sizes == [3, 3]  # count 3; 25 % of 10 workers rounds to 3
    # Seeded: the same scenario gives the same workers, another seed may not.
    assert resolve_failures(s, 100) == events


def test_sampled_failures_take_whole_nodes_within_the_horizon(tmp_path: Path) -> None:
    s = _load(tmp_path, failures={"sampled": {"rate_per_node_day": 86_400 / 50}}).scenario
    events = resolve_failures(s, horizon_s=1000)
    # Three nodes at one failure per 50 s each: about 60 events in 1000 s.
    assert 30 < len(events) < 100
    assert all(0 <= e.at_s < 1000 for e in events)
    nodes = {(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)}
    assert all(e.workers in nodes for e in events)
    assert events == resolve_failures(s, horizon_s=1000)
    assert events != resolve_failures(s, horizon_s=1000, seed_offset=1)
