"""LUMEN's executor layer around vLLM workers (docs/vllm.md).

- :mod:`~lumen.executor.vllm.core`: the logic that needs neither vLLM nor torch: vLLM blocks as
  LUMEN pages, restore matching, the scheduler-side bookkeeping of loads and saves, and the
  :class:`~lumen.executor.vllm.core.LumenKVBridge` that joins the connector to the worker's
  checkpoint streamer and store;
- :mod:`~lumen.executor.vllm.blocks`: copies between vLLM's paged KV views and page payloads
  (torch, no vLLM);
- :mod:`~lumen.executor.vllm.connector`: ``LumenConnector``, the thin ``KVConnectorBase_V1``
  binding (imports vLLM; loaded by vLLM through ``kv_connector_module_path``);
- :mod:`~lumen.executor.vllm.engine`: the :class:`~lumen.executor.engine.interface.Engine`
  adapter over vLLM's ``LLMEngine`` that ``python -m lumen.executor.worker --engine vllm`` runs.

Importing this package imports neither vLLM nor torch.
"""

from __future__ import annotations

#: What to install when vLLM is missing (the one-line error of ``--engine vllm``).
VLLM_INSTALL_HINT = "pip install 'lumen-recovery[vllm]'"

__all__ = ["VLLM_INSTALL_HINT"]
