"""The option kinds over server sets: the two-server and split kinds try the main server with each
purchasable second server (the roomiest first, then best-first by a weight-size bound, `_SetBound`), sharing
one time limit, skipping sets that a set searched to the end covers (`_covers`) and taking over its optimal plan
for a cheaper set it covers but for the cost (`_take_over`); and the sentences that explain an option (why it
fits, why not, what was not proven).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from planner.catalog import Catalog
from planner.plan.objective import QUALITY_POINTS, Points, below_floor, tolerance_points
from planner.plan.problem import (
    Candidate,
    EstimateCache,
    Problem,
    could_meet_floor,
    dominates,
    evaluate,
    item_combos,
    make_problem,
    read_rates,
    stack_items,
)
from planner.plan.schema import OptionKind, Reason, RoleMiss
from planner.plan.servers import Server
from planner.plan.solver import DEFAULT_NODE_LIMIT, MILP_TIME_LIMIT_S, SearchLimitError, Solution, solve
from planner.plan.stack import Stack


@dataclass
class OptionResult:
    kind: OptionKind
    solution: Solution | None
    why_not: str = ""  # without a solution: a no_plan detail code (planner.plan.schema.Reason)
    considered: int = 0  # server sets tried
    sets_left: int = 0  # time_out_sets: server sets not searched
    limit_s: float = 0.0  # search_limit / time_out_sets: the --time-limit in force


def _better(a: Solution | None, b: Solution | None) -> bool:
    return a is not None and (b is None or a.evaluation.key < b.evaluation.key)


def solve_two_server(
    stack: Stack,
    existing: Sequence[Server],
    new_options: Sequence[Server],
    cat: Catalog,
    cache: EstimateCache,
    *,
    split: bool = False,
    progress: Callable[[int], None] | None = None,
    time_limit_s: float = MILP_TIME_LIMIT_S,
    node_limit: int = DEFAULT_NODE_LIMIT,
    deadline: float | None = None,
) -> OptionResult:
    """Best plan over server sets: all existing servers when there are two or more, else the main
    server plus each purchasable new server (the roomiest first, then best-first by a weight-size bound,
    pruned by the incumbent, by covering sets searched to the end, and settled by taking over their optimal
    plans). Two passes: the first asks each set only for a plan better than the best so far by more than the
    recommender's tolerance (`objective.tolerance_points`), which the relaxation answers in ~0.01 s for most
    sets, so a plan within tolerance comes early; the second searches the sets the first dismissed only
    within that tolerance, exactly. Both share the time up to `deadline` (time.monotonic(); default
    `time_limit_s` from now, candidate building included): sets the limits leave unsettled leave the answer
    unproven, with a quality bound over them. With `split`, one role's layers must span two servers
    (llama.cpp RPC)."""
    kind: OptionKind = "split" if split else "two-server"
    clock = _Clock(time.monotonic() + time_limit_s if deadline is None else deadline)
    sets: list[list[Server]] = [list(existing[:3])] if len(existing) >= 2 else [[existing[0], s] for s in new_options]
    if not sets:
        return OptionResult(kind, None, "no_second_server")
    split_ii = _split_item(stack) if split else None
    if split and split_ii is None:
        return OptionResult(kind, None, "no_split_role")
    set_bound = _SetBound(stack, existing[0], cat, cache, split_ii)
    bounds = [set_bound.key(s[1]) if len(s) == 2 else (0, 0, 0, 0) for s in sets]
    # best-first: sets in order of their bound (cheapest first among equals); once the incumbent is no worse
    # than the next set's bound, no later set can beat it
    ordered = [(bnd, servers) for bnd, servers in sorted(zip(bounds, sets, strict=True), key=lambda x: x[0])]
    ordered = [(bnd, servers) for bnd, servers in ordered if not (split and not servers[1].gpus)]
    if len(ordered) > 1 and len(ordered[0][1]) == 2:
        # the roomiest second server first: its plan is most likely to meet every target with the best
        # quality, and such a bar lets the relaxation dismiss most other sets in a fraction of a second
        # (12-role stack with models named, $4,000: 10,573 unproven at the 60 s limit -> 11,291)
        first = max(range(len(ordered)), key=lambda k: (_raw_capacity(ordered[k][1][1], cat), -k))
        ordered.insert(0, ordered.pop(first))
    search = _SetSearch(stack, cat, cache, set_bound, split_ii, clock, node_limit, progress)
    tol = tolerance_points(sum(1 for it in set_bound.items if it.is_model))
    deferred = search.run([(bnd, servers, None) for bnd, servers in ordered], tol)
    if deferred and not search.timed_out:
        deferred = search.run(deferred, 0)
    # sets dismissed within the tolerance that no exact pass settled: at most the raised bar's quality
    best, open_bounds = search.best, [*search.open_bounds, *(cap for _, _, cap in deferred)]
    if best is not None and best.evaluation.key.floors_missed == 0:
        # a set whose plans meeting every target score less than the best plan's cannot beat it
        open_bounds = [b for b in open_bounds if b is None or b >= best.evaluation.quality]
    tried = search.tried
    if best is not None:
        return OptionResult(kind, _unsettled(best, open_bounds) if open_bounds else best, "", tried)
    if search.why_limit:
        return OptionResult(kind, None, search.why_limit, tried, search.sets_left, time_limit_s)
    return OptionResult(kind, None, "no_split_gpu" if split else "nothing_fits", tried)


# (set bound, servers, quality bound from a pass with tolerance or None), in search order
_Ordered = list[tuple[tuple[int, int, int, int], list[Server], int | None]]


class _SetSearch:
    """The state of one option kind's search over server sets, across its passes: the best plan, the sets
    searched to the end (a later set each of whose plans has an at-least-as-good twin in one of them,
    `_covers`, cannot beat the best plan, and is not searched), their optimal plans (which a cheaper set they
    cover may take over as its own optimum, `_take_over`), and the quality bounds of the sets the limits left
    unsettled (a better plan may hide there: the answer is not proven)."""

    def __init__(
        self,
        stack: Stack,
        cat: Catalog,
        cache: EstimateCache,
        set_bound: _SetBound,
        split_ii: int | None,
        clock: _Clock,
        node_limit: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.stack, self.cat, self.cache, self.set_bound = stack, cat, cache, set_bound
        self.split_ii, self.clock, self.node_limit, self.progress = split_ii, clock, node_limit, progress
        self.best: Solution | None = None
        self.tried = 0
        self.settled: list[Problem] = []
        self.optima: list[Solution] = []
        self.open_bounds: list[int | None] = []
        self.why_limit = ""  # a Reason detail code (no_plan) when the limits stopped the search
        self.sets_left = 0
        self.timed_out = False

    def run(self, ordered: _Ordered, tol: int) -> _Ordered:
        """Search `ordered` for plans better than the best so far by more than `tol` quality points (0: any
        better plan). Returns the sets dismissed only within `tol` (searched, or not reached by the best-first
        order, against a bar `tol` points above the quality of the best plan, which meets every target), each
        with that bar's quality as its bound, until a pass with `tol` 0 settles them."""
        deferred: _Ordered = []
        for k, (bnd, servers, _cap) in enumerate(ordered):
            incumbent = self.best.evaluation.key if self.best else None
            bar = _raised(incumbent, tol)
            if bar is not None and bnd >= bar:
                if bar != incumbent:  # each at most its own bound, no more than the bar's quality
                    deferred += [
                        (b, srv, _tighter(-b[1] if len(srv) == 2 else None, -bar[1])) for b, srv, _ in ordered[k:]
                    ]
                break
            if self.tried and self.clock.exhausted():
                # the time is spent: the sets not searched may hold a better plan (each at most its bound)
                self.open_bounds += [_tighter(-b[1] if len(srv) == 2 else None, c) for b, srv, c in ordered[k:]]
                self.why_limit = "time_out_sets"
                self.sets_left += len(ordered) - k
                self.timed_out = True
                break
            self.tried += 1
            defer, cap = self._search_set(servers, incumbent, bar, tol)
            if defer:
                deferred.append((bnd, servers, cap))
            if self.progress:
                self.progress(self.tried)
        return deferred

    def _search_set(
        self,
        servers: list[Server],
        incumbent: tuple[int, int, int, int] | None,
        bar: tuple[int, int, int, int] | None,
        tol: int,
    ) -> tuple[bool, int | None]:
        """Search one set for a plan beating `bar` (the incumbent, or raised by the pass's tolerance `tol`), the
        MILP stopping once within `tol` of the set's optimum. Returns whether the set is settled only within
        `tol` (nothing there beats `bar`, or its plan is within `tol` of the set's optimum; a plan there may
        still beat the incumbent), then the quality bound of its plans."""
        exact = bar == incumbent
        p = make_problem(
            self.stack,
            servers,
            self.cat,
            self.cache,
            mode="concurrent",
            split_item=self.split_ii,
            split_pair=(0, 1) if self.split_ii is not None else None,
            require_server=1,
            min_quality=self.set_bound.min_quality(servers[1], bar) if len(servers) == 2 else None,
            meet_floors=bar is not None and bar[0] == 0,
        )
        searchable = self.split_ii is None or bool(p.cands[self.split_ii])  # a split needs a split candidate
        taken = None
        if searchable and exact:
            taken = next((t for t in (_take_over(o, p) for o in self.optima) if t is not None), None)
        if exact and any(_covers(done, p) for done in self.settled):
            return False, None  # e.g. the same GPUs and RAM with a dearer CPU of no more bandwidth or cores
        if taken is not None:
            # e.g. the same GPUs with less RAM that the optimal plan of the roomier set did not need
            self.settled.append(p)
            self.optima.append(taken)
            if _better(taken, self.best):
                self.best = taken
            return False, None
        if not searchable:
            return False, None
        try:
            sol = self.clock.solve(p, bar, self.node_limit, tol)
        except SearchLimitError as exc:
            # its bound is over the plans beating `bar`; the others score at most the bar's quality
            self.open_bounds.append(_at_least(exc.quality_bound, bar))
            self.why_limit = "search_limit"
            return False, None
        if _better(sol, self.best):
            self.best = sol
        if sol is not None and not sol.exact:
            if tol and not self.clock.exhausted():
                return True, _at_least(sol.quality_bound, bar)  # within tol of the set's optimum
            self.open_bounds.append(_at_least(sol.quality_bound, bar))
        elif sol is not None or exact:
            # the set's optimum (a plan beating a raised bar is the set's best too), or nothing beats the bar
            self.settled.append(p)
            if sol is not None:
                self.optima.append(sol)
        else:
            assert bar is not None
            return True, -bar[1]
        return False, None


