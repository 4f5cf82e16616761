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

A model split over two servers (llama.cpp RPC) pays the network on every step and every prompt token: the
link between the servers is the stack's `link` (default 1 GbE, the likely link to a second server on a home
network), priced by `rpc_decode_s` / `rpc_prefill_s_per_token` of planner.estimate.speed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner.estimate.speed import (
    GB,
    HYBRID_CPU_FACTOR,
    HYBRID_SYNC_S,
    PCIE_GBS,
    RpcLink,
    decode_eta_table,
    decode_t0_s,
    rpc_decode_s,
    rpc_prefill_s_per_token,
    weight_family,
)
from planner.estimate.types import Estimate

# The link between servers when the stack names none: a second server added to a home or small-office network
# usually sits on its 1 GbE (at best 2.5 GbE) switch; 10 GbE needs cards and a switch bought for it.
DEFAULT_LINK = "1GbE"
_LINK_RE = re.compile(r"^\s*(\d{1,4}(?:\.\d{1,3})?)\s*(g|m)(?:be|bit/s|bits/s|bps|b/s)\s*$", re.IGNORECASE)
MIN_LINK_GBPS = 0.01  # 10 Mbit/s
MAX_LINK_GBPS = 1600.0  # 1.6 Tbit/s: above any NIC sold today (800G)


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


def parse_link(text: str) -> RpcLink:
    """`"1GbE"`, `"2.5GbE"`, `"10 Gbit/s"`, `"25Gbps"`, `"100MbE"` -> the link between servers (line rate; the
    round trip time is RpcLink's default)."""
    m = _LINK_RE.match(text)
    if not m:
        raise ValueError(f"link '{text[:40]}': expected a line rate such as 1GbE, 2.5GbE, 10GbE, 25GbE or '40 Gbit/s'")
    gbps = float(m.group(1)) / (1000.0 if m.group(2).lower() == "m" else 1.0)
    if not MIN_LINK_GBPS <= gbps <= MAX_LINK_GBPS:
        raise ValueError(f"link '{text[:40]}': a line rate from 10 Mbit/s to {MAX_LINK_GBPS:g} Gbit/s")
    return RpcLink(link_gbps=gbps)


def link_label(link: RpcLink) -> str:
    """`1 Gbit/s`, `2.5 Gbit/s`, `100 Mbit/s`."""
    if link.link_gbps < 1:
        return f"{link.link_gbps * 1000:g} Mbit/s"
    return f"{link.link_gbps:g} Gbit/s"


def rpc_step_s(hidden_size: int, slots: int, link: RpcLink) -> float:
    """Seconds a split model's decode step of `slots` sequences adds on the network (one remote server)."""
    return rpc_decode_s(hidden_size, slots, link)


def rpc_prefill_tok_s(prefill_tok_s: float, hidden_size: int, n_ubatch: int, link: RpcLink) -> float:
    """Prompt tok/s of a split model: the devices' rate with each token's network time added."""
    if prefill_tok_s <= 0:
        return 0.0
    return 1.0 / (1.0 / prefill_tok_s + rpc_prefill_s_per_token(hidden_size, n_ubatch, link))


def page_cache_gbs(host_bandwidth_gbs: float, to_gpu: bool) -> float:
    """Rate of loading a cached file: host DDR, limited by PCIe 4.0 x16 when the layers go to a GPU."""
    return min(host_bandwidth_gbs, PCIE_GBS) if to_gpu else host_bandwidth_gbs
