"""A cluster run: a trace's arrivals, the gateway and the workers on one kernel, with failures.

Arrivals come as one merged stream: the handler for request ``i`` dispatches it and schedules
request ``i + 1``, so the heap holds one arrival at a time. Workers add one event per iteration,
or one per run of pure-decode iterations (see :mod:`lumen.simulator.worker`).

The failure policy (:data:`lumen.planner.policies.POLICIES`) composes planner functions:

- checkpointing policies place a holder for every admitted request
  (:mod:`lumen.simulator.checkpoint`) and stream its KV pages there;
- at a failure (``failures``: time and worker indices) each failed worker stops (its iteration
  in flight is lost, its KV freed, the checkpoints it held for others are gone), every
  unfinished request on it is interrupted with the valid prefix its holder has, and the
  recovery problem is posed and solved by the policy's method
  (:mod:`lumen.simulator.recovery`); routes restore, transfer, recompute or wait;
- the failed worker reloads for the cost model's ``reload_timeline().total_s``; with
  progressive recovery it loads a draft first and assists a survivor while the target weights
  stream in (:func:`lumen.planner.policies.pair_survivors` pairs them); the gateway sends it
  nothing meanwhile.

A request whose first token was out keeps its original TTFT. A worker that fails again while
reloading restarts its reload, and the requests waiting for it are interrupted again. Failure
events run before arrivals and iteration ends at the same time.

Planner solve times are not charged to simulated time (the recovery plan takes effect at the
failure instant).

The run itself, its state and its event handlers, is a
:class:`lumen.simulator.run_state.ClusterRun`.
"""

from __future__ import annotations

from collections.abc import Sequence

from lumen.planner.costmodel import CostModel
from lumen.simulator.results import ClusterOptions, SimulationResult, SimulationSummary
from lumen.simulator.run_state import FAILURE_PRIORITY as FAILURE_PRIORITY
from lumen.simulator.run_state import ClusterRun
from lumen.workload.trace import Trace

__all__ = ["ClusterOptions", "ClusterRun", "SimulationResult", "SimulationSummary", "simulate"]


def simulate(
    trace: Trace,
    cost_model: CostModel,
    workers: int,
    max_batch_size: int = 512,
    prefill_chunk_tokens: int = 1024,
    seed: int = 0,
    kv_capacity_tokens: int | None = None,
    failures: Sequence[tuple[float, Sequence[int]]] = (),
    policy: str = "stop-and-restart",
    options: ClusterOptions | None = None,
) -> SimulationResult:
    """Serve ``trace`` on ``workers`` identical workers, failing them as ``failures`` say.

    Args:
        kv_capacity_tokens: per-worker GPU KV cache in tokens; the cost model's when None.
        seed: recorded with the result; the run itself is deterministic (speculation is
            modelled by its expectation), so runs differ only through their inputs.
        failures: ``(time, worker indices)`` events; the workers fail together at that time.
        policy: failure handling, a key of :data:`lumen.planner.policies.POLICIES`.
        options: cluster and policy parameters (defaults: one worker per node, no budget).
    """
    return ClusterRun(
        trace,
        cost_model,
        workers,
        max_batch_size,
        prefill_chunk_tokens,
        seed,
        kv_capacity_tokens,
        failures,
        policy,
        options,
    ).run()
