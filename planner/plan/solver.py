"""The search for the best plan of one problem (planner.plan.problem): exact where it can be.

Failing counts and memory only grow as roles are added, so a depth-first branch and bound with the bound
(failures so far + undecided items none of whose still-fitting candidates can meet their target,
−(quality so far + best still-fitting quality of each undecided item), cost, devices so far), started from
a greedy incumbent, is exact; when the failures already equal the incumbent's, each undecided item that can
still meet its targets is bounded by its best candidate that can; identical empty GPUs are tried once. Tests
compare it with brute-force enumeration. A node limit stops very large searches (12 roles × the whole
catalog), and large problems handed a bar that meets every target skip it; `solve` then tries the LP
relaxation, an LP-guided dive and the MILPs of planner.plan.milp, which prove the optimum
within the time limit or leave the best plan found with `Solution.exact = False` and an upper bound on
quality, and the plan says so.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from planner.errors import PlannerError
from planner.plan.contention import page_cache_gbs
from planner.plan.objective import REL_TOL, below_floor
from planner.plan.problem import HOST_DEVICE_WEIGHT, PENDING, UNPLACED, Candidate, Evaluation, Item, Problem, evaluate

DEFAULT_NODE_LIMIT = 50_000  # ~0.6 s of search here; beyond it the LP-guided dive and the MILPs take over (solve)


@dataclass
class Solution:
    problem: Problem
    assign: list[int]
    evaluation: Evaluation
    nodes: int
    exact: bool = True  # False: the node / time limit stopped the search; best found, optimality not proven
    quality_bound: int | None = None  # when not exact: no plan that meets every target scores more (LP)


def _may_meet(it: Item, c: Candidate) -> bool:
    """`c` meets its item's tok/s target alone and its residency rule (a necessary condition)."""
    if below_floor(c.alone_tok_s, it.min_tok_s):
        return False
    return c.resident or it.role is None or it.role.residency != "always"


@dataclass(frozen=True, slots=True)
class SearchCand:
    """A candidate as the search sees it: plain ints, floats and tuples, nothing built in the hot loop (slots:
    attribute reads as fast as the positional tuple this replaces)."""

    ci: int  # its index in the problem's candidate list of its item
    mem: tuple[tuple[int, int, int, bool], ...]  # (slot, bytes, margin that slot keeps free, slot is a GPU)
    tau: tuple[tuple[int, float], ...]  # (slot, seconds of this model's decode step there)
    resident: bool
    step_s: float  # per-slot decode step alone
    file_bytes: int  # model file (0 for a service): the swap-in reads it
    cores: float
    server: int
    layer_slots: tuple[int, ...]  # slots holding its layers (GPUs, and the host with CPU offload)
    quality: int  # its points (objective.Points.total)
    on_gpu: bool
    may_meet: bool  # meets its item's floor and residency alone (a necessary condition)
    servers: tuple[int, ...]  # servers it uses (two for a split)
    touched: tuple[int, ...]  # slots whose running maxima it may change (undo list of push)


def _compile(p: Problem) -> list[list[SearchCand]]:
    out: list[list[SearchCand]] = []
    for ii, cs in enumerate(p.cands):
        it = p.items[ii]
        row: list[SearchCand] = []
        for ci, c in enumerate(cs):
            marg = dict(c.margin)
            mem = tuple(
                (
                    si,
                    b,
                    marg.get(si, 0) if p.slots[si].is_gpu else p.host_margin_bytes[p.slots[si].server],
                    p.slots[si].is_gpu,
                )
                for si, b in c.mem
            )
            layer_slots = (*c.gpu_slots, p.host_slot[c.server]) if c.uses_cpu else c.gpu_slots
            touched = tuple(sorted({si for si, _ in c.mem} | {si for si, _ in c.tau} | {si for si, _ in c.margin}))
            row.append(
                SearchCand(
                    ci=ci,
                    mem=mem,
                    tau=c.tau,
                    resident=c.resident,
                    step_s=c.step_s,
                    file_bytes=c.file_bytes if it.is_model else 0,
                    cores=c.cores,
                    server=c.server,
                    layer_slots=tuple(layer_slots),
                    quality=c.quality,
                    on_gpu=bool(c.gpu_slots),
                    may_meet=_may_meet(it, c) if it.is_model else True,
                    servers=tuple(sorted({c.server, *c.split_servers})),
                    touched=touched,
                )
            )
        row.sort(key=lambda sc: -sc.quality)  # best quality first (stable)
        out.append(row)
    return out


