"""Staged recovery of a restarted worker and rate-limited weight loading (docs/architecture.md).

A restarted worker goes DraftLoading -> Assisting -> Switching -> Serving:

- **draft-loading**: the small draft model is read (at the emulated SSD bandwidth) and loaded;
  then the target's weights are read into host memory in the background;
- **assisting**: the draft is up and the worker is paired with a survivor (the pairing plan);
  the target keeps loading into host memory meanwhile;
- **switching**: once the target is in host memory the draft is freed and the target is copied
  into the engine (host -> device);
- **serving**: the target serves requests.

The gateway's pairing driver pairs the worker with SetStage(assisting) once its draft is
up; the worker enters switching by itself as soon as the target is in host memory (paired or
not), and switching ends in serving by itself. Reads are throttled to ``ssd_gbyte_s`` so
that reload windows on a CPU machine last as long as on real hardware.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lumen.executor.engine.interface import Engine, RandomWeights, WeightSource
from lumen.executor.worker.api import STAGES
from lumen.executor.worker.assist import Assistant, AssistLink
from lumen.executor.worker.errors import InvalidField, NotReady
from lumen.executor.worker.loop import EngineLoop

__all__ = ["StageMachine", "load_to_host", "throttled_read", "weight_bytes"]

log = logging.getLogger(__name__)

_CHUNK = 8 << 20
#: Bytes per parameter assumed for random weights (checkpoints are usually bfloat16).
RANDOM_BYTES_PER_PARAM = 2


def weight_bytes(source: WeightSource) -> int:
    """Bytes a load of ``source`` reads from storage."""
    if isinstance(source, RandomWeights):
        return source.config.num_parameters() * RANDOM_BYTES_PER_PARAM
    root = Path(source)
    return sum(p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file())


def throttled_read(source: WeightSource, gbyte_s: float | None) -> float:
    """Read ``source`` at most at ``gbyte_s`` GB/s (None: no throttle); returns seconds spent.

    Checkpoint files are read for real in chunks; random weights have no files, so the read
    is a pause of their would-be size over the bandwidth.
    """
    start = time.perf_counter()
    if gbyte_s is None:
        return 0.0
    if gbyte_s <= 0:
        raise ValueError(f"ssd_gbyte_s must be > 0, got {gbyte_s}")
    rate = gbyte_s * 1e9
    if isinstance(source, RandomWeights):
        time.sleep(weight_bytes(source) / rate)
        return time.perf_counter() - start
    done = 0
    for path in sorted(Path(source).rglob("*")):
        if not path.is_file():
            continue
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                done += len(chunk)
                ahead = done / rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
    return time.perf_counter() - start


def load_to_host(source: WeightSource) -> Any:
    """The weights as tensors in host memory (an ``InMemoryWeights``; imports torch)."""
    from lumen.executor.engine.weights import InMemoryWeights, load_checkpoint, random_state_dict

    if isinstance(source, RandomWeights):
        tensors = random_state_dict(source.config, source.seed, source.init_std)
        return InMemoryWeights(source.config, tensors)
    config, tensors = load_checkpoint(source)
    return InMemoryWeights(config, tensors)


class StageMachine:
    """The recovery stage of one worker and the background loads that move it along.

    Args:
        loop: the engine loop (the target is loaded into its engine, on its thread).
        target: the target model's weights.
        draft: the draft model's weights (None: this worker cannot assist).
        make_draft: builds a draft engine from weights in host memory.
        ssd_gbyte_s: emulated storage bandwidth (None: as fast as the disk goes).
        on_stage: called with each stage entered (metrics).
        assist_link: reaches the survivor (id, address) to draft for while assisting (None:
            assisting only records the pairing).
        auto_switch: enter switching as soon as the target is in host memory (False: only
            on SetStage, for tests that hold a worker in assisting).
        to_host: what the engine's ``load_weights`` gets after the throttled read (default
            :func:`load_to_host`; the vLLM engine takes the checkpoint folder itself).
    """

    def __init__(
        self,
        loop: EngineLoop,
        target: WeightSource,
        draft: WeightSource | None,
        make_draft: Callable[[Any], Engine],
        *,
        ssd_gbyte_s: float | None = None,
        on_stage: Callable[[str], None] | None = None,
        assist_link: Callable[[int, str], AssistLink] | None = None,
        auto_switch: bool = True,
        to_host: Callable[[WeightSource], Any] | None = None,
    ) -> None:
        self.loop = loop
        self.to_host = to_host or load_to_host
        self.auto_switch = auto_switch
        self.target = target
        self.draft = draft
        self.make_draft = make_draft
        self.ssd_gbyte_s = ssd_gbyte_s
        self.on_stage = on_stage
        self.assist_link = assist_link
        self.assistant: Assistant | None = None
        self.survivor: int | None = None
        self.survivor_address = ""
        self.draft_engine: Engine | None = None
        self.error: str = ""
        # Until the first load completes the worker is not serving: it reports "switching"
        # (loading the target) rather than a stage it cannot honour.
        self._stage = "switching"
        self._lock = threading.Lock()
        self._draft_ready = threading.Event()
        self._host_ready = threading.Event()
        self._host_weights: Any = None
        self._loader: threading.Thread | None = None
        self._switcher: threading.Thread | None = None

    @property
    def stage(self) -> str:
        return self._stage

    def load_initial(self) -> None:
        """Cold start: read and load the target, then serve (blocks)."""
        throttled_read(self.target, self.ssd_gbyte_s)
        host = self.to_host(self.target)
        self.loop.call(lambda engine: engine.load_weights(host, "target"))
        self._enter("serving")

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait for the background loads started so far; False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in (self._loader, self._switcher):
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    return False
        return True

    def set(self, stage: str, survivor: int | None = None, survivor_address: str = "") -> str:
        """Enter ``stage``; returns the stage entered (serving without a loaded target
        starts switching first)."""
        if stage not in STAGES:
            raise InvalidField("stage", f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
        with self._lock:
            if stage == "draft-loading":
                return self._start_draft_loading()
            if stage == "assisting":
                if survivor is None:
                    raise InvalidField("survivor_worker", "required to enter assisting")
                if not self._draft_ready.is_set():
                    raise NotReady("stage", "the draft model is not loaded yet")
                self.survivor, self.survivor_address = survivor, survivor_address
                self._stop_assisting()
                if self.assist_link is not None and self.draft_engine is not None:
                    link = self.assist_link(survivor, survivor_address)
                    self.assistant = Assistant(self.draft_engine, link)
                    self.assistant.start()
                return self._enter("assisting")
            if stage == "serving" and self.loop.engine.role == "target":
                self._stop_assisting()
                self.draft_engine = None
                return self._enter("serving")
            return self._start_switching()

    # ---- internals ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop assisting (the worker is shutting down)."""
        self._stop_assisting()

    def _stop_assisting(self) -> None:
        if self.assistant is not None:
            self.assistant.stop()
            self.assistant = None

    def _enter(self, stage: str) -> str:
        self._stage = stage
        if self.on_stage is not None:
            self.on_stage(stage)
        log.info("stage %s", stage)
        return stage

    def _start_draft_loading(self) -> str:
        if self.draft is None:
            raise NotReady("draft_weights", "no draft model configured (--draft-weights)")
        if self._stage == "draft-loading":
            return self._stage
        draft = self.draft
        self._stop_assisting()
        self.loop.call(lambda engine: engine.unload())
        self._draft_ready.clear()
        self._host_ready.clear()
        self._host_weights = None
        self.draft_engine = None

        def run() -> None:
            try:
                throttled_read(draft, self.ssd_gbyte_s)
                self.draft_engine = self.make_draft(load_to_host(draft))
                self._draft_ready.set()
                throttled_read(self.target, self.ssd_gbyte_s)
                self._host_weights = self.to_host(self.target)
                self._host_ready.set()
                # The target is in host memory: switch now, paired or not.
                if self.auto_switch:
                    with self._lock:
                        if self._stage in ("draft-loading", "assisting"):
                            self._start_switching()
            except Exception as exc:
                self.error = f"weight loading failed: {exc}"
                log.exception("weight loading failed")
                self._host_ready.set()  # wake a waiting switch; it finds no weights

        self._loader = threading.Thread(target=run, name="lumen-loader", daemon=True)
        self._loader.start()
        return self._enter("draft-loading")

    def _start_switching(self) -> str:
        if self._switcher is not None and self._switcher.is_alive():
            return self._stage  # already switching
        if self._stage == "serving" and self.loop.engine.role == "target":
            return self._stage  # already back: a late switch is a no-op
        self._stop_assisting()
        if self._loader is None:
            # Never went through draft-loading: read the target now.
            self._draft_ready.set()
            target = self.target

            def read() -> None:
                throttled_read(target, self.ssd_gbyte_s)
                self._host_weights = self.to_host(target)
                self._host_ready.set()

            self._loader = threading.Thread(target=read, name="lumen-loader", daemon=True)
            self._loader.start()

        def run() -> None:
            try:
                self._host_ready.wait()
                host = self._host_weights
                if host is None:
                    raise RuntimeError(self.error or "target weights were not loaded")
                self.draft_engine = None  # free the draft before the target takes the device
                self.loop.call(lambda engine: engine.load_weights(host, "target"))
                self._host_weights = None
                with self._lock:
                    self._enter("serving")
            except Exception as exc:
                self.error = f"switching failed: {exc}"
                log.exception("switching failed")

        self._switcher = threading.Thread(target=run, name="lumen-switch", daemon=True)
        self._switcher.start()
        return self._enter("switching")
