"""Copies between vLLM-shaped paged KV views ([B, H, N, C], K then V in C) and page payloads,
on CPU tensors (the same code runs on CUDA tensors with pinned staging)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lumen.executor.engine.kv_page import KVLayout  # noqa: E402
from lumen.executor.vllm.blocks import PagedKVBlockIO, layer_order, layout_of  # noqa: E402

HEADS, DIM, BLOCK = 2, 3, 4


def caches(num_blocks: int, ratio: int = 1, layers: int = 3, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    shape = (num_blocks * ratio, HEADS, BLOCK // ratio, 2 * DIM)
    names = [f"model.layers.{i}.self_attn.attn" for i in range(layers)]
    return {name: torch.randn(shape, generator=gen) for name in reversed(names)}


def test_layer_order_is_numeric() -> None:
    names = ["model.layers.10.attn", "model.layers.2.attn", "model.layers.1.attn"]
    assert layer_order(names) == [
        "model.layers.1.attn",
        "model.layers.2.attn",
        "model.layers.10.attn",
    ]


@pytest.mark.parametrize("ratio", [1, 2])
def test_layout_of_vllm_views(ratio: int) -> None:
    io = PagedKVBlockIO(caches(6, ratio), num_blocks=6)
    assert io.layout == KVLayout(BLOCK, 3, HEADS, DIM, "float32")


@pytest.mark.parametrize("ratio", [1, 2])
def test_payload_is_the_lumen_page_layout(ratio: int) -> None:
    kv = caches(6, ratio)
    io = PagedKVBlockIO(kv, num_blocks=6)
    (payload,) = io.read_blocks([4])
    page = torch.frombuffer(bytearray(payload), dtype=torch.float32).reshape(
        io.layout.page_shape(BLOCK)
    )
    slots = BLOCK // ratio
    for layer, name in enumerate(io.names):
        view = kv[name]
        for t in range(BLOCK):
            kernel, slot = 4 * ratio + t // slots, t % slots
            for h in range(HEADS):
                assert torch.equal(page[layer, 0, t, h], view[kernel, h, slot, :DIM])
                assert torch.equal(page[layer, 1, t, h], view[kernel, h, slot, DIM:])


@pytest.mark.parametrize("ratio", [1, 2])
def test_write_then_read_moves_blocks_between_caches(ratio: int) -> None:
    src = PagedKVBlockIO(caches(8, ratio, seed=1), num_blocks=8)
    dst_kv = caches(8, ratio, seed=2)
    before = {k: v.clone() for k, v in dst_kv.items()}
    dst = PagedKVBlockIO(dst_kv, num_blocks=8)
    payloads = src.read_blocks([1, 6, 3])
    dst.write_blocks([5, 0, 2], payloads)
    assert dst.read_blocks([5, 0, 2]) == payloads
    # Other blocks are untouched.
    for name in dst.names:
        grouped = dst_kv[name].unflatten(0, (8, ratio))
        old = before[name].unflatten(0, (8, ratio))
        for b in (1, 3, 4, 6, 7):
            assert torch.equal(grouped[b], old[b])


def test_unsupported_views_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        layout_of([torch.zeros(5, 2, 4, 6)], num_blocks=2)
    with pytest.raises(ValueError, match="not supported"):
        layout_of([torch.zeros(2, 2, 4, 6, dtype=torch.int8)], num_blocks=2)
    with pytest.raises(ValueError, match="B, H, N, C"):
        layout_of([torch.zeros(2, 4, 6)], num_blocks=2)
    with pytest.raises(ValueError, match="differ"):
        layout_of([torch.zeros(2, 2, 4, 6), torch.zeros(2, 1, 4, 6)], num_blocks=2)
    with pytest.raises(ValueError, match="no KV"):
        layout_of([], num_blocks=2)
    io = PagedKVBlockIO(caches(2), num_blocks=2)
    with pytest.raises(ValueError, match="payloads"):
        io.write_blocks([0, 1], [b""])
