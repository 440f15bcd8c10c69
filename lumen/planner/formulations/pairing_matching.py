"""Exact draft pairing: a maximum-weight bipartite matching (networkx).

The pairing problem (docs/planner.md section 3) is small (recovering workers x survivors) and a
maximum-weight matching solves it exactly in polynomial time, so this backend always proves
optimality. Forbidden pairs (``-inf``) get no edge; zero-saving pairs add nothing and are left
out so a survivor is never tied up for no gain.
"""

from __future__ import annotations

import math
import time

import networkx as nx

from lumen.planner.plans import PairingPlan
from lumen.planner.problems import PairingProblem
from lumen.planner.result import SolveResult, SolveSettings, Termination


def build_graph(problem: PairingProblem) -> nx.Graph:
    """Bipartite graph: ``("r", i)`` -- ``("s", j)`` with weight ``saved_s[i, j] > 0``."""
    graph = nx.Graph()
    a, b = problem.saved_s.shape
    graph.add_nodes_from(("r", i) for i in range(a))
    graph.add_nodes_from(("s", j) for j in range(b))
    for i in range(a):
        for j in range(b):
            w = float(problem.saved_s[i, j])
            if math.isfinite(w) and w > 0.0:
                graph.add_edge(("r", i), ("s", j), weight=w)
    return graph


def plan_from_matching(matching: set[tuple[object, object]]) -> PairingPlan:
    pairs: list[tuple[int, int]] = []
    for u, v in matching:
        r, s = (u, v) if u[0] == "r" else (v, u)  # type: ignore[index]
        pairs.append((int(r[1]), int(s[1])))  # type: ignore[index]
    return PairingPlan(tuple(sorted(pairs)))


def solve(problem: PairingProblem, settings: SolveSettings) -> SolveResult[PairingPlan]:
    start = time.perf_counter()
    matching = nx.max_weight_matching(build_graph(problem), maxcardinality=False)
    plan = plan_from_matching(matching)
    total = plan.total_saved_s(problem)
    return SolveResult(
        method="matching",
        termination=Termination.OPTIMAL,
        objective=total,
        bound=total,
        wall_time_s=time.perf_counter() - start,
        plan=plan,
    )
