"""Per-engine memory rules: what each engine keeps free, what its runtime costs, how it reserves.

Each figure carries its source. catalog/engines.yaml cites the same figures (with their sources) for
people reading the catalog; the estimator does not read the catalog, so that it stays pure, and
tests/test_catalog.py checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.errors import UnknownIdError
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
    non_torch_bytes: int = 0
    max_num_batched_tokens: int = 0


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
        "finished ... took 0.5 GiB'; non-torch memory 1.79 GiB per TP rank (vLLM PR #10511 logs: 1.79 GiB at "
        "TP1, 3.58 GiB at TP2; other versions show 0.25 GiB — agiplan plans with the high end)",
        cuda_graph_bytes=512 * MIB,
        non_torch_bytes=1833 * MIB,
        max_num_batched_tokens=8192,
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