def _guided(row: list[SearchCand], guide: Sequence[float]) -> list[SearchCand]:
    """Candidates in descending order of `guide` (their LP values), quality order among equals."""
    return sorted(row, key=lambda sc: -guide[sc.ci])


def _twins(
    p: Problem,
) -> tuple[list[int], dict[tuple[object, ...], int], list[list[tuple[object, ...]]]]:
    """Identical GPUs (same server, card and free memory) are interchangeable while empty. Returns each
    slot's group (-1: a host or a card without a twin), a lookup (item, everything but the GPU slots,
    GPU slots) -> candidate index, so a candidate on empty twin cards is tried only on the lowest-indexed ones,
    and each candidate's signature for that lookup (empty without twins)."""
    groups: dict[tuple[object, ...], int] = {}
    group = [-1] * len(p.slots)
    members: dict[int, int] = {}
    for si, sl in enumerate(p.slots):
        if not sl.is_gpu:
            continue
        g = groups.setdefault((sl.server, sl.device, sl.capacity_bytes), len(groups))
        group[si] = g
        members[g] = members.get(g, 0) + 1
    group = [g if g >= 0 and members[g] > 1 else -1 for g in group]
    # twins are interchangeable only if swapping them maps the candidates onto candidates: a model split over
    # both cards usually puts different bytes on each (llama.cpp's layer split, the output layer on the last),
    # and its mirror image does not exist, so a small model on the lower card is not the same as on the other
    for g in set(group) - {-1}:
        slots = [si for si, gg in enumerate(group) if gg == g]
        if not all(_swap_closed(p, a, b) for a, b in itertools.pairwise(slots)):
            group = [-1 if gg == g else gg for gg in group]
    lookup: dict[tuple[object, ...], int] = {}
    if all(g < 0 for g in group):
        return group, lookup, []
    sigs = [[_twin_sig(p, c, group) for c in cs] for cs in p.cands]
    for ii, cs in enumerate(p.cands):
        for ci, c in enumerate(cs):
            lookup[(ii, sigs[ii][ci], c.gpu_slots)] = ci
    return group, lookup, sigs


def _swap_closed(p: Problem, a: int, b: int) -> bool:
    """Does swapping GPU slots `a` and `b` map every candidate of every item onto a candidate of that item?"""
    swap = {a: b, b: a}

    def sig(c: Candidate, m: dict[int, int]) -> tuple[object, ...]:
        return (*_search_sig(c, lambda si: m.get(si, si)), tuple(sorted(m.get(si, si) for si in c.gpu_slots)))

    for cs in p.cands:
        touching = [c for c in cs if a in c.gpu_slots or b in c.gpu_slots]
        for c in touching:  # the usual way out first: a model on both cards with unequal parts is its own mirror
            if a in c.gpu_slots and b in c.gpu_slots:
                for pairs in (c.mem, c.margin, c.tau):
                    on = dict(pairs)
                    if on.get(a) != on.get(b):
                        return False
        have = {sig(c, {}) for c in touching}
        if any(sig(c, swap) not in have for c in touching):
            return False
    return True


def _twin_sig(p: Problem, c: Candidate, group: Sequence[int]) -> tuple[object, ...]:
    """Everything the search sees of `c` with its twin GPU slots replaced by their group."""
    return _search_sig(c, lambda si: ("g", group[si]) if group[si] >= 0 else si)


def _search_sig(c: Candidate, slot: Callable[[int], object]) -> tuple[object, ...]:
    """Everything the search sees of `c` but its GPU slots, with memory pools renamed by `slot`."""

    def renamed(pairs: Sequence[tuple[int, object]]) -> tuple[tuple[object, object], ...]:
        return tuple(sorted(((slot(si), v) for si, v in pairs), key=repr))

    return (
        c.model_ref,
        c.quant,
        c.engine,
        c.server,
        c.uses_cpu,
        c.split_servers,
        c.resident,
        c.quality,
        c.step_s,
        c.file_bytes,
        c.cores,
        renamed(c.mem),
        renamed(c.margin),
        renamed(c.tau),
    )