def _tighter(a: int | None, b: int | None) -> int | None:
    """The smaller of two upper bounds on quality (None: unknown)."""
    return b if a is None else a if b is None else min(a, b)


def _at_least(bound: int | None, bar: tuple[int, int, int, int] | None) -> int | None:
    """An upper bound on the quality of every plan of a set from `bound`, which holds for the plans beating
    `bar`: the others, when `bar` meets every target, score at most its quality."""
    if bound is None or bar is None or bar[0] != 0:
        return bound
    return max(bound, -bar[1])


def _raised(incumbent: tuple[int, int, int, int] | None, tol: int) -> tuple[int, int, int, int] | None:
    """The bar a set must beat to count in a pass with tolerance `tol`: the incumbent's quality + `tol` when it
    meets every target (a plan with failures is beaten by any plan with fewer, whatever their quality)."""
    if incumbent is None or tol == 0 or incumbent[0] != 0:
        return incumbent
    return (0, incumbent[1] - tol, incumbent[2], incumbent[3])


def _covers(a: Problem, b: Problem, *, cost: bool = True) -> bool:
    """Every plan of `b` has a twin in `a` that is at least as good: `a` costs no more (unless `cost` is False);
    has the same memory pools (servers, GPUs by index), each as large, hosts as fast (the page cache), as many
    cores and as fast a disk; and each candidate of `b` is dominated (`dominates`: quality, memory, margins,
    decode times, file size) by one of `a` for the same item, server, GPUs, CPU offload and split, with no more
    cores. So no plan of `b` beats the best plan of `a`, and once `a` is searched to the end, `b` need not be
    searched."""
    if (cost and a.cost_cents > b.cost_cents) or a.mode != b.mode or a.require_server != b.require_server:
        return False
    if len(a.slots) != len(b.slots) or len(a.servers) != len(b.servers) or len(a.cands) != len(b.cands):
        return False
    for sa, sb in zip(a.slots, b.slots, strict=True):
        if (sa.server, sa.gpu) != (sb.server, sb.gpu) or sa.capacity_bytes < sb.capacity_bytes:
            return False
        if not sa.is_gpu and sa.device.bandwidth_gbs < sb.device.bandwidth_gbs:
            return False
    pools = zip(a.cores, b.cores, a.disk_gbs, b.disk_gbs, a.host_margin_bytes, b.host_margin_bytes, strict=True)
    if any(ca < cb or da < db or ma > mb for ca, cb, da, db, ma, mb in pools):
        return False
    for cands_a, cands_b in zip(a.cands, b.cands, strict=True):
        groups: dict[tuple[object, ...], list[Candidate]] = {}
        for c in cands_a:
            groups.setdefault(_placement_group(c), []).append(c)
        for cb in cands_b:
            twins = groups.get(_placement_group(cb), [])
            if not any(ca.cores <= cb.cores and dominates(ca, cb) for ca in twins):
                return False
    return True


