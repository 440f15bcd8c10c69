"""LumenConnector's call flow against a minimal fake of vLLM 0.33's KVConnectorBase_V1.

The fake reproduces the base class's constructor, its metadata binding and its abstract methods
with vLLM 0.33's signatures, so the binding is imported, instantiated for both roles and driven
through a save on one worker and a restore on another, the way vLLM's scheduler and model runner
call it. What this does not prove: that vLLM calls these methods in this order with these
objects, that its KV views look like the ones built here on a real GPU, or any numerics; only a
run with vLLM (``make gpu-check``) shows those.
"""

from __future__ import annotations

import abc
import enum
import importlib
import inspect
import sys
import types
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lumen.executor.vllm.core import (  # noqa: E402
    BRIDGE_KEY,
    REQUEST_KEY,
    LumenKVBridge,
    register_bridge,
    unregister_bridge,
)
from lumen.executor.worker.store import CheckpointStore  # noqa: E402

BASE = "vllm.distributed.kv_transfer.kv_connector.v1.base"
HEADS, DIM, BLOCK, BLOCKS, LAYERS = 2, 4, 4, 12, 2


def _fake_base_module() -> types.ModuleType:
    """vLLM 0.33's base.py surface that the binding uses (signatures copied by hand)."""

    class KVConnectorRole(enum.Enum):
        SCHEDULER = 0
        WORKER = 1

    class KVConnectorMetadata(abc.ABC):  # noqa: B024
        pass

    class KVConnectorBase_V1(abc.ABC):
        def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any) -> None:
            self._connector_metadata = None
            self._vllm_config = vllm_config
            if vllm_config.kv_transfer_config is None:
                raise ValueError("kv_transfer_config must be set for KVConnectorBase_V1")
            self._kv_transfer_config = vllm_config.kv_transfer_config
            self._kv_cache_config = kv_cache_config
            self._role = role

        def bind_connector_metadata(self, connector_metadata: Any) -> None:
            self._connector_metadata = connector_metadata

        def clear_connector_metadata(self) -> None:
            self._connector_metadata = None

        def _get_connector_metadata(self) -> Any:
            assert self._connector_metadata is not None
            return self._connector_metadata

        def has_connector_metadata(self) -> bool:
            return self._connector_metadata is not None

        def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
            return

        def get_block_ids_with_load_errors(self) -> set[int]:
            return set()

        def on_new_request(self, request: Any) -> None:
            return

        def request_finished(
            self, request: Any, block_ids: list[int]
        ) -> tuple[bool, dict[str, Any] | None]:
            return False, None

        @abc.abstractmethod
        def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None: ...

        @abc.abstractmethod
        def wait_for_layer_load(self, layer_name: str) -> None: ...

        @abc.abstractmethod
        def save_kv_layer(
            self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any
        ) -> None: ...

        @abc.abstractmethod
        def wait_for_save(self) -> None: ...

        @abc.abstractmethod
        def get_num_new_matched_tokens(
            self, request: Any, num_computed_tokens: int
        ) -> tuple[int | None, bool]: ...

        @abc.abstractmethod
        def update_state_after_alloc(
            self, request: Any, blocks: Any, num_external_tokens: int
        ) -> None: ...

        @abc.abstractmethod
        def build_connector_meta(self, scheduler_output: Any) -> Any: ...

    module = types.ModuleType(BASE)
    module.KVConnectorRole = KVConnectorRole  # type: ignore[attr-defined]
    module.KVConnectorMetadata = KVConnectorMetadata  # type: ignore[attr-defined]
    module.KVConnectorBase_V1 = KVConnectorBase_V1  # type: ignore[attr-defined]
    return module


@pytest.fixture
def connector_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    parts = BASE.split(".")
    for i in range(1, len(parts)):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(parts[i - 1]))
    monkeypatch.setitem(sys.modules, BASE, _fake_base_module())
    sys.modules.pop("lumen.executor.vllm.connector", None)
    try:
        yield importlib.import_module("lumen.executor.vllm.connector")
    finally:
        sys.modules.pop("lumen.executor.vllm.connector", None)


