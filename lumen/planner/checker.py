"""The independent plan checker: feasibility and objective recomputed from a plan alone.

This module deliberately shares no code with the backends or with the helper methods of the
problem classes: it re-reads docs/planner.md and recomputes everything with plain Python loops,
so a bug in a formulation or a vectorized heuristic cannot hide behind the same bug here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lumen.planner.plans import PairingPlan, PlacementPlan, RecoveryPlan
from lumen.planner.problems import PairingProblem, PlacementProblem, RecoveryProblem

#: Relative slack for capacity sums (floating-point accumulation order differs per backend).
_REL_TOL = 1e-9


@dataclass(frozen=True)
class CheckReport:
    feasible: bool
    objective: float
    violations: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.feasible


def _over(total: float, cap: float) -> bool:
    return total > cap + _REL_TOL * max(1.0, abs(cap))


def check_placement(problem: PlacementProblem, plan: PlacementPlan) -> CheckReport:
    """Check a placement plan against docs/planner.md section 1."""
    n, m = problem.num_requests, problem.num_workers
    node = problem.node.tolist()
    home = problem.home.tolist()
    holder = plan.holder.tolist()
    violations: list[str] = []
    if len(holder) != n:
        return CheckReport(False, math.inf, (f"plan has {len(holder)} holders for {n} requests",))
    reserved = [0.0] * m
    streamed = [0.0] * m
    for i in range(n):
        j = holder[i]
        if not 0 <= j < m:
            violations.append(f"request {i}: holder {j} is not a worker index")
            continue
        if j == home[i]:
            violations.append(f"request {i}: holder {j} is its home")
        if not bool(problem.can_hold[j]):
            violations.append(f"request {i}: worker {j} may not hold checkpoints")
        if problem.require_other_node and node[j] == node[home[i]]:
            violations.append(f"request {i}: holder {j} shares node {node[j]} with its home")
        reserved[j] += float(problem.reserve_bytes[i])
        streamed[j] += float(problem.stream_bytes_s[i])
    for j in range(m):
        if _over(reserved[j], float(problem.budget_bytes[j])):
            violations.append(
                f"worker {j}: reserves {reserved[j]:.0f} bytes over its budget"
                f" {float(problem.budget_bytes[j]):.0f}"
            )
        if _over(streamed[j], float(problem.stream_cap_bytes_s[j])):
            violations.append(f"worker {j}: stream {streamed[j]:.0f} B/s over its cap")
    if violations:
        return CheckReport(False, math.inf, tuple(violations))
    # Objective: per failed worker f, alpha * worst holder load + mean wait of R_f at holders.
    load: dict[int, dict[int, float]] = {}
    wait_sum: dict[int, float] = {}
    count: dict[int, int] = {}
    for i in range(n):
        f, j = home[i], holder[i]
        per = load.setdefault(f, {})
        per[j] = per.get(j, 0.0) + float(problem.work_s[i])
        wait_sum[f] = wait_sum.get(f, 0.0) + float(problem.wait_s[j])
        count[f] = count.get(f, 0) + 1
    objective = 0.0
    for f, per in load.items():
        worst = max(per.values())
        objective += float(problem.fail_weight[f]) * (
            problem.alpha * worst + wait_sum[f] / count[f]
        )
    for i in range(n):
        cur = int(problem.current[i])
        if cur >= 0 and holder[i] != cur:
            objective += float(problem.move_cost_s[i])
    return CheckReport(True, objective, ())


def check_recovery(problem: RecoveryProblem, plan: RecoveryPlan) -> CheckReport:
    """Check a recovery plan against docs/planner.md section 2 (the plan's order is used)."""
    n, m = problem.num_requests, problem.num_machines
    machine = plan.machine.tolist()
    mode = plan.mode.tolist()
    violations: list[str] = []
    if len(machine) != n or len(mode) != n:
        return CheckReport(False, math.inf, ("plan size does not match the problem",))
    if len(plan.order) != m:
        return CheckReport(False, math.inf, (f"plan orders {len(plan.order)} machines, not {m}",))
    seen: dict[int, int] = {}
    for j, seq in enumerate(plan.order):
        for i in seq:
            if not 0 <= i < n:
                violations.append(f"machine {j}: unknown request index {i}")
            elif i in seen:
                violations.append(f"request {i}: ordered on machines {seen[i]} and {j}")
            else:
                seen[i] = j
    for i in range(n):
        if seen.get(i, -1) != machine[i]:
            violations.append(f"request {i}: order and assignment disagree")
    kv = [0.0] * m
    chosen = [math.inf] * n  # each request's time in its plan's mode on its machine
    for i in range(n):
        j = machine[i]
        if not 0 <= j < m:
            violations.append(f"request {i}: machine {j} is not a machine index")
            continue
        times = [float(t) for t in problem.modes.at([i], [j])[0].tolist()]
        if not 0 <= mode[i] < len(times) or not math.isfinite(times[mode[i]]):
            violations.append(f"request {i}: mode {mode[i]} is not available on machine {j}")
        else:
            chosen[i] = times[mode[i]]
        kv[j] += float(problem.kv_tokens[i])
    for j in range(m):
        if _over(kv[j], float(problem.kv_free_tokens[j])):
            violations.append(
                f"machine {j}: needs {kv[j]:.0f} KV tokens,"
                f" has {float(problem.kv_free_tokens[j]):.0f}"
            )
    if violations:
        return CheckReport(False, math.inf, tuple(violations))
    objective = 0.0
    for j, seq in enumerate(plan.order):
        clock = float(problem.ready_s[j])
        for i in seq:
            p = chosen[i]
            clock += p
            objective += clock + float(problem.queued[j]) * p
    return CheckReport(True, objective, ())


def check_pairing(problem: PairingProblem, plan: PairingPlan) -> CheckReport:
    """Check a pairing plan against docs/planner.md section 3 (total saved, to maximize)."""
    a, b = problem.saved_s.shape
    violations: list[str] = []
    used_r: set[int] = set()
    used_s: set[int] = set()
    total = 0.0
    for r, s in plan.pairs:
        if not (0 <= r < a and 0 <= s < b):
            violations.append(f"pair ({r}, {s}) is out of range")
            continue
        if r in used_r:
            violations.append(f"recovering worker {r} is paired twice")
        if s in used_s:
            violations.append(f"survivor {s} is paired twice")
        used_r.add(r)
        used_s.add(s)
        value = float(problem.saved_s[r, s])
        if value == -math.inf:
            violations.append(f"pair ({r}, {s}) is forbidden")
        else:
            total += value
    if violations:
        return CheckReport(False, -math.inf, tuple(violations))
    return CheckReport(True, total, ())
