"""Shared bandwidth: models decoding at the same time on one GPU, or with layers in the same host DDR.

Decode is memory-bound (planner.estimate.speed). A device serves the models that decode on it in
turn, so one decode step of model r waits for the other models' steps on every device r uses:

    t_r(load) = t_r(alone) + Σ_{d ∈ devices(r)} Σ_{r' ≠ r decoding on d} τ_{r', d}

where t_r(alone) = 1 / (per-slot decode tok/s from `estimate()`) and τ_{r,d} is the part of r's step
spent on device d: the estimator's step time (less the fixed per-token launch / sync time t0)
apportioned over r's devices by bytes read ÷ (bandwidth × η), with η from the same efficiency tables
(`decode_eta_table`, `decode_t0_s`, `HYBRID_CPU_FACTOR` of planner.estimate.speed). This is time-sharing, not overlap:
a pessimistic but simple bound (two models on one GPU each run at about half speed).

Swap-in of an on-demand model: its bytes ÷ disk read GB/s (catalog `disks`), or ÷ the page cache
rate (host DDR bandwidth, capped by PCIe for GPU-resident layers) when free RAM holds the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.estimate.speed import (
    GB,
    HYBRID_CPU_FACTOR,
    HYBRID_SYNC_S,
    PCIE_GBS,
    decode_eta_table,
    decode_t0_s,
    weight_family,
)
from planner.estimate.types import Estimate

# llama.cpp RPC (split over two servers): per token the hidden state crosses the network to the
# remote node and back. Assumed network: 10 GbE (1.25 GB/s) with ~0.3 ms per round trip; a slow
# node drags the whole split because the devices run one after another (llama.cpp #10047).
RPC_NETWORK_GBS = 1.25
RPC_LATENCY_S = 0.3e-3


@dataclass(frozen=True)
class StepProfile:
    """One deployment's decode step: total per-slot step time and its per-device part (index into
    `est.devices`; the host is the last device)."""

    step_s: float
    device_s: tuple[float, ...]


def step_profile(est: Estimate, extra_s: float = 0.0, *, embedding_bytes: int | None = None) -> StepProfile:
    """Split the estimator's per-slot decode step over the devices holding the model.

    `extra_s` adds a fixed per-token cost (RPC hops) to the step; `embedding_bytes` (token_embd size)
    may be passed when the caller has it cached.
    """
    per_slot = est.speed.decode_tok_s_per_slot
    step = 1.0 / per_slot if per_slot > 0 else float("inf")
    fam = weight_family(est.weights.file_type or "Q4_K_M")
    # token_embd stays on the CPU and is read one row per token: not a bandwidth load
    emb = est.weights.token_embedding_bytes if embedding_bytes is None else embedding_bytes
    loads: list[float] = []
    used_gpu = False
    used_cpu = False
    t0 = 0.0
    for u in est.devices:
        read = u.memory.weights_bytes
        if u.holds_token_embedding:
            read = max(0, read - emb)
        if read <= 0:
            loads.append(0.0)
            continue
        # the estimator's own factors (Ada-and-newer NVIDIA cards have their own η and t0)
        bw = u.device.bandwidth_gbs * GB * decode_eta_table(u.device)[fam]
        if u.device.kind == "cpu":
            used_cpu = True
        else:
            used_gpu = True
        t0 = max(t0, decode_t0_s(u.device))
        loads.append(read / bw)
    if used_cpu and used_gpu:
        # the CPU share runs slower in a hybrid split, and a sync cost is paid per token
        loads = [
            x / HYBRID_CPU_FACTOR if u.device.kind == "cpu" else x for x, u in zip(loads, est.devices, strict=True)
        ]
        t0 += HYBRID_SYNC_S
    total = sum(loads)
    # the bandwidth-bound part of the step; when the estimator's step is shorter than the fixed t0
    # (tiny models), the raw bytes ÷ bandwidth time, capped at the step
    shared = step - t0 if step > t0 else min(total, step)
    device_s = tuple((x / total) * shared if total > 0 else 0.0 for x in loads)
    return StepProfile(step_s=step + extra_s, device_s=device_s)


def rpc_hop_s(hidden_size: int, hops: int = 2) -> float:
    """Per-token cost of a llama.cpp RPC split: `hops` network crossings of one f32 hidden state."""
    return hops * (hidden_size * 4 / (RPC_NETWORK_GBS * GB) + RPC_LATENCY_S)


def page_cache_gbs(host_bandwidth_gbs: float, to_gpu: bool) -> float:
    """Rate of loading a cached file: host DDR, limited by PCIe 4.0 x16 when the layers go to a GPU."""
    return min(host_bandwidth_gbs, PCIE_GBS) if to_gpu else host_bandwidth_gbs
