"""PuLP's bundled CBC with a hard deadline.

CBC checks its ``-sec`` limit only between search steps: on large models its presolve, root LP
and cuts ran for a minute under a one-second limit. :class:`DeadlineCbc` runs the same binary
with the same options as ``pulp.PULP_CBC_CMD`` but kills it at a deadline; the model then has no
solution (PuLP status "Not Solved") and :attr:`DeadlineCbc.killed` is set.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from typing import Any

import pulp

#: CBC is not started with less time than this left before the deadline (seconds).
MIN_CBC_S = 0.05
#: CBC's own ``-sec`` is this share short of the time left (it then writes its incumbent).
STOP_MARGIN = 0.15


class DeadlineCbc(pulp.PULP_CBC_CMD):  # type: ignore[misc]
    """``pulp.PULP_CBC_CMD`` (MPS model, ``-sec`` = the smaller of ``timeLimit`` and the time
    left), killed at ``deadline`` (a :func:`time.perf_counter` value) if still running."""

    def __init__(self, deadline: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline
        self.killed = False

    def solve_CBC(self, lp: pulp.LpProblem, use_mps: bool = True) -> int:
        mps, sol, mst = self.create_tmp_files(lp.name, "mps", "sol", "mst")
        try:
            return self._run(lp, mps, sol, mst)
        finally:
            self.delete_tmp_files(mps, sol, mst)

    def _run(self, lp: pulp.LpProblem, mps: str, sol: str, mst: str) -> int:
        vs, var_names, con_names, _ = lp.writeMPS(mps, rename=1)
        args = [self.path, mps]
        if lp.sense == pulp.LpMaximize:
            args.append("-max")
        if self.optionsDict.get("warmStart", False):
            self.writesol(mst, lp, vs, var_names, con_names)
            args += ["-mips", mst]
        left = self.deadline - time.perf_counter()
        if left < MIN_CBC_S:
            return self._not_solved(lp)
        # CBC stops itself a little before the deadline, so that it can write its incumbent.
        sec = max(left * (1.0 - STOP_MARGIN) - MIN_CBC_S / 2, MIN_CBC_S / 2)
        if self.timeLimit is not None:
            sec = min(float(self.timeLimit), sec)
        args += ["-sec", f"{sec:.3f}"]
        for option in [*self.options, *self.getOptions()]:
            args += ("-" + option).split()
        args += ["-solve", "-printingOptions", "all", "-solution", sol]
        log_path = self.optionsDict.get("logPath")
        with open(log_path or os.devnull, "w") as pipe:
            proc = subprocess.Popen(args, stdout=pipe, stderr=pipe, stdin=subprocess.DEVNULL)
            try:
                code = proc.wait(timeout=max(self.deadline - time.perf_counter(), 0.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5.0)
                return self._not_solved(lp)
        if code != 0 or not os.path.exists(sol):
            raise pulp.PulpSolverError(f"CBC exited with code {code}")
        status, values, costs, prices, slacks, sol_status = self.readsol_MPS(
            sol, lp, vs, var_names, con_names
        )
        lp.assignVarsVals(values)
        lp.assignVarsDj(costs)
        lp.assignConsPi(prices)
        lp.assignConsSlack(slacks, activity=True)
        lp.assignStatus(status, sol_status)
        return int(status)

    def _not_solved(self, lp: pulp.LpProblem) -> int:
        self.killed = True
        lp.assignStatus(pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound)
        return int(pulp.LpStatusNotSolved)
