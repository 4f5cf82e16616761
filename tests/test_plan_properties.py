"""Guarantees of every plan `recommend` writes (issue 12, item 2): each placement of each option, re-estimated
with `estimate()` on the inputs the plan records (model, quant, ctx, parallel, engine, GPUs, gpu layers,
expert offload, KV type, flash attention, vLLM utilization, the server's CPU and RAM), has the same memory,
fits, and decodes alone at the same rate; a vLLM placement's KV cache holds every slot at full context
(vLLM refuses to start below max_model_len and queues slots beyond its KV). Over the three presets and
hypothesis-generated stacks on generated servers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.estimate.devices import gpu_device, host_device
from planner.estimate.estimate import estimate
from planner.estimate.types import Estimate
from planner.plan.problem import EstimateCache
from planner.plan.recommend import recommend
from planner.plan.schema import Placement, Plan, PlanServer
from planner.plan.servers import parse_server_spec
from planner.plan.stack import Stack, load_preset
from planner.sources.resolve import resolve_model

CAT = load_catalog()
CACHE = EstimateCache(CAT)  # shared: the generated stacks repeat models, and the answers do not depend on it
SEED = "main: 2x rtx-4090, ryzen-9-7950x, 128GiB"


def _re_estimate(server: PlanServer, p: Placement) -> Estimate:
    """The placement through `estimate()` from what the plan records, as bench / deploy would run it."""
    gpus = [gpu_device(CAT, server.gpus[i]) for i in p.gpu_indices]
    host = host_device(CAT, server.cpu, server.ram_bytes / 2**30)
    return estimate(resolve_model(p.model), p.run_config(), gpus, host, quant=p.estimate_quant(), suggest=False)


def check_plan(plan: Plan) -> int:
    """Assert the guarantees on every placement of every option; the number of placements checked."""
    checked = 0
    for o in plan.options:
        for s in o.servers:
            for p in s.placements:
                if p.shares_base_with or p.split_hosts:
                    continue  # slots of another placement; a split's devices span two servers (RPC)
                est = _re_estimate(s, p)
                where = f"{o.kind}/{s.name}/{p.role} {p.model} {p.quant}"
                assert est.fits, where
                assert est.memory.total_bytes == p.memory_bytes, where
                assert est.gpu_layers == p.gpu_layers, where
                # the plan rounds tok/s to 3 decimals; the alone rate is one slot's of `parallel` decoding
                assert p.decode_tok_s_alone == pytest.approx(est.speed.decode_tok_s_per_slot, rel=1e-4, abs=2e-3), where
                assert p.full_ctx_slots == p.parallel, where  # every slot at full context at once
                if p.engine == "vllm":
                    assert est.kv_capacity_tokens >= p.ctx * p.parallel, where
                    assert p.kv_capacity_tokens == est.kv_capacity_tokens, where
                checked += 1
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["deep", "agents", "ensemble"])
def test_preset_plans_agree_with_estimate(preset: str) -> None:
    rec = recommend(load_preset(preset), [parse_server_spec(SEED, CAT)], CAT, cache=CACHE)
    assert check_plan(rec.plan) >= 3  # deep: its one role in each kind but split (devices on two servers)


_MODELS = ["gemma-3-270m", "llama-3.2-3b", "qwen2.5-7b", "mistral-7b", "phi-3-mini", "qwen2.5-14b", "bge-m3"]
_SERVERS = [
    "box: rtx-4060-ti-16gb, ryzen-9-7950x, 64GiB",
    "box: rtx-4090, ryzen-9-7950x, 64GiB",
    "box: 2x rtx-3090, ryzen-9-7950x, 128GiB",
    "box: ryzen-9-7950x, 32GiB",
]


@st.composite
def _stacks(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    roles: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        role: dict[str, Any] = {
            "name": f"r{i}",
            "models": draw(st.lists(st.sampled_from(_MODELS), min_size=1, max_size=2, unique=True)),
            "quants": draw(st.lists(st.sampled_from(["Q8_0", "Q6_K", "Q4_K_M", "IQ3_M"]), min_size=1, max_size=2)),
            "ctx": draw(st.sampled_from([1024, 4096, 8192])),
            "parallel": draw(st.integers(1, 3)),
            "residency": draw(st.sampled_from(["always", "on-demand"])),
            "kv_type": draw(st.sampled_from(["f16", "q8_0"])),
        }
        role["quants"] = sorted(set(role["quants"]))
        if draw(st.booleans()):
            role["min_tok_s"] = draw(st.sampled_from([5, 20, 60]))
        if draw(st.integers(0, 5)) == 0:  # a vLLM role: AWQ on NVIDIA GPUs
            role.update(models=["qwen2.5-7b"], quants=["AWQ-INT4"], engines=["vllm"], residency="always")
        roles.append(role)
    return {"name": "gen", "roles": roles}, draw(st.sampled_from(_SERVERS))


@pytest.mark.slow
@given(case=_stacks())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_plans_agree_with_estimate(case: tuple[dict[str, Any], str]) -> None:
    """200 generated stacks (1–3 roles, llama.cpp and vLLM, on-demand and always) on one server, the
    one-server kinds (the purchase kinds build the same placements from the same estimates)."""
    data, server = case
    stack = Stack.model_validate(data)
    rec = recommend(
        stack,
        [parse_server_spec(server, CAT)],
        CAT,
        cache=CACHE,
        kinds=("one-server-serial", "one-server-concurrent"),
    )
    n = check_plan(rec.plan)
    engines = sorted({p.engine for o in rec.plan.options for s in o.servers for p in s.placements})
    event(f"placements checked: {min(n, 4)}{'+' if n >= 4 else ''}")  # --hypothesis-show-statistics
    event(f"engines: {','.join(engines) or 'none'}")