def _take_over(opt: Solution, b: Problem) -> Solution | None:
    """`opt` (the optimal plan of a set searched to the end) as the optimal plan of `b`, when that set covers `b`
    but for the cost and the same placements, found among `b`'s candidates, score the same failures, quality and
    devices on `b`: no plan of `b` does better on those (each has an at-least-as-good twin in the covering set,
    where `opt` is optimal), and `b`'s cost is fixed. None otherwise."""
    a = opt.problem
    if not _covers(a, b, cost=False):
        return None
    assign: list[int] = []
    for ii, ci in enumerate(opt.assign):
        if ci < 0:
            assign.append(ci)
            continue
        want = a.cands[ii][ci]
        same = (want.model_ref, want.quant, want.engine, *_placement_group(want))
        found = [k for k, c in enumerate(b.cands[ii]) if (c.model_ref, c.quant, c.engine, *_placement_group(c)) == same]
        if not found:
            return None
        assign.append(found[0])
    ev = evaluate(b, assign)
    k_a, k_b = opt.evaluation.key, ev.key
    if not ev.memory_ok or (k_b[0], k_b[1], k_b[3]) != (k_a[0], k_a[1], k_a[3]):
        return None
    return Solution(b, assign, ev, 0, True)


def _placement_group(c: Candidate) -> tuple[object, ...]:
    return (c.server, c.gpu_slots, c.uses_cpu, c.split_servers, c.resident)


