"""A scenario's ``calibration`` block: the plausible band of engine efficiencies, and writing
the block into a scenario file.

The fit itself runs failure-free simulations, so it lives in :mod:`lumen.simulator.calibration`
(``lumen calibrate``); the block is read by :func:`lumen.scenarios.resolve.engine_efficiency`.
Nothing here is fitted to failure-time outcomes, which are what a reproduction tests.

**Plausible band.** A production engine (vLLM, SGLang, TensorRT-LLM) on A100-class GPUs reaches
40-65 % of peak FLOP/s over a whole prefill forward pass and streams weights and KV at 60-90 % of
peak HBM bandwidth in decode. A fit below :data:`PLAUSIBLE_COMPUTE` or :data:`PLAUSIBLE_MEMORY`
(a quarter of peak FLOP/s, under a third of HBM bandwidth) says that the testbed lost time the
roofline does not model (CPU scheduling, a different workload, queueing outside the engine),
not that its kernels were that slow; above the band is faster than any engine reaches.
"""

from __future__ import annotations

import re

import yaml

from lumen.scenarios.loader import parse_yaml, validate_scenario
from lumen.scenarios.schema import CalibrationConfig, Scenario

__all__ = [
    "PLAUSIBLE_COMPUTE",
    "PLAUSIBLE_MEMORY",
    "block_yaml",
    "implausible",
    "with_calibration",
]

#: Plausible fraction of peak FLOP/s over a forward pass (module docstring).
PLAUSIBLE_COMPUTE = (0.25, 0.85)
#: Plausible fraction of peak HBM bandwidth in decode (module docstring).
PLAUSIBLE_MEMORY = (0.30, 0.95)

_HEADER = "# Engine efficiencies fitted to failure-free numbers by `lumen calibrate`"
_TOP_LEVEL_KEY = re.compile(r"^[A-Za-z_]")


def implausible(compute: float, memory: float) -> list[str]:
    """Why the efficiencies fall outside the plausible band ([] when inside)."""
    problems = []
    for name, value, (low, high) in (
        ("compute", compute, PLAUSIBLE_COMPUTE),
        ("memory", memory, PLAUSIBLE_MEMORY),
    ):
        if not low <= value <= high:
            problems.append(
                f"{name} efficiency {value:.3f} is outside the plausible band"
                f" [{low:.2f}, {high:.2f}] for a production engine on A100-class GPUs"
            )
    return problems


def block_yaml(block: CalibrationConfig) -> str:
    """The block as YAML under a top-level ``calibration:`` key, with a header comment."""
    fields = block.model_dump(mode="json", exclude_none=True)
    if not fields["note"]:
        del fields["note"]
    data = {"calibration": fields}
    return _HEADER + "\n" + yaml.safe_dump(data, sort_keys=False, width=100)


def with_calibration(text: str, block: CalibrationConfig, source: str) -> tuple[str, Scenario]:
    """A scenario file's text with ``block`` as its calibration (replacing any it had), and the
    scenario it validates to. Comments and layout of the rest of the file are kept."""
    lines = text.splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("calibration:"):
            skipping = True
            if kept and kept[-1] == _HEADER:
                kept.pop()
            continue
        if skipping and _TOP_LEVEL_KEY.match(line):
            skipping = False
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    new_text = "\n".join(kept) + "\n" + block_yaml(block)
    scenario = validate_scenario(parse_yaml(new_text, source), source)
    return new_text, scenario
