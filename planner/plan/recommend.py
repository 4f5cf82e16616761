"""`recommend()`: solve every option kind for a stack and servers, and turn the answers into a `Plan`.

Option kinds (planner.plan.schema.OPTION_KINDS): `one-server-serial` (one model loaded at a time on the
main server, the others swapped in on demand), `one-server-concurrent` (all always-resident roles
loaded together on the main server), `two-server` (the main server plus a bought one — or the given
existing servers), `split` (as two-server, with the first always-resident role's layers spread over
both servers by llama.cpp RPC). The recommended option is the best by the solver's objective among
those that meet every target; None when none does.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, cast

from planner import __version__
from planner.catalog import Catalog
from planner.errors import PlannerError
from planner.estimate.context import context_limit
from planner.estimate.types import Estimate, MemoryParts
from planner.plan import SEARCH_THREAD_PREFIX
from planner.plan.contention import DEFAULT_LINK, link_label, parse_link, rpc_prefill_tok_s
from planner.plan.objective import QUANT_TIERS, TASK_FLOORS, Points, below_floor
from planner.plan.options import OptionResult, option_reasons, quality_score, solve_two_server, unproven_note
from planner.plan.problem import Candidate, EstimateCache, Mode, make_problem, role_models, stack_items
from planner.plan.schema import (
    OPTION_KINDS,
    PLAN_SCHEMA_VERSION,
    Gain,
    MemoryBreakdown,
    OptionKind,
    Placement,
    Plan,
    PlanDevice,
    PlanDraft,
    PlanOption,
    PlanServer,
    PlanService,
)
from planner.plan.servers import BASE_PLATFORM_NOTE, Server, new_server_candidates
from planner.plan.solver import DEFAULT_NODE_LIMIT, MILP_TIME_LIMIT_S, Solution, solve
from planner.plan.stack import DraftSpec, Stack
from planner.report.i18n import why_text

MODEL_ASSUMPTIONS: tuple[str, ...] = (
    "memory and speed of every placement come from agiplan's estimator (the same numbers as 'agiplan estimate')",
    "tok/s under load: roles that stay loaded all decode at once and time-share each GPU / the host DDR they "
    "use (worst case); on-demand roles contend with the always-resident ones while loaded",
    "each GPU keeps one margin free (the largest of the engines on it: llama.cpp 1024 MiB), not one per model",
    "ranking: floors met first, then per role its model's place in the list, then the quant's tier "
    "(near-lossless / good / degraded / poor by mean KLD vs FP16), then cost, then fewer devices (GPUs before CPU "
    "layers); a role below its floor even alone loses points in proportion to its shortfall",
    "recommendation: the cheapest option that meets every floor, unless a dearer one gives some role a better model "
    "or quant tier (what the money buys is listed with each dearer option)",
)


def objective_notes(stack: Stack, cat: Catalog) -> list[str]:
    """The default floors this stack's roles got (a role without min_tok_s), each with its reason."""
    notes: list[str] = []
    for it in stack_items(stack, cat):
        if not it.is_model or not it.floor_is_default:
            continue
        f = TASK_FLOORS[it.task]
        what = (
            f"decode >= {f.decode_tok_s:g} tok/s per slot under load"
            if f.decode_tok_s is not None
            else f"prefill >= {f.prefill_tok_s:g} tok/s alone"
        )
        notes.append(f"default floor for {it.name} ({f.task}, no min_tok_s in the stack): {what} — {f.reason}")
    return notes


def split_link_note(link_text: str) -> str:
    """The network a split option was priced on: the stack's `link`, or the default and why."""
    link = parse_link(link_text)
    given = "the stack's link" if link_text != DEFAULT_LINK else f"default {DEFAULT_LINK}: the stack names no link"
    return (
        f"split: llama.cpp RPC between the servers over {link_label(link)} ({given}) with "
        f"{link.rtt_s * 1e3:g} ms per round trip (assumed); each decode step sends every slot's hidden state "
        "to the other server and back, each prompt token too; devices of a split run one after another, so the "
        "slowest node drags"
    )


