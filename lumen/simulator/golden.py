"""Golden summaries: a small expected result per bundled scenario, checked by a test.

Each bundled scenario is *shrunk* (:func:`shrink`) to its first :data:`GOLDEN_REQUESTS`
requests, one seed (0) and bins of :data:`GOLDEN_BIN_SIZE` requests, with time compressed by
the same factor as the workload so the failures stay at the same fraction of the run: every
failure time (and a sampled-failure horizon) is multiplied by ``f = shrunk duration / full
duration`` and a sampled-failure rate divided by it, which scales each sampled draw by exactly
``f``. Every implemented policy runs on the shrunk scenario beside its failure-free reference,
and the metrics of :mod:`lumen.simulator.experiment` (everything but wall time) are written to
``tests/golden/<scenario>.json``. ``tests/test_golden.py`` recomputes them and fails on any
difference beyond a relative 1e-6, so any change to the simulator's model shows up there.

After an intended model change, regenerate and review the diff::

    make golden          # or: python -m lumen.simulator.golden --update
    python -m lumen.simulator.golden --check   # what the test checks, as a report
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from lumen.scenarios.catalog import bundled_scenarios
from lumen.scenarios.resolve import LoadedScenario, load_scenario
from lumen.simulator.experiment import implemented_policies, run_pair
from lumen.simulator.run import scenario_failures, scenario_trace

__all__ = [
    "GOLDEN_BIN_SIZE",
    "GOLDEN_DIR",
    "GOLDEN_REQUESTS",
    "compare_golden",
    "golden_path",
    "golden_summary",
    "main",
    "shrink",
]

#: Requests of each shrunk run: enough for a failure, its window and a few bins after it,
#: few enough that every scenario under every policy runs in a test in well under a minute.
GOLDEN_REQUESTS = 600
#: Bins of the shrunk runs' recovery windows (the full runs use 200 of 15,000 requests).
GOLDEN_BIN_SIZE = 50
#: Where the golden files live (a source checkout's tests/golden).
GOLDEN_DIR = Path(__file__).resolve().parents[2] / "tests" / "golden"
#: Relative tolerance of the check; absolute tolerance for values that should be zero.
REL_TOL = 1e-6
ABS_TOL = 1e-12


def shrink(
    loaded: LoadedScenario, num_requests: int = GOLDEN_REQUESTS, bin_size: int = GOLDEN_BIN_SIZE
) -> tuple[LoadedScenario, float]:
    """``loaded`` cut to ``num_requests`` with failures compressed in time (module docstring),
    and the compression factor."""
    s = loaded.scenario
    n = min(num_requests, s.workload.num_requests)
    workload = s.workload.model_copy(update={"num_requests": n})
    cut = LoadedScenario(s.model_copy(update={"workload": workload}), loaded.source)
    full_s = scenario_trace(loaded, 0).duration_s
    cut_s = scenario_trace(cut, 0).duration_s
    f = cut_s / full_s if full_s > 0 else 1.0
    events = [ev.model_copy(update={"at_s": ev.at_s * f}) for ev in s.failures.events]
    sampled = s.failures.sampled
    if sampled is not None:
        horizon = None if sampled.horizon_s is None else sampled.horizon_s * f
        sampled = sampled.model_copy(
            update={"horizon_s": horizon, "rate_per_node_day": sampled.rate_per_node_day / f}
        )
    failures = s.failures.model_copy(update={"events": events, "sampled": sampled})
    metrics = s.metrics.model_copy(update={"bin_size": bin_size, "seeds": 1})
    shrunk = s.model_copy(update={"workload": workload, "failures": failures, "metrics": metrics})
    return LoadedScenario(type(s).model_validate(shrunk.model_dump()), loaded.source), f


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def golden_summary(name: str, policies: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The golden summary of bundled scenario ``name`` (see the module docstring)."""
    loaded, factor = shrink(load_scenario(name))
    trace = scenario_trace(loaded, 0)
    runs: dict[str, Any] = {}
    for policy in policies if policies is not None else implemented_policies():
        m = run_pair(loaded, policy, 0).metrics
        w = m.window
        runs[policy] = {
            "window": None if w is None else [w.start_request, w.end_request, w.closed],
            "metrics": {k: _number(v) for k, v in m.values.items()},
        }
    return {
        "scenario": name,
        "requests": len(trace),
        "bin_size": loaded.scenario.metrics.bin_size,
        "time_scale": factor,
        "failures": [
            {"at_s": f.at_s, "workers": list(f.workers)}
            for f in scenario_failures(loaded, trace, 0)
        ],
        "policies": runs,
    }


def golden_path(name: str, directory: Path = GOLDEN_DIR) -> Path:
    return directory / f"{name}.json"


def _close(expected: Any, actual: Any) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        if expected is None or actual is None:
            return expected is actual
        return math.isclose(float(expected), float(actual), rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(expected == actual)


def compare_golden(expected: dict[str, Any], actual: dict[str, Any], path: str = "") -> list[str]:
    """Every difference between two golden summaries, as ``path: expected X, got Y`` lines."""
    diffs: list[str] = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            where = f"{path}.{key}" if path else key
            if key not in actual:
                diffs.append(f"{where}: missing from this run (expected {expected[key]!r})")
            elif key not in expected:
                diffs.append(f"{where}: not in the golden file (got {actual[key]!r})")
            else:
                diffs.extend(compare_golden(expected[key], actual[key], where))
        return diffs
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            diffs.extend(compare_golden(e, a, f"{path}[{i}]"))
        return diffs
    if not _close(expected, actual):
        diffs.append(f"{path}: expected {expected!r}, got {actual!r}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lumen.simulator.golden",
        description="Regenerate (--update) or check (--check) the golden scenario summaries.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--update", action="store_true", help="rewrite the golden files")
    mode.add_argument("--check", action="store_true", help="report differences, exit 1 if any")
    parser.add_argument("scenarios", nargs="*", help="bundled scenario names (default: all)")
    parser.add_argument("--dir", type=Path, default=GOLDEN_DIR, help="golden file folder")
    args = parser.parse_args(argv)
    names = args.scenarios or list(bundled_scenarios())
    unknown = [n for n in names if n not in bundled_scenarios()]
    if unknown:
        parser.error(f"no bundled scenario {unknown[0]!r}")
    failed = 0
    for name in names:
        summary = golden_summary(name)
        path = golden_path(name, args.dir)
        if args.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {path}")
            continue
        if not path.exists():
            failed += 1
            print(f"{name}: no golden file {path}")
            continue
        diffs = compare_golden(json.loads(path.read_text(encoding="utf-8")), summary)
        failed += bool(diffs)
        print(f"{name}: " + ("ok" if not diffs else f"{len(diffs)} difference(s)"))
        for line in diffs:
            print(f"    {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
