"""The placement problem as a mixed-integer linear program (scipy.optimize.milp, HiGHS): a relaxation of
`planner.plan.problem.evaluate` whose optimum, when evaluate() scores the MILP's assignment the same, is a
proof of optimality.

Variables: x[c] ∈ {0, 1} per candidate c of each item, u[i] ∈ [0, 1] (item unplaced; Σ_c x[c] + u[i] = 1);
f[i] ∈ {0, 1}: item i misses its tok/s target; w[i] ≥ 0: its swap-in target; pc[s] ∈ {0, 1}: server s's
free RAM holds every on-demand model file (page-cache rate); per memory pool d: OM[d] ≥ the largest on-demand
usage, MG[d] ≥ the largest margin, OT[d] ≥ the largest on-demand decode time τ, y[d] ∈ [0, 1] holds layers.

Rows (one choice per item, so "the largest over candidates" is bounded by each item's Σ_c coef·x[c]):
- memory: Σ_resident b·x + OM[d] + MG[d] (+ the host margin) ≤ capacity of d;
- cores per server; the required server hosts something;
- tok/s, per item i and group G of its candidates with the same devices S and residency: step time
  t_c + Σ_{d∈S} (R[d] − τ_c,d + OT[d]) ≤ T_i when x[c] = 1 and f[i] = 0, where R[d] = Σ_resident τ·x
  (on-demand c: t_c + Σ_{d∈S} R[d]), written with one big M for the whole group:
  Σ_{d∈S} (R[d] + OT[d]) + Σ_{c∈G} (M − a_c)·x[c] − M·f[i] ≤ M with a_c = T_i − t_c + Σ_{d∈S} τ_c,d;
- swap-in: pc[s] = 1 only when host RAM − resident − on-demand − margin ≥ Σ on-demand files on s (big M);
  w[i] ≥ Σ_{c on s that miss the limit from disk but not from the page cache} x[c] − pc[s].

Objective (lexicographic as one weighted sum of integers): W_f·failures − W_q·quality + devices, with W_q
greater than the largest device count and W_f greater than W_q × the quality range, so the weighted order
is the key's order (the cost is the problem's constant).

Why a relaxation rather than exact: thresholds are compared in floating point with HiGHS's tolerances, so
each target gets a tiny slack in the MILP's favour (1e-7 relative), and a page cache slower than the disk
is taken as the disk's rate. The MILP's optimum is therefore a lower bound on evaluate()'s best key; the
caller (`solver.solve`) accepts its assignment as proven optimal only when evaluate() gives it that key.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from planner.plan.contention import page_cache_gbs
from planner.plan.objective import REL_TOL, floor_step_s
from planner.plan.problem import HOST_DEVICE_WEIGHT, UNPLACED, Candidate, Problem
from planner.units import GIB

_DISP = False
TARGET_SLACK = 1e-7  # relative: the MILP's targets are this much looser than evaluate()'s (relaxation)
MEMORY_SLACK_GIB = 1e-6  # ~1 KiB in the relaxation's favour on every memory row

Status = Literal["optimal", "feasible", "infeasible", "unknown"]  # feasible: the time limit came first


@dataclass(frozen=True)
class LexWeights:
    """Weights turning the key (failures, −quality, cost, devices) of one problem into one integer."""

    failure: int
    quality: int

    def value(self, key: tuple[int, int, int, int]) -> int:
        return self.failure * key[0] + self.quality * key[1] + key[3]


@dataclass(frozen=True)
class MilpAnswer:
    status: Status
    assign: list[int] | None  # candidate index per item, or UNPLACED (-1)
    objective: float | None  # the weighted optimum (a lower bound on evaluate()'s best, weighted)
    weights: LexWeights
    nodes: int
    values: list[list[float]] | None = None  # with relax=True: each candidate's value in the LP optimum
    bound: float | None = None  # proven lower bound on the weighted objective (LP / MILP optimum, or HiGHS's dual)

    def quality_bound(self) -> int | None:
        """No plan that meets every target (and could beat the incumbent given) scores more quality points: such
        a plan's weighted value −W_q·quality + devices is ≥ `bound`, with devices < W_q, so quality ≤
        −bound / W_q + 1 − 1 / W_q."""
        if self.bound is None or not math.isfinite(self.bound):
            return None
        w_q = self.weights.quality
        return math.floor(-self.bound / w_q + 1 - 1 / w_q + 1e-6)


def beating_value(weights: LexWeights, incumbent: tuple[int, int, int, int], p: Problem) -> int:
    """The largest weighted value (failures, −quality, devices) a plan of `p` can have and still beat
    `incumbent` (a key from this or another server set). With its failures: a cheaper set may match its
    quality, the same cost must also use fewer devices, a dearer set must score more. With fewer failures,
    any quality `p` can score (down to its lowest): the bar's quality may lie outside `p`'s range (a roomier
    set's), where the weights no longer order failures before quality."""
    fails, neg_quality, cost_cents, _ = incumbent
    w_f, w_q = weights.failure, weights.quality
    n_dev = w_q - 1  # devices < W_q
    if p.cost_cents == cost_cents:
        same = weights.value(incumbent) - 1
    else:
        same = w_f * fails + w_q * neg_quality + n_dev - (w_q if p.cost_cents > cost_cents else 0)
    if fails == 0:
        return same
    lowest_quality = sum(min([0, *(c.quality for c in cs)]) for cs in p.cands)
    return max(same, w_f * (fails - 1) - w_q * lowest_quality + n_dev)


def lex_weights(p: Problem) -> LexWeights:
    n_dev = sum(1 if sl.is_gpu else HOST_DEVICE_WEIGHT for sl in p.slots)
    q_range = 0
    for cs in p.cands:
        qs = [c.quality for c in cs]
        q_range += max([0, *qs]) - min([0, *qs])
    w_q = n_dev + 1
    return LexWeights(failure=w_q * q_range + n_dev + 1, quality=w_q)


class _Rows:
    """Sparse rows lb ≤ Σ a·v ≤ ub collected as COO triplets."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []

    def add(self, coefs: dict[int, float], lb: float, ub: float) -> None:
        row = len(self.lb)
        for col, a in coefs.items():
            if a != 0.0:
                self.r.append(row)
                self.c.append(col)
                self.v.append(a)
        self.lb.append(lb)
        self.ub.append(ub)


def solve_milp(
    p: Problem,
    *,
    incumbent: tuple[int, int, int, int] | None = None,
    time_limit_s: float = 30.0,
    max_failures: int | None = None,
    relax: bool = False,
    gap_points: int = 0,
) -> MilpAnswer:
    """Optimal assignment of the relaxation (see the module docstring), restricted to plans that could beat
    `incumbent` (no more failures; with none, at least its quality) and to at most `max_failures` missed
    targets: an optimum above `beating_value(incumbent)` proves that nothing here beats it. `status`
    "infeasible": no such plan. With `relax`, the linear relaxation only (every variable continuous, ~0.05 s
    on the 12-role bench): its objective bounds the MILP's and `values` guide a search. With `gap_points`, HiGHS
    stops once its plan is within that many quality points of its bound (an absolute gap of W_q per point):
    the answer is "optimal" only when the bound meets the plan's value, else "feasible" with that bound."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    weights = lex_weights(p)
    n_items = len(p.items)
    ns = len(p.slots)
    n_srv = len(p.servers)
    inf = float("inf")

    obj: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    integ: list[int] = []

    def var(cost: float, lb: float, ub: float, integer: bool) -> int:
        obj.append(cost)
        lo.append(lb)
        hi.append(ub)
        integ.append(1 if integer else 0)
        return len(obj) - 1

    # ---------------------------------------------------------------- candidate and item variables
    fail_terms: dict[int, float] = {}  # column -> failures it adds (for the incumbent cut)
    qual_terms: dict[int, float] = {}
    x: list[list[int]] = []
    for ii, cs in enumerate(p.cands):
        it = p.items[ii]
        row: list[int] = []
        for c in cs:
            fixed = 0
            if it.is_model and not c.resident and it.role is not None:
                if it.role.residency == "always":
                    fixed += 1
                elif it.role.max_swap_in_s is not None and _swap_fails(p, ii, c, page_cache=True):
                    fixed += 1  # misses the limit even from the page cache (and from disk: see _swap_fails)
            col = var(weights.failure * fixed - weights.quality * c.quality, 0, 1, True)
            if fixed:
                fail_terms[col] = fixed
            if c.quality:
                qual_terms[col] = c.quality
            row.append(col)
        x.append(row)
    u = [var(weights.failure, 0, 1, False) for _ in range(n_items)]
    for col in u:
        fail_terms[col] = 1
    f: list[int | None] = [
        var(weights.failure, 0, 1, True) if it.is_model and it.min_tok_s is not None and p.cands[ii] else None
        for ii, it in enumerate(p.items)
    ]
    for fcol in f:
        if fcol is not None:
            fail_terms[fcol] = 1
    om = [var(0, 0, inf, False) for _ in range(ns)]
    mg = [var(0, 0, inf, False) for _ in range(ns)]
    ot = [var(0, 0, inf, False) for _ in range(ns)]
    y = [var(1 if sl.is_gpu else HOST_DEVICE_WEIGHT, 0, 1, False) for sl in p.slots]

    rows = _Rows()
    # one choice per item
    for ii in range(n_items):
        rows.add({**{col: 1.0 for col in x[ii]}, u[ii]: 1.0}, 1.0, 1.0)

    # ---------------------------------------------------------------- memory, margins, devices, cores
    res_mem: list[dict[int, float]] = [{} for _ in range(ns)]
    for ii, cs in enumerate(p.cands):
        od: list[dict[int, float]] = [{} for _ in range(ns)]
        mgi: list[dict[int, float]] = [{} for _ in range(ns)]
        oti: list[dict[int, float]] = [{} for _ in range(ns)]
        dev: list[dict[int, float]] = [{} for _ in range(ns)]
        for c, col in zip(cs, x[ii], strict=True):
            for si, b in c.mem:
                (res_mem[si] if c.resident else od[si])[col] = b / GIB
            for si, m in c.margin:
                mgi[si][col] = m / GIB
            if not c.resident:
                for si, t in c.tau:
                    oti[si][col] = t
            for si in (*c.gpu_slots, p.host_slot[c.server]) if c.uses_cpu else c.gpu_slots:
                dev[si][col] = 1.0
        for si in range(ns):
            for terms, bound_col in ((od[si], om[si]), (mgi[si], mg[si]), (oti[si], ot[si]), (dev[si], y[si])):
                if terms:
                    rows.add({**terms, bound_col: -1.0}, -inf, 0.0)
    for si, sl in enumerate(p.slots):
        extra = 0 if sl.is_gpu else p.host_margin_bytes[sl.server]
        coefs: dict[int, float] = {**res_mem[si], om[si]: 1.0}
        if sl.is_gpu:
            coefs[mg[si]] = 1.0
        rows.add(coefs, -inf, (sl.capacity_bytes - extra) / GIB + MEMORY_SLACK_GIB)
    for s in range(n_srv):
        core_terms = {
            col: c.cores
            for cs, xs in zip(p.cands, x, strict=True)
            for c, col in zip(cs, xs, strict=True)
            if c.server == s and c.cores
        }
        if core_terms:
            rows.add(core_terms, -inf, p.cores[s] * (1 + 1e-12))
    if p.require_server is not None:
        req = p.require_server
        rows.add(
            {
                col: 1.0
                for cs, xs in zip(p.cands, x, strict=True)
                for c, col in zip(cs, xs, strict=True)
                if c.server == req or req in c.split_servers
            },
            1.0,
            inf,
        )

    # ---------------------------------------------------------------- tok/s under contention
    # R[d] = Σ resident τ·x over every item; the largest possible load on d bounds the big M
    res_tau: list[dict[int, float]] = [{} for _ in range(ns)]
    max_res_tau = [0.0] * ns
    max_od_tau = [0.0] * ns
    for cs, xs in zip(p.cands, x, strict=True):
        item_max = [0.0] * ns
        for c, col in zip(cs, xs, strict=True):
            for si, t in c.tau:
                if c.resident:
                    res_tau[si][col] = t
                    item_max[si] = max(item_max[si], t)
                else:
                    max_od_tau[si] = max(max_od_tau[si], t)
        for si in range(ns):
            max_res_tau[si] += item_max[si]
    # R[d] as a variable of its own (one row each), so the per-group rows stay short
    rt = [var(0, 0, inf, False) for _ in range(ns)]
    for si in range(ns):
        rows.add({**res_tau[si], rt[si]: -1.0}, 0.0, 0.0)
    for ii, it in enumerate(p.items):
        fi = f[ii]
        if fi is None or it.min_tok_s is None:
            continue
        limit = floor_step_s(it.min_tok_s) * (1 + TARGET_SLACK)
        groups: dict[tuple[bool, tuple[int, ...]], list[tuple[int, float]]] = {}
        for c, col in zip(p.cands[ii], x[ii], strict=True):
            slots = tuple(sorted(si for si, _ in c.tau))
            own = sum(t for _, t in c.tau) if c.resident else 0.0
            groups.setdefault((c.resident, slots), []).append((col, limit - c.step_s + own))
        for (resident, slots), members in groups.items():
            max_load = sum(max_res_tau[si] + (max_od_tau[si] if resident else 0.0) for si in slots)
            big_m = max_load - min(0.0, *(a for _, a in members)) + 1e-3
            coefs = {}
            for si in slots:
                coefs[rt[si]] = 1.0
                if resident:
                    coefs[ot[si]] = coefs.get(ot[si], 0.0) + 1.0
            for col, a in members:
                coefs[col] = coefs.get(col, 0.0) + big_m - a
            coefs[fi] = -big_m
            rows.add(coefs, -inf, big_m)

    # ---------------------------------------------------------------- swap-in of on-demand roles
    pc: list[int | None] = [None] * n_srv
    for ii, it in enumerate(p.items):
        if not it.is_model or it.role is None or it.role.residency == "always" or it.role.max_swap_in_s is None:
            continue
        by_server: dict[int, dict[int, float]] = {}
        for c, col in zip(p.cands[ii], x[ii], strict=True):
            if c.resident or not _swap_fails(p, ii, c, page_cache=False) or _swap_fails(p, ii, c, page_cache=True):
                continue
            by_server.setdefault(c.server, {})[col] = 1.0
        if not by_server:
            continue
        w = var(weights.failure, 0, inf, False)
        fail_terms[w] = 1
        for s, terms in by_server.items():
            if pc[s] is None:
                pc[s] = var(0, 0, 1, True)
            rows.add({**terms, pc[s]: -1.0, w: -1.0}, -inf, 0.0)  # type: ignore[dict-item]
    for s, pcol in enumerate(pc):
        if pcol is None:
            continue
        hs = p.host_slot[s]
        files = {
            col: c.file_bytes / GIB
            for cs, xs, it in zip(p.cands, x, p.items, strict=True)
            if it.is_model
            for c, col in zip(cs, xs, strict=True)
            if not c.resident and c.server == s
        }
        room = (p.slots[hs].capacity_bytes - p.host_margin_bytes[s]) / GIB
        big_m_ram = (
            sum(res_mem[hs].values())
            + sum(files.values())
            + max([0.0, *(b / GIB for cs in p.cands for c in cs if not c.resident for si, b in c.mem if si == hs)])
        )
        coefs = {k: float(v) for k, v in res_mem[hs].items()}
        for col, file_gib in files.items():
            coefs[col] = coefs.get(col, 0.0) + file_gib
        coefs[om[hs]] = coefs.get(om[hs], 0.0) + 1.0
        coefs[pcol] = big_m_ram
        rows.add(coefs, -inf, room + big_m_ram + MEMORY_SLACK_GIB)

    # ---------------------------------------------------------------- a better plan than the incumbent
    if max_failures is not None:
        rows.add(fail_terms, -inf, max_failures)
    if incumbent is not None:
        rows.add(fail_terms, -inf, incumbent[0])
        if incumbent[0] == 0:
            # no failures allowed: the quality must reach the incumbent's (exceed it when this set costs more)
            need = -incumbent[1] + (1 if p.cost_cents > incumbent[2] else 0)
            rows.add(qual_terms, need, inf)

    n_var = len(obj)
    a = coo_array((rows.v, (rows.r, rows.c)), shape=(len(rows.lb), n_var)).tocsr()
    with silenced_stdout_fd():
        res = milp(
            np.array(obj),
            integrality=np.zeros(len(integ)) if relax else np.array(integ),
            bounds=Bounds(np.array(lo), np.array(hi)),
            constraints=LinearConstraint(a, np.array(rows.lb), np.array(rows.ub)),
            options={
                "mip_rel_gap": _rel_gap(p, gap_points),
                "time_limit": time_limit_s,
                "presolve": True,
                "disp": _DISP,
            },
        )
    nodes = int(getattr(res, "mip_node_count", 0) or 0)
    if res.status == 2:
        return MilpAnswer("infeasible", None, None, weights, nodes)
    dual = getattr(res, "mip_dual_bound", None)
    gapped = gap_points > 0 and not relax and dual is not None and res.fun is not None and res.fun - dual >= 0.5
    bound = (
        float(res.fun)
        if res.status == 0 and res.x is not None and not gapped
        else (float(dual) if dual is not None else None)
    )
    if res.x is None or res.status not in (0, 1):
        return MilpAnswer("unknown", None, None, weights, nodes, bound=bound)
    values = [[float(res.x[col]) for col in x[ii]] for ii in range(n_items)]
    if relax:
        return MilpAnswer("optimal" if res.status == 0 else "unknown", None, bound, weights, nodes, values, bound)
    assign: list[int] = []
    for vals in values:
        best = max(range(len(vals)), key=lambda k: vals[k], default=-1)
        assign.append(best if best >= 0 and vals[best] > 0.5 else UNPLACED)
    # status 1: the time limit stopped HiGHS with a plan in hand (not proven; `bound` is its dual bound)
    status: Status = "optimal" if res.status == 0 and not gapped else "feasible"
    return MilpAnswer(status, assign, float(res.fun), weights, nodes, bound=bound)


def _rel_gap(p: Problem, gap_points: int) -> float:
    """HiGHS's relative gap that stops it within `gap_points` quality points of its bound (scipy passes no
    absolute gap): it stops when plan − bound ≤ gap × |plan|, and |plan| = W_q·quality − devices is at most
    W_q × the largest quality any plan of `p` can score, so gap = points / that quality is never looser."""
    top = sum(max([0, *(c.quality for c in cs)]) for cs in p.cands)
    return 0.0 if gap_points <= 0 or top <= 0 else (gap_points - 0.01) / top


class _SilencedFd:
    """Who holds fd 1 silenced: option kinds solve in threads (planner.plan.recommend), so the first MILP to
    start redirects it and the last to finish restores it."""

    lock = threading.Lock()
    depth = 0
    fd = -1  # the descriptor silenced (stdout's when the first guard began)
    saved = -1  # its original, restored by the last guard to end


@contextlib.contextmanager
def silenced_stdout_fd() -> Iterator[None]:
    """Send what C code writes to file descriptor 1 to /dev/null for the duration.

    HiGHS (scipy 1.17) prints debug lines such as "HighsMipSolverData::transformNewIntegerFeasibleSolution
    tmpSolver.run();" straight to the process's stdout on large problems, whatever `disp` says; on the
    12-role bench that put 12 such lines in front of `agiplan recommend --format json`. Python's own
    sys.stdout is flushed first and keeps working afterwards. Nested and concurrent uses (threads) share one
    redirect; stdout comes back when the last one ends."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured, closed): nothing to protect
        yield
        return
    with _SilencedFd.lock:
        if _SilencedFd.depth == 0:
            sys.stdout.flush()
            saved = os.dup(fd)
            try:
                with open(os.devnull, "wb") as null:
                    os.dup2(null.fileno(), fd)
            except OSError:
                os.close(saved)
                raise
            _SilencedFd.fd, _SilencedFd.saved = fd, saved
        _SilencedFd.depth += 1
    try:
        yield
    finally:
        with _SilencedFd.lock:
            _SilencedFd.depth -= 1
            if _SilencedFd.depth == 0:
                try:
                    os.dup2(_SilencedFd.saved, _SilencedFd.fd)
                finally:
                    os.close(_SilencedFd.saved)


def _swap_fails(p: Problem, ii: int, c: Candidate, *, page_cache: bool) -> bool:
    """Does on-demand candidate `c` of item `ii` miss its role's swap-in limit loading from disk (or from the
    page cache; a page cache slower than the disk counts as the disk: the relaxation's favour)?"""
    role = p.items[ii].role
    if role is None or role.max_swap_in_s is None:
        return False
    disk = p.disk_gbs[c.server]
    rate = disk
    if page_cache:
        hs = p.host_slot[c.server]
        rate = max(disk, page_cache_gbs(p.slots[hs].device.bandwidth_gbs, bool(c.gpu_slots)))
    return c.file_bytes / (rate * 1e9) > role.max_swap_in_s * (1 + REL_TOL) * (1 + TARGET_SLACK)
