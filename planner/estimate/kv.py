"""KV cache size: layers × cells × KV heads × (head_dim_k + head_dim_v) × bytes per element.

llama.cpp (src/llama-context.cpp, src/llama-kv-cache.cpp, src/llama-kv-cache-iswa.cpp of build b11434, the
[engines] extra; the same rules as the llama.cpp vendored in llama-cpp-python 0.3.36, and equal to the pinned
llama-server's 'KV buffer size' lines in tests/test_estimate_vs_llama_tools.py):
- n_ctx is padded to 256; without a unified cache each of the n_seq_max slots is a stream of
  n_ctx_seq = pad(n_ctx / n_seq_max, 256) cells (so the total is n_ctx_seq × n_seq_max);
- K and V of one layer are ggml tensors [n_embd_k_gqa, kv_size, n_stream] of the cache type, so a
  row costs ggml_row_size(type, n_embd_k_gqa) (q8_0: 34 B per 32 values, q4_0: 18 B per 32);
- sliding-window layers get their own cache of pad(min(kv_size, n_swa × (unified ? n_seq : 1) +
  n_ubatch), 256) cells per stream, unless swa_full (then kv_size);
- non-causal (embedding) models keep no KV cache.
vLLM pages the cache: a block of block_size tokens per layer; available memory // page = blocks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from planner.errors import EstimateError
from planner.estimate.types import KV_TYPES, RunConfig
from planner.model.arch import ModelArch
from planner.model.layout import is_encoder
from planner.units import pad

# Architectures whose llama.cpp graph really uses sliding-window attention (src/models/*.cpp set
# swa_type); `llama` (Mistral v0.1's window) and `phi3` load the key but attend to the full context.
LLAMA_CPP_SWA_ARCHS = frozenset(
    {"gemma2", "gemma3", "gemma3n", "gemma4", "cohere2", "llama4", "exaone4", "gpt-oss", "plamo3"}
)
LLAMA_CPP_CTX_PAD = 256  # cparams.n_ctx = GGML_PAD(n_ctx, 256) (src/llama-context.cpp)
SWA_PAD = 256  # "the SWA cache is always padded to 256 for performance" (src/llama-kv-cache-iswa.cpp)


@functools.lru_cache(maxsize=1024)
def kv_row_bytes(kv_type: str, n_values: int) -> int:
    """ggml_row_size(type, n): bytes of n values of a KV cache type, from gguf.GGML_QUANT_SIZES."""
    from planner.gguf_constants import ggml_block_sizes  # the tables only: no numpy at start-up

    if kv_type.lower() not in KV_TYPES:
        raise EstimateError(f"Unknown KV cache type '{kv_type}'. Use one of: {', '.join(KV_TYPES)}.")
    block, type_size = ggml_block_sizes()[kv_type.upper()]
    if n_values % block:
        raise EstimateError(
            f"KV cache type {kv_type} needs rows that are a multiple of {block} values; this model's "
            f"rows have {n_values}. Use f16 or q8_0."
        )
    return n_values // block * type_size


@dataclass(frozen=True)
class KvLayout:
    """How many cells each kind of layer holds, per the engine's rules."""

    n_ctx: int  # total context after padding
    n_ctx_seq: int  # per slot
    n_stream: int
    cells_full: int  # cells per stream of a full-attention layer
    cells_swa: int  # cells per stream of a sliding-window layer
    n_ubatch: int
    swa_applies: bool = True  # False where the engine ignores the model's window

    def cells(self, arch: ModelArch, layer: int) -> int:
        return self.cells_swa if self.swa_applies and arch.is_swa(layer) else self.cells_full


