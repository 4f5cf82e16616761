"""Inputs and outputs of the estimator: devices, run configuration, per-device memory, speed, the estimate.

All sizes are bytes (`*_bytes`), bandwidths 10^9 B/s (`*_gbs`), speeds tokens/s (`*_tok_s`). Every
component of an estimate carries a `Source` saying whether it was read from a file, taken from the
catalog, computed by a formula or calibrated on this host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from planner.estimate.speculative import DraftConfig, SpeculativeSpeed
from planner.model.arch import ModelArch, ModelWeights, Source

DeviceKind = Literal["gpu", "cpu"]
Engine = Literal["llama.cpp", "ollama", "vllm"]
SplitMode = Literal["layer", "tensor"]
ENGINES: tuple[Engine, ...] = ("llama.cpp", "ollama", "vllm")

# KV cache element types llama.cpp accepts for -ctk/-ctv, with bytes per element derived from
# gguf.GGML_QUANT_SIZES at use time (f16 = 2, q8_0 = 34/32, q4_0 = 18/32 ...).
KV_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


@dataclass(frozen=True)
class Device:
    """One memory pool that can hold model parts: a GPU, or the host (CPU + RAM).

    `capacity_bytes` is the total memory; `reserved_bytes` what is already taken (desktop, other
    processes, models already loaded) and unavailable to this model.
    """

    id: str  # catalog id (rtx-4090) or "cpu"
    kind: DeviceKind
    name: str
    capacity_bytes: int
    bandwidth_gbs: float
    compute_tflops: float  # dense FP16 tensor for GPUs, FP32 SIMD peak for CPUs
    vendor: str  # nvidia / amd / cpu
    backend: str  # cuda / rocm / vulkan / cpu
    source: Source
    reserved_bytes: int = 0
    threads: int = 0  # CPU only: cores available to the engine
    arch: str = ""  # GPU generation as the catalog names it, e.g. "Ada Lovelace (AD102, sm_89)"

    @property
    def available_bytes(self) -> int:
        """Memory not already taken: capacity − reserved (DeviceUsage.available_bytes of an empty device)."""
        return self.capacity_bytes - self.reserved_bytes

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"


LLAMA_CPP_N_BATCH = 2048  # llama.cpp common/common.h defaults: -b 2048, -ub 512
LLAMA_CPP_N_UBATCH = 512


@dataclass(frozen=True)
class RunConfig:
    """How the model is run: engine, context, parallel slots, KV type, flash attention, GPU layers.

    `ctx` is the context of ONE conversation (slot) and `parallel` the number of conversations served
    at once. llama.cpp / Ollama get `-c ctx×parallel -np parallel` (llama-server gives each slot
    c / np tokens); vLLM gets `--max-model-len ctx --max-num-seqs parallel` and must hold
    ctx × parallel tokens of KV for all slots to be full at once.
    """

    engine: Engine = "llama.cpp"
    ctx: int = 4096
    parallel: int = 1
    kv_type_k: str = "f16"
    kv_type_v: str = "f16"
    flash_attn: bool = True
    n_ubatch: int | None = None  # llama.cpp -ub; None: its default 512 (an encoder: ctx, estimate.embedding_batch)
    n_batch: int | None = None  # llama.cpp -b; None: its default 2048
    gpu_layers: int | None = None  # None: as many as fit (llama.cpp --fit / Ollama's scheduler)
    cpu_moe_layers: int = 0  # with gpu_layers: MoE layers whose routed experts stay on the CPU (--n-cpu-moe N)
    swa_full: bool = False  # llama-server default; llama-cpp-python's Llama() uses the C default (True)
    kv_unified: bool = False
    gpu_memory_utilization: float = 0.9  # vLLM: fraction of TOTAL memory per instance
    vllm_version: str = "0.11.0"  # vLLM: the version whose memory profile is modelled (engines.vllm_profile)
    depth_tokens: int = 0  # context already in the KV cache when decode speed is quoted (tg128 ~ 0)
    prompt_tokens: int = 512  # prompt length prefill speed is quoted for (llama-bench pp512)
    split_mode: SplitMode = "layer"  # llama.cpp -sm over several GPUs: layer (default) or tensor (EXPERIMENTAL)
    draft: DraftConfig | None = None  # speculative decoding with a draft model (llama.cpp -md)

    def batch_sizes(self) -> tuple[int, int]:
        """(n_batch, n_ubatch) as set, llama.cpp's defaults where not."""
        return (
            self.n_batch if self.n_batch is not None else LLAMA_CPP_N_BATCH,
            self.n_ubatch if self.n_ubatch is not None else LLAMA_CPP_N_UBATCH,
        )


@dataclass(frozen=True)
class MemoryParts:
    """Memory of one deployment on one device (or summed over devices)."""

    weights_bytes: int = 0
    kv_cache_bytes: int = 0
    compute_bytes: int = 0
    overhead_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.overhead_bytes

    def __add__(self, other: MemoryParts) -> MemoryParts:
        return MemoryParts(
            self.weights_bytes + other.weights_bytes,
            self.kv_cache_bytes + other.kv_cache_bytes,
            self.compute_bytes + other.compute_bytes,
            self.overhead_bytes + other.overhead_bytes,
        )


