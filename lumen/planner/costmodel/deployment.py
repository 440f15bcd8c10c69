"""What one worker is: a model replica on ``tensor_parallel`` GPUs, with its I/O bandwidths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lumen.planner.costmodel.profiles import (
    HardwareProfile,
    ModelProfile,
    get_hardware_profile,
    get_model_profile,
)

__all__ = ["Deployment"]


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"Deployment.{name} must be positive, got {value!r}")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One worker: a model replica on ``tensor_parallel`` GPUs of one hardware type.

    ``network_bandwidth`` (per worker), ``ssd_bandwidth`` (per drive) and
    ``host_to_gpu_bandwidth`` (per GPU, like the hardware field) override the hardware defaults;
    ``None`` keeps the default.
    ``activation_reserve_fraction`` of the GPU memory is held back for activations and CUDA graphs
    (vLLM's profiling run finds about 1-2 GB per GPU at 1k-token chunks; 2 % of 80 GiB is 1.7 GB).
    """

    model: ModelProfile
    hardware: HardwareProfile
    tensor_parallel: int = 1
    gpu_memory_utilization: float = 0.9
    network_bandwidth: float | None = None
    ssd_bandwidth: float | None = None
    host_to_gpu_bandwidth: float | None = None
    activation_reserve_fraction: float = 0.02

    def __post_init__(self) -> None:
        tp = self.tensor_parallel
        if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
            raise ValueError(f"Deployment.tensor_parallel must be an int >= 1, got {tp!r}")
        heads, kv_heads = self.model.num_attention_heads, self.model.num_kv_heads
        if heads % tp != 0:
            raise ValueError(
                f"Deployment.tensor_parallel={tp} must divide {self.model.name}'s "
                f"{heads} attention heads"
            )
        if kv_heads % tp != 0 and tp % kv_heads != 0:
            raise ValueError(
                f"Deployment.tensor_parallel={tp} must divide or be a multiple of "
                f"{self.model.name}'s {kv_heads} KV heads"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                "Deployment.gpu_memory_utilization must be in (0, 1], "
                f"got {self.gpu_memory_utilization!r}"
            )
        if not 0.0 <= self.activation_reserve_fraction < self.gpu_memory_utilization:
            raise ValueError(
                "Deployment.activation_reserve_fraction must be in [0, gpu_memory_utilization), "
                f"got {self.activation_reserve_fraction!r}"
            )
        _check_positive("network_bandwidth", self.network_bandwidth)
        _check_positive("ssd_bandwidth", self.ssd_bandwidth)
        _check_positive("host_to_gpu_bandwidth", self.host_to_gpu_bandwidth)
        usable_per_gpu = self.hardware.gpu_memory_bytes * self.gpu_memory_utilization
        weights_per_gpu = self.model.weight_bytes / tp
        if weights_per_gpu > usable_per_gpu:
            raise ValueError(
                f"{self.model.name} does not fit on {tp} x {self.hardware.name}: "
                f"{weights_per_gpu / 1e9:.1f} GB of weights per GPU > {usable_per_gpu / 1e9:.1f} "
                f"GB usable (gpu_memory_utilization={self.gpu_memory_utilization}); "
                "raise tensor_parallel"
            )
        if self.kv_cache_bytes < self.worker_kv_bytes_per_token:
            raise ValueError(
                f"{self.model.name} on {tp} x {self.hardware.name} leaves no room for the KV "
                f"cache ({self.kv_cache_bytes / 1e9:.2f} GB after weights and activation "
                "reserve); raise tensor_parallel or gpu_memory_utilization"
            )

    @property
    def effective_network_bandwidth(self) -> float:
        """Bytes/s a worker sends or receives over the network (KV checkpoints, transfers)."""
        return (
            self.hardware.network_bandwidth
            if self.network_bandwidth is None
            else self.network_bandwidth
        )

    @property
    def effective_ssd_bandwidth(self) -> float:
        """Bytes/s a worker reads a model checkpoint from one of its SSDs."""
        return self.hardware.ssd_bandwidth if self.ssd_bandwidth is None else self.ssd_bandwidth

    @property
    def effective_host_to_gpu_bandwidth(self) -> float:
        """Bytes/s between pinned host memory and one GPU."""
        return (
            self.hardware.host_to_gpu_bandwidth
            if self.host_to_gpu_bandwidth is None
            else self.host_to_gpu_bandwidth
        )

    @property
    def worker_host_to_gpu_bandwidth(self) -> float:
        """Host<->GPU bytes/s of the whole worker.

        Weights and KV pages are sharded by tensor parallelism, so each GPU copies its own shard
        over its own PCIe link at the same time.
        """
        return self.tensor_parallel * self.effective_host_to_gpu_bandwidth

    @property
    def total_gpu_memory_bytes(self) -> int:
        """HBM of all GPUs of the worker."""
        return self.tensor_parallel * self.hardware.gpu_memory_bytes

    @property
    def activation_reserve_bytes(self) -> float:
        """HBM held back for activations, across the worker."""
        return self.activation_reserve_fraction * self.total_gpu_memory_bytes

    @property
    def kv_cache_bytes(self) -> float:
        """HBM left for the KV cache: usable memory minus weights and the activation reserve."""
        usable = self.gpu_memory_utilization * self.total_gpu_memory_bytes
        return usable - self.model.weight_bytes - self.activation_reserve_bytes

    @property
    def worker_kv_bytes_per_token(self) -> int:
        """HBM one cached token takes on the worker: KV heads are replicated when tp > kv_heads."""
        replication = max(1, self.tensor_parallel // self.model.num_kv_heads)
        return self.model.kv_bytes_per_token * replication

    @property
    def gpu_kv_capacity_tokens(self) -> int:
        """Tokens of KV cache the worker's GPUs hold."""
        return int(self.kv_cache_bytes // self.worker_kv_bytes_per_token)

    @classmethod
    def from_names(
        cls,
        model: str,
        hardware: str,
        tensor_parallel: int = 1,
        *,
        gpu_memory_utilization: float = 0.9,
        network_bandwidth: float | None = None,
        ssd_bandwidth: float | None = None,
        host_to_gpu_bandwidth: float | None = None,
    ) -> Deployment:
        """A deployment of registered profiles, e.g. ``from_names("Llama-3-70B", "A100-80GB", 4)``.

        Raises:
            UnknownProfileError: ``model`` or ``hardware`` is not registered.
        """
        return cls(
            get_model_profile(model),
            get_hardware_profile(hardware),
            tensor_parallel,
            gpu_memory_utilization=gpu_memory_utilization,
            network_bandwidth=network_bandwidth,
            ssd_bandwidth=ssd_bandwidth,
            host_to_gpu_bandwidth=host_to_gpu_bandwidth,
        )

    def with_model(self, model: ModelProfile, tensor_parallel: int | None = None) -> Deployment:
        """The same hardware and bandwidths serving ``model`` (e.g. a draft model)."""
        tp = self.tensor_parallel if tensor_parallel is None else tensor_parallel
        return dataclasses.replace(self, model=model, tensor_parallel=tp)
