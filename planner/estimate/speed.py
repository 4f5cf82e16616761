"""Decode and prefill speed from bytes moved and FLOPs, with efficiency factors fitted to published runs.

Decode is memory-bound. One decode step of B slots at depth d reads, on every device holding part
of the model, its weights once (MoE: only the experts the batch touches) plus the KV cache of its
layers for each slot. Devices of a layer split run one after the other, so their times add:

    t_step = Σ_devices [ bytes_d / (bandwidth_d × η_d) ] + t0_backend (+ t_sync when the CPU takes part)
    decode tok/s per slot = 1 / t_step,   aggregate = B / t_step

and never faster than the compute bound B × 2 × active_params / (FLOPS × η_prefill).
Prefill is compute-bound: tok/s = 1 / Σ_d [ 2 × params_d / (FLOPS_d × η_prefill_d) ].

The factors were fitted (bench/speed_accuracy.py reproduces the fit and the errors) to the published
llama-bench runs in shared/data/calibration_speed.md: llama.cpp examples/llama-bench/README.md
(RTX 3090 Ti, i9-13900K), PR #4766 (RTX 4090, RTX 3090), PR #4812, issue #20934 (RX 7900 XTX),
ik_llama.cpp README (Ryzen 9 7950X), PR #8035 (RTX 4090 + EPYC 7742 partial offload).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.estimate.types import Device, DeviceCalibration, Speed
from planner.model.arch import Source

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
    "cpu": {"f16": 0.80, "q8": 0.76, "q4": 0.70, "low": 0.67},
}
DECODE_T0_S: dict[str, float] = {"cuda": 2.9e-3, "rocm": 2.9e-3, "vulkan": 3.5e-3, "cpu": 0.0}
# Ada and newer NVIDIA cards (sm_89+): held-out rows (RTX 4080 Gemma-2-2B Q4_K_S tg128 251.9 and Qwen2.5-7B
# F16 45 t/s, ik_llama.cpp PR #27 / issue #322; RTX 4090 Llama-2-7B Q4_0 158.4, llm-tracker.info) show a
# per-token fixed time of ≈ 1.0–1.5 ms, not Ampere's 2.9 ms; with t0 = 1.2 ms the Q8 factor refits to 0.80
# and every Ada row is within ±6 %. (Confounded with build era: llama.cpp's CUDA graphs, PR #6766, Apr 2024.)
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
    "cpu": {"f16": 0.62, "q8": 0.65, "q4": 0.56, "low": 0.59},
}

# Relative half-width of the range quoted around a speed (max error seen in the fit, rounded up).
RANGE_FRACTION: dict[str, float] = {"cuda": 0.15, "rocm": 0.2, "vulkan": 0.3, "cpu": 0.25}
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


def decode_eta_table(device: Device) -> dict[str, float]:
    return DECODE_ETA_MODERN_NVIDIA if _modern_nvidia(device) else DECODE_ETA[backend_key(device)]


def decode_t0_s(device: Device) -> float:
    return DECODE_T0_MODERN_NVIDIA_S if _modern_nvidia(device) else DECODE_T0_S[backend_key(device)]


def backend_key(device: Device) -> str:
    b = device.backend.lower()
    if device.kind == "cpu":
        return "cpu"
    return b if b in DECODE_ETA else "cuda"


@dataclass(frozen=True)
class DeviceLoad:
    """What one device reads and computes per token: bytes by weight family, KV bytes per token of
    depth per slot, the parameters it multiplies (for FLOPs), and its repeating-layer count."""

    device: Device
    weight_bytes_by_family: dict[str, int]
    expert_bytes_by_family: dict[str, int]  # routed-expert weights (subset of the above)
    kv_bytes_per_depth_token: int
    params: int
    active_params: int


def _eta_weighted(table: dict[str, float], by_family: dict[str, int]) -> float:
    total = sum(by_family.values())
    if total == 0:
        return table["q4"]
    # time-weighted (harmonic) mean: bytes/η summed
    return total / sum(b / table[f] for f, b in by_family.items())


def estimate_speed(
    loads: Sequence[DeviceLoad],
    *,
    depth_tokens: int,
    parallel: int,
    expert_fraction_one: float,
    calibration: Mapping[str, DeviceCalibration] | None = None,
) -> Speed:
    """Decode / prefill speed of one model split over `loads` (in layer order).

    `expert_fraction_one` is active / count experts (1.0 for dense models): with B slots decoding
    together the batch touches 1 - (1 - f)^B of the experts. `calibration` maps a device id to the
    measured / predicted ratios `agiplan bench` saved for this host.
    """
    calibration = calibration or {}
    b = max(1, parallel)
    uses_cpu = any(ld.device.kind == "cpu" and sum(ld.weight_bytes_by_family.values()) > 0 for ld in loads)
    uses_gpu = any(ld.device.kind == "gpu" and sum(ld.weight_bytes_by_family.values()) > 0 for ld in loads)
    hybrid = uses_cpu and uses_gpu

    def step_time(slots: int, depth: int) -> float:
        touched = 1.0 - (1.0 - expert_fraction_one) ** slots
        t = 0.0
        t0 = 0.0
        for ld in loads:
            if ld.params == 0 and ld.kv_bytes_per_depth_token == 0:
                continue
            key = backend_key(ld.device)
            eta = _eta_weighted(decode_eta_table(ld.device), ld.weight_bytes_by_family)
            bw = ld.device.bandwidth_gbs * GB * eta
            if ld.device.kind == "cpu" and hybrid:
                bw *= HYBRID_CPU_FACTOR
            dense = sum(ld.weight_bytes_by_family.values()) - sum(ld.expert_bytes_by_family.values())
            moved = dense + touched * sum(ld.expert_bytes_by_family.values())
            moved += slots * depth * ld.kv_bytes_per_depth_token
            mem_t = moved / bw
            flops = ld.device.compute_tflops * 1e12 * _eta_weighted(PREFILL_ETA[key], ld.weight_bytes_by_family)
            compute_t = slots * 2.0 * ld.active_params / flops if flops > 0 else 0.0
            cal = calibration.get(ld.device.id)
            t += max(mem_t, compute_t) / (cal.decode_ratio if cal else 1.0)
            t0 = max(t0, decode_t0_s(ld.device))
        if hybrid:
            t0 += HYBRID_SYNC_S
        return t + t0

    single = step_time(1, depth_tokens)
    multi = step_time(b, depth_tokens)
    decode = 1.0 / single if single > 0 else 0.0
    per_slot = 1.0 / multi if multi > 0 else 0.0

    pf_time = 0.0
    best_gpu = max(
        (ld for ld in loads if ld.device.kind == "gpu" and ld.params),
        key=lambda ld: ld.device.compute_tflops,
        default=None,
    )
    for ld in loads:
        if ld.active_params == 0:
            continue
        key = backend_key(ld.device)
        eta = _eta_weighted(PREFILL_ETA[key], ld.weight_bytes_by_family)
        cal = calibration.get(ld.device.id)
        flops = ld.device.compute_tflops * 1e12 * eta * (cal.prefill_ratio if cal else 1.0)
        t_own = 2.0 * ld.active_params / flops if flops > 0 else float("inf")
        if ld.device.kind == "cpu" and best_gpu is not None:
            g = best_gpu.device
            g_flops = g.compute_tflops * 1e12 * _eta_weighted(PREFILL_ETA[backend_key(g)], ld.weight_bytes_by_family)
            streamed = sum(ld.weight_bytes_by_family.values()) / (PCIE_GBS * GB * PREFILL_UBATCH)
            t_own = min(t_own, streamed + 2.0 * ld.active_params / g_flops)
        pf_time += t_own
    prefill = 1.0 / pf_time if pf_time > 0 else 0.0

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
