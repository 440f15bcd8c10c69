"""The scenario ``calibration`` block and ``lumen calibrate``: the block round-trips and slows
the engine, the fit reaches a target it can reach, reports one it cannot, flags implausible
efficiencies, and the command refuses bad input in one line. Fits run on a shrunk scenario
(few requests), so each test takes about a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from lumen.cli import app
from lumen.planner.costmodel import DEFAULT_EFFICIENCY, BatchShape
from lumen.scenarios.calibration import implausible, with_calibration
from lumen.scenarios.loader import ScenarioError, validate_scenario
from lumen.scenarios.resolve import LoadedScenario, build_cost_model, load_scenario
from lumen.scenarios.schema import (
    CalibrationConfig,
    CalibrationTargets,
    EngineEfficiency,
    Scenario,
)
from lumen.simulator.calibration import (
    REACHED,
    FailureFreeRuns,
    Targets,
    calibration_block,
    fit_engine,
)
from lumen.simulator.golden import shrink

runner = CliRunner()
REQUESTS = 300


def _block(compute: float = 0.5, memory: float = 0.6, *, plausible: bool = True) -> dict[str, Any]:
    return {
        "engine": {"compute_efficiency": compute, "memory_efficiency": memory},
        "targets": {"ttft_mean_s": 0.76, "tpot_mean_s": 0.139},
        "source": "a test",
        "fitted": {
            "method": "compute+memory",
            "scenario": "small-4w",
            "ttft_mean_s": 0.75,
            "tpot_mean_s": 0.14,
            "requests": REQUESTS,
            "seed": 0,
        },
        "plausible": plausible,
        "apply": plausible,
        "note": "kept",
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """paper-4w-qwen3-32b without its calibration, shrunk to a few hundred requests."""
    loaded, _ = shrink(load_scenario("paper-4w-qwen3-32b"), REQUESTS, 50)
    data = loaded.scenario.model_dump(mode="json", exclude_none=True)
    data.pop("calibration", None)
    data["name"] = "small-4w"
    path = tmp_path_factory.mktemp("scenario") / "small-4w.yaml"
    path.write_text("# a comment that must survive\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def _with(data: dict[str, Any]) -> Scenario:
    return validate_scenario(data, "test")


def test_block_round_trips_through_the_loader(small: Path) -> None:
    data = yaml.safe_load(small.read_text())
    data["calibration"] = _block()
    s = _with(data)
    assert s.calibration is not None
    assert s.calibration.engine.compute_efficiency == 0.5
    again = _with(s.model_dump(mode="json", exclude_none=True))
    assert again.calibration == s.calibration


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"engine": {"compute_efficiency": 1.2, "memory_efficiency": 0.5}}, "less than or equal"),
        ({"engine": {"compute_efficiency": 0.0, "memory_efficiency": 0.5}}, "greater than 0"),
        ({"targets": {"ttft_mean_s": -1.0}}, "greater than 0"),
        ({"plausible": "yes"}, "calibration.plausible"),
        ({"storage_scale": 0.5}, "unknown key"),
    ],
)
def test_bad_blocks_are_refused(small: Path, change: dict[str, Any], message: str) -> None:
    data = yaml.safe_load(small.read_text())
    data["calibration"] = {**_block(), **change}
    with pytest.raises(ScenarioError, match=message):
        _with(data)


def test_a_calibrated_engine_steps_slower(small: Path) -> None:
    data = yaml.safe_load(small.read_text())
    plain = build_cost_model(_with(data))
    data["calibration"] = _block(0.5, 0.6)
    slow = build_cost_model(_with(data))
    assert slow.efficiency.compute == 0.5 and slow.efficiency.memory == 0.6
    assert slow.efficiency.nvlink == DEFAULT_EFFICIENCY.nvlink  # only the two are fitted
    prefill, decode = BatchShape.prefill(1024), BatchShape.decode(64, 64 * 1000)
    assert slow.batch_time(prefill) > plain.batch_time(prefill)
    assert slow.batch_time(decode) > plain.batch_time(decode)
    draft, slow_draft = plain.draft_cost_model(), slow.draft_cost_model()
    assert draft is not None and slow_draft is not None
    assert slow_draft.batch_time(decode) > draft.batch_time(decode)  # the same engine


def test_an_implausible_block_is_recorded_not_applied(small: Path) -> None:
    data = yaml.safe_load(small.read_text())
    data["calibration"] = _block(0.1, 0.1, plausible=False)
    assert build_cost_model(_with(data)).efficiency == DEFAULT_EFFICIENCY
    data["calibration"]["apply"] = True  # by hand: the flag stays visible
    assert build_cost_model(_with(data)).efficiency.compute == 0.1


def test_fit_converges_to_a_reachable_target(small: Path) -> None:
    loaded = load_scenario(small)
    # A target made by the simulator itself at known efficiencies is reachable.
    made = FailureFreeRuns(loaded, REQUESTS)(0.45, 0.6)
    fit = fit_engine(loaded, Targets(made.ttft_s, made.tpot_s), REQUESTS)
    assert fit.reached and fit.plausible and fit.method == "compute+memory"
    ttft, tpot = fit.best.residuals(fit.targets)
    assert abs(ttft) <= REACHED and tpot is not None and abs(tpot) <= REACHED
    assert fit.best.ttft_s > fit.baseline.ttft_s  # slower than the defaults
    block = calibration_block(fit, "a test")
    assert block.plausible and block.apply and block.fitted is not None
    assert block.fitted.requests == REQUESTS


def test_uniform_slowdown_from_ttft_alone(small: Path) -> None:
    loaded = load_scenario(small)
    base = FailureFreeRuns(loaded, REQUESTS)(DEFAULT_EFFICIENCY.compute, DEFAULT_EFFICIENCY.memory)
    fit = fit_engine(loaded, Targets(base.ttft_s * 1.3), REQUESTS)
    assert fit.method == "uniform-slowdown" and fit.reached
    assert fit.slowdown is not None and fit.slowdown > 1.0
    assert fit.best.compute / fit.best.memory == pytest.approx(
        DEFAULT_EFFICIENCY.compute / DEFAULT_EFFICIENCY.memory, rel=1e-3
    )


def test_an_unreachable_target_is_reported_with_the_closest_point(small: Path) -> None:
    fit = fit_engine(load_scenario(small), Targets(1e-4), REQUESTS)  # faster than peak allows
    assert not fit.reached and not fit.plausible
    assert any("did not reach the targets" in p for p in fit.problems)
    assert fit.best.memory == pytest.approx(1.0)  # the bound it ran into
    block = calibration_block(fit, "a test")
    assert block.fitted is not None and not block.fitted.reached
    assert not block.plausible and not block.apply and "did not reach" in block.note


def test_plausibility_band() -> None:
    assert implausible(0.5, 0.7) == []
    assert (
        len(implausible(0.2, 0.7)) == 1 and "compute efficiency 0.200" in implausible(0.2, 0.7)[0]
    )
    assert len(implausible(0.2, 0.25)) == 2
    assert implausible(0.9, 0.7)  # faster than any engine


def test_bundled_testbed_calibrations() -> None:
    four = load_scenario("paper-4w-qwen3-32b").scenario.calibration
    assert four is not None and four.plausible and four.apply
    for name in ("paper-8w-qwen3-14b", "failures-8w-x1", "failures-8w-x2", "failures-8w-x4"):
        loaded = load_scenario(name)
        cal = loaded.scenario.calibration
        assert cal is not None and not cal.plausible and not cal.apply, name
        assert cal.fitted is not None and cal.fitted.scenario == "paper-8w-qwen3-14b"
        assert loaded.cost_model.efficiency == DEFAULT_EFFICIENCY


def test_with_calibration_replaces_the_block_and_keeps_the_rest(small: Path) -> None:
    block = CalibrationConfig(
        engine=EngineEfficiency(compute_efficiency=0.5, memory_efficiency=0.6),
        targets=CalibrationTargets(ttft_mean_s=0.7),
        source="first",
        plausible=True,
        apply=True,
    )
    text, s = with_calibration(small.read_text(), block, "x")
    second = block.model_copy(update={"source": "second"})
    text2, s2 = with_calibration(text, second, "x")
    assert text2.startswith("# a comment that must survive")
    assert text2.count("calibration:") == 1 and "first" not in text2
    assert s.calibration == block and s2.calibration == second


def test_cli_fits_and_writes(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibrated.yaml"
    args = ["calibrate", str(small), "--ttft", "0.5", "--requests", str(REQUESTS)]
    result = runner.invoke(app, [*args, "--source", "a test", "--write", str(out)])
    assert result.exit_code == 0, result.output
    assert "uniform slowdown" in result.output and f"wrote {out}" in result.output
    cal = load_scenario(out).scenario.calibration
    assert cal is not None and cal.source == "a test" and cal.targets.ttft_mean_s == 0.5
    again = runner.invoke(app, [*args, "--write", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_cli_flags_an_implausible_fit(small: Path) -> None:
    # 50x the default TTFT needs an engine far below the plausible band.
    loaded = LoadedScenario(load_scenario(small).scenario, small)
    base = FailureFreeRuns(loaded, REQUESTS)(DEFAULT_EFFICIENCY.compute, DEFAULT_EFFICIENCY.memory)
    result = runner.invoke(
        app,
        ["calibrate", str(small), "--ttft", f"{base.ttft_s * 50:.3f}", "--requests", str(REQUESTS)],
    )
    assert result.exit_code == 0, result.output
    assert "warning: implausible fit" in result.output and "plausible: false" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["calibrate", "no-such-scenario", "--ttft", "1"], 1, "no bundled scenario of that name"),
        (["calibrate", "paper-4w-qwen3-32b", "--ttft", "-0.5"], 2, "--ttft takes a mean latency"),
        (["calibrate", "paper-4w-qwen3-32b", "--ttft", "1", "--tpot", "0"], 2, "--tpot takes"),
        (["calibrate", "paper-4w-qwen3-32b", "--ttft", "1", "--requests", "0"], 2, "--requests"),
        (["calibrate", "paper-4w-qwen3-32b", "--ttft", "1", "--seed", "-1"], 2, "--seed"),
        (
            ["calibrate", "paper-4w-qwen3-32b", "--ttft", "1", "--write", "lumen"],
            2,
            "is a folder",
        ),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(
    args: list[str], code: int, message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.output.startswith("error:") and message in result.output
    assert "Traceback" not in result.output