def context_notes(stack: Stack, cat: Catalog, cache: EstimateCache) -> list[str]:
    """The candidates each role left out because its ctx is past their trained context, and what would let
    them in (the documented extension, where there is one)."""
    notes: list[str] = []
    for it in stack_items(stack, cat):
        if it.role is None:
            continue
        for ref in role_models(cat, it.role):
            spec = cache.spec(ref)
            lim = context_limit(cat, spec.catalog_id or "", spec.arch.context_trained)
            if lim.allows(it.ctx, extension_ok=it.role.allow_context_extension):
                continue
            text = f"{it.name}: {ref} left out, ctx {it.ctx} > the {lim.trained_tokens} tokens it was trained on"
            if lim.extended_tokens is not None and it.ctx <= lim.extended_tokens:
                text += f" (allow_context_extension: true lets it run with {lim.extension})"
            notes.append(text)
    return notes


@dataclass
class Recommendation:
    plan: Plan
    results: list[OptionResult]
    cache: EstimateCache


def recommend(
    stack: Stack,
    existing: Sequence[Server],
    cat: Catalog,
    *,
    budget_usd: float | None = None,
    allow: Sequence[str] | None = None,
    assumptions: Sequence[str] = (),
    cache: EstimateCache | None = None,
    kinds: Sequence[OptionKind] = OPTION_KINDS,
    time_limit_s: float = MILP_TIME_LIMIT_S,
    node_limit: int = DEFAULT_NODE_LIMIT,
    progress: Callable[[str], None] | None = None,
    side_by_side: bool | None = None,
) -> Recommendation:
    """The best plan of each option kind, side by side, and the recommended one. `time_limit_s` bounds the
    whole call: every kind stops searching `time_limit_s` after the call began (building candidates counts;
    each kind still searches its first server set, and HiGHS may overrun by a fraction of a second), so
    searches that outgrow the branch and bound's node limit (see `solver.solve`) share what is left; past it,
    the option is the best plan found, flagged not proven optimal in the notes, with its bound. The kinds are
    searched `side_by_side` in threads, by default when the stack has SIDE_BY_SIDE_MIN_ROLES roles or more:
    each kind has its own search and clock, only the memoized estimates are shared, so the answers are those
    found one after another whenever each kind settles within its limit. Where a limit binds, a kind gets
    less CPU per second side by side than alone (threads share the cores and the GIL), so its unproven plan
    may differ."""
    if budget_usd is not None and not budget_usd >= 0:
        raise PlannerError(f"--budget must be >= 0 USD, got {budget_usd:g}.")
    if not 0 < time_limit_s < float("inf"):
        raise PlannerError(f"--time-limit must be a positive number of seconds, got {time_limit_s:g}.")
    deadline = time.monotonic() + time_limit_s
    cache = cache or EstimateCache(cat)
    main = existing[0]
    new_options = (
        new_server_candidates(cat, budget_usd=budget_usd, allow=allow, allow_used=stack.allow_used)
        if len(existing) < 2
        else []
    )
    board = _Progress(progress)

    def search(kind: OptionKind) -> OptionResult:
        board.report(kind, "")
        try:
            return search_kind(kind)
        finally:
            board.done(kind)

    def search_kind(kind: OptionKind) -> OptionResult:
        if kind in ("one-server-serial", "one-server-concurrent"):
            mode: Mode = "serial" if kind == "one-server-serial" else "concurrent"
            p = make_problem(stack, [main], cat, cache, mode=mode)
            sol = solve(p, time_limit_s=max(0.0, deadline - time.monotonic()), node_limit=node_limit)
            result = OptionResult(kind, sol, "" if sol else "nothing_fits", 1)
        else:
            result = solve_two_server(
                stack,
                existing,
                new_options,
                cat,
                cache,
                split=kind == "split",
                time_limit_s=time_limit_s,
                node_limit=node_limit,
                deadline=deadline,
                progress=lambda tried: board.report(kind, f"{tried} server set(s) solved"),
            )
        return result

    if side_by_side is None:
        side_by_side = len(stack.roles) >= SIDE_BY_SIDE_MIN_ROLES
    if side_by_side and len(kinds) > 1:
        results = _side_by_side([functools.partial(search, kind) for kind in kinds])
    else:
        results = [search(kind) for kind in kinds]
    options = _purchases(results, [_option(r, cat) for r in results])
    recommended = _pick(results)
    notes = list(assumptions) + list(MODEL_ASSUMPTIONS)
    notes += objective_notes(stack, cat) + context_notes(stack, cat, cache)
    if any(s.new for o in options for s in o.servers):
        notes.append(BASE_PLATFORM_NOTE)
    if budget_usd is not None:
        notes.append(f"budget for new hardware: ${budget_usd:,.0f}")
    if any(r.kind == "split" and r.solution for r in results):
        notes.append(split_link_note(stack.link))
    for r in results:
        if r.solution is not None and not r.solution.exact:
            notes.append(unproven_note(r.kind, r.solution, time_limit_s))
    disk = cat.disk(stack.disk)
    notes.append(
        f"on-demand models load from {disk.name} ({disk.read_gbs} GB/s) or from the page cache when free RAM holds them"
    )
    plan = Plan(
        schema_version=PLAN_SCHEMA_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        agiplan_version=__version__,
        stack_name=stack.name,
        options=options,
        recommended=recommended,
        assumptions=notes,
    )
    return Recommendation(plan, results, cache)