@dataclass(frozen=True)
class DeviceUsage:
    """What the model puts on one device. `margin_bytes` must stay free (llama.cpp --fit, vLLM's
    utilization remainder, Ollama's minimum); `reclaimable_bytes` is the part of `used_bytes` that is page
    cache the kernel can drop (mapped originals of weights the CPU backend repacked); `fits` is
    used - reclaimable + margin <= capacity - reserved."""

    device: Device
    memory: MemoryParts
    margin_bytes: int
    layers: tuple[int, ...]  # repeating layers held here
    holds_output: bool
    holds_token_embedding: bool
    reclaimable_bytes: int = 0
    shortfall_bytes: int = 0  # more memory the plan needs here beyond what is reserved (vLLM KV for all slots)

    @property
    def used_bytes(self) -> int:
        return self.memory.total_bytes

    @property
    def resident_bytes(self) -> int:
        return self.used_bytes - self.reclaimable_bytes

    @property
    def available_bytes(self) -> int:
        return self.device.available_bytes

    @property
    def free_bytes(self) -> int:
        return self.available_bytes - self.resident_bytes

    @property
    def fits(self) -> bool:
        return self.shortfall_bytes == 0 and self.resident_bytes + self.margin_bytes <= self.available_bytes


@dataclass(frozen=True)
class Speed:
    """Decode and prefill speed with a range [low, high] and where the efficiency factors come from.

    `decode_tok_s` is one stream at `depth_tokens` of context; `decode_tok_s_per_slot` each of
    `parallel` streams decoding together; `aggregate_tok_s` their sum.
    """

    decode_tok_s: float
    decode_low_tok_s: float
    decode_high_tok_s: float
    prefill_tok_s: float
    prefill_low_tok_s: float
    prefill_high_tok_s: float
    decode_tok_s_per_slot: float
    aggregate_tok_s: float
    bytes_per_token: int
    source: Source
    calibrated: bool = False


@dataclass(frozen=True)
class DeviceCalibration:
    """Measured ÷ predicted speed on one device of this host, from `agiplan bench`."""

    decode_ratio: float = 1.0
    prefill_ratio: float = 1.0
    batch_ratio: float = 1.0  # on the compute each extra busy slot adds to a decode step (llama-batched-bench)
    pass_ratio: float = 1.0  # CPU: on the many-column kernels' pass over the weights (llama-batched-bench)


@dataclass(frozen=True)
class Suggestion:
    """What would make a deployment fit: `kind` is ctx / quant / gpu_layers / kv_type."""

    kind: str
    value: str
    detail: str


@dataclass(frozen=True)
class DraftEstimate:
    """The draft model of an estimate: what it adds on each device (part of the estimate's devices, same order: its
    own context's weights, KV, compute and output buffer, and on the host the target's output buffer grown for
    verification), the speed with it (`speed`, at the estimate's slots; `single` at one slot) and the target's
    without it."""

    model_ref: str
    model_name: str
    quant: str | None
    n_layers: int
    gpu_layers: int  # llama.cpp -ngld
    memory: tuple[MemoryParts, ...]
    speed: SpeculativeSpeed
    single: SpeculativeSpeed
    plain_speed: Speed
    acceptance_source: Source
    verify_output_bytes: int = 0  # the target's output buffer grown for k + 1 rows per slot (host, in `memory[-1]`)

    @property
    def total(self) -> MemoryParts:
        """Everything the draft adds: its own context's buffers and the target's larger output buffer."""
        total = MemoryParts()
        for m in self.memory:
            total = total + m
        return total


@dataclass(frozen=True)
class Estimate:
    """The answer for one model, quantization, run configuration and set of devices."""

    model_ref: str
    arch: ModelArch
    weights: ModelWeights
    config: RunConfig
    ctx_effective: int  # after the engine's padding
    devices: tuple[DeviceUsage, ...]
    kv_capacity_tokens: int
    speed: Speed
    sources: dict[str, Source]
    notes: tuple[str, ...] = ()
    suggestions: tuple[Suggestion, ...] = field(default=())
    cpu_moe_layers: int = 0  # MoE: layers whose routed experts stay on the CPU (llama.cpp --n-cpu-moe)
    draft: DraftEstimate | None = None  # speculative decoding: the draft's part (already in `devices`, `speed`)

    @property
    def memory(self) -> MemoryParts:
        total = MemoryParts()
        for d in self.devices:
            total = total + d.memory
        return total

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    @property
    def gpu_layers(self) -> int:
        """Layers on GPUs counted as llama.cpp's -ngl does: repeating layers plus the output head (with vLLM's
        tensor parallelism every GPU holds a shard of every layer: counted once)."""
        per_gpu = [len(d.layers) + (1 if d.holds_output else 0) for d in self.devices if d.device.is_gpu]
        if self.config.engine == "vllm":
            return max(per_gpu, default=0)
        return sum(per_gpu)
