"""Writing a simulation experiment to a folder: configuration, results, report and plots.

:func:`write_experiment` writes

- ``config.yaml``: the scenario with every default filled in, and the run's settings (policies,
  seeds, request count, the concrete failure events of each seed, the LUMEN version);
- ``requests.csv``: one row per request, policy, seed and run (``failure`` or ``reference``);
- ``summary.json``: per policy every metric's mean, confidence half-width and per-seed values,
  the comparisons against the baselines with the paper's numbers, and each run's metrics;
- ``report.md``: the tables of ``summary.json`` in Markdown, paper numbers beside ours;
- ``ttft_over_time.png``, ``ttft_cdf.png``, ``tpot_cdf.png``.

The Markdown itself comes from :mod:`lumen.analysis.sim_tables`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lumen import __version__
from lumen.analysis.sim_plots import TimeSeries, plot_cdfs, plot_ttft_over_time
from lumen.analysis.sim_tables import markdown_report
from lumen.simulator.experiment import Experiment

__all__ = ["REQUEST_COLUMNS", "resolved_config", "write_experiment", "write_requests_csv"]

REQUEST_COLUMNS = (
    "policy",
    "seed",
    "run",
    "request",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "worker",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "interrupted",
    "in_window",
)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def resolved_config(experiment: Experiment, skipped: Sequence[str] = ()) -> dict[str, Any]:
    """The scenario after defaults and the settings of this run, seeds and failures included."""
    s = experiment.loaded.scenario
    summary = experiment.summary
    requests = {seed: int(p.size) for seed, p in experiment.prompt_tokens.items()}
    return {
        "scenario": s.model_dump(mode="json", exclude_none=True),
        "run": {
            "source": str(experiment.loaded.source),
            "policies": list(summary.policies),
            "skipped_policies": list(skipped),
            "seeds": list(summary.seeds),
            "workload_seeds": [s.workload.seed + seed for seed in summary.seeds],
            "num_requests": summary.num_requests,
            "simulated_requests": requests,
            "failures": {
                seed: [{"at_s": f.at_s, "workers": list(f.workers)} for f in events]
                for seed, events in experiment.failures.items()
            },
            "lumen_version": __version__,
        },
    }


def _cell(x: float) -> str:
    return "" if not math.isfinite(x) else repr(float(x))


def write_requests_csv(path: Path, experiment: Experiment) -> Path:
    """Per-request results of every run (see :data:`REQUEST_COLUMNS`); NaN cells are empty."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REQUEST_COLUMNS)
        for pair in experiment.pairs:
            prompt = experiment.prompt_tokens[pair.seed].tolist()
            for run, result in (("failure", pair.result), ("reference", pair.reference)):
                in_window = np.zeros(result.ttft_s.size, dtype=np.bool_)
                w = pair.metrics.window
                if run == "failure" and w is not None:
                    in_window[w.start_request : w.end_request] = True
                columns = zip(
                    result.arrival_s.tolist(),
                    prompt,
                    result.output_tokens.tolist(),
                    result.worker.tolist(),
                    result.ttft_s.tolist(),
                    result.tpot_s.tolist(),
                    result.e2e_s.tolist(),
                    result.interrupted.tolist(),
                    in_window.tolist(),
                    strict=True,
                )
                for rid, (arr, pt, ot, wk, ttft, tpot, e2e, intr, inw) in enumerate(columns):
                    writer.writerow(
                        (
                            pair.policy,
                            pair.seed,
                            run,
                            rid,
                            _cell(arr),
                            pt,
                            ot,
                            wk,
                            _cell(ttft),
                            _cell(tpot),
                            _cell(e2e),
                            int(intr),
                            int(inw),
                        )
                    )
    return path


def _plots(experiment: Experiment, out_dir: Path) -> list[Path]:
    s = experiment.loaded.scenario
    seed = experiment.summary.seeds[0]
    pairs = [p for p in experiment.pairs if p.seed == seed]
    series = []
    for p in pairs:
        w = p.metrics.window
        span = (
            None
            if w is None
            else (
                float(p.result.arrival_s[w.start_request]),
                float(p.result.arrival_s[w.end_request - 1]),
            )
        )
        series.append(
            TimeSeries(p.policy, p.result.arrival_s, p.result.ttft_s, p.reference.ttft_s, span)
        )
    failures = [f.at_s for f in experiment.failures.get(seed, ())]
    paths = [
        plot_ttft_over_time(
            out_dir / "ttft_over_time.png",
            series,
            failures,
            s.metrics.bin_size,
            f"{s.name}: TTFT over time (seed {seed})",
        )
    ]
    first = experiment.summary.policies[0]
    for metric, label, scale in (("ttft", "TTFT (s)", 1.0), ("tpot", "TPOT (ms)", 1e3)):
        curves = []
        for policy in experiment.summary.policies:
            values = [
                getattr(p.result, f"{metric}_s") for p in experiment.pairs if p.policy == policy
            ]
            curves.append((policy, np.concatenate(values) * scale))
        ref = np.concatenate(
            [getattr(p.reference, f"{metric}_s") for p in experiment.pairs if p.policy == first]
        )
        paths.append(
            plot_cdfs(
                out_dir / f"{metric}_cdf.png",
                curves,
                label,
                f"{s.name}: {metric.upper()} CDF over {len(experiment.summary.seeds)} seed(s)",
                reference=(f"failure-free ({first})", ref * scale),
            )
        )
    return paths


def write_experiment(
    experiment: Experiment, out_dir: Path, skipped: Sequence[str] = ()
) -> dict[str, Path]:
    """Write every output file of an experiment into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    s = experiment.loaded.scenario
    files: dict[str, Path] = {}
    files["config"] = out_dir / "config.yaml"
    files["config"].write_text(
        yaml.safe_dump(resolved_config(experiment, skipped), sort_keys=False, width=100),
        encoding="utf-8",
    )
    files["requests"] = write_requests_csv(out_dir / "requests.csv", experiment)
    files["summary"] = out_dir / "summary.json"
    files["summary"].write_text(
        json.dumps(experiment.summary.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    plots = _plots(experiment, out_dir)
    for p in plots:
        files[p.stem] = p
    files["report"] = out_dir / "report.md"
    files["report"].write_text(
        markdown_report(
            experiment.summary,
            s.metrics,
            description=s.description,
            failures=experiment.failures,
            skipped=skipped,
            plots=[p.name for p in plots],
        ),
        encoding="utf-8",
    )
    return files