# Stacks this large search their option kinds side by side. Smaller ones (every preset) settle in the branch
# and bound, in Python, where threads only contend for the GIL: deep / agents / ensemble took 0.84 / 2.15 /
# 0.27 s side by side against 0.77 / 1.98 / 0.19 s one after another. The 12-role bench with named models
# spends its time in HiGHS: 121.5 s one after another, 61.6 s side by side (bench/solver_speed.py --named);
# its two-server kind hits the 60 s limit either way, and side by side its unproven plan was the same
# quality at $3,571 instead of $3,379 (less CPU per second of the limit).
SIDE_BY_SIDE_MIN_ROLES = 8


class _Progress:
    """What is being searched, for `progress`: the option kinds still running (several at once when they run
    side by side), each with its count of server sets solved: "searching two-server: 12 server set(s) solved,
    split: 3 server set(s) solved"."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.running: dict[str, str] = {}

    def report(self, kind: str, status: str) -> None:
        with self.lock:
            self.running[kind] = status
            self._say()

    def done(self, kind: str) -> None:
        with self.lock:
            self.running.pop(kind, None)
            if self.running:
                self._say()

    def _say(self) -> None:
        if self.progress is not None:
            self.progress("searching " + ", ".join(f"{k}: {st}" if st else k for k, st in self.running.items()))


T = TypeVar("T")


def _side_by_side(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run `tasks` in threads and return their results in order (the first error, if any, is raised). The
    option kinds spend their long searches in HiGHS, which releases the GIL: on the 12-role bench with named
    models the two-server and split kinds overlap (see bench/solver_speed.py --named). Daemon threads, so a
    Ctrl-C ends the process at once rather than waiting for a MILP's time limit."""
    results: list[T | None] = [None] * len(tasks)
    errors: list[BaseException | None] = [None] * len(tasks)

    def work(i: int) -> None:
        try:
            results[i] = tasks[i]()
        except BaseException as exc:  # handed to the caller's thread below
            errors[i] = exc

    threads = [
        threading.Thread(target=work, args=(i,), daemon=True, name=f"{SEARCH_THREAD_PREFIX}-{i}")
        for i in range(len(tasks))
    ]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.1)  # a join with a timeout lets Ctrl-C through; a plain one waits for the thread
    for exc in errors:
        if exc is not None:
            raise exc
    return [cast(T, r) for r in results]


def _merit(sol: Solution) -> int:
    """Model places and quant tiers of a plan, as points (objective.Points.quality; higher is better): what
    money may buy. Speed is left out: a faster plan at the same model and tier is not worth a purchase."""
    total = 0
    for ii, ci in enumerate(sol.assign):
        if ci >= 0 and sol.problem.items[ii].is_model:
            c = sol.problem.cands[ii][ci]
            total += Points(c.preference, c.tier, 0.0).quality
    return total


_KIND_RANK = {"one-server-concurrent": 0, "one-server-serial": 1, "two-server": 2, "split": 3}


def _by_price(results: Sequence[OptionResult]) -> list[int]:
    """Options with a plan, cheapest first; at equal cost fewer floors missed, better key, concurrent first."""
    idx = [i for i, r in enumerate(results) if r.solution is not None]

    def order(i: int) -> tuple[object, ...]:
        sol = results[i].solution
        assert sol is not None
        k = sol.evaluation.key
        return (k[2], k[0], k[3], k[1], _KIND_RANK.get(results[i].kind, 9), i)

    return sorted(idx, key=order)


