"""Copies between vLLM's paged KV views and LUMEN page payloads (torch, no vLLM import).

vLLM 0.33 hands a KV connector one view per attention layer (``register_kv_caches``), shaped
``[B, H, N, C]``: blocks, KV heads, token slots of a (kernel) block, and the K then V values of
one head at one slot (``C = 2 * head_dim``). When vLLM splits a scheduler block into ``r``
kernel blocks, ``B`` is ``r`` times the scheduler's block count and ``N`` is ``block_size / r``.
A LUMEN page payload is ``(layers, 2, block_size, heads, head_dim)`` in C order
(:class:`~lumen.executor.engine.kv_page.KVLayout`), so pages written by a vLLM worker and by the
built-in engine have the same bytes for the same K and V.

Saving gathers a step's completed blocks of every layer on the device, lays them out as pages
there, and copies them in one transfer into a pinned host buffer; loading does the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from lumen.executor.engine.kv_page import KVLayout

__all__ = ["TORCH_DTYPES", "PagedKVBlockIO", "layer_order", "layout_of"]

#: LUMEN dtype names of the KV dtypes pages support.
TORCH_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}
_NUMBER = re.compile(r"\d+")


def layer_order(names: Sequence[str]) -> list[str]:
    """Layer names in model order: by the numbers in each name (``model.layers.10...`` after
    ``model.layers.9...``), then by name."""

    def key(name: str) -> tuple[tuple[int, ...], str]:
        return tuple(int(n) for n in _NUMBER.findall(name)), name

    return sorted(names, key=key)


def layout_of(views: Sequence[torch.Tensor], num_blocks: int) -> KVLayout:
    """The page layout of ``[B, H, N, C]`` layer views over ``num_blocks`` scheduler blocks.

    Raises:
        ValueError: the views are not 4-D, disagree, split K and V unevenly, hold a dtype pages
            do not support (fp8 KV caches), or ``B`` is not a multiple of ``num_blocks``.
    """
    if not views:
        raise ValueError("no KV cache layers to checkpoint")
    first = views[0]
    if first.dim() != 4:
        raise ValueError(f"expected [B, H, N, C] KV views, got shape {tuple(first.shape)}")
    for view in views:
        if view.shape != first.shape or view.dtype != first.dtype:
            raise ValueError("KV cache layers differ in shape or dtype (hybrid models)")
    blocks, heads, slots, content = (int(d) for d in first.shape)
    if content % 2:
        raise ValueError(f"K and V do not split evenly: last dim {content}")
    if first.dtype not in TORCH_DTYPES:
        raise ValueError(f"KV dtype {first.dtype} is not supported by LUMEN pages")
    if num_blocks <= 0 or blocks % num_blocks:
        raise ValueError(f"{blocks} kernel blocks are not a multiple of {num_blocks} blocks")
    ratio = blocks // num_blocks
    return KVLayout(
        block_size=slots * ratio,
        num_layers=len(views),
        num_kv_heads=heads,
        head_dim=content // 2,
        dtype=TORCH_DTYPES[first.dtype],
    )


class PagedKVBlockIO:
    """:class:`~lumen.executor.vllm.core.BlockIO` over vLLM's layer views.

    Args:
        kv_caches: layer name -> ``[B, H, N, C]`` view (as ``register_kv_caches`` gets them).
        num_blocks: scheduler blocks in the cache (``KVCacheConfig.num_blocks``).
        pin: stage host copies in pinned memory (needs CUDA; off on CPU).
    """

    def __init__(
        self, kv_caches: Mapping[str, torch.Tensor], num_blocks: int, pin: bool | None = None
    ) -> None:
        self.names = layer_order(list(kv_caches))
        self.views = [kv_caches[name] for name in self.names]
        self.layout = layout_of(self.views, num_blocks)
        self.num_blocks = num_blocks
        self.ratio = int(self.views[0].shape[0]) // num_blocks
        self.device = self.views[0].device
        self.pin = self.device.type == "cuda" if pin is None else pin
        self.dtype = self.views[0].dtype

    def _grouped(self, view: torch.Tensor) -> torch.Tensor:
        """``[num_blocks, r, H, N, C]`` view of a layer."""
        return view.view(self.num_blocks, self.ratio, *view.shape[1:])

    def read_blocks(self, block_ids: Sequence[int]) -> list[bytes]:
        if not block_ids:
            return []
        lay = self.layout
        idx = torch.tensor(list(block_ids), dtype=torch.long, device=self.device)
        n = len(block_ids)
        per_layer = []
        for view in self.views:
            x = self._grouped(view).index_select(0, idx)  # [n, r, H, N, C]
            per_layer.append(
                x.permute(0, 2, 1, 3, 4).reshape(n, lay.num_kv_heads, lay.block_size, -1)
            )
        stacked = torch.stack(per_layer, 0)  # [L, n, H, bs, 2D]
        split = stacked.reshape(*stacked.shape[:-1], 2, lay.head_dim)  # [L, n, H, bs, 2, D]
        pages = split.permute(1, 0, 4, 3, 2, 5).contiguous()
        host = torch.empty(pages.shape, dtype=pages.dtype, pin_memory=self.pin)
        host.copy_(pages, non_blocking=self.pin)
        if self.pin:
            torch.cuda.current_stream(self.device).synchronize()
        raw = host.view(torch.uint8).reshape(len(block_ids), -1)
        return [bytes(raw[k].numpy().tobytes()) for k in range(len(block_ids))]

    def write_blocks(self, block_ids: Sequence[int], payloads: Sequence[bytes]) -> None:
        if not block_ids:
            return
        if len(block_ids) != len(payloads):
            raise ValueError(f"{len(block_ids)} blocks for {len(payloads)} payloads")
        lay = self.layout
        n = len(block_ids)
        shape = (n, lay.num_layers, 2, lay.block_size, lay.num_kv_heads, lay.head_dim)
        data = bytearray(b"".join(payloads))
        host = torch.frombuffer(data, dtype=torch.uint8).view(self.dtype).reshape(shape)
        if self.pin:
            host = host.pin_memory()
        pages = host.to(self.device, non_blocking=self.pin)
        kv = pages.permute(1, 0, 4, 3, 2, 5).flatten(-2)  # [L, n, H, bs, 2D]
        slots = lay.block_size // self.ratio
        idx = torch.tensor(list(block_ids), dtype=torch.long, device=self.device)
        for layer, view in enumerate(self.views):
            src = kv[layer].reshape(n, lay.num_kv_heads, self.ratio, slots, -1)
            self._grouped(view)[idx] = src.permute(0, 2, 1, 3, 4)
