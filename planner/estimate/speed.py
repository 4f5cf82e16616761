"""Decode and prefill speed from bytes moved and FLOPs, with efficiency factors fitted to published runs.

Decode is memory-bound at one stream. One decode step of B slots at depth d reads, on every device
holding part of the model, its weights once (MoE: only the experts the batch touches) plus the KV cache
of its layers for each slot (d cells; a sliding-window layer min(d, its cache's cells)), and multiplies
B tokens. Devices of a layer split run one after the other, so their times add, and passing the step from
card to card slows it by a fraction:

    t_step(B) = (Σ_devices [ bytes_d / (bandwidth_d × η_d) + compute_d(B) ] + t0) × (1 + f_split(n_gpus))
                (+ t_sync when the CPU takes part; vLLM: + its scheduler's step time, no split factor)
    compute_d(B) = (B − 1) × t_token_d, at the matrix-vector rate up to 8 sequences on CUDA / ROCm and
                   at the prefill (GEMM) rate beyond
    CPU, B ≥ 2: bytes_d / (bandwidth_d × η_d) is replaced by passes(B) × the many-column kernels' own pass
                over the weights, and compute_d(B) = B × t_token at the prefill rate (see CPU_GEMM_PASS_FACTOR)
    decode tok/s per slot = 1 / t_step(B),   aggregate = B / t_step(B)

Prefill is compute-bound: per token Σ_d [ (2 × params_d + attention FLOPs at the mean position) /
(FLOPS_d × η_prefill_d) ], pipelined over the micro-batches of a llama_decode call on a GPU-only split.

Splits that share each layer over the cards (llama.cpp -sm tensor, vLLM tensor parallel) divide the devices' work
by the cards and add two all-reduces of the batch's hidden states per layer; a split over servers (llama.cpp RPC)
adds the link's time per step and per prompt token (the sections below).

The factors were fitted (bench/speed_accuracy.py reproduces the fit and the errors) to the published
llama-bench runs in shared/data/calibration_speed.md: llama.cpp examples/llama-bench/README.md
(RTX 3090 Ti, i9-13900K), PR #4766 (RTX 4090, RTX 3090), PR #4812, issue #20934 (RX 7900 XTX),
ik_llama.cpp README (Ryzen 9 7950X), PR #8035 (RTX 4090 + EPYC 7742 partial offload).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from planner.estimate.types import Device, DeviceCalibration, Speed
from planner.model.arch import ModelArch, Source

GB = 1e9

SPEED_SOURCE = (
    "bandwidth/FLOPs model with efficiency factors fitted to published llama-bench runs "
    "(shared/data/calibration_speed.md; bench/speed_accuracy.py)"
)

# Decode efficiency η (fraction of nominal memory bandwidth) by weight family and backend.
# CUDA: least-squares fit over 7 runs (3090, 3090 Ti, 4090; Q4_0, Q8_0, F16) with a fixed per-token
# time t0: η_q4 = 0.78, η_q8 = 0.97, η_f16 = 0.90, t0 = 2.9 ms; every run within ±9 %.
# 'low' (< 4 bpw: Q2_K, Q3_K, IQ2, IQ3) has no published CUDA point: 0.9 × η_q4, an assumption.
# ROCm: RX 7900 XTX Qwen2.5-Coder-7B Q4_K_M tg128 112 t/s (#20934) gives η_q4 0.81 with the same t0,
# so the CUDA factors are used. Vulkan: no data here; 0.85 × CUDA and a wider range.
# CPU: Ryzen 9 7950X Llama-3-8B (ik_llama.cpp README): 62–67 GB/s effective for F16 / Q8_0 / Q4_K_S
# against DDR5-5200 dual channel (83.2 GB/s): η ≈ 0.81 / 0.76 / 0.74; Q4_0 0.62, Q2_K_S 0.67 (q4 family: 0.70).
DECODE_ETA: dict[str, dict[str, float]] = {
    "cuda": {"f16": 0.90, "q8": 0.97, "q4": 0.78, "low": 0.70},
    "rocm": {"f16": 0.90, "q8": 0.97, "q4": 0.78, "low": 0.70},
    "vulkan": {"f16": 0.77, "q8": 0.82, "q4": 0.66, "low": 0.60},
    "metal": {"f16": 0.77, "q8": 0.82, "q4": 0.66, "low": 0.60},
    "cpu": {"f16": 0.80, "q8": 0.76, "q4": 0.70, "low": 0.67},
}
# Metal (Apple M-series): no published run in the shared data set; Vulkan's factors and range, an assumption.
DECODE_T0_S: dict[str, float] = {"cuda": 2.9e-3, "rocm": 2.9e-3, "vulkan": 3.5e-3, "metal": 3.5e-3, "cpu": 0.0}
# Ada and newer NVIDIA cards (sm_89+): held-out rows (RTX 4080 Gemma-2-2B Q4_K_S tg128 251.9 and Qwen2.5-7B
# F16 45 t/s, ik_llama.cpp PR #27 / issue #322; RTX 4090 Llama-2-7B Q4_0 158.4, llm-tracker.info) show a
# per-token fixed time of ≈ 1.0–1.5 ms, not Ampere's 2.9 ms; with t0 = 1.2 ms the Q8 factor refits to 0.80
# and every Ada row is within ±6 %. (Confounded with build era: llama.cpp's CUDA graphs, PR #6766, Apr 2024.)
# Current builds run Q4_0 faster still (RTX 4090 Llama 3 8B Q4_0 -ub 1: 193.1 t/s, PR #20586, agiplan 148.3)
# while Q4_K_M stays near agiplan's figure (issue #13: single-stream median error 3.6 %); one 'q4' family
# cannot hold both, and it is left as fitted.
MODERN_NVIDIA_MARKERS = ("sm_89", "sm_90", "sm_100", "sm_120", "Ada", "Hopper", "Blackwell")
DECODE_T0_MODERN_NVIDIA_S = 1.2e-3
DECODE_ETA_MODERN_NVIDIA = {"f16": 0.90, "q8": 0.80, "q4": 0.78, "low": 0.70}
# Partial offload (i9-13900K + RTX 3090 Ti, 7B Q4_0 at -ngl 10/20/30/33): the CPU share runs at
# ~0.65 of its CPU-only bandwidth plus ~6.3 ms of synchronisation per token.
HYBRID_CPU_FACTOR = 0.65
HYBRID_SYNC_S = 6.3e-3
# Prompt batches of >= 32 tokens run the CPU-resident layers' matmuls on the GPU, streaming their
# weights over PCIe once per ubatch (llama.cpp op_offload). PCIe 4.0 x16 ≈ 25 GB/s effective.
# Check: RTX 4090 + EPYC 7742, Llama-70B IQ2_M at -ngl 72/81 gives pp 557 t/s here vs 572.8 published (PR #8035).
PCIE_GBS = 25.0
PREFILL_UBATCH = 512

# Prefill efficiency (fraction of dense FP16 tensor TFLOPS for GPUs, FP32 SIMD peak for CPUs).
# RTX 4090 CodeLlama-7B pp512: F16 11048 t/s → 0.90, Q8_0 7664 → 0.62; RTX 3090: F16 0.79, Q4_0 0.65;
# RTX 3090 Ti Q4_0 0.68; RX 7900 XTX Q4_K_M pp ≈ 3900 → 0.48; Ryzen 9 7950X (AVX2 build) pp512
# F16 0.62, Q8_0 0.65, Q4_K_S 0.55, Q2_K_S 0.59 of the catalog's peak (16 cores × 5.7 GHz × 32 FLOP/cycle).
PREFILL_ETA: dict[str, dict[str, float]] = {
    "cuda": {"f16": 0.85, "q8": 0.62, "q4": 0.66, "low": 0.55},
    "rocm": {"f16": 0.62, "q8": 0.45, "q4": 0.48, "low": 0.40},
    "vulkan": {"f16": 0.50, "q8": 0.40, "q4": 0.40, "low": 0.35},
    "metal": {"f16": 0.50, "q8": 0.40, "q4": 0.40, "low": 0.35},
    "cpu": {"f16": 0.62, "q8": 0.65, "q4": 0.56, "low": 0.59},
}
# Ada and newer NVIDIA cards run quantized prompt matmuls on int8 tensor cores (MMQ, PR #7676, mid 2024): the
# fit-half row RTX 4090 Llama 3 8B Q4_0 pp512 10358.75 t/s (2026 build, PR #7676 / #20586) gives q4 0.96 of the
# FP16 rate, and 'low' scaled alike (0.80).
PREFILL_ETA_MODERN_NVIDIA = {"f16": 0.85, "q8": 0.62, "q4": 0.96, "low": 0.80}

# Relative half-width of the range quoted around a speed (max error seen in the fit, rounded up).
RANGE_FRACTION: dict[str, float] = {"cuda": 0.15, "rocm": 0.2, "vulkan": 0.3, "metal": 0.3, "cpu": 0.25}
CALIBRATED_RANGE_FRACTION = 0.05


@functools.lru_cache(maxsize=256)
def weight_family(ggml_type: str) -> str:
    """Kernel family of a tensor type: f16 (16/32-bit floats), q8 (8-bit), q4 (4–7 bits), low (< 4 bits)."""
    t = ggml_type.upper()
    if t in ("F32", "F16", "BF16", "F64"):
        return "f16"
    if t in ("Q8_0", "Q8_1", "Q8_K", "I8", "FP8", "F8_E4M3", "F8_E5M2"):
        return "q8"
    if t.startswith(("Q2", "Q3", "IQ1", "IQ2", "IQ3", "TQ")) or t == "Q1_0":
        return "low"
    return "q4"


def _modern_nvidia(device: Device) -> bool:
    return device.kind == "gpu" and device.vendor == "nvidia" and any(m in device.arch for m in MODERN_NVIDIA_MARKERS)


def prefill_eta_table(device: Device) -> dict[str, float]:
    return PREFILL_ETA_MODERN_NVIDIA if _modern_nvidia(device) else PREFILL_ETA[backend_key(device)]


def decode_eta_table(device: Device) -> dict[str, float]:
    return DECODE_ETA_MODERN_NVIDIA if _modern_nvidia(device) else DECODE_ETA[backend_key(device)]


def decode_t0_s(device: Device) -> float:
    return DECODE_T0_MODERN_NVIDIA_S if _modern_nvidia(device) else DECODE_T0_S[backend_key(device)]


def backend_key(device: Device) -> str:
    b = device.backend.lower()
    if device.kind == "cpu":
        return "cpu"
    return b if b in DECODE_ETA else "cuda"


# ---- batched decode (llama.cpp -np N continuous batching, vLLM max_num_seqs) ----
# One step of B sequences reads the weights once and the KV of every sequence, and multiplies B tokens.
# On CUDA / ROCm llama.cpp multiplies up to MMVQ_MAX_BATCH_SIZE = 8 columns with its matrix-vector kernels
# (ggml-cuda/mmvq.cuh, mmvf.cuh of the pinned b11434), which pay per column: each sequence past the first
# adds BATCH_TOKEN_FACTOR × the token's compute at the small-batch rate (2 × active params / (FLOPS ×
# PREFILL_ETA of the backend's base table)). Past 8 it switches to the GEMM kernels (MMQ / cuBLAS): each
# further sequence costs one token at the prefill rate. Fitted (fit half of bench/speed_accuracy.py) on
# llama-bench pp512 at -ub B, the developers' proxy for B sequences decoding together
# (shared/data/concurrency_speed.csv): RTX 4090 Llama 3 8B Q4_0 -ub 1 / 2: 193.1 / 364.3 t/s (PR #20586):
# +0.31 ms a column → q4 2.2; RTX 3090 8B F16 -ub 8 → 16 (PR #15131): +0.25 ms a token, the F16 GEMM rate
# → f16 1.0; RTX 4090 IQ3_XXS -ub 1 / 4 / 8 (PR #8215): +0.38 ms a column → low 2.5. CPU: every token
# costs its compute (Gemma 3 270M on this project's 2-core host, bench --batched). ROCm 'low': RX 7900 XTX
# Llama 8B Q3_K_M -ub 4 308.6 and Q2_K -ub 7 362.9 t/s (PR #26705, fit half) → 9; ROCm / Vulkan q4, q8, f16:
# no published small-batch rows here, assumed 2–3.
MMVQ_MAX_BATCH = 8
BATCH_TOKEN_FACTOR: dict[str, dict[str, float]] = {
    "cuda": {"f16": 1.0, "q8": 2.2, "q4": 2.2, "low": 2.5},
    "rocm": {"f16": 2.0, "q8": 3.0, "q4": 3.0, "low": 9.0},
    "vulkan": {"f16": 2.0, "q8": 3.0, "q4": 3.0, "low": 4.0},
    "metal": {"f16": 2.0, "q8": 3.0, "q4": 3.0, "low": 4.0},
    "cpu": {"f16": 1.0, "q8": 1.0, "q4": 1.0, "low": 1.0},
}
# CPU (ggml-cpu of the pinned b11434): one sequence and several take different kernels. With one column every matmul
# runs the one-column kernels (ggml_vec_dot_* rows, the repacked gemv), a memory-bound pass over the weights:
# memory_s, calibrated by the one-stream decode ratio. From two columns ggml_compute_forward_mul_mat hands F32 / F16 /
# BF16 / Q8_0 / Q4_0 / Q5_0 / IQ4_NL weights to llamafile's tinyBLAS (llamafile/sgemm.cpp: "only enable sgemm for
# prompt processing … if (n < 2) return false"), K-quants to the tiled kernels from 8 columns (tiled/tiled.cpp
# ggml_tiled_min_batch) and to vec_dot below that; repacked weights to repack.cpp's gemm. Those kernels pass over the
# weights at their own, slower rate and then pay per column. Measured on this project's 2-core Zen 4 host with perf
# (Gemma 3 270M Q4_K_M, llama-batched-bench, 1 thread, CPU ms per step): the 170 MiB Q8_0 output matrix takes 11.1 in
# ggml_vec_dot_q8_0_q8_0 at one sequence and 30.2 + 3.6 × B in tinyBLAS gemm4xN at B = 2 … 16; the whole step 19.3 at
# one sequence, then ≈ 27 + 8.1 × B (B = 2, 4, 8, 12, 16 within 3 %; B = 3, tinyBLAS's 4 × 3 tile, costs 63.4, 23 %
# over that line, not modelled): two sequences cost 2.3 times one. So a CPU step of B ≥ 2 sequences is
#   passes(B) × CPU_GEMM_PASS_FACTOR × memory_s + B × (a token at the prefill rate) + the slots' KV,
# the factor from the same runs (27 / 19.3 = 1.4 at 1 thread; 21.1 / 13.5 = 1.6 at 2 threads: the line through 4 and
# 16 sequences of the wall-clock curve in issue 13's closing note) rounded to 1.5; `agiplan bench --batched`
# calibrates both terms on this host. passes(B): tinyBLAS's mnpack tiles the columns 4 at a time and takes the B mod 4
# left over in a second pass over the weights (B = 6 cost 100.3 ms at 1 thread, 2 passes + 6 columns predict 103; B =
# 8 cost 92.1) — counted for the f16 and q8 families' bytes, all of which tinyBLAS multiplies; the q4 family mixes
# Q4_0 / Q5_0 (tinyBLAS) with K-quants (one pass) and is counted as one pass.
CPU_GEMM_PASS_FACTOR = 1.5
CPU_TILE_COLUMNS = 4
CPU_TILED_FAMILIES = ("f16", "q8")
# ggml-cpu/repack.cpp forward_mul_mat_one_chunk (b11434): "If there are more than three rows in src1, use gemm;
# otherwise, use gemv": gemm on the rows in groups of 4, gemv one row at a time on the B mod 4 left over.
REPACK_GEMM_ROWS = 4


def cpu_weight_passes(slots: int, tiled_fraction: float) -> float:
    """Passes the CPU's many-column kernels make over the weights for `slots` ≥ 2 columns: one, plus a second
    over the share `tiled_fraction` of the bytes tinyBLAS multiplies when B > 4 is not a multiple of 4."""
    remainder = slots > CPU_TILE_COLUMNS and slots % CPU_TILE_COLUMNS != 0
    return 1.0 + (tiled_fraction if remainder else 0.0)


# vLLM decodes a batch with CUDA graphs and cuBLAS / Marlin GEMMs: a sequence costs its prefill compute;
# its scheduler adds a fixed time per step, fitted on A100 Qwen3-30B-A3B BF16 at concurrency 1,
# ISL 4096 (96.91 t/s, tt-inference-server GPU reference run): +1.9 ms.
VLLM_BATCH_TOKEN_FACTOR = 1.0
VLLM_STEP_S = 1.9e-3

# ---- layer split over several GPUs (llama.cpp -sm layer) ----
# Each decode step passes the hidden state from card to card and synchronises: issue #13 measured
# Llama-3.1-8B Q4_K_M on 2 / 4 / 8 × RTX 4090 13 / 17 / 19 % slower than on one card (whose figure agiplan
# then matched). The step takes (1 + f(n)) times one card's time: f = 0.13 for the first split, + 0.03 per
# doubling of cards (2 and 8 cards fit, 4 cards held out: 0.16 vs 0.17 measured).
SPLIT_FIRST_FRACTION = 0.13
SPLIT_DOUBLING_FRACTION = 0.03
# Prompt processing over a layer split is pipelined (llama.cpp PR #6017): the n_batch tokens of one
# llama_decode call go through the cards as n_batch / n_ubatch micro-batches, so stage d works on
# micro-batch k while stage d+1 works on k-1. Per token: (Σ_d t_d + (m − 1) × max_d t_d) / m.

# ---- prefill by prompt length ----
# Attention costs 2 × n_heads × (head_dim_k + head_dim_v) FLOPs per layer per token per position of context
# (QKᵀ and AV); a prompt of P tokens after d tokens of context averages d + P / 2 positions. Attention kernels
# run well below the GEMM rate: ATTN_ETA_FRACTION of the prefill efficiency, fitted on the A100 80GB PCIe
# LLaMA 7B F16 curve (PR #6017: pp512 8668 → pp8192 5112 t/s, without flash attention) → 0.21, and with flash
# attention on the DGX Spark Qwen2.5 7B Q8_0 pp2048 2276 → pp2048 @ d32768 1283 t/s (benches/dgx-spark.md) → 0.35.
ATTN_ETA_FRACTION = {True: 0.35, False: 0.21}  # by flash attention
PREFILL_PROMPT_TOKENS = 512  # pp512: the figure quoted when no prompt length is given
# Mixture-of-experts prompts: a micro-batch of U tokens sends about U × active / count tokens to each expert
# (gpt-oss 120B at U = 512: 16 of 512 tokens to each of 128 experts), so the experts' matmuls work on a few columns
# and run at the speed their weights are read, not at the GEMM rate: every micro-batch reads the experts it touches,
# 1 − (1 − active / count)^U of their bytes, at the decode bandwidth, on top of the compute (no overlap assumed;
# dense GEMMs of 512 columns are compute-bound and keep their read hidden). No factor is fitted: checked on the MoE
# prompt rows of shared/data/concurrency_speed.csv (bench/speed_accuracy.py, "MoE prompt processing"): 4 × RTX 4090
# gpt-oss 120B pp512 3822 t/s (row 222): agiplan 14,727 before, 4,385 with it; RTX 3090 gpt-oss 20B pp512
# 4,703 (row 245): 6,226 → 5,289; DGX Spark Qwen3-30B-A3B Q8_0 pp2048 3,176 (row 108): 4,624 → 2,034.

# ---- datacenter GPUs (A100 / H100 / H200 / B200) ----
# HBM parts reach a smaller share of their nominal bandwidth and tensor rate on llama.cpp's kernels, which
# are tuned on consumer cards: A100 80GB PCIe LLaMA 7B F16 tg128 74.77, pp512 8668 (PR #6017) → decode 0.70 and
# prefill 0.42 of the consumer factors; issue #13 reports the unscaled model over by a median 43 % (decode)
# and 169 % (prefill) on A100 / H100.
DATACENTER_MARKERS = ("GA100", "GH100", "GB100", "GB200")
DATACENTER_DECODE_SCALE = 0.70
DATACENTER_PREFILL_SCALE = 0.42


def _datacenter(device: Device) -> bool:
    return device.kind == "gpu" and any(m in device.arch for m in DATACENTER_MARKERS)


# ---- tensor split over several GPUs (llama.cpp -sm tensor, EXPERIMENTAL in the pinned b11434) ----
# llama.cpp PR #19378 (merged 2026-02; docs/multi-gpu.md of PR #22729): a "meta device" holds a slice of every
# weight and of the KV cache on each GPU, the cards work on each layer at the same time, and the partial results
# are summed across the cards (an all-reduce, over NCCL where built with it) after attention and after the FFN:
#     t_step(B) = Σ_gpu-loads t_d / n + (CPU layers, in turn) + t0 + 2 × n_layers × t_allreduce(B)
#     t_allreduce(B) = TENSOR_ALLREDUCE_S × 2 (n − 1) / 6 + 2 (n − 1) / n × B × hidden × 4 bytes / TENSOR_REDUCE_GBS
# with no layer-split factor (one meta device) and no pipelining of the prompt. The only published rows are PR
# #19378's 4 × RTX 4090 (PCIe), gpt-oss 120B MXFP4, -sm layer vs -sm tensor (CSV rows 222-233); the fit half
# (bench/speed_accuracy.py, group "-sm tensor") sets the two constants:
# - tg128 179.79 vs 180.36 t/s (rows 226-227): the all-reduce latency, 53 µs for 4 cards' ring of 2 (n − 1) = 6
#   transfers (agiplan's -sm layer estimate of that row is 10 % low; the latency makes its tensor / layer ratio
#   the published 0.997);
# - pp512 5446.21 vs 3822.24 (rows 222-223): the reduction bandwidth, 11 GB/s, from the published -sm layer time
#   per token (262 µs, not pipelined at one micro-batch) — PCIe 4.0 through the host, 4090s have no P2P.
# With the experts' read per micro-batch (the MoE note at PREFILL_PROMPT_TOKENS) agiplan's own estimate of the
# test-half rows is within 5 % (pp8192 +4.6 %, pp8192 @ d65536 −1.9 %, tg128 @ d65536 −2.4 %).
# The latency per transfer is assumed the same for other card counts (no published row for 2 or 8 cards).
TENSOR_ALLREDUCE_S = 53e-6
TENSOR_REDUCE_GBS = 11.0
SPLIT_MODES = ("layer", "tensor")


def tensor_allreduce_s(n_gpus: int, tokens: int, hidden_size: int) -> float:
    """Seconds one all-reduce of `tokens` f32 hidden states over `n_gpus` cards takes (-sm tensor)."""
    if n_gpus < 2:
        return 0.0
    latency = TENSOR_ALLREDUCE_S * 2 * (n_gpus - 1) / 6
    moved = 2 * (n_gpus - 1) / n_gpus * tokens * hidden_size * 4
    return latency + moved / (TENSOR_REDUCE_GBS * GB)


# ---- vLLM tensor parallelism (--tensor-parallel-size n) ----
# Every rank holds 1 / n of each weight matrix and of the KV heads (vLLM docs, "Distributed inference and
# serving": Megatron-LM's tensor parallel algorithm) and the ranks sum their partial outputs twice a layer (after
# attention and after the MLP), so a step adds 2 × n_layers all-reduces of the batch's hidden states (bf16):
#     t_allreduce(B) = latency + 2 (n − 1) / n × B × hidden × 2 bytes / bandwidth
# NVLink parts (SXM boards: A100 / H100 / H200 / B200) use vLLM's custom all-reduce: latency VLLM_NVLINK_
# ALLREDUCE_S, an assumption of the order NVIDIA quotes for NVLink small-message all-reduce; bandwidth 150 GB/s
# (half of A100's 300 GB/s per direction, an assumption). PCIe cards (no P2P on GeForce cards: through the host)
# take llama.cpp's -sm tensor figures: 53 µs a 4-card ring, 11 GB/s.
VLLM_NVLINK_ALLREDUCE_S = 10e-6
VLLM_NVLINK_REDUCE_GBS = 150.0
NVLINK_MARKERS = ("SXM",)
# vLLM before 0.6 spent most of a busy step on the CPU (HTTP server, scheduling, detokenizing): vLLM's v0.6.0
# release blog (2024-09-05) measured Llama 3 8B on one H100 with the GPU busy 38 % of the time. Modelled as a time
# per running sequence per step that adding GPUs does not shorten; fitted on the fit half of the LambdaLabs
# vLLM 0.5.4 tensor-parallel rows (bench/speed_accuracy.py, group "vLLM TP"): 0.25 ms, fit-half median |error|
# 18 % (0.18–0.40 ms all give 18–28 %). At 256 sequences that leaves an H100 busy about 30 % of a Llama 3.1 8B FP8
# step, near the blog's 38 %. Adding GPUs to such a step buys little: 8B on 1 → 8 A100s gave 1518 → 1972 tok/s.
# 0.6 overlaps that work with the GPU (multi-step scheduling, async output processing): not charged from 0.6 on.
VLLM_V05_CPU_S_PER_SEQ = 0.25e-3


VLLM_CPU_OVERLAP_FROM = (0, 6)


def vllm_cpu_s_per_seq(version: str) -> float:
    """CPU seconds per running sequence per step that a vLLM version adds to a busy step (0 from 0.6 on)."""
    parts = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    return VLLM_V05_CPU_S_PER_SEQ if parts and parts < VLLM_CPU_OVERLAP_FROM else 0.0


def vllm_allreduce_s(tp: int, tokens: int, hidden_size: int, nvlink: bool) -> float:
    """Seconds one all-reduce of `tokens` bf16 hidden states over `tp` vLLM ranks takes."""
    if tp < 2:
        return 0.0
    moved = 2 * (tp - 1) / tp * tokens * hidden_size * 2
    if nvlink:
        return VLLM_NVLINK_ALLREDUCE_S + moved / (VLLM_NVLINK_REDUCE_GBS * GB)
    return TENSOR_ALLREDUCE_S * 2 * (tp - 1) / 6 + moved / (TENSOR_REDUCE_GBS * GB)


def nvlink_device(device: Device) -> bool:
    """An SXM board: its GPUs talk over NVLink (the catalog's names say SXM)."""
    return device.kind == "gpu" and any(m in device.name for m in NVLINK_MARKERS)


def split_slowdown(n_gpus: int) -> float:
    """Fraction a llama.cpp layer split over `n_gpus` cards adds to a decode step (0 for one card)."""
    if n_gpus < 2:
        return 0.0
    return SPLIT_FIRST_FRACTION + SPLIT_DOUBLING_FRACTION * math.log2(n_gpus / 2)


@dataclass(frozen=True)
class DeviceLoad:
    """What one device reads and computes per token: bytes by weight family, KV bytes per token of
    depth per slot, the parameters it multiplies (for FLOPs), and the attention FLOPs per token per
    position of context of its layers (2 × Σ n_heads × (head_dim_k + head_dim_v)).

    Sliding-window layers whose window the engine applies are counted apart (`swa_*`): llama.cpp keeps them a
    cache of `swa_cells` cells per slot (kv.llama_cpp_layout's cells_swa) and a step attends over the used
    cells of that cache only, so their KV read and attention stop growing at min(depth, swa_cells)."""

    device: Device
    weight_bytes_by_family: dict[str, int]
    expert_bytes_by_family: dict[str, int]  # routed-expert weights (subset of the above)
    kv_bytes_per_depth_token: int
    params: int
    active_params: int
    attn_flops_per_depth_token: int = 0
    repacked_bytes: int = 0  # CPU only: weights in the CPU backend's repacked layout (Q4_0 / Q4_K / IQ4_NL)
    swa_kv_bytes_per_depth_token: int = 0  # sliding-window layers' KV, read up to swa_cells of depth
    swa_attn_flops_per_depth_token: int = 0  # sliding-window layers' attention, up to swa_cells positions
    swa_cells: int = 0  # cells per slot of the sliding-window cache

    def kv_depth_tokens(self, depth: float) -> tuple[float, float]:
        """Tokens of context the full and the sliding-window layers attend over at `depth`."""
        return depth, min(depth, float(self.swa_cells))


def _eta_weighted(table: dict[str, float], by_family: dict[str, int]) -> float:
    total = sum(by_family.values())
    if total == 0:
        return table["q4"]
    # time-weighted (harmonic) mean: bytes/η summed
    return total / sum(b / table[f] for f, b in by_family.items())


def _prefill_flops(ld: DeviceLoad) -> float:
    """Effective FLOP/s of dense prefill on this device (nominal × η_prefill, scaled on datacenter parts)."""
    eta = _eta_weighted(prefill_eta_table(ld.device), ld.weight_bytes_by_family)
    if _datacenter(ld.device):
        eta *= DATACENTER_PREFILL_SCALE
    return ld.device.compute_tflops * 1e12 * eta


@dataclass(frozen=True)
class StepTimes:
    """One device's share of a decode step (seconds, before calibration): memory time at one slot and no
    depth, KV time per slot per token of depth, the compute one more column adds to the matrix-vector
    kernels (up to `vector_columns` sequences) and one more token to the GEMM kernels beyond."""

    memory_s: float
    kv_s_per_depth_token: float  # full-attention layers
    vector_token_s: float
    gemm_token_s: float
    vector_columns: int  # sequences the matrix-vector kernels take before the GEMM ones (0: no such switch)
    repacked_memory_s: float = 0.0  # reading the repacked weights once (part of memory_s)
    # CPU llama.cpp: the many-column kernels' pass over the weights (0: the device has no such path) and the
    # share of the bytes that tinyBLAS tiles (see cpu_weight_passes)
    many_column_pass_s: float = 0.0
    tiled_fraction: float = 0.0
    swa_kv_s_per_depth_token: float = 0.0  # sliding-window layers, up to DeviceLoad.swa_cells of depth

    def many_column_s(self, slots: int, pass_ratio: float = 1.0, column_ratio: float = 1.0) -> float:
        """A CPU step of `slots` ≥ 2 sequences without its KV: the kernels' passes over the weights, divided by
        `pass_ratio`, and one token per sequence at the prefill rate, divided by `column_ratio`. The repacked
        share of the weights takes only the 4-row groups through these kernels (see repacked_gemv_s)."""
        share = min(1.0, self.repacked_memory_s / self.memory_s) if self.memory_s > 0 else 0.0
        gemm_rows = slots - slots % REPACK_GEMM_ROWS
        passes = cpu_weight_passes(slots, self.tiled_fraction) * (1.0 - share) + (share if gemm_rows else 0.0)
        columns = slots * (1.0 - share) + gemm_rows * share
        return passes * self.many_column_pass_s / pass_ratio + columns * self.gemm_token_s / column_ratio

    def repacked_gemv_s(self, slots: int) -> float:
        """The rows of a CPU step of `slots` ≥ 2 that ggml-cpu/repack.cpp multiplies one at a time: it takes the
        batch in groups of 4 (gemm) and the B mod 4 left over through gemv, each a one-column pass over the
        repacked weights at the one-sequence rate (measured: a 3-sequence step costs more than a 4-sequence one)."""
        return (slots % REPACK_GEMM_ROWS) * self.repacked_memory_s if slots >= 2 else 0.0

    def compute_s(self, slots: int) -> float:
        """Compute the slots past the first add to a step."""
        extra = max(0, slots - 1)
        if self.vector_columns <= 0:
            return extra * self.vector_token_s
        small = min(extra, self.vector_columns - 1)
        return small * self.vector_token_s + (extra - small) * self.gemm_token_s


def _read_bytes_per_s(ld: DeviceLoad, *, hybrid: bool) -> float:
    """Bytes a second this device reads its weights and KV at while decoding (nominal × η_decode, scaled on
    datacenter parts and for a CPU sharing a model with GPUs)."""
    eta = _eta_weighted(decode_eta_table(ld.device), ld.weight_bytes_by_family)
    if _datacenter(ld.device):
        eta *= DATACENTER_DECODE_SCALE
    bw = ld.device.bandwidth_gbs * GB * eta
    if ld.device.kind == "cpu" and hybrid:
        bw *= HYBRID_CPU_FACTOR
    return bw


def _expert_read_s_per_prompt_token(
    ld: DeviceLoad, *, expert_fraction_one: float, ubatch_tokens: int, hybrid: bool
) -> float:
    """Seconds per prompt token this device spends reading the routed experts a micro-batch of `ubatch_tokens`
    touches (0 for a dense model): see the MoE note at PREFILL_PROMPT_TOKENS."""
    expert_bytes = sum(ld.expert_bytes_by_family.values())
    if expert_bytes == 0:
        return 0.0
    u = max(1, ubatch_tokens)
    touched = 1.0 - (1.0 - expert_fraction_one) ** u
    return expert_bytes * touched / _read_bytes_per_s(ld, hybrid=hybrid) / u


def _step_times(ld: DeviceLoad, *, touched: float, hybrid: bool, engine: str) -> StepTimes:
    bw = _read_bytes_per_s(ld, hybrid=hybrid)
    dense = sum(ld.weight_bytes_by_family.values()) - sum(ld.expert_bytes_by_family.values())
    moved = dense + touched * sum(ld.expert_bytes_by_family.values())
    key = backend_key(ld.device)
    flops = 2.0 * ld.active_params
    gemm_s = flops / _prefill_flops(ld) if ld.active_params else 0.0
    if engine == "vllm":
        return StepTimes(
            moved / bw,
            ld.kv_bytes_per_depth_token / bw,
            VLLM_BATCH_TOKEN_FACTOR * gemm_s,
            gemm_s,
            0,
            swa_kv_s_per_depth_token=ld.swa_kv_bytes_per_depth_token / bw,
        )
    base_flops = ld.device.compute_tflops * 1e12 * _eta_weighted(PREFILL_ETA[key], ld.weight_bytes_by_family)
    factor = _eta_weighted(BATCH_TOKEN_FACTOR[key], ld.weight_bytes_by_family)
    vector_s = factor * flops / base_flops if base_flops > 0 and ld.active_params else 0.0
    columns = MMVQ_MAX_BATCH if key in ("cuda", "rocm") else 0
    repacked_s = ld.repacked_bytes / bw if ld.device.kind == "cpu" else 0.0
    pass_s = tiled = 0.0
    if ld.device.kind == "cpu":
        pass_s = CPU_GEMM_PASS_FACTOR * moved / bw
        total = sum(ld.weight_bytes_by_family.values())
        tiled = sum(ld.weight_bytes_by_family.get(f, 0) for f in CPU_TILED_FAMILIES) / total if total else 0.0
    return StepTimes(
        moved / bw,
        ld.kv_bytes_per_depth_token / bw,
        vector_s,
        gemm_s,
        columns,
        repacked_s,
        pass_s,
        tiled,
        ld.swa_kv_bytes_per_depth_token / bw,
    )


def estimate_speed(
    loads: Sequence[DeviceLoad],
    *,
    depth_tokens: int,
    parallel: int,
    expert_fraction_one: float,
    calibration: Mapping[str, DeviceCalibration] | None = None,
    engine: str = "llama.cpp",
    prompt_tokens: int = PREFILL_PROMPT_TOKENS,
    flash_attn: bool = True,
    n_batch: int = 2048,
    n_ubatch: int = 512,
    split_mode: str = "layer",
    n_layers: int = 0,
    hidden_size: int = 0,
    tensor_parallel: int = 1,
    nvlink: bool = False,
    cpu_s_per_seq: float = 0.0,
) -> Speed:
    """Decode / prefill speed of one model split over `loads` (in layer order).

    `expert_fraction_one` is active / count experts (1.0 for dense models): with B slots decoding
    together the batch touches 1 - (1 - f)^B of the experts. `calibration` maps a device id to the
    measured / predicted ratios `agiplan bench` saved for this host. Prefill is quoted for a prompt of
    `prompt_tokens` after `depth_tokens` of context; decode at `depth_tokens`.
    """
    calibration = calibration or {}
    b = max(1, parallel)
    used = [ld for ld in loads if ld.params or ld.kv_bytes_per_depth_token or ld.swa_kv_bytes_per_depth_token]
    uses_cpu = any(ld.device.kind == "cpu" and sum(ld.weight_bytes_by_family.values()) > 0 for ld in loads)
    n_gpus = sum(1 for ld in loads if ld.device.kind == "gpu" and sum(ld.weight_bytes_by_family.values()) > 0)
    hybrid = uses_cpu and n_gpus > 0
    tensor = split_mode == "tensor" and n_gpus >= 2 and engine != "vllm"

    def step_time(slots: int, depth: int) -> float:
        touched = 1.0 - (1.0 - expert_fraction_one) ** slots
        t = 0.0
        t_gpus = 0.0
        t0 = 0.0
        for ld in used:
            st = _step_times(ld, touched=touched, hybrid=hybrid, engine=engine)
            cal = calibration.get(ld.device.id) or DeviceCalibration()
            full_depth, swa_depth = ld.kv_depth_tokens(depth)
            kv = slots * (full_depth * st.kv_s_per_depth_token + swa_depth * st.swa_kv_s_per_depth_token)
            if slots >= 2 and st.many_column_pass_s > 0:
                # CPU, several sequences: the many-column kernels (see CPU_GEMM_PASS_FACTOR); their pass reads the
                # same memory as the one-stream pass, their columns run at the prefill rate
                t_dev = (kv + st.repacked_gemv_s(slots)) / cal.decode_ratio + st.many_column_s(
                    slots, cal.decode_ratio * cal.pass_ratio, cal.prefill_ratio * cal.batch_ratio
                )
            else:
                mem = (st.memory_s + kv) / cal.decode_ratio
                t_dev = mem + st.compute_s(slots) / cal.batch_ratio
            if tensor and ld.device.kind == "gpu":
                t_gpus += t_dev
            else:
                t += t_dev
            t0 = max(t0, decode_t0_s(ld.device))
        if hybrid:
            t0 += HYBRID_SYNC_S
        if engine == "vllm":
            reduce = 2 * n_layers * vllm_allreduce_s(tensor_parallel, slots, hidden_size, nvlink)
            return t + t0 + VLLM_STEP_S + reduce + slots * cpu_s_per_seq
        if tensor:
            # the cards share every layer's work and meet twice a layer (cards of one kind: -ts splits evenly)
            return t + t_gpus / n_gpus + t0 + 2 * n_layers * tensor_allreduce_s(n_gpus, slots, hidden_size)
        return (t + t0) * (1.0 + split_slowdown(n_gpus))

    single = step_time(1, depth_tokens)
    multi = step_time(b, depth_tokens)
    decode = 1.0 / single if single > 0 else 0.0
    per_slot = 1.0 / multi if multi > 0 else 0.0

    prefill = _prefill_tok_s(
        loads,
        calibration,
        prompt_tokens=max(1, prompt_tokens),
        depth_tokens=depth_tokens,
        flash_attn=flash_attn,
        pipelined=engine != "vllm" and n_gpus >= 2 and not uses_cpu and not tensor,
        micro_batches=max(1, min(n_batch, max(1, prompt_tokens)) // max(1, n_ubatch)),
        tensor_gpus=n_gpus if tensor else 0,
        expert_fraction_one=expert_fraction_one,
        ubatch_tokens=min(n_batch if engine == "vllm" else n_ubatch, max(1, prompt_tokens)),
        hybrid=hybrid,
        reduce_s_per_token=_reduce_s_per_prompt_token(
            engine,
            tensor,
            n_gpus,
            tensor_parallel,
            nvlink,
            n_layers,
            hidden_size,
            min(n_batch, prompt_tokens),
            n_ubatch,
        ),
    )

    calibrated = any(ld.device.id in calibration for ld in loads)
    if calibrated:
        frac = CALIBRATED_RANGE_FRACTION
    else:
        frac = max((RANGE_FRACTION[backend_key(ld.device)] for ld in loads if ld.params), default=0.25)
        if hybrid:
            frac = max(frac, 0.3)
    bytes_per_token = sum(
        sum(ld.weight_bytes_by_family.values()) - sum(ld.expert_bytes_by_family.values()) * (1.0 - expert_fraction_one)
        for ld in loads
    )
    detail = SPEED_SOURCE + ("; calibrated on this host by agiplan bench" if calibrated else "")
    return Speed(
        decode_tok_s=decode,
        decode_low_tok_s=decode * (1 - frac),
        decode_high_tok_s=decode * (1 + frac),
        prefill_tok_s=prefill,
        prefill_low_tok_s=prefill * (1 - frac),
        prefill_high_tok_s=prefill * (1 + frac),
        decode_tok_s_per_slot=per_slot,
        aggregate_tok_s=per_slot * b,
        bytes_per_token=int(bytes_per_token),
        source=Source("calibrated" if calibrated else "formula", detail),
        calibrated=calibrated,
    )


def _reduce_s_per_prompt_token(
    engine: str,
    tensor: bool,
    n_gpus: int,
    tensor_parallel: int,
    nvlink: bool,
    n_layers: int,
    hidden_size: int,
    chunk_tokens: int,
    n_ubatch: int,
) -> float:
    """All-reduce seconds per prompt token: llama.cpp -sm tensor per micro-batch, vLLM TP per prompt chunk."""
    if engine == "vllm" and tensor_parallel > 1:
        chunk = max(1, chunk_tokens)
        return 2 * n_layers * vllm_allreduce_s(tensor_parallel, chunk, hidden_size, nvlink) / chunk
    if tensor:
        return 2 * n_layers * tensor_allreduce_s(n_gpus, max(1, n_ubatch), hidden_size) / max(1, n_ubatch)
    return 0.0


def compute_bound_slots(loads: Sequence[DeviceLoad], *, engine: str = "llama.cpp", limit: int = 4096) -> int | None:
    """The smallest number of busy slots at which a decode step spends more time multiplying the slots'
    tokens than reading the weights (None when that does not happen by `limit` slots)."""
    times = [_step_times(ld, touched=1.0, hybrid=False, engine=engine) for ld in loads if ld.params]
    memory_s = sum(st.memory_s for st in times)
    for slots in range(1, limit + 1):
        if sum(st.compute_s(slots) for st in times) > memory_s:
            return slots
    return None


def _prefill_tok_s(
    loads: Sequence[DeviceLoad],
    calibration: Mapping[str, DeviceCalibration],
    *,
    prompt_tokens: int,
    depth_tokens: int,
    flash_attn: bool,
    pipelined: bool,
    micro_batches: int,
    tensor_gpus: int = 0,
    reduce_s_per_token: float = 0.0,
    expert_fraction_one: float = 1.0,
    ubatch_tokens: int = PREFILL_UBATCH,
    hybrid: bool = False,
) -> float:
    """Prompt tokens per second: each device's dense FLOPs plus attention over the mean position
    (depth + prompt / 2); CPU-resident layers stream their weights to the best GPU when one is there;
    a GPU-only layer split is pipelined over the micro-batches of one llama_decode call."""
    mean_position = depth_tokens + prompt_tokens / 2.0
    best_gpu = max(
        (ld for ld in loads if ld.device.kind == "gpu" and ld.params),
        key=lambda ld: ld.device.compute_tflops,
        default=None,
    )
    stage_s: list[float] = []
    gpu_share_s = 0.0  # -sm tensor: the GPUs' stages, worked on by all cards at once
    for ld in loads:
        if ld.active_params == 0:
            continue
        cal = calibration.get(ld.device.id)
        flops = _prefill_flops(ld) * (cal.prefill_ratio if cal else 1.0)
        full_position, swa_position = ld.kv_depth_tokens(mean_position)
        attn_flops = ld.attn_flops_per_depth_token * full_position + ld.swa_attn_flops_per_depth_token * swa_position
        attn = attn_flops / ATTN_ETA_FRACTION[flash_attn]
        t_own = (2.0 * ld.active_params + attn) / flops if flops > 0 else float("inf")
        t_own += _expert_read_s_per_prompt_token(
            ld, expert_fraction_one=expert_fraction_one, ubatch_tokens=ubatch_tokens, hybrid=hybrid
        )
        if ld.device.kind == "cpu" and best_gpu is not None:
            g_flops = _prefill_flops(replace(best_gpu, weight_bytes_by_family=ld.weight_bytes_by_family))
            streamed = sum(ld.weight_bytes_by_family.values()) / (PCIE_GBS * GB * PREFILL_UBATCH)
            t_own = min(t_own, streamed + (2.0 * ld.active_params + attn) / g_flops)
        if tensor_gpus and ld.device.kind == "gpu":
            gpu_share_s += t_own
            continue
        stage_s.append(t_own)
    if tensor_gpus:
        per_token = sum(stage_s) + gpu_share_s / tensor_gpus + reduce_s_per_token
        return 1.0 / per_token if per_token > 0 else 0.0
    if not stage_s:
        return 0.0
    if pipelined and len(stage_s) >= 2:
        m = micro_batches
        per_token = (sum(stage_s) + (m - 1) * max(stage_s)) / m
    else:
        per_token = sum(stage_s) + reduce_s_per_token
    return 1.0 / per_token if per_token > 0 else 0.0


def attention_flops_per_position(arch: ModelArch) -> int:
    """FLOPs of one layer's attention for one token per position of context: QKᵀ (2 × heads × head_dim_k)
    and AV (2 × heads × head_dim_v). Sliding-window layers attend over at most their cache (DeviceLoad.swa_cells)."""
    return 2 * arch.n_heads * (arch.head_dim_k + arch.head_dim_v)


# ---- llama.cpp RPC across hosts (ggml-rpc-server), the link speed as an input ----
# In the pinned b11434 (ggml/src/ggml-rpc/ggml-rpc.cpp) a remote backend keeps the compute graph
# (RPC_CMD_GRAPH_RECOMPUTE after the first RPC_CMD_GRAPH_COMPUTE) and sets inputs / gets outputs with async
# commands: per llama_decode call each remote host receives the hidden states of the call's tokens and
# returns them (f32, hidden_size × 4 bytes a token each way) and costs about one network round trip. A
# prompt crosses as n_ubatch-token micro-batches, so prefill pays 2 × hidden × 4 bytes a token on the link:
# 64 KiB a token for a 70B model, 0.52 ms on 1 GbE — the reason RPC loses heavily on slow links (issue #11474:
# 2 hosts over a ~100 Mb/s network, DeepSeek-R1 IQ1_S 1.2 t/s; issue #10047: one remote card on Ethernet
# cut a 4070 Laptop's 44.7 t/s by about 5×; issue #8832: 1.9 vs 25 t/s through localhost, build 3501, before
# graph caching). The round trip time is an input; 0.3 ms is a switched LAN's order of magnitude (assumed).
RPC_DEFAULT_RTT_S = 0.3e-3


@dataclass(frozen=True)
class RpcLink:
    """The network between the host running llama-server and its ggml-rpc-server hosts."""

    link_gbps: float  # line rate, Gbit/s (1, 2.5, 10, 25 …)
    rtt_s: float = RPC_DEFAULT_RTT_S

    @property
    def bytes_per_s(self) -> float:
        return self.link_gbps * 1e9 / 8


def rpc_decode_s(hidden_size: int, slots: int, link: RpcLink, remote_hosts: int = 1) -> float:
    """Seconds a decode step of `slots` sequences spends on the network: per remote host one round trip
    and the slots' hidden states there and back."""
    return remote_hosts * (link.rtt_s + 2 * max(1, slots) * hidden_size * 4 / link.bytes_per_s)


def rpc_prefill_s_per_token(hidden_size: int, n_ubatch: int, link: RpcLink, remote_hosts: int = 1) -> float:
    """Seconds a prompt token spends on the network: its hidden state there and back per remote host, and
    a round trip per micro-batch of `n_ubatch` tokens."""
    return remote_hosts * (link.rtt_s / max(1, n_ubatch) + 2 * hidden_size * 4 / link.bytes_per_s)
