"""Fixed plans built directly from planner.plan.schema (not by the solver), shared by the report and deploy
tests, and a check that each one survives save_plan / load_plan unchanged.

Numbers are plausible hand-set values, each noted where it comes from; the tests check how they are
rendered and turned into commands, not whether the solver would pick them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from planner.plan.schema import (
    PLAN_SCHEMA_VERSION,
    MemoryBreakdown,
    Placement,
    Plan,
    PlanDevice,
    PlanOption,
    PlanServer,
    load_plan,
    save_plan,
)

GIB = 2**30
MIB = 2**20
RTX_4090_BYTES = 24564 * MIB  # catalog hardware.yaml rtx-4090 memory_mib (nvidia-smi)
RX_7900_XTX_BYTES = 24560 * MIB  # catalog hardware.yaml rx-7900-xtx memory_mib


def mem(w: float, kv: float, c: float, o: float = 0.0) -> MemoryBreakdown:
    return MemoryBreakdown(
        weights_bytes=int(w * GIB),
        kv_cache_bytes=int(kv * GIB),
        compute_bytes=int(c * GIB),
        overhead_bytes=int(o * GIB),
    )


def total(m: MemoryBreakdown) -> int:
    return m.weights_bytes + m.kv_cache_bytes + m.compute_bytes + m.overhead_bytes


def placement(role: str, model: str, name: str, engine: str = "llama.cpp", **kw: Any) -> Placement:
    m: MemoryBreakdown = kw.pop("memory", mem(4.0, 1.0, 0.5))
    base: dict[str, Any] = {
        "role": role,
        "model": model,
        "model_name": name,
        "quant": "Q4_K_M",
        "ctx": 8192,
        "parallel": 1,
        "engine": engine,
        "devices": ["rtx-4090"],
        "gpu_indices": [0],
        "gpu_layers": 33,
        "n_layers": 32,
        "memory_bytes": total(m),
        "memory": m,
        "kv_capacity_tokens": 8192,
        "decode_tok_s": 100.0,
        "decode_tok_s_alone": 110.0,
        "prefill_tok_s": 3000.0,
        "min_tok_s": 20.0,
        "meets_target": True,
    }
    base.update(kw)
    if "memory_by_device" not in kw:
        gi = base["gpu_indices"]
        base["memory_by_device"] = {f"gpu{i}": total(m) // len(gi) for i in gi} if gi else {"cpu": total(m)}
    return Placement(**base)


def device(index: int, gid: str, name: str, cap: int, placements: list[Placement], margin: int = GIB) -> PlanDevice:
    key = f"gpu{index}" if index >= 0 else "cpu"
    used = sum(p.memory_by_device.get(key, 0) for p in placements)
    share = [p.memory_by_device.get(key, 0) / max(1, p.memory_bytes) for p in placements]
    memory = MemoryBreakdown(
        weights_bytes=int(sum(p.memory.weights_bytes * s for p, s in zip(placements, share, strict=True))),
        kv_cache_bytes=int(sum(p.memory.kv_cache_bytes * s for p, s in zip(placements, share, strict=True))),
        compute_bytes=int(sum(p.memory.compute_bytes * s for p, s in zip(placements, share, strict=True))),
        overhead_bytes=0,
    )
    memory.overhead_bytes = used - total(memory)
    return PlanDevice(
        id=gid,
        index=index,
        kind="gpu" if index >= 0 else "cpu",
        name=name,
        used_bytes=used,
        capacity_bytes=cap,
        margin_bytes=margin if index >= 0 else 0,
        memory=memory,
    )


def main_server(placements: list[Placement], cpu_ps: list[Placement] | None = None) -> PlanServer:
    """The existing box of the seed scenario: 2× RTX 4090, Ryzen 9 7950X, 128 GiB DDR5."""
    return PlanServer(
        name="main",
        new=False,
        cost_usd=0.0,
        hardware="2x rtx-4090, ryzen-9-7950x, 128 GiB",
        cpu="ryzen-9-7950x",
        gpus=["rtx-4090", "rtx-4090"],
        ram_bytes=128 * GIB,
        devices=[
            device(0, "rtx-4090", "GeForce RTX 4090", RTX_4090_BYTES, placements),
            device(1, "rtx-4090", "GeForce RTX 4090", RTX_4090_BYTES, placements),
            device(-1, "cpu", "Ryzen 9 7950X + 128 GiB DDR5", 128 * GIB, placements + (cpu_ps or []), 0),
        ],
        placements=placements + (cpu_ps or []),
    )


def reasoner(**kw: Any) -> Placement:
    # Llama 3.3 70B Q4_K_M: 42.5 GB GGUF (bartowski model card) ≈ 39.6 GiB; KV f16 at 16k: 80 layers × 8 KV
    # heads × 128 × 2 (K+V) × 2 B × 16384 = 5 GiB.
    m = mem(39.6, 5.0, 1.1, 0.2)
    args: dict[str, Any] = {
        "quant": "Q4_K_M",
        "ctx": 16384,
        "devices": ["rtx-4090", "rtx-4090"],
        "gpu_indices": [0, 1],
        "gpu_layers": 81,
        "n_layers": 80,
        "memory": m,
        "memory_by_device": {"gpu0": total(m) // 2, "gpu1": total(m) - total(m) // 2},
        "kv_capacity_tokens": 16384,
        "decode_tok_s": 17.5,
        "decode_tok_s_alone": 18.2,
        "prefill_tok_s": 850.0,
        "min_tok_s": 15.0,
    }
    args.update(kw)
    return placement("reasoner", "llama-3.3-70b", "Llama 3.3 70B", **args)


def agents_plan() -> Plan:
    """Four options for the `agents` preset on the main box (see issue #3)."""
    r = reasoner()
    chat_cpu = placement(
        "chat",
        "saiga-llama3-8b",
        "Saiga Llama 3 8B",
        engine="ollama",
        devices=["cpu"],
        gpu_indices=[],
        gpu_layers=0,
        ctx=8192,
        parallel=2,
        memory=mem(4.6, 2.0, 0.3),
        decode_tok_s=6.5,
        decode_tok_s_alone=9.0,
        prefill_tok_s=60.0,
        min_tok_s=5.0,
        kv_type="q8_0",
    )
    opt_concurrent = PlanOption(
        kind="one-server-concurrent",
        servers=[main_server([r], [chat_cpu])],
        total_cost_usd=0.0,
        meets_targets=True,
        quality_score=0.82,
        why="the 70B at Q4_K_M with 16k context needs 45.9 GiB over two 4090s; chat runs on the CPU at 6.5 tok/s.",
    )
    # Two servers: the second one bought for the coder and summarizer (vLLM, two instances on one card).
    second_r = reasoner(decode_tok_s=18.2)
    coder = placement(
        "coder",
        "qwen2.5-coder-7b",
        "Qwen2.5 Coder 7B",
        engine="vllm",
        quant="AWQ-INT4",
        ctx=16384,
        parallel=4,
        memory=mem(5.2, 4.5, 1.0, 0.8),
        gpu_memory_utilization=0.9,
        gpu_layers=29,
        n_layers=28,
        decode_tok_s=55.0,
        decode_tok_s_alone=70.0,
        prefill_tok_s=5200.0,
        min_tok_s=30.0,
    )
    summarizer = placement(
        "summarizer",
        "qwen2.5-7b",
        "Qwen2.5 7B",
        engine="vllm",
        quant="AWQ-INT4",
        ctx=8192,
        parallel=2,
        memory=mem(5.2, 2.5, 1.0, 0.8),
        gpu_memory_utilization=0.9,
        gpu_layers=29,
        n_layers=28,
        decode_tok_s=52.0,
        decode_tok_s_alone=70.0,
        prefill_tok_s=5000.0,
        min_tok_s=20.0,
    )
    chat = placement(
        "chat",
        "saiga-llama3-8b",
        "Saiga Llama 3 8B",
        engine="ollama",
        devices=["cpu"],
        gpu_indices=[],
        gpu_layers=0,
        parallel=2,
        memory=mem(4.6, 2.0, 0.3),
        decode_tok_s=7.0,
        decode_tok_s_alone=9.0,
        prefill_tok_s=60.0,
        min_tok_s=5.0,
        kv_type="q8_0",
    )
    second_ps = [coder, summarizer]
    second = PlanServer(
        name="second",
        new=True,
        cost_usd=2649.0,
        hardware="1x rtx-4090, ryzen-9-7950x, 64 GiB",
        cpu="ryzen-9-7950x",
        gpus=["rtx-4090"],
        ram_bytes=64 * GIB,
        devices=[
            device(0, "rtx-4090", "GeForce RTX 4090", RTX_4090_BYTES, second_ps),
            device(-1, "cpu", "Ryzen 9 7950X + 64 GiB DDR5", 64 * GIB, [chat], 0),
        ],
        placements=[*second_ps, chat],
        parts=[
            # catalog hardware.yaml: rtx-4090 launch price (2022-10), ryzen-9-7950x; RAM at the catalog DDR5 price.
            {"id": "rtx-4090", "kind": "gpu", "count": 1, "price_usd": 1599.0, "price_date": "2022-10"},
            {"id": "ryzen-9-7950x", "kind": "cpu", "count": 1, "price_usd": 699.0, "price_date": "2022-09"},
            {"id": "ddr5-64gib", "kind": "ram", "count": 1, "price_usd": 192.0, "price_date": "2024-06"},
            {"id": "platform", "kind": "board+psu+case+disk", "count": 1, "price_usd": 159.0, "price_date": "2024-06"},
        ],
    )
    opt_two = PlanOption(
        kind="two-server",
        servers=[main_server([second_r]), second],
        total_cost_usd=2649.0,
        meets_targets=True,
        quality_score=0.86,
        why="the reasoner keeps both 4090s; a second box with one 4090 serves coder and summarizer with vLLM.",
    )
    # Split: the 70B at Q6_K over main's two 4090s and an AMD card in the second server (llama.cpp RPC).
    split_r = reasoner(
        quant="Q6_K",
        memory=mem(53.9, 5.0, 1.6, 0.3),
        memory_by_device={"gpu0": 21 * GIB, "gpu1": 21 * GIB, "cpu": 0},
        split_hosts=["main", "helper"],
        decode_tok_s=11.0,
        decode_tok_s_alone=11.0,
        prefill_tok_s=400.0,
        note="layers over 3 GPUs on 2 hosts; 18.8 GiB on the helper's RX 7900 XTX",
    )
    helper = PlanServer(
        name="helper",
        new=True,
        cost_usd=1899.0,
        hardware="1x rx-7900-xtx, ryzen-9-7950x, 64 GiB",
        cpu="ryzen-9-7950x",
        gpus=["rx-7900-xtx"],
        ram_bytes=64 * GIB,
        devices=[
            PlanDevice(
                id="rx-7900-xtx",
                index=0,
                kind="gpu",
                name="Radeon RX 7900 XTX",
                used_bytes=int(18.8 * GIB),
                capacity_bytes=RX_7900_XTX_BYTES,
                margin_bytes=GIB,
                memory=mem(17.9, 0.6, 0.3),
            )
        ],
        placements=[],
        parts=[{"id": "rx-7900-xtx", "kind": "gpu", "count": 1, "price_usd": 999.0, "price_date": "2022-12"}],
    )
    opt_split = PlanOption(
        kind="split",
        servers=[main_server([split_r]), helper],
        total_cost_usd=1899.0,
        meets_targets=False,
        quality_score=0.88,
        why="Q6_K of the 70B over three GPUs on two hosts: best quality, but 11 tok/s is under the 15 tok/s target.",
        failing_roles=["reasoner"],
    )
    serial_r = reasoner(residency="on-demand", swap_in_s=6.2)
    opt_serial = PlanOption(
        kind="one-server-serial",
        servers=[main_server([serial_r])],
        total_cost_usd=0.0,
        meets_targets=False,
        quality_score=0.8,
        why="one model at a time: each switch reloads 40 GiB (6.2 s from page cache).",
        failing_roles=["chat"],
    )
    return Plan(
        schema_version=PLAN_SCHEMA_VERSION,
        created_at="2025-01-15T12:00:00Z",
        agiplan_version="0.1.0",
        stack_name="agents",
        options=[opt_concurrent, opt_two, opt_split, opt_serial],
        recommended=0,
        assumptions=[
            "Prices are launch / list prices from the catalog with their dates; street prices vary.",
            "Decode speeds are per conversation with every role decoding at once (shared bandwidth).",
        ],
    )


def gemma_plan(gguf_path: Path, *, kv: str = "q8_0", ctx: int = 512, parallel: int = 2) -> Plan:
    """The real Gemma 3 270M Q4_K_M GGUF on a CPU-only box, two slots, q8_0 KV, flash attention."""
    m = mem(0.236, 0.01, 0.5)
    p = placement(
        "chat",
        str(gguf_path),
        "Gemma 3 270M",
        devices=["cpu"],
        gpu_indices=[],
        gpu_layers=0,
        n_layers=18,
        ctx=ctx,
        parallel=parallel,
        kv_type=kv,
        flash_attn=True,
        memory=m,
        kv_capacity_tokens=ctx * parallel,
        decode_tok_s=80.0,
        decode_tok_s_alone=80.0,
        prefill_tok_s=900.0,
        min_tok_s=10.0,
    )
    srv = PlanServer(
        name="box",
        new=False,
        cost_usd=0.0,
        hardware="ryzen-9-7950x, 32 GiB",
        cpu="ryzen-9-7950x",
        gpus=[],
        ram_bytes=32 * GIB,
        devices=[device(-1, "cpu", "Ryzen 9 7950X + 32 GiB", 32 * GIB, [p], 0)],
        placements=[p],
    )
    opt = PlanOption(
        kind="one-server-concurrent", servers=[srv], total_cost_usd=0.0, meets_targets=True, why="tiny model, fits."
    )
    return Plan(
        schema_version=PLAN_SCHEMA_VERSION,
        created_at="2025-01-15T12:00:00Z",
        agiplan_version="0.1.0",
        stack_name="gemma",
        options=[opt],
        recommended=0,
    )


def test_fixture_plans_round_trip(tmp_path: Path) -> None:
    for plan in (agents_plan(), gemma_plan(tmp_path / "g.gguf")):
        path = tmp_path / f"{plan.stack_name}.json"
        save_plan(plan, path)
        assert load_plan(path) == plan


def test_fixture_devices_sum_their_placements() -> None:
    # main's gpu0 in option 0 holds half the reasoner's 45.9 GiB (its memory_by_device), nothing else.
    dev = agents_plan().options[0].servers[0].devices[0]
    assert dev.used_bytes == int(45.9 * GIB) // 2
    assert total(dev.memory) == dev.used_bytes
