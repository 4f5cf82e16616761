"""Per-engine memory rules: what each engine keeps free, what its runtime costs, how it reserves.

Each figure carries its source. catalog/engines.yaml cites the same figures (with their sources) for
people reading the catalog; the estimator does not read the catalog, so that it stays pure, and
tests/test_catalog.py checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.errors import EstimateError, UnknownIdError
from planner.estimate.types import ENGINES, Engine
from planner.units import MIB


@dataclass(frozen=True)
class EngineRules:
    engine: Engine
    gpu_margin_bytes: int  # must stay free per GPU
    gpu_runtime_bytes: int  # backend context (CUDA/ROCm context, cuBLAS/hipBLAS workspaces) per GPU
    host_runtime_bytes: int  # process baseline in RAM (code, tokenizer, small buffers)
    host_margin_bytes: int  # RAM left to the OS and other services on a planned host
    source: str
    # vLLM only
    cuda_graph_bytes: int = 0
    non_torch_bytes: int = 0  # per GPU (CUDA context, cuBLAS / NCCL buffers): outside torch's allocator


_DEFAULTS: dict[str, EngineRules] = {
    "llama.cpp": EngineRules(
        engine="llama.cpp",
        gpu_margin_bytes=1024 * MIB,  # common/arg.cpp: --fit-target default 1024 MiB free per device
        gpu_runtime_bytes=250 * MIB,  # gguf-parser-go: 250 MiB VRAM platform footprint per GPU
        host_runtime_bytes=150 * MIB,  # gguf-parser-go: 150 MiB RAM footprint
        host_margin_bytes=2048 * MIB,  # agiplan's assumption: leave 2 GiB of RAM to the OS
        source="llama.cpp common/arg.cpp (--fit-target 1024 MiB); gguf-parser-go footprints",
    ),
    "ollama": EngineRules(
        engine="ollama",
        gpu_margin_bytes=457 * MIB,  # ollama discover: GpuInfo.MinimumMemory = 457 MiB (CUDA/ROCm)
        gpu_runtime_bytes=250 * MIB,
        host_runtime_bytes=300 * MIB,  # ollama serve + runner processes
        host_margin_bytes=2048 * MIB,
        source="ollama discover/types.go MinimumMemory 457 MiB; gguf-parser-go footprints",
    ),
    "vllm": EngineRules(
        engine="vllm",
        gpu_margin_bytes=0,  # the (1 - gpu_memory_utilization) remainder is the margin
        gpu_runtime_bytes=0,  # counted inside the reservation as non-torch memory
        host_runtime_bytes=2048 * MIB,  # python + torch + CUDA host side
        host_margin_bytes=2048 * MIB,
        source="vllm/v1/worker/gpu_worker.py determine_available_memory; vllm logs 'Graph capturing "
        "finished ... took 0.5 GiB'; non-torch memory per GPU 0.35 GiB (vLLM issue #10517, one RTX 3090) and "
        "0.25 GiB per rank (issue #13061, TP2) -- agiplan plans with 500 MiB",
        cuda_graph_bytes=512 * MIB,
        non_torch_bytes=500 * MIB,
    ),
}


def rules_for(engine: str) -> EngineRules:
    """The memory rules of `engine` (llama.cpp, ollama, vllm)."""
    key = engine.lower()
    if key == "llamacpp" or key == "llama-cpp":
        key = "llama.cpp"
    if key not in _DEFAULTS:
        raise UnknownIdError("engine", engine, ENGINES, "See 'agiplan catalog engines'.")
    return _DEFAULTS[key]


# ------------------------------------------------------------------------------------------ vLLM by version

VLLM_DEFAULT_VERSION = "0.11.0"  # the V1 engine only (V0 was removed in 0.11); what `estimate` assumes
VLLM_V1_FROM = (0, 8)  # VLLM_USE_V1 became the default in 0.8.0
VLLM_V0_LONG_CONTEXT = 32768  # V0 turned chunked prefill on by itself above this max_model_len
VLLM_V0_CHUNKED_BATCHED_TOKENS = 512  # V0 SchedulerConfig: max_num_batched_tokens with chunked prefill
VLLM_V0_MIN_BATCHED_TOKENS = 2048  # V0 SchedulerConfig: max(max_model_len, 2048) without chunked prefill
VLLM_V1_BATCHED_TOKENS_SERVER = 2048  # EngineArgs.get_batch_defaults, OPENAI_API_SERVER, most GPUs
VLLM_V1_BATCHED_TOKENS_SERVER_BIG = 8192  # ... on GPUs of >= 70 GiB whose name has no "a100" (H100, MI300X)
VLLM_V1_BIG_GPU_BYTES = 70 * 1024 * MIB


@dataclass(frozen=True)
class VllmProfile:
    """What one vLLM version's memory profile run sees: the tokens of its dummy forward pass and whether the
    CUDA graphs are paid for inside the gpu_memory_utilization budget."""

    version: str
    engine_v1: bool
    chunked_prefill: bool
    max_num_batched_tokens: int
    cuda_graphs_in_budget: bool  # V0: captured after the KV cache is sized, out of the (1 - utilization) rest

    @property
    def detail(self) -> str:
        """The assumption in plain words, for the estimate's sources."""
        engine = "V1 engine" if self.engine_v1 else "V0 engine"
        chunked = "chunked prefill" if self.chunked_prefill else "no chunked prefill"
        graphs = "CUDA graphs inside the budget" if self.cuda_graphs_in_budget else "CUDA graphs outside the budget"
        return f"vLLM {self.version} ({engine}, {chunked}, {self.max_num_batched_tokens} batched tokens, {graphs})"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for p in version.lstrip("vV").split("."):
        digits = "".join(c for c in p if c.isdigit()) if p else ""
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise EstimateError(f"vLLM version '{version}' is not a version number; give it as 0.6.4 or 0.11.0.")
    return tuple(parts)


def vllm_profile(version: str, max_model_len: int, gpu_capacity_bytes: int, gpu_name: str) -> VllmProfile:
    """max_num_batched_tokens as `vllm serve` sets it by default, per version:
    - V0 (< 0.8, vllm/config.py SchedulerConfig): without chunked prefill max(max_model_len, 2048), so the
      profile run's activations grow with the context (vLLM issue #10517: Llama-3.1-8B on an RTX 3090 peaks at
      2.07 GiB at max_model_len 20,000 and 2.99 at 29,000); above 32k tokens the engine turned chunked prefill on
      itself (vllm/engine/arg_utils.py, OPENAI_API_SERVER) with 512;
    - V1 (>= 0.8): chunked prefill always; EngineArgs.get_batch_defaults gives the API server 2048, or 8192 on
      cards of 70 GiB or more that are not A100s. The memory profiler counts the CUDA graphs in the budget
      (gpu_worker.py: 'CUDA graph pool memory ... (estimated)'); V0 captured them after sizing the KV cache."""
    v1 = _version_tuple(version)[:2] >= VLLM_V1_FROM
    if v1:
        big = gpu_capacity_bytes >= VLLM_V1_BIG_GPU_BYTES and "a100" not in gpu_name.lower()
        tokens = VLLM_V1_BATCHED_TOKENS_SERVER_BIG if big else VLLM_V1_BATCHED_TOKENS_SERVER
        return VllmProfile(version, True, True, tokens, True)
    if max_model_len > VLLM_V0_LONG_CONTEXT:
        return VllmProfile(version, False, True, VLLM_V0_CHUNKED_BATCHED_TOKENS, False)
    return VllmProfile(version, False, False, max(max_model_len, VLLM_V0_MIN_BATCHED_TOKENS), False)
