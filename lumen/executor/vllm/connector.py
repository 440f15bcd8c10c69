"""``LumenConnector``: LUMEN's checkpointing and restore as a vLLM v1 KV connector.

vLLM loads this module itself when the engine is configured with::

    KVTransferConfig(
        kv_connector="LumenConnector",
        kv_connector_module_path="lumen.executor.vllm.connector",
        kv_role="kv_both",
        kv_load_failure_policy="recompute",
        kv_connector_extra_config={"lumen_bridge": NAME},
    )

which :class:`~lumen.executor.vllm.engine.VllmEngine` does. This module imports vLLM (and
torch) and is a thin translation of vLLM's objects into the vLLM-free calls of
:mod:`~lumen.executor.vllm.core`; read that module for what each method decides. Written
against the ``KVConnectorBase_V1`` of vLLM 0.33 (``vllm/distributed/kv_transfer/kv_connector/
v1/base.py``).

- scheduler side: :meth:`get_num_new_matched_tokens` answers the whole-block valid prefix held
  for a restored request, :meth:`update_state_after_alloc` records the blocks that receive it,
  :meth:`build_connector_meta` plans the step's loads and the blocks the step completes, and
  :meth:`request_finished` forgets the request (the engine loop then releases the holder's
  reservation);
- worker side: :meth:`start_load_kv` writes the restore pages into their blocks before the
  forward (synchronously, so :meth:`wait_for_layer_load` has nothing to wait for), and
  :meth:`wait_for_save`, once per step after the forward, copies the completed blocks into
  pinned host memory as tagged, checksummed pages for the checkpoint streamer.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from lumen.executor.vllm.blocks import PagedKVBlockIO
from lumen.executor.vllm.core import (
    BRIDGE_KEY,
    REQUEST_KEY,
    CachedRequest,
    NewRequest,
    SchedulerBook,
    StepPlan,
    WorkerSide,
    get_bridge,
)

__all__ = ["LumenConnector", "LumenConnectorMetadata"]


class LumenConnectorMetadata(KVConnectorMetadata):  # type: ignore[misc]
    """The scheduler's plan for one step, handed to the worker side."""

    def __init__(self, plan: StepPlan) -> None:
        self.plan = plan


class LumenConnector(KVConnectorBase_V1):  # type: ignore[misc]
    """LUMEN's KV connector (module docstring)."""

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = dict(self._kv_transfer_config.kv_connector_extra_config or {})
        self._bridge = get_bridge(str(extra.get(BRIDGE_KEY, "default")))
        self._num_blocks = int(kv_cache_config.num_blocks)
        self._book = SchedulerBook(self._bridge)
        self._worker = WorkerSide(self._bridge)
        self._io: PagedKVBlockIO | None = None
        self._ids: dict[str, str] = {}  # vLLM's request id -> LUMEN's
        self._is_scheduler = role == KVConnectorRole.SCHEDULER

    @property
    def requires_kv_delivery(self) -> bool:
        """Checkpoints are best effort: a dropped save costs a recompute after a failure, so a
        preempted request need not be recomputed for it (vLLM's default follows ``kv_role``)."""
        return False

    # ---- ids ---------------------------------------------------------------------------------

    def _lumen_id(self, request: Any) -> str:
        """LUMEN's id of a vLLM request (vLLM suffixes the id it was given)."""
        vllm_id = str(request.request_id)
        known = self._ids.get(vllm_id)
        if known is not None:
            return known
        params = getattr(request, "kv_transfer_params", None) or {}
        lumen_id = str(params.get(REQUEST_KEY, vllm_id))
        self._ids[vllm_id] = lumen_id
        self._book.track(lumen_id, request.all_token_ids)
        return lumen_id

    # ---- worker side -------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        io = PagedKVBlockIO(kv_caches, self._num_blocks)
        if io.layout != self._bridge.layout:
            raise ValueError(
                f"vLLM's KV cache {io.layout} differs from the worker's page layout "
                f"{self._bridge.layout}"
            )
        self._io = io

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        if self._io is None or not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        if isinstance(meta, LumenConnectorMetadata) and meta.plan.loads:
            self._worker.load(meta.plan, self._io)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # start_load_kv loads every layer before the forward

    def save_kv_layer(
        self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any
    ) -> None:
        return  # whole blocks are copied once per step, in wait_for_save

    def wait_for_save(self) -> None:
        if self._io is None or not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        if isinstance(meta, LumenConnectorMetadata) and meta.plan.saves:
            self._worker.save(meta.plan, self._io)

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker.take_failed()

    # ---- scheduler side ----------------------------------------------------------------------

    def on_new_request(self, request: Any) -> None:
        self._lumen_id(request)

    def get_num_new_matched_tokens(
        self, request: Any, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        rid = self._lumen_id(request)
        return self._book.matched_tokens(rid, request.all_token_ids, num_computed_tokens), False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        if num_external_tokens <= 0:
            return
        block_ids = blocks.get_block_ids()[0]
        self._book.after_alloc(self._lumen_id(request), block_ids, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        ids = self._ids
        new = [
            NewRequest(ids[r.req_id], tuple(r.block_ids[0]), int(r.num_computed_tokens))
            for r in scheduler_output.scheduled_new_reqs
            if r.req_id in ids
        ]
        cached_reqs = scheduler_output.scheduled_cached_reqs
        resumed = set(getattr(cached_reqs, "resumed_req_ids", ()) or ())
        cached = []
        for i, req_id in enumerate(cached_reqs.req_ids):
            if req_id not in ids:
                continue
            new_blocks = cached_reqs.new_block_ids[i]
            cached.append(
                CachedRequest(
                    ids[req_id],
                    tuple(new_blocks[0]) if new_blocks is not None else (),
                    int(cached_reqs.num_computed_tokens[i]),
                    resumed=req_id in resumed,
                )
            )
        scheduled = {
            ids[req_id]: int(n)
            for req_id, n in scheduler_output.num_scheduled_tokens.items()
            if req_id in ids
        }
        return LumenConnectorMetadata(self._book.plan_step(new, cached, scheduled))

    def request_finished(
        self, request: Any, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        rid = self._ids.pop(str(request.request_id), None)
        if rid is not None:
            self._book.finished(rid)
        return False, None  # saves are synchronous: vLLM may free the blocks now
