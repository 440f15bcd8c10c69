"""The compiled loops of the greedy on machine classes plan as their Python source does: the
same plans with numba's compilation turned off (``NUMBA_DISABLE_JIT=1``, in a subprocess), so
compilation changes no arithmetic (no reordered or fused floating-point operations). Run as
Python, every array access is also checked against the array's bounds, which the compiled
loops do not do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from lumen.planner.generators.recovery import random_recovery_problem
from lumen.planner.heuristics.recovery_scale import classed_insertion

CASES = [("uniform", 0, 300, 200), ("skewed", 1, 200, 300), ("tight-kv", 2, 200, 300)]

PLANS = """
import json, sys
import numpy as np
from lumen.planner.generators.recovery import random_recovery_problem
from lumen.planner.heuristics.recovery_scale import classed_insertion
plans = []
for family, seed, m, n in json.loads(sys.argv[1]):
    problem = random_recovery_problem(np.random.default_rng(seed), m, n, family)
    plans.append(classed_insertion(problem, passes=2).tolist())
print(json.dumps(plans))
"""


def test_the_compiled_loops_plan_as_their_python_source() -> None:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PLANS, json.dumps(CASES)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    interpreted = json.loads(out.stdout)
    for (family, seed, m, n), plan in zip(CASES, interpreted, strict=True):
        problem = random_recovery_problem(np.random.default_rng(seed), m, n, family)
        compiled = classed_insertion(problem, passes=2)
        assert compiled is not None
        assert compiled.tolist() == plan, family