# When the branch and bound stops at its node limit (large stacks: many roles × candidates × servers), the
# MILP (planner.plan.milp, HiGHS) gets the rest of this long to prove the optimum or find a better plan
# (`solve(time_limit_s=...)`, `agiplan recommend --time-limit`).
MILP_TIME_LIMIT_S = 60.0
# Problems with at least this many candidates, given a bar that meets every target, are first tested by the
# zero-failure LP relaxation with the bar's quality row: infeasible proves that nothing here beats the bar
# (purchasable second servers that cannot match the best set so far). Smaller ones go to the branch and bound
# at once (it settles them faster than the LP is built).
LP_SCREEN_CANDIDATES = 300
# Nodes of the dive that follows the LP relaxation for a plan meeting every target (deterministic: a node
# budget, not a time budget); ~0.45 s on the 12-role bench here.
GUIDED_NODE_LIMIT = 20_000
# Seconds of HiGHS the zero-failure LP relaxation always gets (it takes ~0.05 s of them on the 12-role bench):
# the LP-guided dive that follows needs its values, and the dive is node-limited, so a short limit is overrun by
# well under a second for a far better first plan.
LP_MIN_S = 0.5
# Of `solve`'s time limit, the branch and bound may take this share before the LP-guided search takes over (the
# node limit usually comes first: 50,000 nodes take ~0.6 s here, so only limits under ~2 s are affected).
BRANCH_AND_BOUND_SHARE = 0.3


def solve(
    p: Problem,
    *,
    incumbent: tuple[int, int, int, int] | None = None,
    node_limit: int = DEFAULT_NODE_LIMIT,
    time_limit_s: float = MILP_TIME_LIMIT_S,
    tolerance_points: int = 0,
) -> Solution | None:
    """The best assignment strictly better than `incumbent` (or None), proven optimal whenever possible.
    With `tolerance_points`, the MILP over plans that miss no target stops once its plan is within that many
    quality points of the optimum (milp.solve_milp: HiGHS's gap): such a plan comes back unproven, with its bound.

    The branch and bound (`branch_and_bound`) proves small and medium problems (every preset) in well under a
    second. Given a bar that meets every target, a problem of LP_SCREEN_CANDIDATES or more goes straight to the
    zero-failure search (a better plan must meet every target too). When the branch and bound stops at its
    node limit, the plans that miss no target are searched next
    (`_solve_zero_failures`: the LP relaxation, a dive that follows it for a first such plan, then the MILP
    with that plan as the bar; on the 12-role bench this settles the question in ~9 s). Otherwise the MILP
    relaxation of `evaluate` (planner.plan.milp) runs with the best plan so far as the bar to beat: an
    infeasible MILP proves that plan optimal; an optimal MILP whose assignment evaluate() scores at the MILP's
    own value is a proven, better optimum. The MILPs share `time_limit_s`; past it the best plan found is
    returned flagged inexact, with the LP's bound on the quality of any plan that meets every target.
    """
    deadline = time.monotonic() + time_limit_s
    if incumbent is not None and incumbent[0] == 0 and sum(map(len, p.cands)) >= LP_SCREEN_CANDIDATES:
        # a plan beating a bar that meets every target meets them all too: the zero-failure search decides (its
        # LP relaxation dismisses most purchasable sets that cannot beat the best one so far in ~0.02 s)
        zero = _solve_zero_failures(p, incumbent, deadline, tolerance_points)
        if zero.settled:  # the plan found (a dive's, maybe) is optimal, or nothing beats the bar
            return None if zero.solution is None else replace(zero.solution, exact=True, quality_bound=None)
        if zero.solution is not None:
            return replace(zero.solution, exact=False, quality_bound=zero.quality_bound)
        raise SearchLimitError(
            f"the placement search stopped after {time_limit_s:g} s of MILP without a plan better than the one in "
            "hand; give fewer model candidates or quants per role, or a larger --time-limit.",
            zero.quality_bound,
        )
    try:
        # the branch and bound gets at most BRANCH_AND_BOUND_SHARE of the time limit: under a short limit the LP
        # relaxation and its guided dive, which follow, find far better first plans than more nodes do
        sol = branch_and_bound(
            p,
            incumbent=incumbent,
            node_limit=node_limit,
            deadline=time.monotonic() + BRANCH_AND_BOUND_SHARE * time_limit_s,
        )
    except PlannerError:  # the node limit came before any plan
        sol = None
    else:
        if sol is None or sol.exact:
            return sol
    from planner.plan.milp import beating_value, solve_milp

    bar = sol.evaluation.key if sol is not None else incumbent
    nodes = sol.nodes if sol is not None else node_limit
    zero = _solve_zero_failures(p, bar, deadline, tolerance_points)
    if zero.solution is not None and (sol is None or zero.solution.evaluation.key < sol.evaluation.key):
        sol = replace(zero.solution, nodes=nodes + zero.solution.nodes, quality_bound=zero.quality_bound)
        bar = sol.evaluation.key
    nodes += zero.nodes
    if tolerance_points and not zero.settled and sol is not None:
        # a first pass: the plan missing no target within the tolerance of the best such plan (better than any
        # plan that misses one), or, with none found, the best plan in hand; the exact pass proves the rest (12
        # named roles + $4,000: the first set has no plan meeting every floor, and proving its best plan with
        # failures took 4.6 s of the 7.5 s CPU to the first plan within tolerance)
        return replace(sol, nodes=nodes, exact=False, quality_bound=zero.quality_bound)
    if zero.settled:
        # no plan without failures beats the bar, and any plan with one is worse: the bar is optimal
        return None if sol is None else replace(sol, nodes=nodes, exact=True, quality_bound=None)
    ans = solve_milp(p, incumbent=bar, time_limit_s=max(0.0, deadline - time.monotonic()))
    nodes += ans.nodes
    q_bound = _lower(zero.quality_bound, ans.quality_bound())
    if ans.status == "feasible" and ans.assign is not None:
        ev = evaluate(p, ans.assign)
        if ev.memory_ok and (sol is None or ev.key < sol.evaluation.key):
            sol = Solution(p, list(ans.assign), ev, nodes, False)
    if ans.status == "infeasible":
        if sol is None:
            return None  # nothing beats `incumbent`
        return replace(sol, nodes=nodes, exact=True, quality_bound=None)
    if ans.status == "optimal" and ans.objective is not None:
        if ans.assign is not None:
            ev = evaluate(p, ans.assign)
            if ev.memory_ok and (bar is None or ev.key < bar):
                proven = ans.weights.value(ev.key) <= ans.objective + 0.5
                return Solution(p, list(ans.assign), ev, nodes, proven, None if proven else q_bound)
        if sol is not None and ans.objective >= ans.weights.value(sol.evaluation.key) - 0.5:
            # the MILP's optimum (a lower bound) is the best plan's own value: that plan is optimal
            return replace(sol, nodes=nodes, exact=True, quality_bound=None)
        if sol is None and bar is not None and ans.objective > beating_value(ans.weights, bar, p) + 0.5:
            # the optimum (a lower bound) scores worse than any plan beating the bar can (a bar from another
            # server set: same failures and quality at a higher cost is no better)
            return None
    if sol is None:
        what = "a plan better than the one in hand" if incumbent is not None else "a plan"
        raise SearchLimitError(
            f"the placement search stopped after {node_limit} nodes and {time_limit_s:g} s of MILP without {what}; "
            "give fewer model candidates or quants per role, or a larger --time-limit.",
            q_bound,
        )
    return replace(sol, nodes=nodes, exact=False, quality_bound=q_bound)


