"""Roofline cost model: iteration time from FLOPs, HBM bytes and tensor-parallel communication.

FLOPs and bytes of an iteration:

* FLOPs = ``2 * linear params * tokens`` + ``4 * layers * heads * head_dim * attended pairs``
  + ``2 * hidden * vocab`` per logit-producing position;
* bytes = the weights (read once per iteration, whatever the batch) + the KV cache read
  (context) and written (new tokens).

Each kind of kernel is bound by its own roof, and the kinds add up, because an engine runs them
one after another: the GEMMs of all tokens (linear + lm_head FLOPs against the weight bytes), the
prefill attention (its FLOPs against the KV bytes of the prefill chunks) and the decode attention
(likewise). One ``max`` over the whole iteration would let memory-bound decode attention hide
under compute-bound prefill GEMMs, which real mixed batches do not do. Then

    time = sum over kinds of max(FLOPs / (tp * peak * compute eff), bytes / (tp * HBM * mem eff))
           + all-reduce + overhead

* all-reduce = two ring all-reduces per layer of ``tokens * hidden * dtype`` bytes over NVLink
  plus a fixed latency each (zero when tp == 1);
* overhead = scheduling, sampling and kernel-launch time every iteration pays.

Activation traffic, norms and rotary embeddings are ignored; they are a few percent at most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumen.planner.costmodel.base import BatchShape, DeploymentCosts
from lumen.planner.costmodel.deployment import Deployment
from lumen.planner.costmodel.profiles import ModelProfile, draft_compatible

__all__ = [
    "DEFAULT_EFFICIENCY",
    "RooflineBreakdown",
    "RooflineCostModel",
    "RooflineEfficiency",
]


@dataclass(frozen=True, slots=True)
class RooflineEfficiency:
    """Fractions of peak a real engine reaches, and the fixed costs of an iteration.

    The defaults are calibrated to published vLLM / Sarathi-Serve numbers on A100s: large BF16
    GEMMs reach 70-80 % of peak but a whole forward pass (attention, norms, small GEMMs of the
    attention block) about 60-65 %; decode streams weights at about 80 % of HBM bandwidth;
    NCCL/custom all-reduce reaches about 80 % of NVLink bandwidth with a few microseconds of
    latency per call; the Python scheduler, sampler and launches cost a few ms per iteration.
    This gives Llama-3-70B on 4 x A100 a ~0.2 s 1024-token prefill and a ~26 ms decode step.
    """

    compute: float = 0.65
    memory: float = 0.80
    nvlink: float = 0.80
    allreduce_latency_s: float = 8e-6
    iteration_overhead_s: float = 3e-3

    def __post_init__(self) -> None:
        for name in ("compute", "memory", "nvlink"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"RooflineEfficiency.{name} must be in (0, 1], got {value!r}")
        for name in ("allreduce_latency_s", "iteration_overhead_s"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"RooflineEfficiency.{name} must be >= 0, got {value!r}")


DEFAULT_EFFICIENCY = RooflineEfficiency()

#: Runs of at least this many decode iterations are timed with numpy arrays (same result).
_VECTOR_STEPS = 48


@dataclass(frozen=True, slots=True)
class RooflineBreakdown:
    """Where the time of one iteration goes (see :meth:`RooflineCostModel.breakdown`).

    ``flops`` and ``memory_bytes`` are the iteration's totals; the ``*_s`` fields are the
    compute and memory times of each kernel kind (GEMMs, prefill and decode attention).
    """

    flops: float
    memory_bytes: float
    gemm_compute_s: float
    gemm_memory_s: float
    prefill_attention_compute_s: float
    prefill_attention_memory_s: float
    decode_attention_compute_s: float
    decode_attention_memory_s: float
    allreduce_s: float
    overhead_s: float

    @property
    def compute_bound(self) -> bool:
        """Whether arithmetic, not weight streaming, limits the GEMMs (most of the time)."""
        return self.gemm_compute_s >= self.gemm_memory_s

    @property
    def total_s(self) -> float:
        """The iteration time; equals ``RooflineCostModel.batch_time``."""
        if self.flops == 0.0:
            return 0.0
        return (
            max(self.gemm_compute_s, self.gemm_memory_s)
            + max(self.prefill_attention_compute_s, self.prefill_attention_memory_s)
            + max(self.decode_attention_compute_s, self.decode_attention_memory_s)
            + self.allreduce_s
            + self.overhead_s
        )


class RooflineCostModel(DeploymentCosts):
    """The default cost model: an analytic roofline of one worker (see the module docstring).

    Args:
        deployment: the worker being modelled.
        draft: the small same-family model a recovering worker runs first, if any.
        efficiency: achieved fractions of peak and fixed costs.
        draft_tensor_parallel: GPUs the draft model is sharded over (vLLM runs drafts on one).
    """

    def __init__(
        self,
        deployment: Deployment,
        draft: ModelProfile | None = None,
        efficiency: RooflineEfficiency = DEFAULT_EFFICIENCY,
        *,
        draft_tensor_parallel: int = 1,
    ) -> None:
        draft_deployment = None
        if draft is not None:
            if not draft_compatible(deployment.model, draft):
                raise ValueError(
                    f"draft {draft.name} ({draft.family}, vocab {draft.vocab_size}) cannot "
                    f"propose for {deployment.model.name} ({deployment.model.family}, "
                    f"vocab {deployment.model.vocab_size}): family and vocabulary must match"
                )
            draft_deployment = deployment.with_model(draft, draft_tensor_parallel)
        super().__init__(deployment, draft_deployment)
        self._efficiency = efficiency
        self._draft_model: RooflineCostModel | None = None

        # Everything batch_time needs is folded into a few floats here, because the simulator
        # calls it once per engine iteration.
        model, hw, tp = deployment.model, deployment.hardware, deployment.tensor_parallel
        self._linear_flops_per_token = 2.0 * model.linear_params_per_token
        self._attention_flops_per_pair = (
            4.0 * model.num_layers * model.num_attention_heads * model.head_dim
        )
        self._logit_flops = 2.0 * model.hidden_size * model.vocab_size
        self._s_per_flop = 1.0 / (tp * hw.peak_flops * efficiency.compute)
        self._s_per_byte = 1.0 / (tp * hw.hbm_bandwidth * efficiency.memory)
        self._weight_s = model.streamed_weight_bytes * self._s_per_byte
        self._kv_s_per_token = model.kv_bytes_per_token * self._s_per_byte
        if tp > 1:
            allreduces = 2 * model.num_layers
            # A ring all-reduce moves 2 (tp - 1) / tp of the buffer through each GPU's link.
            bytes_per_token = allreduces * model.hidden_size * model.dtype_bytes
            ring = 2.0 * (tp - 1) / tp
            link = hw.nvlink_bandwidth * efficiency.nvlink
            self._allreduce_s_per_token = bytes_per_token * ring / link
            self._fixed_s = efficiency.iteration_overhead_s + allreduces * (
                efficiency.allreduce_latency_s
            )
        else:
            self._allreduce_s_per_token = 0.0
            self._fixed_s = efficiency.iteration_overhead_s

    @property
    def efficiency(self) -> RooflineEfficiency:
        """The efficiencies this model was built with."""
        return self._efficiency

    def batch_time(self, shape: BatchShape) -> float:
        """Duration of one engine iteration doing ``shape``'s work (0 for an empty batch)."""
        tokens = shape.prefill_tokens + shape.decode_query_tokens
        if tokens == 0:
            return 0.0
        chunks = shape.prefill_seqs
        compute = (
            tokens * self._linear_flops_per_token
            + (chunks + shape.decode_query_tokens) * self._logit_flops
        ) * self._s_per_flop
        memory = self._weight_s
        time = (
            (compute if compute > memory else memory)
            + self._fixed_s
            + tokens * self._allreduce_s_per_token
        )
        if chunks:
            prefill = shape.prefill_tokens
            pairs = shape.prefill_attention
            # Cached context the chunks read, recovered from the attended pairs
            # (BatchShape.prefill_context_tokens, inlined).
            context = pairs / prefill - (prefill / chunks + 1.0) * 0.5
            kv_tokens = prefill + chunks * context if context > 0.0 else prefill
            compute = pairs * self._attention_flops_per_pair * self._s_per_flop
            memory = kv_tokens * self._kv_s_per_token
            time += compute if compute > memory else memory
        seqs = shape.decode_seqs
        if seqs:
            queries = shape.decode_query_tokens
            pairs_d = shape.decode_context_tokens * queries / seqs
            compute = pairs_d * self._attention_flops_per_pair * self._s_per_flop
            memory = (shape.decode_context_tokens + queries) * self._kv_s_per_token
            time += compute if compute > memory else memory
        return time

    def decode_run_ends(self, start: float, seqs: int, context: float, steps: int) -> list[float]:
        """End times of ``steps`` plain decode iterations of ``seqs`` sequences run back to
        back from ``start``, the summed context growing by ``seqs`` before each one:
        iteration ``k`` (from 1) reads ``int(context + seqs + ... + seqs)`` (``k`` additions)
        context tokens. Each end equals the running sum ``start + batch_time(...)`` of
        :meth:`batch_time` on ``BatchShape(decode_seqs=seqs, decode_context_tokens=...,
        decode_query_tokens=seqs)``, evaluated term by term the same way (bit for bit), without
        building the shapes (the simulator's pure-decode runs)."""
        ends: list[float] = []
        if seqs < 1 or steps < 1:
            return ends
        compute = (
            seqs * self._linear_flops_per_token + (0 + seqs) * self._logit_flops
        ) * self._s_per_flop
        memory = self._weight_s
        base = (compute if compute > memory else memory) + self._fixed_s
        base = base + seqs * self._allreduce_s_per_token
        flops_per_pair = self._attention_flops_per_pair
        s_per_flop = self._s_per_flop
        kv_s = self._kv_s_per_token
        grow = seqs * 1.0
        if steps >= _VECTOR_STEPS:
            # The same operations elementwise; accumulate sums in order, like the loop below.
            terms = np.full(steps + 1, grow)
            terms[0] = context
            contexts = np.add.accumulate(terms)[1:]
            ctxs = contexts.astype(np.int64)
            computes = ctxs * seqs / seqs * flops_per_pair * s_per_flop
            memories = (ctxs + seqs) * kv_s
            terms[0] = start
            terms[1:] = base + np.where(computes > memories, computes, memories)
            return np.add.accumulate(terms)[1:].tolist()  # type: ignore[no-any-return]
        t = start
        append = ends.append
        for _ in range(steps):
            context += grow
            ctx = int(context)
            compute = ctx * seqs / seqs * flops_per_pair * s_per_flop
            memory = (ctx + seqs) * kv_s
            t += base + (compute if compute > memory else memory)
            append(t)
        return ends

    def breakdown(self, shape: BatchShape) -> RooflineBreakdown:
        """The terms of :meth:`batch_time`, for analysis and tests (not for hot loops)."""
        if shape.is_empty:
            return RooflineBreakdown(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        model = self.deployment.model
        tokens = shape.total_tokens
        gemm_flops = (
            tokens * self._linear_flops_per_token
            + (shape.prefill_seqs + shape.decode_query_tokens) * self._logit_flops
        )
        prefill_flops = shape.prefill_attention * self._attention_flops_per_pair
        decode_flops = shape.decode_attention * self._attention_flops_per_pair
        kv = model.kv_bytes_per_token
        prefill_bytes = (shape.prefill_tokens + shape.prefill_context_tokens) * kv
        decode_bytes = (shape.decode_query_tokens + shape.decode_context_tokens) * kv
        weight_bytes = model.streamed_weight_bytes
        overhead = self._efficiency.iteration_overhead_s
        return RooflineBreakdown(
            flops=gemm_flops + prefill_flops + decode_flops,
            memory_bytes=weight_bytes + prefill_bytes + decode_bytes,
            gemm_compute_s=gemm_flops * self._s_per_flop,
            gemm_memory_s=weight_bytes * self._s_per_byte,
            prefill_attention_compute_s=prefill_flops * self._s_per_flop,
            prefill_attention_memory_s=prefill_bytes * self._s_per_byte,
            decode_attention_compute_s=decode_flops * self._s_per_flop,
            decode_attention_memory_s=decode_bytes * self._s_per_byte,
            allreduce_s=tokens * self._allreduce_s_per_token + self._fixed_s - overhead,
            overhead_s=overhead,
        )

    def prefill_time(self, chunk_tokens: int, context_tokens: int = 0) -> float:
        """One iteration prefilling ``chunk_tokens`` new tokens after ``context_tokens`` cached."""
        if chunk_tokens == 0:
            return 0.0
        return self.batch_time(BatchShape.prefill(chunk_tokens, context_tokens))

    def decode_step_time(
        self, batch_size: int, context_tokens: int, query_tokens_per_seq: int = 1
    ) -> float:
        """One decode iteration; ``context_tokens`` is the KV length summed over the batch."""
        return self.batch_time(BatchShape.decode(batch_size, context_tokens, query_tokens_per_seq))

    def draft_cost_model(self) -> RooflineCostModel | None:
        """The draft model on the same hardware (same efficiencies), or None without a draft."""
        if self.draft_deployment is None:
            return None
        if self._draft_model is None:
            self._draft_model = RooflineCostModel(self.draft_deployment, None, self._efficiency)
        return self._draft_model