def _pick(results: Sequence[OptionResult]) -> int | None:
    """The recommended option: it meets every floor; the cheapest such option, unless a dearer one buys
    something — a better model or quant tier for some role, more than it loses elsewhere (`_merit`); at equal
    cost the solver's order (quality with speed bands, then fewer devices), concurrent before serial."""
    ok = [
        i
        for i in _by_price(results)
        if (sol := results[i].solution) is not None and sol.evaluation.key.floors_missed == 0
    ]
    if not ok:
        return None
    pick = ok[0]
    for i in ok[1:]:
        a, b = results[i].solution, results[pick].solution
        assert a is not None and b is not None
        if a.evaluation.key.cost_cents == b.evaluation.key.cost_cents:
            continue  # same cost: the first in order is the solver's best
        if _merit(a) > _merit(b):
            pick = i
    return pick


@dataclass(frozen=True)
class _RolePlace:
    """One role's placement in an option, as a purchase comparison sees it."""

    model: str
    quant: str
    engine: str
    preference: int
    tier: int
    decode_tok_s: float
    meets: bool
    where: tuple[object, ...]  # existing server name or "new", GPU indices, CPU layers, split hosts


def _places(sol: Solution) -> dict[str, _RolePlace]:
    out: dict[str, _RolePlace] = {}
    p = sol.problem
    for ii, ci in enumerate(sol.assign):
        it = p.items[ii]
        if not it.is_model or ci < 0:
            continue
        c = p.cands[ii][ci]
        rr = sol.evaluation.roles[ii]
        srv = p.servers[c.server]
        out[it.name] = _RolePlace(
            c.model_ref,
            c.quant,
            c.engine,
            c.preference,
            c.tier,
            rr.decode_tok_s,
            not rr.failures,
            (
                "new" if srv.new else srv.name,
                tuple(p.slots[s].gpu for s in c.gpu_slots),
                c.uses_cpu,
                len(c.split_servers),
                c.resident,
            ),
        )
    return out


def _gains(dear: Solution, cheap: Solution) -> list[Gain]:
    """What `dear` gives each role over `cheap`: its floor met, a better model, a better quant tier."""
    a, b = _places(dear), _places(cheap)
    out: list[Gain] = []
    for role, x in a.items():
        y = b.get(role)
        kind: str | None = None
        if x.meets and (y is None or not y.meets):
            kind = "floor"
        elif y is None or x.preference < y.preference:
            kind = "model"
        elif x.preference == y.preference and x.tier < y.tier:
            kind = "tier"
        if kind is None:
            continue
        out.append(
            Gain(
                role=role,
                kind=kind,  # type: ignore[arg-type]
                model=x.model,
                quant=x.quant,
                tier=QUANT_TIERS[x.tier].name,
                decode_tok_s=round(x.decode_tok_s, 1),
                instead_model=y.model if y else "",
                instead_quant=y.quant if y else "",
                instead_tier=QUANT_TIERS[y.tier].name if y else "",
                instead_decode_tok_s=round(y.decode_tok_s, 1) if y else 0.0,
            )
        )
    return out


def _purchases(results: Sequence[OptionResult], options: list[PlanOption]) -> list[PlanOption]:
    """Each dearer option against the cheapest one: what the extra cost buys, or that it is the same plan."""
    order = _by_price(results)
    if not order:
        return options
    base = order[0]
    cheap = results[base].solution
    assert cheap is not None
    out = list(options)
    for i in order[1:]:
        dear = results[i].solution
        assert dear is not None
        extra = (dear.evaluation.key.cost_cents - cheap.evaluation.key.cost_cents) / 100
        if extra <= 0:
            continue
        same = _places(dear) == _places(cheap)
        out[i] = out[i].model_copy(
            update={
                "compared_with": base,
                "extra_cost_usd": extra,
                "buys": [] if same else _gains(dear, cheap),
                "same_as": base if same else None,
            }
        )
    return out