class SearchLimitError(PlannerError):
    """The node and time limits came before the search found a plan beating its bar (any plan, without one)
    or proved there is none. `quality_bound`: no plan of that problem meeting every target scores more (None:
    unknown)."""

    def __init__(self, message: str, quality_bound: int | None) -> None:
        super().__init__(message)
        self.quality_bound = quality_bound


def _lower(a: int | None, b: int | None) -> int | None:
    """The tighter of two upper bounds on quality (either may be unknown)."""
    return b if a is None else a if b is None else min(a, b)


@dataclass
class _ZeroFailures:
    """What the search over plans that miss no target established."""

    solution: Solution | None  # the best such plan found that beats the bar (proven optimal when `settled`)
    settled: bool  # the question is answered: `solution` (or the bar) is optimal
    nodes: int
    quality_bound: int | None  # no plan meeting every target scores more (LP relaxation), when known


def _solve_zero_failures(
    p: Problem, bar: tuple[int, int, int, int] | None, deadline: float, tolerance_points: int = 0
) -> _ZeroFailures:
    """Plans that miss no target, on the candidates that meet their item's targets alone (no other candidate
    is in such a plan; the rest are left out, about a third on the 12-role bench): with a bar that meets every
    target, first the LP relaxation with the bar's quality row (infeasible: nothing beats the bar, settled);
    the LP relaxation (its bound on quality; infeasible: no such plan), a dive that follows the LP values for a
    first such plan, then the MILP until `deadline`. Settled when the MILP proves its optimum, or proves that
    no such plan beats `bar` while `bar` itself misses no target."""
    from planner.plan.milp import solve_milp

    zbar = bar if bar is not None and bar[0] == 0 else None
    zp, keep = _zero_failure_problem(p)
    if zp is None:
        return _ZeroFailures(None, zbar is not None, 0, None)  # an item fails in every plan

    def lift(assign: Sequence[int]) -> list[int]:
        return [keep[ii][ci] if ci >= 0 else ci for ii, ci in enumerate(assign)]

    # with a bar, the relaxation keeps its quality row: infeasible proves that nothing beats the bar (~0.02 s
    # where the search would spend seconds); feasible, its bound still holds for every plan
    # the relaxation gets at least LP_MIN_S even past the deadline: without it there is no dive, and the plan of a
    # short --time-limit is the greedy one (12 named roles + $6,000, --time-limit 1: 2,906 points below)
    lp_s = max(LP_MIN_S, deadline - time.monotonic())
    lp = solve_milp(zp, incumbent=zbar, max_failures=0, relax=True, time_limit_s=lp_s)
    if lp.status == "infeasible":
        return _ZeroFailures(None, zbar is not None, 0, None)
    q_bound = lp.quality_bound()
    found: Solution | None = None
    nodes = 0
    if lp.values is not None:
        try:
            dive = branch_and_bound(zp, incumbent=zbar, node_limit=GUIDED_NODE_LIMIT, max_failures=0, guide=lp.values)
        except PlannerError:  # no such plan within the dive's nodes
            dive = None
            nodes += GUIDED_NODE_LIMIT
        else:
            if dive is None:  # the dive was exhaustive: nothing meeting every target beats zbar
                return _ZeroFailures(None, zbar is not None, nodes, q_bound)
            nodes += dive.nodes
        if dive is not None:
            assign = lift(dive.assign)
            found = Solution(p, assign, evaluate(p, assign), dive.nodes, dive.exact, q_bound)
            zbar = found.evaluation.key
            if dive.exact:
                return _ZeroFailures(found, True, nodes, q_bound)
    ans = solve_milp(
        zp,
        incumbent=zbar,
        time_limit_s=max(0.0, deadline - time.monotonic()),
        max_failures=0,
        gap_points=tolerance_points,
    )
    nodes += ans.nodes
    if ans.status == "infeasible":
        # nothing meeting every target beats zbar: settled if zbar (found, or the bar) misses no target
        return _ZeroFailures(found, zbar is not None, nodes, q_bound)
    q_bound = _lower(q_bound, ans.quality_bound())
    if ans.status == "feasible" and ans.assign is not None:
        # the time limit stopped HiGHS with a plan in hand: keep it if it is really better
        assign = lift(ans.assign)
        ev = evaluate(p, assign)
        if ev.memory_ok and ev.key.floors_missed == 0 and (zbar is None or ev.key < zbar):
            found = Solution(p, assign, ev, ans.nodes, False, q_bound)
    if found is not None:
        found = replace(found, quality_bound=q_bound)
    if ans.status != "optimal" or ans.assign is None or ans.objective is None:
        return _ZeroFailures(found, False, nodes, q_bound)
    assign = lift(ans.assign)
    ev = evaluate(p, assign)
    if not ev.memory_ok or ev.key.floors_missed != 0 or ans.weights.value(ev.key) > ans.objective + 0.5:
        return _ZeroFailures(found, False, nodes, q_bound)
    if zbar is not None and ev.key >= zbar:
        return _ZeroFailures(found, True, nodes, q_bound)
    return _ZeroFailures(Solution(p, assign, ev, ans.nodes, True), True, nodes, q_bound)