class Side:
    """One vLLM worker process: its bridge, KV cache, and both connector roles."""

    def __init__(self, module: Any, name: str, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.kv = {
            f"model.layers.{i}.self_attn.attn": torch.randn(
                BLOCKS, HEADS, BLOCK, 2 * DIM, generator=gen
            )
            for i in range(LAYERS)
        }
        from lumen.executor.engine.kv_page import KVLayout

        self.bridge = LumenKVBridge(KVLayout(BLOCK, LAYERS, HEADS, DIM, "float32"))
        register_bridge(name, self.bridge)
        transfer = SimpleNamespace(kv_connector_extra_config={BRIDGE_KEY: name})
        config = SimpleNamespace(kv_transfer_config=transfer)
        cache = SimpleNamespace(num_blocks=BLOCKS)
        role = sys.modules[BASE].KVConnectorRole
        self.scheduler = module.LumenConnector(config, role.SCHEDULER, cache)
        self.worker = module.LumenConnector(config, role.WORKER, kv_cache_config=cache)
        self.worker.register_kv_caches(self.kv)

    def step(self, new: list[Any], cached: list[Any], scheduled: dict[str, int]) -> Any:
        """One engine step: the scheduler plans, the worker loads, "runs", saves."""
        out = SimpleNamespace(
            scheduled_new_reqs=new,
            scheduled_cached_reqs=SimpleNamespace(
                req_ids=[c[0] for c in cached],
                new_block_ids=[c[1] for c in cached],
                num_computed_tokens=[c[2] for c in cached],
                resumed_req_ids=set(),
            ),
            num_scheduled_tokens=scheduled,
        )
        meta = self.scheduler.build_connector_meta(out)
        self.worker.bind_connector_metadata(meta)
        self.worker.start_load_kv(SimpleNamespace())
        for name in self.kv:
            self.worker.wait_for_layer_load(name)
            self.worker.save_kv_layer(name, self.kv[name], None)
        self.worker.wait_for_save()
        self.worker.clear_connector_metadata()
        return meta

    def block(self, block_id: int) -> list[Any]:
        return [self.kv[name][block_id].clone() for name in sorted(self.kv)]


def request(vllm_id: str, lumen_id: str, tokens: list[int]) -> SimpleNamespace:
    return SimpleNamespace(
        request_id=vllm_id, all_token_ids=tokens, kv_transfer_params={REQUEST_KEY: lumen_id}
    )


def test_binding_matches_the_base_class_interface(connector_module: Any) -> None:
    cls = connector_module.LumenConnector
    assert not inspect.isabstract(cls)
    assert cls.requires_kv_delivery.fget(None) is False  # best effort, whatever kv_role says
    assert "kv_cache_config" in inspect.signature(cls.__init__).parameters  # vLLM's factory check
    base = sys.modules[BASE].KVConnectorBase_V1
    for name, method in vars(base).items():
        if callable(method) and not name.startswith("_") and name in vars(cls):
            ours = list(inspect.signature(vars(cls)[name]).parameters)
            theirs = list(inspect.signature(method).parameters)
            assert ours == theirs, name


def test_save_on_home_then_restore_on_another_worker(connector_module: Any) -> None:
    home = Side(connector_module, "fake-home", seed=1)
    other = Side(connector_module, "fake-other", seed=2)
    try:
        tokens = list(range(50, 61))  # 11 tokens: 2 whole blocks, then a partial one
        req = request("5-1a2b3c4d", "5", tokens)
        home.bridge.set_saving("5", True)  # the engine loop: the request has a holder
        other.bridge.set_saving("5", True)
        home.scheduler.on_new_request(req)
        assert home.scheduler.get_num_new_matched_tokens(req, 0) == (0, False)
        new = SimpleNamespace(req_id=req.request_id, block_ids=([7, 2, 9],), num_computed_tokens=0)
        meta = home.step([new], [], {req.request_id: 11})
        assert [s.block_ids for s in meta.plan.saves] == [(7, 2)]
        pages = home.bridge.take_saved("5")
        assert [p.page_index for p in pages] == [0, 1]

        # The holder's store validates and activates them.
        store = CheckpointStore(1 << 20)
        store.reserve("5", 1 << 16)
        for p in pages:
            assert store.add_page(p, tokens[p.start_position : p.end_position]).accepted
        held = store.pages("5")

        # The request resumes on another worker with one more token generated.
        resumed = [*tokens, 99]
        assert other.bridge.offer_restore("5", resumed, held) == 8  # what import_kv does
        req2 = request("5-9f8e7d6c", "5", resumed)
        assert other.scheduler.get_num_new_matched_tokens(req2, 0) == (8, False)
        blocks = SimpleNamespace(get_block_ids=lambda: ([4, 11, 0, 6],))
        other.scheduler.update_state_after_alloc(req2, blocks, 8)
        new2 = SimpleNamespace(
            req_id=req2.request_id, block_ids=([4, 11, 0, 6],), num_computed_tokens=8
        )
        meta2 = other.step([new2], [], {req2.request_id: 4})
        assert [ld.block_ids for ld in meta2.plan.loads] == [(4, 11)]
        for src, dst in ((7, 4), (2, 11)):
            for a, b in zip(home.block(src), other.block(dst), strict=True):
                assert torch.equal(a, b)
        assert other.worker.get_block_ids_with_load_errors() == set()
        # The tail's block 0 completes (positions 8..12) and is saved after the loaded ones.
        assert [(s.block_ids, s.first_page) for s in meta2.plan.saves] == [((0,), 2)]
        assert [p.page_index for p in other.bridge.take_saved("5")] == [0, 1, 2]

        assert other.scheduler.request_finished(req2, [4, 11, 0, 6]) == (False, None)
        assert other.bridge.take_saved("5") == []
    finally:
        unregister_bridge("fake-home")
        unregister_bridge("fake-other")


def test_a_cache_of_another_layout_is_refused(connector_module: Any) -> None:
    side = Side(connector_module, "fake-layout", seed=3)
    try:
        with pytest.raises(ValueError, match="differs"):
            side.worker.register_kv_caches({"model.layers.0.attn": torch.zeros(BLOCKS, 1, 4, 8)})
    finally:
        unregister_bridge("fake-layout")
