"""What-ifs (`--what-if "+1 rtx-4090"`, `"reasoner.ctx=32768"`, `"budget=3000"`, `"link=10GbE"`) as deltas
against the base answer, and the nearest relaxation that works when nothing meets the targets (lower quant, shorter
context, more budget), found by re-solving relaxed variants of the stack.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from planner.catalog import Catalog
from planner.errors import PlannerError
from planner.plan.contention import parse_link
from planner.plan.problem import EstimateCache, stack_items
from planner.plan.recommend import recommend
from planner.plan.schema import OPTION_KINDS, OptionKind, Plan, PlanOption
from planner.plan.servers import Part, Server, buyer_price
from planner.plan.solver import MILP_TIME_LIMIT_S
from planner.plan.stack import Stack, apply_override

_ADD_GPU_RE = re.compile(r"^\s*\+\s*(\d+)\s*[x×]?\s*([A-Za-z0-9][A-Za-z0-9.\-]*)\s*$")
_BUDGET_RE = re.compile(r"^\s*budget\s*=\s*\$?([0-9][0-9_,.]*)\s*$", re.IGNORECASE)
_LINK_RE = re.compile(r"^\s*link\s*=\s*(.*)$", re.IGNORECASE)
MIN_RELAXED_CTX = 2048
RELAX_KINDS: tuple[OptionKind, ...] = ("one-server-concurrent", "two-server")


@dataclass(frozen=True)
class Scenario:
    stack: Stack
    servers: tuple[Server, ...]
    budget_usd: float | None


def apply_what_if(text: str, base: Scenario, cat: Catalog) -> Scenario:
    """One what-if applied to the base scenario: "+N GPU-ID" adds cards to the main server,
    "budget=USD" changes the budget, "link=10GbE" the network between servers, "ROLE.FIELD=VALUE" the stack."""
    m = _ADD_GPU_RE.match(text)
    if m:
        entry = cat.gpu(m.group(2))
        n, gpu = int(m.group(1)), entry.id
        if n < 1 or n > 8:
            raise PlannerError(f"what-if '{text}': add 1 to 8 GPUs.")
        if entry.price_usd is None:
            raise PlannerError(
                f"what-if '{text}': the catalog has no price for {gpu} (no dated public list price), so the "
                "what-if could not say what it costs; try a GPU with a price (agiplan catalog gpus)."
            )
        # the added cards are bought: priced as a part of the main server, so every option's cost includes them
        main = base.servers[0].with_gpus([gpu] * n)
        part = Part.priced(gpu, "gpu", n, buyer_price(entry, allow_used=base.stack.allow_used))
        main = replace(main, cost_usd=round(main.cost_usd + part.price_usd, 2), parts=(*main.parts, part))
        return Scenario(base.stack, (main, *base.servers[1:]), base.budget_usd)
    b = _BUDGET_RE.match(text)
    if b:
        try:
            value = float(b.group(1).replace(",", "").replace("_", ""))
        except ValueError:
            raise PlannerError(f"what-if '{text}': budget must be a number of USD.") from None
        return Scenario(base.stack, base.servers, value)
    k = _LINK_RE.match(text)
    if k:
        try:
            parse_link(k.group(1))
        except ValueError as exc:
            raise PlannerError(f"what-if '{text}': {exc}.") from None
        return Scenario(base.stack.model_copy(update={"link": k.group(1).strip()}), base.servers, base.budget_usd)
    return Scenario(apply_override(base.stack, text), base.servers, base.budget_usd)


def _recommended(plan: Plan) -> PlanOption | None:
    return plan.options[plan.recommended] if plan.recommended is not None else None


def best_effort(plan: Plan) -> PlanOption | None:
    """The recommended option, else the one with the fewest failing roles (then highest quality)."""
    rec = _recommended(plan)
    if rec is not None:
        return rec
    live = [o for o in plan.options if o.servers]
    return min(live, key=lambda o: (len(o.failing_roles), -o.quality_score, o.total_cost_usd), default=None)


def _role_speeds(opt: PlanOption | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if opt is None:
        return out
    for s in opt.servers:
        for p in s.placements:
            out[p.role] = {"model": p.model, "quant": p.quant, "server": s.name, "decode_tok_s": p.decode_tok_s}
    return out


def plan_delta(label: str, base: Plan, other: Plan) -> dict[str, Any]:
    """What changes in the recommended answer: kind, cost, quality, per-role model / quant / tok/s."""
    a, b = best_effort(base), best_effort(other)
    ra, rb = _role_speeds(a), _role_speeds(b)
    roles: dict[str, Any] = {}
    for name in sorted(set(ra) | set(rb)):
        x, y = ra.get(name), rb.get(name)
        roles[name] = {
            "base": x,
            "what_if": y,
            "delta_tok_s": round(y["decode_tok_s"] - x["decode_tok_s"], 2) if x and y else None,
        }
    cost_a = a.total_cost_usd if a else 0.0
    cost_b = b.total_cost_usd if b else 0.0
    q_a = a.quality_score if a else 0.0
    q_b = b.quality_score if b else 0.0
    parts = [
        f"{label}: {b.kind if b else 'nothing fits'}"
        + (" meets every target" if b and b.meets_targets else " misses targets" if b else ""),
        f"cost {cost_b - cost_a:+,.0f} USD",
        f"quality {q_b - q_a:+.3f}",
    ]
    for name, r in roles.items():
        x, y = r["base"], r["what_if"]
        if x and y and (x["model"], x["quant"]) != (y["model"], y["quant"]):
            parts.append(f"{name} {x['model']} {x['quant']} → {y['model']} {y['quant']}")
        if r["delta_tok_s"]:
            parts.append(f"{name} {r['delta_tok_s']:+.1f} tok/s")
    return {
        "what_if": label,
        "kind": b.kind if b else None,
        "meets_targets": bool(b and b.meets_targets),
        "total_cost_usd": cost_b,
        "delta_cost_usd": round(cost_b - cost_a, 2),
        "quality_score": q_b,
        "delta_quality_score": round(q_b - q_a, 4),
        "roles": roles,
        "summary": "; ".join(parts),
    }


def run_what_ifs(
    texts: Sequence[str],
    base: Scenario,
    base_plan: Plan,
    cat: Catalog,
    *,
    allow: Sequence[str] | None,
    cache: EstimateCache,
    time_limit_s: float = MILP_TIME_LIMIT_S,
) -> list[dict[str, Any]]:
    out = []
    for text in texts:
        sc = apply_what_if(text, base, cat)
        plan = _solve(sc, cat, allow, cache, time_limit_s, OPTION_KINDS)
        out.append(plan_delta(text, base_plan, plan))
    return out


def _solve(
    sc: Scenario,
    cat: Catalog,
    allow: Sequence[str] | None,
    cache: EstimateCache,
    time_limit_s: float,
    kinds: Sequence[OptionKind],
) -> Plan:
    return recommend(
        sc.stack,
        list(sc.servers),
        cat,
        budget_usd=sc.budget_usd,
        allow=allow,
        cache=cache,
        kinds=kinds,
        time_limit_s=time_limit_s,
    ).plan


def _meets(
    sc: Scenario, cat: Catalog, allow: Sequence[str] | None, cache: EstimateCache, time_limit_s: float
) -> PlanOption | None:
    return _recommended(_solve(sc, cat, allow, cache, time_limit_s, RELAX_KINDS))


def _describe(opt: PlanOption, roles: Sequence[str]) -> str:
    speeds = _role_speeds(opt)
    bits = [f"{r} {speeds[r]['model']} {speeds[r]['quant']}" for r in roles if r in speeds]
    cost = f" for ${opt.total_cost_usd:,.0f}" if opt.total_cost_usd else ""
    return f"{opt.kind}{cost} ({', '.join(bits)})"


def nearest_relaxations(
    base: Scenario,
    failing: Sequence[str],
    cat: Catalog,
    *,
    allow: Sequence[str] | None,
    cache: EstimateCache,
    time_limit_s: float = MILP_TIME_LIMIT_S,
) -> list[str]:
    """Relaxed variants of the stack that meet every target: each failing role at any quant down to
    Q2_K; the failing roles' context halved (down to 2048); their floor halved or quartered (a default
    floor included); no budget limit."""
    out: list[str] = []
    model_roles = {r.name for r in base.stack.roles}
    fail = [f for f in failing if f in model_roles]
    # lower quant: the whole default ladder (quality floor lifted) for the failing roles
    if fail:
        data = base.stack.model_dump()
        data["quality_floor_kld"] = 1.0
        for r in data["roles"]:
            if r["name"] in fail and r.get("share_with") is None:
                r["quants"] = None
        st = Stack.model_validate(data)
        opt = _meets(Scenario(st, base.servers, base.budget_usd), cat, allow, cache, time_limit_s)
        if opt is not None:
            out.append(f"lower quant: {_describe(opt, fail)} meets every target")
    # shorter context for the failing roles
    if fail:
        ctx = {r.name: r.ctx for r in base.stack.roles}
        factor = 2
        while True:
            data = base.stack.model_dump()
            changed = False
            for r in data["roles"]:
                if r["name"] in fail and ctx[r["name"]] // factor >= MIN_RELAXED_CTX:
                    r["ctx"] = ctx[r["name"]] // factor
                    changed = True
            if not changed:
                break
            st = Stack.model_validate(data)
            opt = _meets(Scenario(st, base.servers, base.budget_usd), cat, allow, cache, time_limit_s)
            if opt is not None:
                new_ctx = ", ".join(f"{r['name']}.ctx={r['ctx']}" for r in data["roles"] if r["name"] in fail)
                out.append(f"shorter context: {new_ctx} meets every target with {_describe(opt, fail)}")
                break
            factor *= 2
    # a slower floor for the failing roles (their min_tok_s, or their task's default): halved, then quartered
    if fail:
        floors = {it.name: it.min_tok_s for it in stack_items(base.stack, cat) if it.is_model}
        for factor in (2, 4):
            data = base.stack.model_dump()
            slower: list[str] = []
            for r in data["roles"]:
                floor = floors.get(r["name"])
                if r["name"] in fail and floor:
                    r["min_tok_s"] = round(floor / factor, 1)
                    slower.append(f"{r['name']}.min_tok_s={r['min_tok_s']:g}")
            if not slower:
                break
            opt = _meets(
                Scenario(Stack.model_validate(data), base.servers, base.budget_usd), cat, allow, cache, time_limit_s
            )
            if opt is not None:
                out.append(f"slower floor: {', '.join(slower)} meets every target with {_describe(opt, fail)}")
                break
    # more budget
    if base.budget_usd is not None:
        opt = _meets(Scenario(base.stack, base.servers, None), cat, allow, cache, time_limit_s)
        if opt is not None:
            out.append(
                f"more budget: ${opt.total_cost_usd:,.0f} (budget ${base.budget_usd:,.0f}) buys "
                f"{_describe(opt, list(model_roles))}, which meets every target"
            )
    return out