def _zero_failure_problem(p: Problem) -> tuple[Problem | None, list[list[int]]]:
    """`p` restricted to the candidates that meet their item's targets alone (no other candidate is in a plan
    that misses no target), and each kept candidate's index in `p`; None when some item keeps none."""
    keep: list[list[int]] = []
    for it, cs in zip(p.items, p.cands, strict=True):
        idx = [ci for ci, c in enumerate(cs) if not it.is_model or _may_meet(it, c)]
        if not idx:
            return None, []
        keep.append(idx)
    return replace(p, cands=[[cs[ci] for ci in idx] for cs, idx in zip(p.cands, keep, strict=True)]), keep


def branch_and_bound(
    p: Problem,
    *,
    incumbent: tuple[int, int, int, int] | None = None,
    node_limit: int = DEFAULT_NODE_LIMIT,
    max_failures: int | None = None,
    guide: Sequence[Sequence[float]] | None = None,
    deadline: float | None = None,
) -> Solution | None:
    """Exact branch and bound; returns the best assignment strictly better than `incumbent` (or None).

    Bound at a node (all parts only grow as items are added): failures of the placed items (tok/s under
    the current load, residency; swap-in when it fails at any load) + one per undecided item none of whose
    still-fitting candidates can still meet its targets; quality: the placed items' + each undecided
    item's best still-fitting candidate — the best still-fitting candidate that can still meet its targets
    when the failures already equal the incumbent's (any further failure makes the plan worse); cost; the
    devices used so far. Identical empty GPUs are interchangeable (only the lowest-indexed are tried).
    Leaves are scored by `evaluate`, so the answer's key is exactly evaluate()'s.

    `max_failures`: only plans missing at most that many targets count (a node is pruned as soon as it must
    miss more). `guide` (a number per candidate, e.g. its value in the LP relaxation): children are tried in
    its descending order instead of by quality — a dive that follows the relaxation; the bound is unchanged.
    `deadline` (time.monotonic()): stops the search like the node limit does once passed (checked every 1,024
    nodes).
    """
    n = len(p.items)
    f_limit = n + 1 if max_failures is None else max_failures
    ns = len(p.slots)
    comp = _compile(p)
    children = comp
    if guide is not None:
        children = [_guided(row, g) for row, g in zip(comp, guide, strict=True)]
    group, twin_lookup, twin_sigs = _twins(p)
    group_slots: dict[int, list[int]] = {}
    for si, g in enumerate(group):
        if g >= 0:
            group_slots.setdefault(g, []).append(si)
    # services first (small, few choices), then models largest first
    order = sorted(range(n), key=lambda i: (p.items[i].is_model, -max((c.total_bytes for c in p.cands[i]), default=0)))
    cap = [sl.capacity_bytes for sl in p.slots]
    is_gpu = [sl.is_gpu for sl in p.slots]
    host_bw = [p.slots[h].device.bandwidth_gbs for h in p.host_slot]
    core_cap = p.cores
    cost = p.cost_cents
    req = p.require_server
    # per item: target step (s), swap-in limit (s), residency must be always
    t_max: list[float | None] = []
    swap_max: list[float | None] = []
    always: list[bool] = []
    is_model: list[bool] = []
    for it in p.items:
        is_model.append(it.is_model)
        t_max.append(it.min_tok_s * (1 - REL_TOL) if it.min_tok_s is not None else None)
        swap_max.append(
            it.role.max_swap_in_s * (1 + REL_TOL) if it.role and it.role.max_swap_in_s is not None else None
        )
        always.append(bool(it.role and it.role.residency == "always"))

    res_mem = [0] * ns
    od_mem = [0] * ns
    margin = [0] * ns
    res_tau = [0.0] * ns
    od_tau = [0.0] * ns
    touch = [0] * ns
    gpu_ref = [0] * ns
    cores = [0.0] * len(p.servers)
    od_files = [0] * len(p.servers)
    server_use = [0] * len(p.servers)
    assign = [PENDING] * n
    placed: list[tuple[int, SearchCand]] = []
    quality = 0
    unplaced = 0
    devs = 0
    best_key = incumbent
    best_assign: list[int] | None = None
    nodes = 0

    def swap_rate_best(c: SearchCand, extra_file: int) -> float:
        s = c.server
        hs = p.host_slot[s]
        free = cap[hs] - (res_mem[hs] + od_mem[hs]) - p.host_margin_bytes[s]
        rate = p.disk_gbs[s]
        if free >= od_files[s] + extra_file:
            rate = max(rate, page_cache_gbs(host_bw[s], c.on_gpu))
        return rate

    def failures() -> int:
        """A lower bound on the placed items' failures in any completion (exact for tok/s and residency)."""
        total = unplaced
        for ii, c in placed:
            if not is_model[ii]:
                continue
            step = c.step_s
            if c.resident:
                for si, t in c.tau:
                    step += res_tau[si] - t + od_tau[si]
            else:
                for si, _t in c.tau:
                    step += res_tau[si]
            tm = t_max[ii]
            if tm is not None and (1.0 / step if step > 0 else 0.0) < tm:
                total += 1
            if not c.resident:
                if always[ii]:
                    total += 1
                else:
                    sm = swap_max[ii]
                    if sm is not None and c.file_bytes / (swap_rate_best(c, 0) * 1e9) > sm:
                        total += 1
        return total

    def fits(c: SearchCand) -> bool:
        for si, b, m, g in c.mem:
            extra = (m if m > margin[si] else margin[si]) if g else m
            if c.resident:
                tot = res_mem[si] + b + od_mem[si]
            else:
                o = od_mem[si]
                tot = res_mem[si] + (b if b > o else o)
            if tot + extra > cap[si]:
                return False
        return cores[c.server] + c.cores <= core_cap[c.server]

    def meets(c: SearchCand, ii: int) -> bool:
        """Could `c` still meet its item's targets? Load only grows, so a miss now is a miss later."""
        if not c.may_meet:
            return False
        tm = t_max[ii]
        if tm is not None:
            step = c.step_s
            if c.resident:
                for si, _t in c.tau:
                    step += res_tau[si] + od_tau[si]
            else:
                for si, _t in c.tau:
                    step += res_tau[si]
            if step > 0 and 1.0 / step < tm:
                return False
        if not c.resident:
            sm = swap_max[ii]
            if sm is not None and c.file_bytes / (swap_rate_best(c, c.file_bytes) * 1e9) > sm:
                return False
        return True

    def canonical(ii: int, c: SearchCand) -> bool:
        """False when the same candidate on lower-indexed empty twin GPUs exists (a mirror image)."""
        cand = p.cands[ii][c.ci]
        gs = cand.gpu_slots
        if not gs:
            return True
        mapped: list[int] = []
        taken: set[int] = set()
        for si in gs:
            g = group[si]
            if g < 0 or touch[si]:
                mapped.append(si)
                continue
            for sj in group_slots[g]:
                if not touch[sj] and sj not in taken:
                    mapped.append(sj)
                    taken.add(sj)
                    break
        t = (mapped[0],) if len(mapped) == 1 else tuple(sorted(mapped))
        if t == gs:
            return True
        return (ii, twin_sigs[ii][c.ci], t) not in twin_lookup

    def push(ii: int, c: SearchCand) -> list[tuple[int, int, int, float]]:
        nonlocal quality, devs
        undo = [(si, od_mem[si], margin[si], od_tau[si]) for si in c.touched]
        resident = c.resident
        for si, b, m, g in c.mem:
            if resident:
                res_mem[si] += b
            elif b > od_mem[si]:
                od_mem[si] = b
            if g and m > margin[si]:
                margin[si] = m
        for si, t in c.tau:
            if resident:
                res_tau[si] += t
            elif t > od_tau[si]:
                od_tau[si] = t
        for si in c.touched:
            touch[si] += 1
        cores[c.server] += c.cores
        if not resident:
            od_files[c.server] += c.file_bytes
        for s in c.servers:
            server_use[s] += 1
        for si in c.layer_slots:
            gpu_ref[si] += 1
            if gpu_ref[si] == 1:
                devs += 1 if is_gpu[si] else HOST_DEVICE_WEIGHT
        quality += c.quality
        placed.append((ii, c))
        assign[ii] = c.ci
        return undo

    def pop(ii: int, c: SearchCand, undo: list[tuple[int, int, int, float]]) -> None:
        nonlocal quality, devs
        assign[ii] = PENDING
        placed.pop()
        quality -= c.quality
        for si in c.layer_slots:
            gpu_ref[si] -= 1
            if gpu_ref[si] == 0:
                devs -= 1 if is_gpu[si] else HOST_DEVICE_WEIGHT
        for s in c.servers:
            server_use[s] -= 1
        cores[c.server] -= c.cores
        if c.resident:
            for si, b, _m, _g in c.mem:
                res_mem[si] -= b
            for si, t in c.tau:
                res_tau[si] -= t
        else:
            od_files[c.server] -= c.file_bytes
        for si, o, m, t in undo:
            od_mem[si] = o
            margin[si] = m
            od_tau[si] = t
            touch[si] -= 1

    first_fit = [[0] * n for _ in range(n + 1)]  # per depth, per item: see bound()
    first_meet = [[0] * n for _ in range(n + 1)]

    def bound(k: int) -> tuple[int, int, int, int] | None:
        """Lower bound on the key of any completion; None when it cannot beat the incumbent."""
        f = failures()
        f_cap = min(best_key[0] if best_key is not None else n + 1, f_limit)
        if f > f_cap:
            return None
        q_any = 0
        q_meet = 0
        # fitting and meeting only get harder deeper in the tree (loads only grow), so each undecided item's
        # scan resumes where the parent's stopped: its first fitting, and first fitting-and-meeting, candidate
        src_a, src_m = first_fit[k], first_meet[k]
        dst_a, dst_m = first_fit[k + 1], first_meet[k + 1]
        for j in range(k, n):
            jj = order[j]
            row = comp[jj]
            end = len(row)
            i = src_a[jj]
            while i < end and not fits(row[i]):
                i += 1
            dst_a[jj] = i
            m = max(i, src_m[jj])
            # row[i] fits (the scan above stopped there): only the candidates past it need the test
            while m < end and not ((m == i or fits(row[m])) and meets(row[m], jj)):
                m += 1
            dst_m[jj] = m
            qa: int | None = row[i].quality if i < end else None
            qm: int | None = row[m].quality if m < end else None
            q_any += max(qa or 0, 0)  # unplaced scores 0 (a candidate far down a long list may score less)
            if qm is None:
                f += 1
                q_meet += max(qa or 0, 0)
                if f > f_cap:
                    return None
            else:
                q_meet += qm
        lb = (f, -(quality + (q_meet if best_key is not None and f == best_key[0] else q_any)), cost, devs)
        if best_key is not None and lb >= best_key:
            return None
        return lb

    def rec(k: int) -> None:
        nonlocal best_key, best_assign, nodes, unplaced
        nodes += 1
        if nodes > node_limit or (deadline is not None and not nodes % 1024 and time.monotonic() > deadline):
            raise _NodeLimit
        if k == n:
            if req is not None and not server_use[req]:
                return
            ev = evaluate(p, assign)
            if ev.memory_ok and (best_key is None or ev.key < best_key) and ev.key.floors_missed <= f_limit:
                best_key = ev.key
                best_assign = list(assign)
            return
        if bound(k) is None:
            return
        ii = order[k]
        # children: candidates that fit, those that can still meet their targets first (quality order kept)
        meeting: list[SearchCand] = []
        rest: list[SearchCand] = []
        for c in children[ii]:
            if not fits(c) or (twin_lookup and not canonical(ii, c)):
                continue
            (meeting if meets(c, ii) else rest).append(c)
        for c in (*meeting, *rest):
            undo = push(ii, c)
            rec(k + 1)
            pop(ii, c, undo)
        assign[ii] = UNPLACED
        unplaced += 1
        rec(k + 1)
        unplaced -= 1
        assign[ii] = PENDING

    def greedy() -> None:
        """A first incumbent: items in order, each taking the fitting choice that leaves the fewest failures
        among the placed items (then the best quality). Only a starting point for the exact search."""
        nonlocal best_key, best_assign, unplaced
        taken: list[tuple[int, SearchCand | None, list[tuple[int, int, int, float]]]] = []
        for ii in (order[k] for k in range(n)):
            pick: tuple[tuple[int, int], SearchCand | None] = ((failures() + 1, 0), None)
            for c in comp[ii]:
                if not fits(c):
                    continue
                undo = push(ii, c)
                score = (failures(), -c.quality)
                pop(ii, c, undo)
                if score < pick[0]:
                    pick = (score, c)
            chosen = pick[1]
            if chosen is None:
                assign[ii] = UNPLACED
                unplaced += 1
                taken.append((ii, None, []))
            else:
                taken.append((ii, chosen, push(ii, chosen)))
        ev = evaluate(p, assign)
        if ev.memory_ok and (best_key is None or ev.key < best_key) and ev.key.floors_missed <= f_limit:
            best_key = ev.key
            best_assign = list(assign)
        for ii, done, undo in reversed(taken):
            if done is None:
                unplaced -= 1
                assign[ii] = PENDING
            else:
                pop(ii, done, undo)

    exact = True
    greedy()
    try:
        rec(0)
    except _NodeLimit:
        exact = False
    if best_assign is None:
        if not exact:
            raise PlannerError(
                f"the placement search stopped after {node_limit} nodes without a plan; give fewer model candidates "
                "or quants per role."
            )
        return None
    return Solution(p, best_assign, evaluate(p, best_assign), nodes, exact)


class _NodeLimit(Exception):
    pass