def _unsettled(best: Solution | None, bounds: Sequence[int | None]) -> Solution | None:
    """`best` stays the answer, but the limits stopped the search of server sets that may hold a better plan
    (no plan there meeting every target scores more than their `bounds`; None: unknown; the set of an
    unproven `best` is among them): no longer proven optimal, and its quality bound covers those sets too."""
    if best is None:
        return None
    own = best.evaluation.quality if best.exact else best.quality_bound
    known = [b for b in (own, *bounds) if b is not None]
    bound = max(known) if len(known) == len(bounds) + 1 else None
    return replace(best, exact=False, quality_bound=bound)


class _Clock:
    """The deadline (time.monotonic()) shared by the searches of one option kind: everything up to it counts,
    building the candidates of each server set included, so `--time-limit` bounds the whole search."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def exhausted(self) -> bool:
        return time.monotonic() >= self.deadline

    def solve(
        self, p: Problem, incumbent: tuple[int, int, int, int] | None, node_limit: int, tol: int
    ) -> Solution | None:
        return solve(
            p,
            incumbent=incumbent,
            node_limit=node_limit,
            time_limit_s=max(0.0, self.deadline - time.monotonic()),
            tolerance_points=tol,
        )


def unproven_note(kind: str, sol: Solution, time_limit_s: float) -> str:
    """The plan's note for an option whose optimality was not proven: what stopped the search, and how far
    from the optimum the plan can be."""
    text = (
        f"{kind}: best plan found, not proven optimal: the search stopped at its limits ({sol.nodes} nodes, "
        f"{time_limit_s:g} s of search)"
    )
    misses = sol.evaluation.key.floors_missed
    if misses:
        text += f"; this one misses {misses} target(s)"
        if sol.quality_bound is not None:
            text += f"; a plan meeting every target, if there is one, scores at most {sol.quality_bound} quality points"
    elif sol.quality_bound is not None:
        text += (
            f"; no plan that meets every target scores more than {sol.quality_bound} quality points (a proven upper "
            f"bound: the MILP's relaxation, weight sizes for server sets not searched), this one scores "
            f"{sol.evaluation.quality}"
        )
    return text + "; a larger --time-limit may prove it (or give fewer model candidates or quants per role)"


class _SetBound:
    """A lower bound on the key of any plan on {main, second}, from weight sizes alone (no estimate on the
    second server): no failures, each model item at most the better of its best candidate on the main
    server that meets its floor alone and its best (model, quant) whose weights fit the second server's GPU
    memory + RAM at all and could meet the floor there (`could_meet_floor`; the split item: main + second,
    on the GPUs of both and the main server's RAM), the set's cost, no devices. A plan with no failures has
    every role at its floor, and a plan with failures has a larger key than any bound."""

    def __init__(self, stack: Stack, main: Server, cat: Catalog, cache: EstimateCache, split_item: int | None) -> None:
        self.cat = cat
        self.items = stack_items(stack, cat)
        self.split_item = split_item
        main_p = make_problem(stack, [main], cat, cache, mode="concurrent")
        self.main_q: list[int | None] = [
            max((c.quality for c in cs if not below_floor(c.alone_tok_s, self.items[ii].min_tok_s)), default=None)
            if ii != split_item
            else None
            for ii, cs in enumerate(main_p.cands)
        ]
        self.main_cap = _raw_capacity(main, cat)
        self.main_gpus = main.gpu_devices(cat)
        self.main_host = main.host(cat)
        self.main_cost = main.cost_usd
        self.combos = [
            item_combos(ii, it, cat, cache, stack) if it.is_model else [] for ii, it in enumerate(self.items)
        ]

    def item_bounds(self, second: Server) -> list[int]:
        """Per item: the most quality points it can score on {main, second} (unplaced scores 0)."""
        cap = _raw_capacity(second, self.cat)
        gpus = second.gpu_devices(self.cat)
        rates = read_rates(gpus, second.host(self.cat))
        # a split's layers: GPUs of both servers, the rest in main's RAM
        split_rates = read_rates([*self.main_gpus, *gpus], self.main_host)
        out: list[int] = []
        for ii, it in enumerate(self.items):
            if not it.is_model:
                out.append(0)
                continue
            split = ii == self.split_item
            room = cap + self.main_cap if split else cap
            q = max(
                [
                    self.main_q[ii] or 0,
                    *(
                        c.quality
                        for c in self.combos[ii]
                        if c.weight_bytes <= room
                        and (could_meet_floor(c, it.min_tok_s, split_rates if split else rates))
                    ),
                ]
            )
            out.append(max(q, 0))
        return out

    def key(self, second: Server) -> tuple[int, int, int, int]:
        return (0, -sum(self.item_bounds(second)), round((self.main_cost + second.cost_usd) * 100), 0)

    def min_quality(self, second: Server, incumbent: tuple[int, int, int, int] | None) -> list[int] | None:
        """With an incumbent that meets every target (quality Q), a better plan needs quality >= Q, so a
        candidate of item i scoring less than Q − Σ_{j≠i} (bound of j) is in no better plan."""
        if incumbent is None or incumbent[0] != 0:
            return None
        ub = self.item_bounds(second)
        total = sum(ub)
        return [-incumbent[1] - (total - u) for u in ub]


def _raw_capacity(server: Server, cat: Catalog) -> int:
    """GPU memory not reserved + host RAM: no candidate on the server has more weight bytes."""
    return sum(d.available_bytes for d in server.gpu_devices(cat)) + server.host(cat).capacity_bytes


def _split_item(stack: Stack) -> int | None:
    """The role tried as the split one: the first role that stays loaded, in stack order (the presets and the
    README put the big reasoner first)."""
    bases = [r for r in stack.roles if r.share_with is None]  # the model items, in stack_items' order
    return next((i for i, r in enumerate(bases) if r.residency == "always"), None)


def fit_reason(sol: Solution, ii: int) -> Reason:
    """What item `ii` of a solution needs and where it goes: 'the 70B at Q4_K_M with 16k context needs 46.1 GiB;
    two 4090s give 48 GiB of which 2 GiB must stay free: fits with 0.1 GiB to spare', as numbers."""
    p = sol.problem
    c = p.cands[ii][sol.assign[ii]]
    it = p.items[ii]
    counts: dict[str, int] = {}
    for g in (p.slots[s].device.id for s in c.gpu_slots):
        counts[g] = counts.get(g, 0) + 1
    cap = sum(p.slots[s].capacity_bytes for s in c.gpu_slots)
    marg = sum(m for _, m in c.margin)
    on_gpus = sum(b for s, b in c.mem if p.slots[s].is_gpu)
    spare = sum(
        p.slots[s].capacity_bytes - sol.evaluation.used_bytes[s] - sol.evaluation.margin_bytes[s] for s in c.gpu_slots
    )
    return Reason(
        code="fit",
        role=it.name,
        model=c.model_ref,
        quant=c.quant,
        ctx=it.ctx,
        parallel=it.parallel,
        devices=" + ".join(f"{n}x {g}" if n > 1 else g for g, n in counts.items()),
        need_bytes=c.total_bytes,
        capacity_bytes=cap,
        margin_bytes=marg,
        offload_bytes=c.total_bytes - on_gpus if c.uses_cpu and c.gpu_slots else 0,
        spare_bytes=max(0, spare),
        shared=bool(c.gpu_slots) and spare < cap - marg - on_gpus - 1,
    )


def option_reasons(sol: Solution | None, why_not: str = "", sets_left: int = 0, limit_s: float = 0.0) -> list[Reason]:
    """Why an option is what it is, as structured reasons (phrased by planner.report.i18n.why_text)."""
    if sol is None:
        return [Reason(code="no_plan", detail=why_not or "nothing_fits", sets_left=sets_left, limit_s=limit_s)]
    ev = sol.evaluation
    p = sol.problem
    out = [Reason(code="misses", roles=list(ev.failing)) if ev.failing else Reason(code="meets_all")]
    model_items = [i for i, it in enumerate(p.items) if it.is_model and sol.assign[i] >= 0]
    if model_items:
        out.append(fit_reason(sol, max(model_items, key=lambda i: p.cands[i][sol.assign[i]].total_bytes)))
    for ii, rr in ev.roles.items():
        if rr.failures:
            misses = [RoleMiss(code=m.code, value=m.value, limit=m.limit) for m in rr.failures]
            out.append(Reason(code="role_misses", role=p.items[ii].name, misses=misses))
    if p.cost_cents:
        out.append(Reason(code="buys_hardware", cost_usd=p.cost_cents / 100))
    return out


def quality_score(sol: Solution) -> float:
    """Model places and quant tiers of the placed roles, 1.0 = every role at its first model, top tier
    (objective.Points.quality; unplaced roles 0; speed and shortfall left out)."""
    p = sol.problem
    n = sum(1 for it in p.items if it.is_model)
    total = 0
    for ii, ci in enumerate(sol.assign):
        if ci >= 0 and p.items[ii].is_model:
            c = p.cands[ii][ci]
            total += Points(c.preference, c.tier, 0.0).quality
    return round(total / (QUALITY_POINTS * max(1, n)), 4)