def _breakdown(m: MemoryParts) -> MemoryBreakdown:
    return MemoryBreakdown(
        weights_bytes=m.weights_bytes,
        kv_cache_bytes=m.kv_cache_bytes,
        compute_bytes=m.compute_bytes,
        overhead_bytes=m.overhead_bytes,
    )


def _option(r: OptionResult, cat: Catalog) -> PlanOption:
    sol = r.solution
    reasons = option_reasons(sol, r.why_not, r.sets_left, r.limit_s)
    if sol is None:
        return PlanOption(
            kind=r.kind,
            servers=[],
            total_cost_usd=0.0,
            meets_targets=False,
            why=why_text("en", r.kind, reasons),
            reasons=reasons,
            failing_roles=[],
        )
    p = sol.problem
    ev = sol.evaluation
    servers: list[PlanServer] = []
    # device memory: resident parts summed + the on-demand placement that uses the device most
    res_parts: dict[int, MemoryParts] = {}
    od_best: dict[int, MemoryParts] = {}
    for ii, ci in enumerate(sol.assign):
        if ci < 0:
            continue
        c = p.cands[ii][ci]
        for si, t in c.parts:
            if c.resident:
                res_parts[si] = res_parts.get(si, MemoryParts()) + t
            elif si not in od_best or t.total_bytes > od_best[si].total_bytes:
                od_best[si] = t
    for s_idx, srv in enumerate(p.servers):
        devices: list[PlanDevice] = []
        for si, sl in enumerate(p.slots):
            if sl.server != s_idx:
                continue
            tot = res_parts.get(si, MemoryParts()) + od_best.get(si, MemoryParts())
            devices.append(
                PlanDevice(
                    id=sl.device.id if sl.is_gpu else "cpu",
                    index=sl.gpu,
                    kind="gpu" if sl.is_gpu else "cpu",
                    name=sl.device.name,
                    used_bytes=ev.used_bytes[si],
                    capacity_bytes=sl.capacity_bytes,
                    margin_bytes=ev.margin_bytes[si] if sl.is_gpu else p.host_margin_bytes[s_idx],
                    memory=_breakdown(tot),
                )
            )
        placements: list[Placement] = []
        services: list[PlanService] = []
        for ii, ci in enumerate(sol.assign):
            if ci < 0:
                continue
            c = p.cands[ii][ci]
            if c.server != s_idx:
                continue
            it = p.items[ii]
            if it.service is not None:
                services.append(
                    PlanService(
                        name=it.name,
                        cpu_cores=it.service.cpu_cores,
                        ram_bytes=int(it.service.ram_gib * 2**30),
                        disk_bytes=int(it.service.disk_gib * 2**30),
                    )
                )
                continue
            placements += _placements(sol, ii, c, cat)
        servers.append(
            PlanServer(
                name=srv.name,
                new=srv.new,
                cost_usd=srv.cost_usd,
                hardware=srv.hardware,
                cpu=srv.cpu,
                gpus=list(srv.gpus),
                ram_bytes=int(srv.ram_gib * 2**30),
                devices=devices,
                placements=placements,
                services=services,
                parts=[pt.as_dict() for pt in srv.parts],
            )
        )
    return PlanOption(
        kind=r.kind,
        servers=servers,
        total_cost_usd=p.cost_cents / 100,
        meets_targets=ev.key.floors_missed == 0,
        quality_score=quality_score(sol),
        why=why_text("en", r.kind, reasons),
        reasons=reasons,
        failing_roles=list(ev.failing),
    )


def _prefill_tok_s(c: Candidate) -> float:
    """The estimator's prompt tok/s; a model split over servers also pays each token's network time."""
    assert c.est is not None
    pp = c.est.speed.prefill_tok_s
    if c.rpc_link is None:
        return pp
    return rpc_prefill_tok_s(pp, c.est.arch.hidden_size, c.est.config.batch_sizes()[1], c.rpc_link)


def _plan_draft(est: Estimate, spec: DraftSpec | None) -> PlanDraft | None:
    """The placement's draft model as the plan records it (deploy passes it on)."""
    d, cfg = est.draft, est.config.draft
    if d is None or cfg is None or spec is None:
        return None
    return PlanDraft(
        model=spec.model,
        model_name=d.model_name,
        quant=d.quant or spec.quant or "",
        n_max=cfg.n_max,
        n_min=cfg.n_min,
        acceptance=cfg.acceptance_rate,
        acceptance_given=cfg.acceptance is not None,
        gpu_layers=d.gpu_layers,
        n_layers=d.n_layers,
        memory_bytes=d.total.total_bytes,
        speedup=round(d.speed.speedup, 3),
    )


