"""The placement solver: exact (equals brute-force enumeration), never overflows a device, more VRAM never
hurts, memory equal to `estimate()`, contention and swap-in formulas, and the option kinds on the presets."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.estimate.estimate import estimate
from planner.estimate.speed import DECODE_T0_MODERN_NVIDIA_S
from planner.estimate.types import RunConfig
from planner.plan.contention import page_cache_gbs, step_profile
from planner.plan.options import fit_reason
from planner.plan.problem import PENDING, UNPLACED, EstimateCache, Problem, evaluate, make_problem
from planner.plan.recommend import recommend
from planner.plan.servers import Server, parse_server_spec
from planner.plan.solver import solve
from planner.plan.stack import Stack, parse_stack
from planner.report.i18n import why_text
from planner.sources.resolve import resolve_model
from planner.units import GIB

CAT = load_catalog()
CACHE = EstimateCache(CAT)


def brute_force(p: Problem, *, max_failures: int | None = None) -> tuple[tuple[int, int, int, int], list[int]]:
    """Reference: score every assignment (each item: one of its candidates, or unplaced) with `evaluate`; with
    `max_failures`, only assignments missing at most that many targets (key (inf, ...) when there are none)."""
    best: tuple[tuple[int, int, int, int], list[int]] | None = None
    for combo in itertools.product(*[[*range(len(cs)), UNPLACED] for cs in p.cands]):
        ev = evaluate(p, combo)
        if max_failures is not None and ev.key[0] > max_failures:
            continue
        if ev.memory_ok and (best is None or ev.key < best[0]):
            best = (ev.key, list(combo))
    if best is None:
        assert max_failures is not None  # all-unplaced always fits
        return (10**9, 0, 0, 0), []
    return best


def _stack(roles: list[dict[str, Any]], services: list[dict[str, Any]] | None = None) -> Stack:
    return parse_stack({"name": "t", "roles": roles, "services": services or []})


def _srv(spec: str) -> Server:
    return parse_server_spec(spec, CAT)


def _one_role_problem() -> Problem:
    """Mistral 7B at Q4_K_M on one RTX 4090: a real problem with one plan, for the tests of its wording."""
    stack = _stack([{"name": "a", "models": ["mistral-7b"], "quants": ["Q4_K_M"]}])
    return make_problem(stack, [_srv("main: rtx-4090")], CAT, CACHE, mode="concurrent")


def _size(p: Problem) -> int:
    n = 1
    for cs in p.cands:
        n *= len(cs) + 1
    return n


# Small cases chosen so that memory, targets and contention all bind somewhere. Candidate counts stay
# small (2 quants, 1-2 models) so brute force runs in well under a second per case.
SMALL_CASES: list[tuple[str, list[dict[str, Any]], list[str], str]] = [
    (
        "two 7-8B models compete for one 16 GB card; one must go to the CPU or drop a quant",
        [
            {"name": "chat", "models": ["qwen2.5-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20},
            {"name": "code", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 10},
        ],
        ["main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB"],
        "concurrent",
    ),
    (
        "on-demand role with a swap-in limit next to a resident one; targets under contention",
        [
            {
                "name": "a",
                "models": ["llama-3.2-3b", "gemma-3-270m"],
                "quants": ["Q8_0", "Q4_K_M"],
                "ctx": 4096,
                "parallel": 2,
                "min_tok_s": 60,
            },
            {
                "name": "b",
                "models": ["phi-3-mini"],
                "quants": ["Q4_K_M"],
                "ctx": 4096,
                "residency": "on-demand",
                "max_swap_in_s": 1,
                "min_tok_s": 30,
            },
        ],
        ["main: 2x rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB"],
        "concurrent",
    ),
    (
        "three models, high targets on one 288 GB/s card: not all can meet them (failures > 0)",
        [
            {"name": "x", "models": ["qwen2.5-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 25},
            {"name": "y", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 25},
            {"name": "z", "models": ["llama-3.2-3b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 40},
        ],
        ["main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB"],
        "concurrent",
    ),
    (
        "serial: every role on demand, each must fit alone",
        [
            {
                "name": "big",
                "models": ["qwen2.5-14b"],
                "quants": ["Q8_0", "Q4_K_M"],
                "ctx": 8192,
                "min_tok_s": 5,
                "residency": "on-demand",
            },
            {"name": "small", "models": ["llama-3.2-3b"], "quants": ["Q8_0"], "ctx": 4096, "residency": "on-demand"},
        ],
        ["main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB"],
        "serial",
    ),
    (
        "two servers, one of them GPU-less; the second must host something; a service needs RAM",
        [
            {"name": "chat", "models": ["qwen2.5-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 16384, "min_tok_s": 15},
            {"name": "emb", "models": ["bge-m3"], "quants": ["Q8_0"], "ctx": 8192, "parallel": 2},
        ],
        ["main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB", "side: ryzen-9-9950x, 16GiB"],
        "concurrent",
    ),
]


@pytest.mark.parametrize(("why", "roles", "servers", "mode"), SMALL_CASES, ids=[c[0][:40] for c in SMALL_CASES])
def test_solver_equals_brute_force(why: str, roles: list[dict[str, Any]], servers: list[str], mode: str) -> None:
    services = [{"name": "db", "cpu_cores": 2, "ram_gib": 12}] if len(servers) > 1 else []
    stack = _stack(roles, services)
    srvs = [_srv(s) for s in servers]
    p = make_problem(
        stack,
        srvs,
        CAT,
        CACHE,
        mode=mode,  # type: ignore[arg-type]
        require_server=1 if len(srvs) > 1 else None,
    )
    assert _size(p) < 60_000, _size(p)
    sol = solve(p)
    key, _assign = brute_force(p)
    assert sol is not None
    assert sol.evaluation.key == key, why
    assert evaluate(p, sol.assign).key == key


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ctx=st.sampled_from([2048, 8192, 32768]),
    parallel=st.integers(1, 4),
    target_a=st.sampled_from([None, 5.0, 30.0, 120.0]),
    target_b=st.sampled_from([None, 10.0, 80.0]),
    on_demand=st.booleans(),
    gpus=st.sampled_from(["", "rtx-4060-ti-16gb, ", "2x rtx-4060-ti-16gb, "]),
    ram=st.sampled_from([16, 32]),
)
def test_solver_equals_brute_force_random(
    ctx: int, parallel: int, target_a: float | None, target_b: float | None, on_demand: bool, gpus: str, ram: int
) -> None:
    roles: list[dict[str, Any]] = [
        {
            "name": "a",
            "models": ["qwen2.5-7b", "llama-3.2-3b"],
            "quants": ["Q8_0", "Q4_K_M"],
            "ctx": ctx,
            "parallel": parallel,
            "min_tok_s": target_a,
        },
        {
            "name": "b",
            "models": ["gemma-3-270m"],
            "quants": ["Q8_0"],
            "ctx": 4096,
            "min_tok_s": target_b,
            "residency": "on-demand" if on_demand else "always",
        },
    ]
    p = make_problem(_stack(roles), [_srv(f"main: {gpus}ryzen-9-7950x, {ram}GiB")], CAT, CACHE, mode="concurrent")
    sol = solve(p)
    assert sol is not None
    assert sol.evaluation.key == brute_force(p)[0]


def _assert_no_overflow(p: Problem, assign: list[int]) -> None:
    ev = evaluate(p, assign)
    assert ev.memory_ok
    for i, sl in enumerate(p.slots):
        extra = ev.margin_bytes[i] if sl.is_gpu else p.host_margin_bytes[sl.server]
        assert ev.used_bytes[i] + extra <= sl.capacity_bytes


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    models=st.lists(
        st.sampled_from(["qwen2.5-7b", "mistral-7b", "llama-3.2-3b", "qwen2.5-14b"]), min_size=2, max_size=3
    ),
    ctx=st.sampled_from([4096, 16384]),
    extra_gpu=st.sampled_from(["rtx-4060-ti-16gb", "rtx-4090"]),
)
def test_never_overflows_and_more_vram_never_hurts(models: list[str], ctx: int, extra_gpu: str) -> None:
    roles = [
        {"name": f"r{i}", "models": [m], "quants": ["Q8_0", "Q4_K_M"], "ctx": ctx, "min_tok_s": 15}
        for i, m in enumerate(models)
    ]
    stack = _stack(roles)
    base = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    p1 = make_problem(stack, [base], CAT, CACHE, mode="concurrent")
    s1 = solve(p1)
    assert s1 is not None
    _assert_no_overflow(p1, s1.assign)
    p2 = make_problem(stack, [base.with_gpus([extra_gpu])], CAT, CACHE, mode="concurrent")
    s2 = solve(p2)
    assert s2 is not None
    _assert_no_overflow(p2, s2.assign)
    # one more card: every old placement is still possible, so never more missed targets nor less quality
    assert s2.evaluation.key[:2] <= s1.evaluation.key[:2]


def test_placement_memory_equals_estimate() -> None:
    """Every placement's memory_bytes is what estimate() reports for the same model, quant, ctx,
    parallel, engine and GPUs (the issue's contract)."""
    stack = _stack(
        [
            {
                "name": "chat",
                "models": ["qwen2.5-7b"],
                "quants": ["Q6_K", "Q4_K_M"],
                "ctx": 8192,
                "parallel": 2,
                "min_tok_s": 20,
            },
            {"name": "emb", "models": ["bge-m3"], "quants": ["Q8_0"], "ctx": 8192},
        ]
    )
    servers = [_srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 64GiB")]
    plan = recommend(stack, servers, CAT, cache=CACHE, kinds=("one-server-serial", "one-server-concurrent")).plan
    checked = 0
    for o in plan.options:
        for s in o.servers:
            srv = next(x for x in servers if x.name == s.name)
            for pl in s.placements:
                gpus = [srv.gpu_devices(CAT)[i] for i in pl.gpu_indices]
                est = estimate(
                    resolve_model(pl.model),
                    RunConfig(engine=pl.engine, ctx=pl.ctx, parallel=pl.parallel),
                    gpus,
                    srv.host(CAT),
                    quant=pl.quant,
                )
                assert pl.memory_bytes == est.memory.total_bytes
                assert pl.decode_tok_s_alone == pytest.approx(est.speed.decode_tok_s_per_slot, rel=1e-3)
                checked += 1
    assert checked == 4


def test_fit_sentence_70b_on_two_4090s() -> None:
    # llama-3.3-70b Q4_K_M at 16k (trained at 128k; Llama 3's 8k would leave it out): the estimator's total
    # (≈ 46 GiB), fully on 2x RTX 4090 (2 × 24564 MiB = 48.0 GiB, catalog; llama.cpp keeps 1024 MiB free per
    # card = 2.0 GiB)
    stack = _stack([{"name": "reasoner", "models": ["llama-3.3-70b"], "quants": ["Q4_K_M"], "ctx": 16384}])
    p = make_problem(stack, [_srv("main: 2x rtx-4090, ryzen-9-7950x, 128GiB")], CAT, CACHE, mode="concurrent")
    sol = solve(p)
    assert sol is not None
    c = p.cands[0][sol.assign[0]]
    assert len(c.gpu_slots) == 2 and not c.uses_cpu
    text = why_text("en", "one-server-concurrent", [fit_reason(sol, 0)])
    ru = why_text("ru", "one-server-concurrent", [fit_reason(sol, 0)])
    main = _srv("main: 2x rtx-4090, ryzen-9-7950x, 128GiB")
    est = estimate(
        resolve_model("llama-3.3-70b"), RunConfig(ctx=16384), main.gpu_devices(CAT), main.host(CAT), quant="Q4_K_M"
    )
    assert 44 * GIB < est.memory.total_bytes < 47 * GIB
    assert f"llama-3.3-70b at Q4_K_M with 16k context × 1 needs {est.memory.total_bytes / GIB:.1f} GiB" in text
    assert f"llama-3.3-70b в Q4_K_M с контекстом 16k × 1 занимает {est.memory.total_bytes / GIB:.1f} GiB" in ru
    assert "2x rtx-4090 give 48.0 GiB of which 2.0 GiB must stay free" in text


def test_contention_two_models_time_share_one_gpu() -> None:
    """Two resident models on one GPU: each step waits for the other's step on that GPU
    (planner/plan/contention.py): tok/s = 1 / (own step + other's τ on the card)."""
    stack = _stack(
        [
            {"name": "a", "models": ["llama-3.2-3b"], "quants": ["Q4_K_M"], "ctx": 4096},
            {"name": "b", "models": ["qwen2.5-7b"], "quants": ["Q4_K_M"], "ctx": 4096},
        ]
    )
    p = make_problem(stack, [_srv("main: rtx-4090, ryzen-9-7950x, 64GiB")], CAT, CACHE, mode="concurrent")
    ia = next(i for i, c in enumerate(p.cands[0]) if c.gpu_slots == (0,))
    ib = next(i for i, c in enumerate(p.cands[1]) if c.gpu_slots == (0,))
    ev = evaluate(p, [ia, ib])
    a, b = p.cands[0][ia], p.cands[1][ib]
    tau_a, tau_b = dict(a.tau)[0], dict(b.tau)[0]
    assert ev.roles[0].decode_tok_s == pytest.approx(1 / (a.step_s + tau_b))
    assert ev.roles[1].decode_tok_s == pytest.approx(1 / (b.step_s + tau_a))
    assert ev.roles[0].decode_tok_s < a.alone_tok_s
    # τ is the bandwidth part of the estimator's step: step − t0, with the estimator's t0 for the card
    # (RTX 4090 is Ada: planner.estimate.speed DECODE_T0_MODERN_NVIDIA_S, 1.2 ms; older CUDA cards 2.9 ms)
    assert a.est is not None
    prof = step_profile(a.est)
    assert sum(prof.device_s) == pytest.approx(prof.step_s - DECODE_T0_MODERN_NVIDIA_S)
    # alone (b on demand and not loaded): unaffected
    ev_alone = evaluate(p, [ia, PENDING])
    assert ev_alone.roles[0].decode_tok_s == pytest.approx(a.alone_tok_s)


def test_swap_in_from_page_cache_or_disk() -> None:
    """On-demand swap-in = file bytes ÷ rate; rate = min(DDR, PCIe 25 GB/s) when free RAM holds the file,
    else the disk (catalog nvme-gen4: 7.45 GB/s)."""
    roles: list[dict[str, Any]] = [
        {"name": "od", "models": ["qwen2.5-7b"], "quants": ["Q4_K_M"], "ctx": 4096, "residency": "on-demand"}
    ]
    for ram, expect_cache in ((64, True), (6, False)):  # 6 GiB − 2 GiB margin − runtime < the 4.7 GB file
        p = make_problem(
            _stack(roles), [_srv(f"main: rtx-4090, ryzen-9-7950x, {ram}GiB")], CAT, CACHE, mode="concurrent"
        )
        i = next(i for i, c in enumerate(p.cands[0]) if c.gpu_slots == (0,))
        ev = evaluate(p, [i])
        c = p.cands[0][i]
        rate = page_cache_gbs(83.2, True) if expect_cache else 7.45
        assert ev.roles[0].swap_in_s == pytest.approx(c.file_bytes / (rate * 1e9))


def test_dominated_candidates_are_pruned() -> None:
    # Q4_K_M and Q4_K_S of one model on the same card: Q4_K_S has higher KLD (0.043 vs 0.031) and is not
    # much smaller; Q8_0 vs Q4_K_M both survive (better quality vs less memory).
    stack = _stack([{"name": "a", "models": ["qwen2.5-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 4096}])
    p = make_problem(stack, [_srv("main: rtx-4090, ryzen-9-7950x, 64GiB")], CAT, CACHE, mode="concurrent")
    on_gpu = [c for c in p.cands[0] if c.gpu_slots == (0,)]
    assert sorted(c.quant for c in on_gpu) == ["Q4_K_M", "Q8_0"]
    for c in p.cands[0]:
        assert c.total_bytes > 0


def test_presets_on_the_seed_server() -> None:
    """The seed's 'one strong server' (2x RTX 4090, Ryzen 9 7950X, 128 GiB) with the deep preset: the
    72B at a 4-bit quant fits the two cards with 16k context, meeting the 8 tok/s target."""
    from planner.plan.stack import load_preset

    main = _srv("main: 2x rtx-4090, ryzen-9-7950x, 128GiB")
    rec = recommend(load_preset("deep"), [main], CAT, cache=CACHE, kinds=("one-server-serial", "one-server-concurrent"))
    plan = rec.plan
    assert [o.kind for o in plan.options] == ["one-server-serial", "one-server-concurrent"]
    # one role: both kinds find the same plan; at equal cost and quality, keeping models loaded wins
    assert plan.recommended == 1
    pl = plan.options[0].servers[0].placements[0]
    assert pl.model == "qwen2.5-72b" and pl.devices == ["rtx-4090", "rtx-4090"]
    assert pl.memory_bytes < 46 * GIB and pl.decode_tok_s >= 8


# ------------------------------------------------------------------------------------------ synthetic problems
# The search's pruning (bounds, identical-GPU symmetry, greedy incumbent) against brute force on problems built
# directly from numbers: contention, on-demand roles, twin GPUs, services and cores all bind somewhere.


def _synthetic_problem(data: st.DataObject) -> Problem:
    from planner.plan.problem import Candidate, DevSlot, Item
    from planner.plan.stack import RoleSpec, ServiceSpec

    srv = _srv("main: 2x rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    devs = [*srv.gpu_devices(CAT), srv.host(CAT)]
    cap_gib = (15, 15, 32)
    slots = [DevSlot(0, i if i < 2 else -1, d, cap_gib[i] * GIB) for i, d in enumerate(devs)]
    n_roles = data.draw(st.integers(1, 3), label="roles")
    items: list[Item] = []
    cands: list[list[Candidate]] = []
    for r in range(n_roles):
        target = data.draw(st.sampled_from([None, 20.0, 40.0]), label="target")
        on_demand = data.draw(st.booleans(), label="on_demand")
        swap = data.draw(st.sampled_from([None, 0.5, 5.0]), label="swap") if on_demand else None
        role = RoleSpec(
            name=f"r{r}",
            models=["m"],
            min_tok_s=target,
            residency="on-demand" if on_demand else "always",
            max_swap_in_s=swap,
        )
        items.append(Item(name=role.name, role=role, ctx=4096, parallel=1, min_tok_s=target))
        row: list[Candidate] = []
        for _ in range(data.draw(st.integers(1, 2), label="n_cands")):
            gpus = data.draw(st.sampled_from([(0,), (0, 1), ()]), label="gpus")
            quality = data.draw(st.integers(-50, 1000), label="quality")
            gpu_gib = data.draw(st.integers(4, 14), label="gpu_gib")
            host_gib = data.draw(st.integers(1, 12), label="host_gib")
            tau_ms = data.draw(st.integers(5, 40), label="tau_ms")
            file_gib = data.draw(st.integers(1, 8), label="file_gib")
            # llama.cpp's layer split puts different bytes on each card (the output layer on the last): a model over
            # both twins has no mirror image, so the twins are not interchangeable for a model on one of them
            skew = data.draw(st.integers(-2, 2), label="skew_gib") * GIB if gpus == (0, 1) else 0
            twins = [gpus, (1,)] if gpus == (0,) else [gpus]  # make_problem has every GPU subset: {0} and {1}
            for g in twins:
                per = [(s, gpu_gib * GIB // len(g) + (skew if k == 0 else -skew)) for k, s in enumerate(g)]
                row.append(
                    Candidate(
                        item=r,
                        model_ref="m",
                        model_name="m",
                        quant=f"Q{quality}",
                        engine="llama.cpp",
                        server=0,
                        gpu_slots=g,
                        uses_cpu=not g,
                        quality=quality,
                        mem=(*per, (2, host_gib * GIB)),
                        margin=tuple((s, GIB) for s in g),
                        tau=tuple((s, tau_ms / 1e3 / len(g)) for s in g) if g else ((2, tau_ms * 4 / 1e3),),
                        step_s=(tau_ms + 3) / 1e3 if g else (tau_ms * 4 + 3) / 1e3,
                        file_bytes=file_gib * GIB,
                        resident=not on_demand,
                    )
                )
        cands.append(row)
    if data.draw(st.booleans(), label="service"):
        items.append(Item(name="db", service=ServiceSpec(name="db", cpu_cores=4, ram_gib=8)))
        ram = 8 * GIB
        cands.append(
            [
                Candidate(
                    item=len(items) - 1,
                    model_ref="",
                    model_name="db",
                    quant="",
                    engine="",
                    server=0,
                    gpu_slots=(),
                    uses_cpu=False,
                    quality=0,
                    mem=((2, ram),),
                    margin=(),
                    tau=(),
                    step_s=0.0,
                    file_bytes=0,
                    cores=4,
                )
            ]
        )
    return Problem(
        items=items,
        servers=[srv],
        slots=slots,
        cands=cands,
        mode="concurrent",
        cost_cents=0,
        host_margin_bytes=[2 * GIB],
        cores=[16.0],
        disk_gbs=[7.45],
        host_slot=[2],
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_solver_equals_brute_force_synthetic(data: st.DataObject) -> None:
    p = _synthetic_problem(data)
    sol = solve(p)
    key, _ = brute_force(p)
    assert sol is not None
    assert sol.evaluation.key == key
    assert sol.exact
    _assert_no_overflow(p, sol.assign)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_milp_fallback_equals_brute_force_synthetic(data: st.DataObject) -> None:
    """With a node limit of 1 the branch and bound gives up at once and the MILP (planner.plan.milp) decides:
    its answer must be brute force's, flagged proven (60 of 60 examples proven when this test was written)."""
    p = _synthetic_problem(data)
    sol = solve(p, node_limit=1)
    key, _ = brute_force(p)
    assert sol is not None
    assert sol.exact
    assert sol.evaluation.key == key
    _assert_no_overflow(p, sol.assign)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_zero_failure_search_equals_brute_force_synthetic(data: st.DataObject) -> None:
    """The search over plans that miss no target (candidates that cannot meet their targets alone left out:
    LP relaxation, a dive that follows it, the MILP) is what `solve` tries first after the node limit: with no
    bar it must return brute force's optimum when that misses nothing, settled, with an LP quality bound no
    lower than that optimum's quality; and find nothing, unsettled, when every plan misses a target."""
    import time

    from planner.plan.solver import _solve_zero_failures

    p = _synthetic_problem(data)
    key, _ = brute_force(p)
    got = _solve_zero_failures(p, None, time.monotonic() + 60)
    if key[0] > 0:
        assert got.solution is None
        assert not got.settled
        return
    assert got.settled
    assert got.solution is not None and got.solution.exact
    assert got.solution.evaluation.key == key
    assert got.quality_bound is not None and got.quality_bound >= -key[1]
    _assert_no_overflow(p, got.solution.assign)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), tol=st.sampled_from([10, 100, 1000]))
def test_search_within_a_tolerance_is_within_it_and_honest(data: st.DataObject, tol: int) -> None:
    """`solve(tolerance_points=...)` (the first pass over server sets): with the branch and bound stopped at
    once, the MILP over plans that miss no target may stop within `tol` points of the optimum. The plan must
    be within `tol` of brute force's optimum, flagged exact only when it is that optimum, and its bound, when
    not exact, at least the optimum's quality."""
    p = _synthetic_problem(data)
    key, _ = brute_force(p)
    sol = solve(p, node_limit=1, tolerance_points=tol)
    assert sol is not None
    assert sol.evaluation.key == evaluate(p, sol.assign).key
    assert sol.evaluation.key >= key
    if key[0] == 0:
        assert sol.evaluation.key[0] == 0
        assert sol.evaluation.quality >= -key[1] - tol
    if sol.exact:
        assert sol.evaluation.key == key
    elif key[0] == 0:
        assert sol.quality_bound is not None and sol.quality_bound >= -key[1]
    _assert_no_overflow(p, sol.assign)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), time_limit_s=st.sampled_from([0.0, 0.001, 60.0]))
def test_time_limited_search_is_never_better_than_brute_force_and_its_bound_holds(
    data: st.DataObject, time_limit_s: float
) -> None:
    """Under any time limit (0 s: the MILPs get no time at all) `solve` returns a real plan no better than
    brute force's optimum; flagged exact only when it is that optimum; and a quality bound, when it gives one,
    is at least the quality of the best plan that misses no target (brute force over those plans)."""
    p = _synthetic_problem(data)
    key, _ = brute_force(p)
    try:
        sol = solve(p, node_limit=1, time_limit_s=time_limit_s)
    except PlannerError as e:  # no plan within the limits: said so in one line
        assert "--time-limit" in str(e)
        return
    assert sol is not None
    assert sol.evaluation.key >= key
    assert sol.evaluation.key == evaluate(p, sol.assign).key
    if sol.exact:
        assert sol.evaluation.key == key
    if sol.quality_bound is not None:
        zero_key, _ = brute_force(p, max_failures=0)
        assert zero_key[0] > 0 or sol.quality_bound >= -zero_key[1]
    _assert_no_overflow(p, sol.assign)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    cost_step=st.sampled_from([-100, 0, 100]),
    quality_step=st.sampled_from([-1, 0, 1]),
    screen=st.booleans(),
)
def test_search_against_another_sets_plan_settles(
    data: st.DataObject, cost_step: int, quality_step: int, screen: bool
) -> None:
    """`solve_two_server` hands each server set the best plan of the sets before it, which may cost less or
    more and may miss targets. With the branch and bound stopped at once (1 node), the MILP must settle the
    question either way: the set's optimum when it beats that plan (brute force), else None, never "stopped
    without a plan" (it used to be when a set's best plan matched the bar's failures and quality at a higher
    cost: the MILP found it, it was no better, and nothing proved that nothing was). With `screen`, every
    problem counts as large: a bar meeting every target goes to the LP screen and the zero-failure search
    without the branch and bound (LP_SCREEN_CANDIDATES, 300 candidates by default; these have a few)."""
    from dataclasses import replace

    from planner.plan import solver

    p = replace(_synthetic_problem(data), cost_cents=100)
    key, _ = brute_force(p)
    bar = (key[0], key[1] + quality_step, 100 + cost_step, key[3])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(solver, "LP_SCREEN_CANDIDATES", 0 if screen else solver.LP_SCREEN_CANDIDATES)
        sol = solve(p, incumbent=bar, node_limit=1)
    if key < bar:
        assert sol is not None and sol.exact
        assert sol.evaluation.key == key
    else:
        assert sol is None


@pytest.mark.parametrize(
    ("quality", "exact", "own_bound", "others", "expected"),
    [
        (900, True, None, [950], 950),  # a set not searched may reach 950
        (900, True, None, [800], 900),  # the best plan's own set caps it
        (900, False, 940, [920], 940),  # the best plan was itself unproven: its bound
        (900, True, None, [None], None),  # a set whose bound is unknown: unknown
        (900, False, None, [920], None),
    ],
)
def test_unsettled_best_plan_keeps_a_bound_over_every_set(
    quality: int, exact: bool, own_bound: int | None, others: list[int | None], expected: int | None
) -> None:
    from dataclasses import replace

    from planner.plan.options import _unsettled
    from planner.plan.solver import Solution

    p = _one_role_problem()
    ev = replace(evaluate(p, [0]), quality=quality)
    best = Solution(p, [0], ev, 1, exact, own_bound)
    got = _unsettled(best, others)
    assert got is not None and not got.exact
    assert got.quality_bound == expected
    assert _unsettled(None, others) is None


@pytest.mark.parametrize(
    ("misses", "bound", "says", "never"),
    [
        (0, 950, ["scores more than 950 quality points", "this one scores 900"], ["misses"]),
        (2, 950, ["this one misses 2 target(s)", "if there is one, scores at most 950"], ["this one scores"]),
        (1, None, ["this one misses 1 target(s)"], ["at most", "scores more than"]),
        (0, None, ["a larger --time-limit may prove it"], ["scores more than", "misses"]),
    ],
)
def test_unproven_note_reads_right_for_plans_that_miss_targets(
    misses: int, bound: int | None, says: list[str], never: list[str]
) -> None:
    """The bound counts plans that meet every target: for a plan that misses some, "no plan scores more than
    8,081, this one scores 9,676" read as a contradiction (seen on a 12-role stack), so such a plan says what
    it misses and the bound is what a plan meeting every target could reach."""
    from dataclasses import replace

    from planner.plan.options import unproven_note
    from planner.plan.solver import Solution

    p = _one_role_problem()
    ev = evaluate(p, [0])
    ev = replace(ev, quality=900, key=ev.key._replace(floors_missed=misses, neg_points=-900))
    note = unproven_note("two-server", Solution(p, [0], ev, 7, False, bound), 5.0)
    assert note.startswith("two-server: best plan found, not proven optimal: the search stopped at its limits")
    for text in says:
        assert text in note
    for text in never:
        assert text not in note


def test_two_server_search_out_of_time_keeps_the_best_plan_found() -> None:
    """The agents preset with a budget: many purchasable second servers, the branch and bound stopped at once
    and 1 ms of MILP per option kind. The sets searched after the time ran out cannot settle; the option must
    still be the best plan found (flagged not proven in the notes), not an error after the whole search (what
    `agiplan recommend` did on a 12-role stack: "stopped after 50000 nodes and 49.2 s of MILP without a plan")."""
    from planner.plan.stack import load_preset

    main = _srv("main: 2x rtx-4090, ryzen-9-7950x, 128GiB")
    kinds = ("two-server", "split")
    rushed = recommend(
        load_preset("agents"),
        [main],
        CAT,
        cache=CACHE,
        budget_usd=3000.0,
        kinds=kinds,
        node_limit=1,
        time_limit_s=0.001,
    )
    for r in rushed.results:
        assert r.solution is not None, r.why_not
        assert not r.solution.exact
        assert any(n.startswith(f"{r.kind}: best plan found, not proven optimal") for n in rushed.plan.assumptions)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    bar_failures=st.integers(0, 2),
    bar_quality=st.integers(-200, 6000),
    cost_step=st.sampled_from([-100, 0, 100]),
    bar_devices=st.integers(0, 30),
)
def test_beating_value_bounds_every_plan_that_beats_the_bar(
    data: st.DataObject, bar_failures: int, bar_quality: int, cost_step: int, bar_devices: int
) -> None:
    """`beating_value` (planner.plan.milp) is the most a plan of this problem can score, weighted, and still
    beat a bar from any server set: every assignment brute force finds with a key below the bar must score
    no more. Bars with failures and a quality far above this problem's range (a roomier set's) included:
    there the weights stop ordering failures before quality, which the first version missed."""
    from dataclasses import replace

    from planner.plan.milp import beating_value, lex_weights

    p = replace(_synthetic_problem(data), cost_cents=100)
    weights = lex_weights(p)
    bar = (bar_failures, -bar_quality, 100 + cost_step, bar_devices)
    top = beating_value(weights, bar, p)
    for combo in itertools.product(*[[*range(len(cs)), UNPLACED] for cs in p.cands]):
        ev = evaluate(p, combo)
        if ev.memory_ok and ev.key < bar:
            assert weights.value(ev.key) <= top


def test_two_server_answer_is_unproven_when_any_set_was_left_unsettled() -> None:
    """A set the limits stop (SearchLimitError) while time is left — HiGHS giving up for another reason than
    time, or its relaxation's answer scoring worse under evaluate() — may hold a better plan, so the option
    stays unproven even when a later set's plan is proven best within its own set (it was flagged proven).
    The only double in these tests: the first set's search is made to stop as if at its limits, since no
    real input reliably makes HiGHS give up with time left; every other set is searched for real."""
    from planner.plan import options, solver
    from planner.plan.servers import new_server_candidates

    stack = _stack(
        [
            {"name": "big", "models": ["qwen2.5-14b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 15},
            {"name": "small", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20},
        ]
    )
    main = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    offers = new_server_candidates(CAT, allow=["ryzen-9-7950x", "rtx-4060-ti-16gb", "rtx-4090"])
    real_solve = solver.solve
    calls: list[int] = []

    def first_set_stopped(p: Problem, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise solver.SearchLimitError("stopped at its limits (as if)", 1_000_000)
        return real_solve(p, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(options, "solve", first_set_stopped)
        res = options.solve_two_server(stack, [main], offers, CAT, CACHE)
    assert len(calls) >= 2  # later sets were searched
    assert res.solution is not None
    assert not res.solution.exact
    assert res.solution.quality_bound == 1_000_000  # the stopped set's bound, the largest


def test_split_over_three_existing_servers_equals_its_problem_solved_whole() -> None:
    """With three existing servers the split kind searches one set, {main, second, third}, with the first
    role's layers over main and second: its answer must be that problem's own optimum (the weight-size bound
    that prunes candidates is for a main + second pair, and must not be applied to three servers)."""
    from planner.plan.options import solve_two_server

    stack = _stack(
        [
            {"name": "big", "models": ["qwen2.5-14b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 10},
            {"name": "small", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20},
        ]
    )
    servers = [
        _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB"),
        _srv("second: rtx-4060-ti-16gb, ryzen-9-9950x, 32GiB"),
        _srv("third: rtx-4090, ryzen-9-9950x, 64GiB"),
    ]
    whole = solve(
        make_problem(stack, servers, CAT, CACHE, mode="concurrent", split_item=0, split_pair=(0, 1), require_server=1)
    )
    res = solve_two_server(stack, servers, [], CAT, CACHE, split=True)
    assert whole is not None and whole.exact
    assert res.solution is not None and res.solution.exact
    assert res.solution.evaluation.key == whole.evaluation.key
    assert any(c.split_servers for c in (res.solution.problem.cands[0][res.solution.assign[0]],))


def test_two_server_pruning_equals_trying_every_set() -> None:
    """solve_two_server orders the purchasable second servers by a weight-size bound, stops once the
    incumbent is no worse, and skips candidates that cannot lift the quality: the answer must equal the best
    over every set solved on its own."""
    from planner.plan.options import solve_two_server
    from planner.plan.servers import new_server_candidates

    stack = _stack(
        [
            {"name": "big", "models": ["qwen2.5-14b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 15},
            {"name": "small", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20},
        ]
    )
    main = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    options = new_server_candidates(CAT, allow=["ryzen-9-7950x", "rtx-4060-ti-16gb", "rtx-4090"])
    assert len(options) >= 8
    every: list[tuple[int, int, int, int]] = []
    for s in options:
        sol = solve(make_problem(stack, [main, s], CAT, CACHE, mode="concurrent", require_server=1))
        if sol is not None:
            every.append(sol.evaluation.key)
    res = solve_two_server(stack, [main], options, CAT, CACHE)
    assert res.solution is not None
    assert res.solution.evaluation.key == min(every)
    assert res.considered < len(options)  # the bound saved work


@pytest.mark.parametrize("tol", [10, 200, 3000])
def test_the_pass_within_tolerance_is_within_it_and_its_bound_holds(tol: int) -> None:
    """The server-set search first settles each set to the recommender's tolerance, then exactly. Its first
    pass alone (the exact pass skipped, as when the time runs out there: the one double here, on our own
    code) must give a plan within `tol` points of the exact optimum, flagged unproven with a quality bound
    no lower than the optimum's whenever it dismissed a set within the tolerance; both passes must give the
    exact optimum itself. Tolerances: 10 points per role (the recommender's), 200 and 3000 (every set but
    the first dismissed)."""
    from planner.plan import options
    from planner.plan.servers import new_server_candidates

    stack = _stack(
        [
            {"name": "big", "models": ["qwen2.5-14b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 15},
            {"name": "small", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20},
        ]
    )
    main = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    offers = new_server_candidates(CAT, allow=["ryzen-9-7950x", "rtx-4060-ti-16gb", "rtx-4090"])
    exact = options.solve_two_server(stack, [main], offers, CAT, CACHE)
    assert exact.solution is not None and exact.solution.exact
    best_quality = exact.solution.evaluation.quality
    real_run = options._SetSearch.run
    passes: list[int] = []

    def first_pass_only(self: Any, ordered: Any, pass_tol: int) -> Any:
        passes.append(pass_tol)
        return real_run(self, ordered, pass_tol) if pass_tol else ordered

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(options, "tolerance_points", lambda n_roles: tol)
        both = options.solve_two_server(stack, [main], offers, CAT, CACHE)
        mp.setattr(options._SetSearch, "run", first_pass_only)
        first = options.solve_two_server(stack, [main], offers, CAT, CACHE)
    assert both.solution is not None and both.solution.evaluation.key == exact.solution.evaluation.key
    assert both.solution.exact
    assert first.solution is not None
    assert first.solution.evaluation.key.floors_missed == 0
    assert first.solution.evaluation.quality >= best_quality - tol
    if passes == [tol, 0]:  # the first pass dismissed sets within the tolerance
        assert not first.solution.exact
        assert first.solution.quality_bound is not None and first.solution.quality_bound >= best_quality
    if tol == 3000:
        assert passes == [tol, 0]  # a tolerance this large dismisses every set after the first


# one MILP; two MILPs in threads (option kinds side by side) whose guards overlap and end in the other order
_NOISE_ONE = """
with silenced_stdout_fd():
    os.write(1, b'HighsMipSolverData noise\\n')
"""
_NOISE_TWO = """
import threading, time
both_in = threading.Barrier(2)
def milp(seconds):
    with silenced_stdout_fd():
        both_in.wait()
        os.write(1, b'HighsMipSolverData noise\\n')
        time.sleep(seconds)
threads = [threading.Thread(target=milp, args=(s,)) for s in (0.05, 0.3)]
for t in threads: t.start()
for t in threads: t.join()
"""


@pytest.mark.parametrize("noise", [_NOISE_ONE, _NOISE_TWO], ids=["one", "two-threads"])
def test_c_level_stdout_noise_during_the_milp_is_silenced(noise: str) -> None:
    """HiGHS (scipy 1.17) writes debug lines straight to file descriptor 1 on large problems (seen on the
    12-role bench: "HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();" ×12 before the
    JSON). The guard around the MILP call drops writes to fd 1 and leaves Python's stdout working; checked in
    a real child process writing to fd 1 the way C code does. With two guards in threads, the first to end
    must not give fd 1 back while the other runs, nor the last leave it on /dev/null (each saving and
    restoring its own copy did: "after" was lost)."""
    import subprocess
    import sys

    code = "import os\nfrom planner.plan.milp import silenced_stdout_fd\nprint('before', flush=True)\n"
    code += noise + "print('after')\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout == "before\nafter\n"


def test_unproven_options_are_flagged_and_the_lp_bound_holds_on_a_preset() -> None:
    """The agents preset with the branch and bound stopped at once (1 node) and 1 ms of MILP: each option is a
    real plan, no better than the proven one, flagged not proven in the notes. The LP bound that such a note
    quotes (plans meeting every target, planner.plan.milp relax=True) is at least the proven optimum's quality."""
    import time

    from planner.plan.solver import _solve_zero_failures
    from planner.plan.stack import load_preset

    stack = load_preset("agents")
    main = _srv("main: 2x rtx-4090, ryzen-9-7950x, 128GiB")
    kinds = ("one-server-serial", "one-server-concurrent")
    rushed = recommend(stack, [main], CAT, cache=CACHE, kinds=kinds, node_limit=1, time_limit_s=0.001)
    exact = recommend(stack, [main], CAT, cache=CACHE, kinds=kinds)
    for fast, full in zip(rushed.results, exact.results, strict=True):
        assert full.solution is not None and full.solution.exact
        assert fast.solution is not None
        assert fast.solution.evaluation.key >= full.solution.evaluation.key
        if not fast.solution.exact:
            flag = f"{fast.kind}: best plan found, not proven optimal"
            assert any(n.startswith(flag) for n in rushed.plan.assumptions)
    concurrent = exact.results[1].solution
    assert concurrent is not None and concurrent.evaluation.key[0] == 0
    zero = _solve_zero_failures(concurrent.problem, None, time.monotonic() + 60)
    assert zero.quality_bound is not None
    assert concurrent.evaluation.quality <= zero.quality_bound


@pytest.mark.parametrize("side_by_side", [False, True])
def test_recommend_reports_progress_kind_by_kind(side_by_side: bool) -> None:
    """Large stacks search for tens of seconds; the CLI shows what is being searched from these messages: the
    option kinds still running (one at a time, or several side by side) and the two-server kinds' count of
    server sets solved."""
    import re

    from planner.plan.stack import load_preset

    said: list[str] = []
    main = _srv("main: 2x rtx-4090, ryzen-9-7950x, 128GiB")
    stack = load_preset("ensemble")
    recommend(stack, [main], CAT, cache=CACHE, budget_usd=3000.0, progress=said.append, side_by_side=side_by_side)
    kinds = ("one-server-serial", "one-server-concurrent", "two-server", "split")
    part_re = re.compile(r"(one-server-serial|one-server-concurrent|two-server|split)(: \d+ server set\(s\) solved)?")
    for m in said:
        assert m.startswith("searching ")
        for part in m.removeprefix("searching ").split(", "):
            assert part_re.fullmatch(part), m
    for k in kinds:
        assert any(k in m.removeprefix("searching ").split(", ") or f"{k}: " in m for m in said)
    assert any(re.search(r"two-server: \d+ server set\(s\) solved", m) for m in said)
    if not side_by_side:  # one after another: each kind announced alone, in order
        alone = [m for m in said if ":" not in m and "," not in m]
        assert alone == [f"searching {k}" for k in kinds]


@pytest.mark.slow
def test_option_kinds_side_by_side_give_the_same_answers() -> None:
    """The kinds of large stacks run in threads (HiGHS releases the GIL, so the long MILPs overlap): each keeps its
    own search and clock, only the memoized estimates are shared, so where every kind settles within its
    limit the answers must equal those found one after another — the agents preset with a budget, every kind
    proven. (Where a limit binds, the unproven plans may differ: less CPU per second side by side.)"""
    from planner.plan.stack import load_preset

    main = _srv("main: 2x rtx-4090, ryzen-9-7950x, 128GiB")
    stack = load_preset("agents")
    apart = recommend(stack, [main], CAT, cache=EstimateCache(CAT), budget_usd=3000.0, side_by_side=False)
    together = recommend(stack, [main], CAT, cache=EstimateCache(CAT), budget_usd=3000.0, side_by_side=True)
    for a, b in zip(apart.results, together.results, strict=True):
        assert a.kind == b.kind
        assert a.solution is not None and b.solution is not None
        assert a.solution.exact and b.solution.exact
        assert a.solution.evaluation.key == b.solution.evaluation.key
    assert apart.plan.recommended == together.plan.recommended
    assert apart.plan.model_dump(exclude={"created_at"}) == together.plan.model_dump(exclude={"created_at"})


def test_what_if_gpu_keeps_what_detect_measured() -> None:
    """`--what-if "+1 rtx-4090"` on a `--server-file` server adds the card and keeps everything else, including
    the RAM bandwidth and core count `agiplan detect` measured (they used to come back None)."""
    from dataclasses import replace

    base = replace(_srv("main: rtx-4090, ryzen-9-7950x, 64GiB"), ram_bandwidth_gbs=61.5, detected_cores=12)
    more = base.with_gpus(["rtx-4090"])
    assert more.gpus == ("rtx-4090", "rtx-4090")
    assert (more.ram_bandwidth_gbs, more.detected_cores) == (61.5, 12)
    assert replace(more, gpus=base.gpus) == base


def _cpu_twin_offers() -> list[Server]:
    from planner.plan.servers import new_server_candidates

    # the same GPUs and RAM with either CPU: the Core i9-14900K ($589, 24 cores) and the Ryzen 9 9950X ($649,
    # 16 cores) have the same catalog DDR5 bandwidth (89.6 GB/s)
    return new_server_candidates(CAT, allow=["core-i9-14900k", "ryzen-9-9950x", "rtx-4060-ti-16gb", "rtx-4090"])


def test_a_set_with_a_dearer_cpu_of_no_more_bandwidth_or_cores_is_covered_by_its_twin() -> None:
    from planner.plan.options import _covers

    stack = _stack(
        [{"name": "chat", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20}],
        [{"name": "db", "cpu_cores": 4, "ram_gib": 8}],
    )
    main = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    offers = _cpu_twin_offers()
    by_cpu = {
        s.cpu: s for s in offers if s.gpus == ("rtx-4090",) and s.ram_gib == 64
    }  # the two twins of one GPU and RAM
    intel, amd = (
        make_problem(stack, [main, by_cpu[cpu]], CAT, CACHE, mode="concurrent", require_server=1)
        for cpu in ("core-i9-14900k", "ryzen-9-9950x")
    )
    assert intel.cost_cents < amd.cost_cents
    assert _covers(intel, amd)
    assert not _covers(amd, intel)  # dearer, and fewer cores
    other_gpu = next(s for s in offers if s.gpus == ("rtx-4060-ti-16gb",) and s.cpu == "ryzen-9-9950x")
    assert not _covers(intel, make_problem(stack, [main, other_gpu], CAT, CACHE, mode="concurrent", require_server=1))


@pytest.mark.parametrize("split", [False, True], ids=["two-server", "split"])
def test_skipping_covered_sets_keeps_the_answer(split: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sets covered by one searched to the end (`_covers`) are not searched, and a cheaper set covered but for
    the cost takes over the optimal plan of the covering set when it scores the same there (`_take_over`): the
    answer equals the search of every set (two-server: also the best over every set solved on its own)."""
    from planner.plan import options

    stack = _stack(
        [
            {"name": "big", "models": ["qwen2.5-14b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 15},
            {"name": "small", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20},
        ],
        [{"name": "db", "cpu_cores": 4, "ram_gib": 8}],
    )
    main = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    offers = _cpu_twin_offers()
    real_covers, real_take_over = options._covers, options._take_over
    covered: list[bool] = []
    taken: list[bool] = []

    def counting_covers(a: Problem, b: Problem, *, cost: bool = True) -> bool:
        covered.append(real_covers(a, b, cost=cost))
        return covered[-1]

    def counting_take_over(opt: Any, b: Problem) -> Any:
        t = real_take_over(opt, b)
        taken.append(t is not None)
        return t

    monkeypatch.setattr(options, "_covers", counting_covers)
    monkeypatch.setattr(options, "_take_over", counting_take_over)
    res = options.solve_two_server(stack, [main], offers, CAT, CACHE, split=split)
    monkeypatch.setattr(options, "_covers", lambda a, b, cost=True: False)
    every_set = options.solve_two_server(stack, [main], offers, CAT, CACHE, split=split)
    assert res.solution is not None and every_set.solution is not None
    assert res.solution.exact and every_set.solution.exact
    assert res.solution.evaluation.key == every_set.solution.evaluation.key
    assert any(covered)
    if not split:
        alone = [
            sol.evaluation.key
            for s in offers
            if (sol := solve(make_problem(stack, [main, s], CAT, CACHE, mode="concurrent", require_server=1)))
        ]
        assert res.solution.evaluation.key == min(alone)


def test_the_optimal_plan_of_a_roomier_set_is_taken_over_only_when_it_scores_the_same() -> None:
    """The 128 GiB set's optimal plan becomes the 64 GiB twin's when it fits there with the same failures,
    quality and devices (no plan of the smaller set can do better: each has a twin in the roomier one); a plan
    that needs the RAM is not taken over. Checked against the smaller set's own search."""
    from planner.plan.options import _take_over

    main = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 32GiB")
    offers = {(s.gpus, s.cpu, s.ram_gib): s for s in _cpu_twin_offers()}
    roomy = offers[(("rtx-4090",), "core-i9-14900k", 128.0)]
    small = offers[(("rtx-4090",), "core-i9-14900k", 64.0)]
    for ram_gib, expect in ((8, True), (60, False)):  # a service that fits 64 GiB beside the models, or not
        stack = _stack(
            [{"name": "chat", "models": ["mistral-7b"], "quants": ["Q8_0", "Q4_K_M"], "ctx": 8192, "min_tok_s": 20}],
            [{"name": "db", "cpu_cores": 4, "ram_gib": ram_gib}, {"name": "idx", "cpu_cores": 2, "ram_gib": 40}],
        )
        pa, pb = (
            make_problem(stack, [main, s], CAT, CACHE, mode="concurrent", require_server=1) for s in (roomy, small)
        )
        opt = solve(pa)
        assert opt is not None and opt.exact
        taken = _take_over(opt, pb)
        assert (taken is not None) == expect
        own = solve(pb)
        if taken is not None:
            assert own is not None and taken.evaluation.key == own.evaluation.key  # the smaller set's optimum
            assert taken.evaluation.key[2] == pb.cost_cents < opt.evaluation.key[2]


def test_split_kind_does_not_take_over_a_plan_for_a_set_with_no_split_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A set whose second server cannot hold its part of the split role (here: its RAM leaves no room for the
    rpc-server) is not a split option at all; taking over the covering set's plan, which leaves the role
    unplaced, made it the (cheaper) answer. The answer equals the search of every set. (Found by a randomized
    comparison of the shortcuts against the full search.)"""
    from planner.plan import options
    from planner.plan.servers import new_server_candidates

    offers = {
        (s.gpus, s.ram_gib): s
        for s in new_server_candidates(CAT, allow=["core-i9-14900k", "rtx-4060-ti-16gb", "rtx-4090"], max_gpus=1)
    }
    roomy, cheap = offers[(("rtx-4090",), 64.0)], offers[(("rtx-4060-ti-16gb",), 64.0)]
    main = _srv("main: rtx-4060-ti-16gb, ryzen-9-7950x, 16GiB")
    one_role = _stack([{"name": "x", "models": ["mistral-7b"]}])
    probe = make_problem(one_role, [main, cheap], CAT, CACHE, mode="concurrent")
    host = probe.slots[probe.host_slot[1]]
    room_gib = (host.capacity_bytes - probe.host_margin_bytes[1]) / GIB
    stack = _stack(
        [{"name": "x", "models": ["llama-3.3-70b"], "quants": ["Q4_K_M"], "ctx": 4096, "min_tok_s": 1000}],
        # leaves less than the rpc-server's 150 MiB on the second host, and does not fit the 16 GiB main host
        [{"name": "db", "cpu_cores": 1, "ram_gib": round(room_gib - 0.05, 3)}],
    )
    split_cands = [
        len(make_problem(stack, [main, s], CAT, CACHE, mode="concurrent", split_item=0, split_pair=(0, 1))
            .cands[0])
        for s in (roomy, cheap)
    ]  # fmt: skip
    assert split_cands[0] > 0 and split_cands[1] == 0
    res = options.solve_two_server(stack, [main], [cheap, roomy], CAT, CACHE, split=True)
    monkeypatch.setattr(options, "_covers", lambda a, b, cost=True: False)
    every_set = options.solve_two_server(stack, [main], [cheap, roomy], CAT, CACHE, split=True)
    assert res.solution is not None and every_set.solution is not None
    assert res.solution.evaluation.key == every_set.solution.evaluation.key
    assert res.solution.problem.servers[1] == roomy


def test_swap_in_takes_the_faster_of_disk_and_page_cache() -> None:
    """A model loaded to a GPU from the page cache is capped by PCIe (~25 GB/s); a measured disk may be faster.
    evaluate() takes the faster, as the branch and bound and the MILP do, so more free RAM never slows a swap-in
    (which the server-set shortcuts rely on)."""
    from dataclasses import replace as dc_replace

    from planner.plan.contention import page_cache_gbs

    stack = _stack(
        [{"name": "chat", "models": ["mistral-7b"], "quants": ["Q4_K_M"], "ctx": 4096, "residency": "on-demand"}]
    )
    for disk in (7.45, 40.0):
        srv = dc_replace(_srv("main: rtx-4090, ryzen-9-7950x, 64GiB"), disk_read_gbs=disk)
        p = make_problem(stack, [srv], CAT, CACHE, mode="concurrent")
        ci = next(k for k, c in enumerate(p.cands[0]) if c.gpu_slots and not c.uses_cpu)
        c = p.cands[0][ci]
        swap = evaluate(p, [ci]).roles[0].swap_in_s
        rate = max(disk, page_cache_gbs(p.slots[p.host_slot[0]].device.bandwidth_gbs, True))  # free RAM holds it
        assert swap == pytest.approx(c.file_bytes / (rate * 1e9))
        assert rate == (40.0 if disk == 40.0 else page_cache_gbs(p.slots[p.host_slot[0]].device.bandwidth_gbs, True))


@pytest.mark.parametrize(
    "server",
    [
        "main: 2x rtx-4090, ryzen-9-7950x, 128GiB",  # the seed server: GPU-only and partial offload
        "side: rx-7900-xtx, ryzen-9-9950x, 64GiB",  # ROCm, one card
        "cpu: core-i9-14900k, 64GiB",  # CPU only
    ],
)
def test_step_lower_bound_is_below_every_dense_llama_cpp_candidate(server: str) -> None:
    """The two-server set bound leaves out a (model, quant) that cannot meet its floor on the second server by
    `step_lower_bound_s`; it must never exceed the decode step the estimator gives a real candidate there, or a
    set would be pruned that holds a better plan. Dense models, 7B to 72B, llama.cpp."""
    from planner.plan.problem import read_rates, step_lower_bound_s

    stack = _stack(
        [
            {"name": "big", "models": ["qwen2.5-72b", "llama-3.3-70b"], "ctx": 8192, "min_tok_s": 1},
            {"name": "mid", "models": ["qwen2.5-32b", "gemma-3-27b"], "ctx": 16384, "parallel": 2, "min_tok_s": 1},
            {"name": "small", "models": ["mistral-7b", "qwen2.5-7b"], "ctx": 4096, "parallel": 3, "min_tok_s": 1},
        ]
    )
    s = _srv(server)
    p = make_problem(stack, [s], CAT, CACHE, mode="concurrent")
    checked = 0
    for cands in p.cands:
        for c in cands:
            w = CACHE.weights(c.model_ref, c.quant, "llama.cpp")
            total, _file, embd = CACHE.sizes(w)
            bound = step_lower_bound_s(total - embd, read_rates(s.gpu_devices(CAT), s.host(CAT)))
            assert 0 < bound <= c.step_s, (c.model_ref, c.quant, c.gpu_slots, c.uses_cpu)
            checked += 1
    assert checked >= 10  # each model at one quant or more (CPU-only: 15; the seed server: GPU-only, offloaded)
