"""The estimate as plain data: the stable JSON shape that `agiplan estimate --format json` prints and
that recommend / bench / report read. Keys are part of the interface: add, never rename."""

from __future__ import annotations

from typing import Any

from planner.estimate.types import DeviceUsage, Estimate, MemoryParts

SCHEMA_VERSION = 1


def memory_dict(m: MemoryParts) -> dict[str, int]:
    return {
        "weights_bytes": m.weights_bytes,
        "kv_cache_bytes": m.kv_cache_bytes,
        "compute_bytes": m.compute_bytes,
        "overhead_bytes": m.overhead_bytes,
        "total_bytes": m.total_bytes,
    }


def device_dict(d: DeviceUsage) -> dict[str, Any]:
    return {
        "id": d.device.id,
        "kind": d.device.kind,
        "name": d.device.name,
        "used_bytes": d.used_bytes,
        "capacity_bytes": d.device.capacity_bytes,
        "reserved_bytes": d.device.reserved_bytes,
        "margin_bytes": d.margin_bytes,
        "free_bytes": d.free_bytes,
        "reclaimable_bytes": d.reclaimable_bytes,
        "resident_bytes": d.resident_bytes,
        "shortfall_bytes": d.shortfall_bytes,
        "fits": d.fits,
        "layers": len(d.layers),
        "holds_output": d.holds_output,
        "memory": memory_dict(d.memory),
        "bandwidth_gbs": d.device.bandwidth_gbs,
        "source": str(d.device.source),
    }


def estimate_dict(e: Estimate) -> dict[str, Any]:
    a = e.arch
    c = e.config
    s = e.speed
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "ref": e.model_ref,
            "name": a.name,
            "architecture": a.architecture,
            "layers": a.n_layers,
            "attention": a.attention_kind,
            "kv_heads": a.n_kv_heads,
            "heads": a.n_heads,
            "sliding_window": a.sliding_window,
            "experts": None if a.experts is None else {"count": a.experts.count, "active": a.experts.active},
            "params": e.weights.n_params,
            "context_trained": a.context_trained,
        },
        "quant": e.weights.file_type,
        "weights_exact": e.weights.exact,
        "bits_per_weight": round(e.weights.bits_per_weight, 4),
        "engine": c.engine,
        "config": {
            "ctx": c.ctx,
            "parallel": c.parallel,
            "kv_type_k": c.kv_type_k,
            "kv_type_v": c.kv_type_v,
            "flash_attn": c.flash_attn,
            "n_ubatch": c.batch_sizes()[1],
            "gpu_layers": c.gpu_layers,
            "gpu_memory_utilization": c.gpu_memory_utilization if c.engine == "vllm" else None,
            "depth_tokens": c.depth_tokens,
        },
        "ctx_effective": e.ctx_effective,
        "memory": memory_dict(e.memory),
        "devices": [device_dict(d) for d in e.devices],
        "fits": e.fits,
        "gpu_layers": e.gpu_layers,
        "cpu_moe_layers": e.cpu_moe_layers,
        "n_layers": a.n_layers,
        "kv_capacity_tokens": e.kv_capacity_tokens,
        "speed": {
            "decode_tok_s": round(s.decode_tok_s, 2),
            "decode_range_tok_s": [round(s.decode_low_tok_s, 2), round(s.decode_high_tok_s, 2)],
            "prefill_tok_s": round(s.prefill_tok_s, 1),
            "prefill_range_tok_s": [round(s.prefill_low_tok_s, 1), round(s.prefill_high_tok_s, 1)],
            "decode_tok_s_per_slot": round(s.decode_tok_s_per_slot, 2),
            "aggregate_tok_s": round(s.aggregate_tok_s, 2),
            "bytes_per_token": s.bytes_per_token,
            "calibrated": s.calibrated,
            "source": str(s.source),
        },
        "sources": {k: {"kind": v.kind, "detail": v.detail} for k, v in e.sources.items()},
        "notes": list(e.notes),
        "suggestions": [{"kind": x.kind, "value": x.value, "detail": x.detail} for x in e.suggestions],
        "draft": None if e.draft is None else draft_dict(e),
    }


def draft_dict(e: Estimate) -> dict[str, Any]:
    """The draft model of an estimate: its memory (already in `memory` and `devices`), the speculative step."""
    d, cfg = e.draft, e.config.draft
    assert d is not None and cfg is not None
    return {
        "model": d.model_name,
        "ref": d.model_ref,
        "quant": d.quant,
        "gpu_layers": d.gpu_layers,
        "n_max": cfg.n_max,
        "n_min": cfg.n_min,
        "acceptance": cfg.acceptance_rate,
        "acceptance_source": d.acceptance_source.detail,
        "tokens_per_step": round(d.single.tokens_per_step, 4),
        "speedup": round(d.single.speedup, 4),
        "speedup_per_slot": round(d.speed.speedup, 4),
        "decode_tok_s_without": round(d.plain_speed.decode_tok_s, 2),
        "memory": memory_dict(d.total),
        "memory_by_device": [memory_dict(m) for m in d.memory],
    }