def llama_cpp_layout(arch: ModelArch, cfg: RunConfig) -> KvLayout:
    """Context, slot and cell counts as llama.cpp's context constructor computes them."""
    if cfg.ctx <= 0:
        raise EstimateError(f"Context must be a positive number of tokens, got {cfg.ctx}.")
    if cfg.parallel <= 0:
        raise EstimateError(f"Parallel slots must be at least 1, got {cfg.parallel}.")
    n_seq = cfg.parallel
    n_ctx = pad(cfg.ctx * n_seq, LLAMA_CPP_CTX_PAD)  # llama-server -c is the total over all slots
    if cfg.kv_unified:
        n_ctx_seq = n_ctx
        n_stream = 1
    else:
        n_ctx_seq = pad(n_ctx // n_seq, LLAMA_CPP_CTX_PAD)
        n_ctx = n_ctx_seq * n_seq
        n_stream = n_seq
    want_batch, want_ubatch = cfg.batch_sizes()
    n_batch = min(n_ctx, want_batch)
    n_ubatch = min(n_batch, want_ubatch)
    cells_full = n_ctx_seq if not cfg.kv_unified else n_ctx
    swa_applies = arch.architecture in LLAMA_CPP_SWA_ARCHS
    if arch.sliding_window and swa_applies and not cfg.swa_full:
        per_stream_window = arch.sliding_window * (n_seq if cfg.kv_unified else 1)
        cells_swa = pad(min(cells_full, per_stream_window + n_ubatch), SWA_PAD)
    else:
        cells_swa = cells_full
    return KvLayout(n_ctx, n_ctx_seq, n_stream, cells_full, cells_swa, n_ubatch, swa_applies)


def layer_kv_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout, layer: int) -> int:
    """K + V bytes of one layer in llama.cpp (an encoder keeps none)."""
    if is_encoder(arch):
        return 0
    kv_heads = arch.kv_heads(layer)
    cells = layout.cells(arch, layer) * layout.n_stream
    k = kv_row_bytes(cfg.kv_type_k, kv_heads * arch.head_dim_k) * cells
    v = kv_row_bytes(cfg.kv_type_v, kv_heads * arch.head_dim_v) * cells
    return k + v


def llama_cpp_kv_bytes(arch: ModelArch, cfg: RunConfig) -> dict[int, int]:
    """Per-layer KV bytes for llama.cpp / Ollama."""
    layout = llama_cpp_layout(arch, cfg)
    return {i: layer_kv_bytes(arch, cfg, layout, i) for i in range(arch.n_layers)}


def kv_bytes_per_token(arch: ModelArch, kv_type_k: str = "f16", kv_type_v: str = "f16") -> int:
    """KV bytes one token of context costs across all layers (full-attention accounting)."""
    if is_encoder(arch):
        return 0
    return sum(
        kv_row_bytes(kv_type_k, arch.kv_heads(i) * arch.head_dim_k)
        + kv_row_bytes(kv_type_v, arch.kv_heads(i) * arch.head_dim_v)
        for i in range(arch.n_layers)
    )


VLLM_BLOCK_SIZE = 16  # vllm/config/cache.py: default block_size for CUDA
VLLM_KV_DTYPE_BYTES = {"auto": 2, "f16": 2, "bf16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def vllm_page_bytes(arch: ModelArch, kv_dtype: str, tensor_parallel: int) -> int:
    """Bytes of one KV block (block_size tokens) over all layers on ONE GPU of a TP group.

    vLLM shards KV heads across the TP ranks (replicating when there are fewer heads than ranks):
    page = block_size × kv_heads_per_rank × (head_k + head_v) × dtype bytes, per layer.
    """
    dtype_bytes = VLLM_KV_DTYPE_BYTES.get(kv_dtype.lower())
    if dtype_bytes is None:
        raise EstimateError(f"vLLM KV cache dtype '{kv_dtype}' is not one of {', '.join(VLLM_KV_DTYPE_BYTES)}.")
    total = 0
    for i in range(arch.n_layers):
        heads = max(1, arch.kv_heads(i) // tensor_parallel)
        total += VLLM_BLOCK_SIZE * heads * (arch.head_dim_k + arch.head_dim_v) * dtype_bytes
    return total