def _placements(sol: Solution, ii: int, c: Candidate, cat: Catalog) -> list[Placement]:
    assert c.est is not None
    p = sol.problem
    it = p.items[ii]
    assert it.role is not None
    est = c.est
    rr = sol.evaluation.roles[ii]
    split = bool(c.split_servers)

    def dev_name(si: int) -> str:
        sl = p.slots[si]
        base = f"gpu{sl.gpu}" if sl.is_gpu else "cpu"
        return f"{p.servers[sl.server].name}/{base}" if split else base

    devices = [p.slots[s].device.id for s in c.gpu_slots] + (["cpu"] if c.uses_cpu else [])
    mem = est.memory
    by_dev = {dev_name(si): b for si, b in c.mem}
    lim = context_limit(cat, c.model_ref, est.arch.context_trained)
    base = Placement(
        role=it.name,
        model=c.model_ref,
        model_name=c.model_name,
        quant=c.quant,
        ctx=it.ctx,
        parallel=it.parallel,
        engine=c.engine,  # type: ignore[arg-type]
        devices=devices,
        gpu_indices=[p.slots[s].gpu for s in c.gpu_slots],
        gpu_layers=est.gpu_layers,
        n_cpu_moe=est.cpu_moe_layers,
        n_layers=est.arch.n_layers,
        kv_type=it.role.kv_type,
        flash_attn=est.config.flash_attn,
        residency="always" if c.resident else "on-demand",
        memory_bytes=mem.total_bytes,
        memory=MemoryBreakdown(
            weights_bytes=mem.weights_bytes,
            kv_cache_bytes=mem.kv_cache_bytes,
            compute_bytes=mem.compute_bytes,
            overhead_bytes=mem.overhead_bytes,
        ),
        memory_by_device=by_dev,
        kv_capacity_tokens=est.kv_capacity_tokens,
        full_ctx_slots=min(it.parallel, est.kv_capacity_tokens // it.ctx),
        decode_tok_s=round(rr.decode_tok_s, 3),
        decode_tok_s_alone=round(c.alone_tok_s, 3),
        prefill_tok_s=round(_prefill_tok_s(c), 1),
        min_tok_s=it.min_tok_s,
        meets_target=not rr.failures,
        swap_in_s=round(rr.swap_in_s, 3) if rr.swap_in_s is not None else None,
        gpu_memory_utilization=est.config.gpu_memory_utilization if c.engine == "vllm" else None,
        tensor_parallel=len(c.gpu_slots) if c.engine == "vllm" else 1,
        adapters=list(it.role.adapters),
        split_hosts=[p.servers[s].name for s in c.split_servers],
        embedding=est.arch.is_embedding,
        n_ubatch=est.config.n_ubatch if c.engine == "llama.cpp" else None,
        note="; ".join(m.text for m in rr.failures),
        context_extension=(lim.extension or "") if it.ctx > lim.trained_tokens else "",
        draft=_plan_draft(est, it.role.draft),
    )
    out = [base]
    for m in it.members:
        out.append(
            base.model_copy(
                update={
                    "role": m.name,
                    "ctx": m.ctx,
                    "parallel": m.parallel,
                    "memory_bytes": 0,
                    "memory": MemoryBreakdown(weights_bytes=0, kv_cache_bytes=0, compute_bytes=0, overhead_bytes=0),
                    "memory_by_device": {},
                    # its own floor, else the shared model's (the largest of the roles on it, or the default)
                    "min_tok_s": m.min_tok_s if m.min_tok_s is not None else it.min_tok_s,
                    "meets_target": not below_floor(
                        rr.decode_tok_s, m.min_tok_s if m.min_tok_s is not None else it.min_tok_s
                    ),
                    "adapters": list(m.adapters),
                    "shares_base_with": it.name,
                    "note": f"served as {m.parallel} of the {it.parallel} slots of {it.name}'s model",
                }
            )
        )
    return out
