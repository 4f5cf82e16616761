"""The placement solver: which model, quant, engine, server and GPUs serve each role, for each option kind.

Candidates: role × model candidate × quant × server × GPU subset (CPU offload where llama.cpp's fit
puts it; CPU-only as a subset of its own) × engine, every number from `planner.estimate.estimate()`
(memoized). Dominated candidates (same devices, no better quality, no less memory / bandwidth time /
step time / file size) are dropped.

Feasibility per device: GPU d holds Σ(always-resident usage) + max(on-demand usage) + one margin (the
largest margin of the engines on it, not one per model); the host RAM holds the same plus services
and the host margin; services' cores fit the CPU. On-demand roles need to fit only when swapped in.

Objective (lexicographic, smaller is better): (targets missed, −quality points, cost in cents,
devices holding model layers: each GPU 1, a host 10 — CPU decoding is an order of magnitude slower, so
an idle GPU is preferred to CPU layers). Targets: decode tok/s per slot under the planned concurrent load
(planner.plan.contention), swap-in time of on-demand roles, and "stays loaded" for always roles in the
serial kind. Failing counts and memory only grow as roles are added, so a depth-first branch and bound
with the bound (failures so far + undecided items none of whose still-fitting candidates can meet their
target, −(quality so far + best still-fitting quality of each undecided item), cost, devices so far),
started from a greedy incumbent, is exact; when the failures already equal the incumbent's, each undecided
item that can still meet its targets is bounded by its best candidate that can (see `solve`); identical
empty GPUs are tried once. Tests compare it with brute-force enumeration. Two-server kinds try the
purchasable second servers best-first by a weight-size bound (`_SetBound`). A node limit
stops very large searches (12 roles × the whole catalog); `solve` then tries an LP-guided dive and the
MILPs of planner.plan.milp, which prove the optimum within the time limit or leave the best plan found with
`Solution.exact = False` and an upper bound on quality, and the plan says so.

Quality points per role: 1000 − 100 × (position of the model in the role's candidate list) −
round(1000 × quant mean KLD vs FP16) (catalog quants.yaml `quality_loss`). Unplaced role: 0 points.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, cast

from planner.catalog import Catalog
from planner.errors import EstimateError, PlannerError
from planner.estimate.estimate import QUANT_LADDER, estimate, resolve_weights
from planner.estimate.types import Device, Estimate, RunConfig
from planner.model.arch import ModelSpec, ModelWeights
from planner.plan.contention import StepProfile, page_cache_gbs, rpc_hop_s, step_profile
from planner.plan.schema import OptionKind
from planner.plan.servers import Server
from planner.plan.stack import RoleSpec, ServiceSpec, Stack
from planner.units import GIB, MIB, fmt_gib

Mode = Literal["serial", "concurrent"]
UNPLACED = -1
PENDING = -2

VLLM_QUANTS: tuple[str, ...] = ("BF16", "FP8", "AWQ-INT4", "GPTQ-INT4")
# Quants the catalog gives no KLD for: the nearest GGUF quant's figure (an assumption, stated in the plan).
ASSUMED_KLD: dict[str, str] = {"AWQ-INT4": "Q4_K_M", "GPTQ-INT4": "Q4_K_M", "FP8": "Q8_0"}
RPC_SERVER_HOST_BYTES = 150 * MIB  # rpc-server process on the remote node (gguf-parser-go RAM footprint)
MODEL_POINTS = 1000
PREFERENCE_STEP = 100
MAX_SUBSET_GPUS = 4  # all GPU subsets up to this many cards; contiguous ranges beyond
HOST_DEVICE_WEIGHT = 10
DEFAULT_NODE_LIMIT = 50_000  # ~0.6 s of search here; beyond it the LP-guided dive and the MILPs take over (solve)


# ------------------------------------------------------------------------------------------ items


@dataclass(frozen=True)
class Item:
    """What the solver places: a role (with the roles sharing its model merged in) or a service."""

    name: str
    role: RoleSpec | None = None
    service: ServiceSpec | None = None
    members: tuple[RoleSpec, ...] = ()  # roles served as extra slots of this role's model
    ctx: int = 0
    parallel: int = 0
    min_tok_s: float | None = None

    @property
    def is_model(self) -> bool:
        return self.role is not None


def stack_items(stack: Stack) -> list[Item]:
    items: list[Item] = []
    for r in stack.roles:
        if r.share_with is not None:
            continue
        members = tuple(m for m in stack.roles if m.share_with == r.name)
        targets = [x.min_tok_s for x in (r, *members) if x.min_tok_s is not None]
        items.append(
            Item(
                name=r.name,
                role=r,
                members=members,
                ctx=max([r.ctx, *(m.ctx for m in members)]),
                parallel=r.parallel + sum(m.parallel for m in members),
                min_tok_s=max(targets) if targets else None,
            )
        )
    items += [Item(name=s.name, service=s) for s in stack.services]
    return items


# ------------------------------------------------------------------------------------------ candidates


@dataclass(frozen=True)
class DevSlot:
    """A memory pool of the problem: GPU `gpu` of server `server`, or its host (gpu = -1)."""

    server: int
    gpu: int
    device: Device
    capacity_bytes: int  # available: total − already reserved

    @property
    def is_gpu(self) -> bool:
        return self.gpu >= 0


@dataclass(frozen=True)
class Candidate:
    item: int
    model_ref: str
    model_name: str
    quant: str
    engine: str
    server: int
    gpu_slots: tuple[int, ...]  # DevSlot indices of the GPUs used (index order)
    uses_cpu: bool  # layers on the host
    quality: int
    mem: tuple[tuple[int, int], ...]  # (DevSlot index, bytes)
    margin: tuple[tuple[int, int], ...]  # (GPU DevSlot index, bytes that must stay free)
    tau: tuple[tuple[int, float], ...]  # (DevSlot index, seconds of this model's decode step there)
    step_s: float  # per-slot decode step alone
    file_bytes: int
    est: Estimate | None = None
    resident: bool = True
    split_servers: tuple[int, ...] = ()
    cores: float = 0.0
    parts: tuple[tuple[int, tuple[int, int, int, int]], ...] = ()  # (DevSlot, (weights, KV, compute, overhead))

    @property
    def alone_tok_s(self) -> float:
        return 1.0 / self.step_s if self.step_s > 0 else 0.0

    @property
    def total_bytes(self) -> int:
        return sum(b for _, b in self.mem)


class EstimateCache:
    """Memoized `estimate()` and weights: many candidates repeat (same model, quant, GPUs on other servers)."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self._specs: dict[str, ModelSpec] = {}
        self._weights: dict[tuple[str, str | None, str], ModelWeights] = {}
        self._sizes: dict[int, tuple[int, int, int]] = {}  # id(weights) -> (total, file, token_embd) bytes
        self._est: dict[tuple[object, ...], Estimate | None] = {}
        self.calls = 0
        self.hits = 0
        self.server_cands: dict[tuple[object, ...], list[Candidate]] = {}
        self.combos: dict[tuple[object, ...], list[Combo]] = {}

    def spec(self, ref: str) -> ModelSpec:
        if ref not in self._specs:
            from planner.sources.resolve import resolve_model

            self._specs[ref] = resolve_model(ref)
        return self._specs[ref]

    def weights(self, ref: str, quant: str | None, engine: str) -> ModelWeights:
        key = (ref, quant, engine)
        if key not in self._weights:
            w = resolve_weights(self.spec(ref), quant, engine)
            self._weights[key] = w
            self._sizes[id(w)] = (w.total_bytes, w.file_bytes or w.total_bytes, w.token_embedding_bytes)
        return self._weights[key]

    def sizes(self, w: ModelWeights) -> tuple[int, int, int]:
        """(total, file, token_embd) bytes of weights returned by `weights`."""
        return self._sizes[id(w)]

    def estimate(
        self, ref: str, quant: str | None, cfg: RunConfig, gpus: Sequence[Device], host: Device
    ) -> Estimate | None:
        """estimate() for these inputs, or None when the estimator refuses the combination."""
        # With every layer on the GPUs, the host only holds token_embd and runtime buffers: the numbers do
        # not depend on which CPU it is, so such estimates are shared across hosts.
        gpu_key: tuple[object, ...] = (ref, quant, cfg, tuple(gpus), None, None)
        if gpus and gpu_key in self._est:
            self.hits += 1
            return self._est[gpu_key]
        key: tuple[object, ...] = (ref, quant, cfg, tuple(gpus), host.id, host.bandwidth_gbs)
        if key in self._est:
            self.hits += 1
            return self._est[key]
        self.calls += 1
        try:
            w = self.weights(ref, quant, cfg.engine)
            spec = replace(self.spec(ref), weights=w)
            est: Estimate | None = estimate(spec, cfg, gpus, host, quant=w.file_type, suggest=False)
        except EstimateError:
            est = None
        if gpus and est is not None and not est.devices[-1].layers and not est.devices[-1].holds_output:
            key = gpu_key
        self._est[key] = est
        return est


def quant_kld(cat: Catalog, quant: str) -> float:
    q = ASSUMED_KLD.get(quant.upper(), quant)
    entry = cat.quants.get(q)
    if entry is None or entry.quality_loss is None:
        return 0.0 if quant.upper() in ("F16", "BF16", "F32") else 0.1
    return float(entry.quality_loss)


def role_models(cat: Catalog, role: RoleSpec) -> list[str]:
    """Candidate model refs, preferred first: the stack's list, or catalog models tagged with the task
    ordered by catalog quality score (unscored last, larger first)."""
    if role.models:
        return list(role.models)
    assert role.task is not None
    tagged = [m for m in cat.models.values() if role.task in m.roles]
    tagged.sort(
        key=lambda m: (
            m.quality is None,
            -(m.quality.score if m.quality else 0.0),
            -(cat.base_model(m.id).params or 0),
            m.id,
        )
    )
    return [m.id for m in tagged]


def role_quants(cat: Catalog, role: RoleSpec, floor_kld: float) -> list[str]:
    if role.quants:
        return [cat.quant(q).id for q in role.quants]
    return [q for q in QUANT_LADDER if quant_kld(cat, q) <= floor_kld]


def gpu_subsets(n: int) -> list[tuple[int, ...]]:
    """GPU index subsets a model may use: all non-empty subsets up to 4 cards, contiguous ranges beyond."""
    if n <= MAX_SUBSET_GPUS:
        return [c for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
    return [tuple(range(i, j)) for i in range(n) for j in range(i + 1, n + 1)]


@dataclass
class Problem:
    """One option's search space: items, memory pools, candidates per item, cost of the server set."""

    items: list[Item]
    servers: list[Server]
    slots: list[DevSlot]
    cands: list[list[Candidate]]
    mode: Mode
    cost_cents: int
    host_margin_bytes: list[int]
    cores: list[float]
    disk_gbs: list[float]
    host_slot: list[int]
    require_server: int | None = None  # two-server kinds: this server must host something


def _slots(servers: Sequence[Server], cat: Catalog) -> tuple[list[DevSlot], list[int]]:
    slots: list[DevSlot] = []
    host_slot: list[int] = []
    for si, s in enumerate(servers):
        for gi, d in enumerate(s.gpu_devices(cat)):
            slots.append(DevSlot(si, gi, d, d.capacity_bytes - d.reserved_bytes))
        h = s.host(cat)
        host_slot.append(len(slots))
        slots.append(DevSlot(si, -1, h, h.capacity_bytes))
    return slots, host_slot


def _candidate_from_estimate(
    est: Estimate,
    *,
    item_index: int,
    item: Item,
    ref: str,
    quant: str,
    engine: str,
    server: int,
    slot_map: Sequence[int],  # est.devices index -> DevSlot index
    quality: int,
    extra_step_s: float = 0.0,
    split_servers: tuple[int, ...] = (),
    extra_host: tuple[int, int] | None = None,
    sizes: tuple[int, int, int],
) -> Candidate:
    prof: StepProfile = step_profile(est, extra_step_s, embedding_bytes=sizes[2])
    mem: dict[int, int] = {}
    parts: dict[int, tuple[int, int, int, int]] = {}
    margin: list[tuple[int, int]] = []
    tau: list[tuple[int, float]] = []
    gpu_slots: list[int] = []
    uses_cpu = False
    for u, si, t in zip(est.devices, slot_map, prof.device_s, strict=True):
        if u.device.is_gpu:
            gpu_slots.append(si)
            margin.append((si, u.margin_bytes))
        elif u.layers or not any(x.device.is_gpu for x in est.devices):
            uses_cpu = True
        mem[si] = mem.get(si, 0) + u.used_bytes
        m = u.memory
        w, k, cc, o = parts.get(si, (0, 0, 0, 0))
        parts[si] = (w + m.weights_bytes, k + m.kv_cache_bytes, cc + m.compute_bytes, o + m.overhead_bytes)
        if t > 0:
            tau.append((si, t))
    if extra_host is not None:
        mem[extra_host[0]] = mem.get(extra_host[0], 0) + extra_host[1]
        w, k, cc, o = parts.get(extra_host[0], (0, 0, 0, 0))
        parts[extra_host[0]] = (w, k, cc, o + extra_host[1])
    file_bytes = sizes[1]
    return Candidate(
        item=item_index,
        model_ref=ref,
        model_name=est.arch.name,
        quant=est.weights.file_type or quant,
        engine=engine,
        server=server,
        gpu_slots=tuple(gpu_slots),
        uses_cpu=uses_cpu,
        quality=quality,
        mem=tuple(sorted(mem.items())),
        margin=tuple(margin),
        tau=tuple(tau),
        step_s=prof.step_s,
        file_bytes=file_bytes,
        est=est,
        split_servers=split_servers,
        parts=tuple(sorted(parts.items())),
    )


def _alone_fits(c: Candidate, slots: Sequence[DevSlot], host_margin: Sequence[int]) -> bool:
    marg = dict(c.margin)
    for si, b in c.mem:
        s = slots[si]
        extra = marg.get(si, 0) if s.is_gpu else host_margin[s.server]
        if b + extra > s.capacity_bytes:
            return False
    return True


Combo = tuple[str, str | None, str, RunConfig, int, dict[str, object]]  # ref, quant, engine, cfg, weight bytes, kw


def item_combos(ii: int, it: Item, cat: Catalog, cache: EstimateCache, stack: Stack) -> list[Combo]:
    """(model, quant, engine) choices of a model item with their run config, weight bytes and quality
    (memoized on the cache: every server set of a recommendation shares them)."""
    role = it.role
    assert role is not None
    key = ("combos", role.model_dump_json(), it.ctx, it.parallel, stack.quality_floor_kld, ii)
    hit = cache.combos.get(key)
    if hit is not None:
        return hit
    combos: list[Combo] = []
    for pref, ref in enumerate(role_models(cat, role)):
        spec = cache.spec(ref)
        fixed_file = spec.weights is not None and spec.weights.exact
        quants: list[str | None] = [None] if fixed_file else list(role_quants(cat, role, stack.quality_floor_kld))
        engines = list(role.engines or ["llama.cpp", "vllm"])
        for quant in quants:
            q_up = (quant or (spec.weights.file_type if spec.weights else "") or "").upper()
            is_vllm_q = q_up in VLLM_QUANTS
            for engine in engines:
                if engine == "vllm" and (not is_vllm_q or fixed_file):
                    continue
                if engine == "llama.cpp" and is_vllm_q and q_up not in ("BF16",):
                    continue
                kld = quant_kld(cat, q_up) if q_up else 0.0
                quality = MODEL_POINTS - PREFERENCE_STEP * pref - round(1000 * kld)
                cfg = RunConfig(
                    engine="vllm" if engine == "vllm" else "llama.cpp",
                    ctx=it.ctx,
                    parallel=it.parallel,
                    kv_type_k=role.kv_type,
                    kv_type_v=role.kv_type,
                    flash_attn=True,
                )
                try:
                    w = cache.weights(ref, quant, cfg.engine)
                except (EstimateError, PlannerError):
                    continue
                sizes = cache.sizes(w)
                common: dict[str, object] = dict(
                    item_index=ii,
                    item=it,
                    ref=ref,
                    quant=q_up,
                    engine=cfg.engine,
                    quality=quality,
                    sizes=sizes,
                )
                combos.append((ref, quant, engine, cfg, sizes[0], common))
    cache.combos[key] = combos
    return combos


def build_candidates(
    items: Sequence[Item],
    servers: Sequence[Server],
    cat: Catalog,
    cache: EstimateCache,
    stack: Stack,
    *,
    split_item: int | None = None,
    split_pair: tuple[int, int] | None = None,
    min_quality: Sequence[int] | None = None,
) -> tuple[list[DevSlot], list[int], list[list[Candidate]]]:
    """Every feasible-alone, non-dominated candidate of each item on `servers`. With `split_item`, that
    item gets only llama.cpp RPC candidates spanning `split_pair` = (host server, remote server)."""
    from planner.estimate.engines import rules_for

    slots, host_slot = _slots(servers, cat)
    host_margin = [rules_for("llama.cpp").host_margin_bytes for _ in servers]
    hosts = [s.host(cat) for s in servers]
    gpus = [s.gpu_devices(cat) for s in servers]
    gpu_slot_index = {(sl.server, sl.gpu): i for i, sl in enumerate(slots)}
    out: list[list[Candidate]] = []
    for ii, it in enumerate(items):
        cands: list[Candidate] = []
        if it.service is not None:
            for si, _s in enumerate(servers):
                c = Candidate(
                    item=ii,
                    model_ref="",
                    model_name=it.name,
                    quant="",
                    engine="",
                    server=si,
                    gpu_slots=(),
                    uses_cpu=False,
                    quality=0,
                    mem=((host_slot[si], int(it.service.ram_gib * GIB)),),
                    margin=(),
                    tau=(),
                    step_s=0.0,
                    file_bytes=0,
                    cores=it.service.cpu_cores,
                    parts=((host_slot[si], (0, 0, 0, int(it.service.ram_gib * GIB))),),
                )
                if _alone_fits(c, slots, host_margin):
                    cands.append(c)
            out.append(cands)
            continue
        role = it.role
        assert role is not None
        combos = item_combos(ii, it, cat, cache, stack)
        floor_q = min_quality[ii] if min_quality is not None else None
        if floor_q is not None:
            combos = [cb for cb in combos if cast(int, cb[5]["quality"]) >= floor_q]
        if split_item == ii:
            assert split_pair is not None
            a, b = split_pair
            for ref, quant, engine, cfg, lower_bytes, common in combos:
                if engine == "vllm" or not gpus[b]:
                    continue
                devs = [*gpus[a], *gpus[b]]
                if lower_bytes > sum(sl.capacity_bytes for sl in slots if sl.server in (a, b)):
                    continue
                est = cache.estimate(ref, quant, cfg, devs, hosts[a])
                if est is None:
                    continue
                smap = [gpu_slot_index[(a, g)] for g in range(len(gpus[a]))]
                smap += [gpu_slot_index[(b, g)] for g in range(len(gpus[b]))]
                smap.append(host_slot[a])
                c = _candidate_from_estimate(
                    est,
                    server=a,
                    slot_map=smap,
                    extra_step_s=rpc_hop_s(est.arch.hidden_size),
                    split_servers=(a, b),
                    extra_host=(host_slot[b], RPC_SERVER_HOST_BYTES),
                    **common,  # type: ignore[arg-type]
                )
                if _alone_fits(c, slots, host_margin):
                    cands.append(c)
        for si in range(len(servers) if split_item != ii else 0):
            # the first server's candidates are memoized whole: with a quality floor, filter them instead of
            # re-building them from the floor-filtered combos
            filter_here = si == 0 and floor_q is not None
            built = _server_candidates(
                ii,
                it,
                si,
                servers,
                slots,
                host_slot,
                gpus,
                hosts,
                host_margin,
                gpu_slot_index,
                cache,
                item_combos(ii, it, cat, cache, stack) if filter_here else combos,
                stack.quality_floor_kld,
            )
            cands += [c for c in built if c.quality >= cast(int, floor_q)] if filter_here else built
        out.append(prune_dominated(cands))
    return slots, host_slot, out


def _server_candidates(
    ii: int,
    it: Item,
    si: int,
    servers: Sequence[Server],
    slots: Sequence[DevSlot],
    host_slot: Sequence[int],
    gpus: Sequence[Sequence[Device]],
    hosts: Sequence[Device],
    host_margin: Sequence[int],
    gpu_slot_index: dict[tuple[int, int], int],
    cache: EstimateCache,
    combos: Sequence[Combo],
    floor: float,
) -> list[Candidate]:
    """Candidates of item `ii` on server `si` (memoized: the main server's are the same for every
    second server tried)."""
    assert it.role is not None
    srv = servers[si]
    key = (
        it.role.model_dump_json(),
        it.ctx,
        it.parallel,
        floor,
        ii,
        si,
        host_slot[si],
        srv.cpu,
        srv.gpus,
        srv.ram_gib,
        srv.gpu_reserved_bytes,
        len(combos),  # a quality-filtered list is a prefix-by-threshold of the same combos: its size names it
    )
    hit = cache.server_cands.get(key)
    if hit is not None:
        return hit
    out: list[Candidate] = []
    cap_host = slots[host_slot[si]].capacity_bytes
    for ref, quant, engine, cfg, lower_bytes, common in combos:
        subsets: list[tuple[int, ...]] = gpu_subsets(len(gpus[si]))
        if engine == "llama.cpp":
            subsets = [*subsets, ()]
        for sub in subsets:
            devs = [gpus[si][g] for g in sub]
            if engine == "vllm" and (not devs or any(d.vendor not in ("nvidia", "amd") for d in devs)):
                continue
            if lower_bytes > sum(d.capacity_bytes - d.reserved_bytes for d in devs) + cap_host:
                continue
            est = cache.estimate(ref, quant, cfg, devs, hosts[si])
            if est is None:
                continue
            smap = [gpu_slot_index[(si, g)] for g in sub] + [host_slot[si]]
            c = _candidate_from_estimate(est, server=si, slot_map=smap, **common)  # type: ignore[arg-type]
            if _alone_fits(c, slots, host_margin):
                out.append(c)
    cache.server_cands[key] = out
    return out


def _dominates(b: Candidate, a: Candidate) -> bool:
    """b is at least as good as a in every respect the objective and the constraints see."""
    if b.quality < a.quality or b.step_s > a.step_s or b.file_bytes > a.file_bytes:
        return False
    if set(b.gpu_slots) - set(a.gpu_slots):
        return False
    am, bm = dict(a.mem), dict(b.mem)
    if any(v > am.get(k, 0) for k, v in bm.items()):
        return False
    ag, bg = dict(a.margin), dict(b.margin)
    if any(v > ag.get(k, 0) for k, v in bg.items()):
        return False
    at, bt = dict(a.tau), dict(b.tau)
    return not any(v > at.get(k, 0.0) for k, v in bt.items())


def prune_dominated(cands: Sequence[Candidate]) -> list[Candidate]:
    """Drop candidates another one of the same item and devices dominates (keep the first of equals)."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, c in enumerate(cands):
        groups.setdefault((c.server, c.gpu_slots, c.uses_cpu, c.split_servers), []).append(i)
    keep: list[Candidate] = []
    for idx in groups.values():
        for i in idx:
            a = cands[i]
            if any(j != i and _dominates(cands[j], a) and (not _dominates(a, cands[j]) or j < i) for j in idx):
                continue
            keep.append(a)
    keep.sort(key=lambda c: (-c.quality, len(c.gpu_slots), c.total_bytes, c.step_s))
    return keep


def make_problem(
    stack: Stack,
    servers: Sequence[Server],
    cat: Catalog,
    cache: EstimateCache,
    *,
    mode: Mode,
    split_item: int | None = None,
    split_pair: tuple[int, int] | None = None,
    require_server: int | None = None,
    min_quality: Sequence[int] | None = None,
) -> Problem:
    """One option's problem. `min_quality` (per item) leaves out candidates scoring less: the caller knows
    they are in no plan better than its incumbent, so they are not estimated on servers after the first."""
    from planner.estimate.engines import rules_for

    items = stack_items(stack)
    slots, host_slot, cands = build_candidates(
        items, servers, cat, cache, stack, split_item=split_item, split_pair=split_pair, min_quality=min_quality
    )
    n_models = sum(1 for it in items if it.is_model)
    fixed: list[list[Candidate]] = []
    for it, cs in zip(items, cands, strict=True):
        resident = it.service is not None or (
            it.role is not None and (it.role.residency == "always" if mode == "concurrent" else n_models == 1)
        )
        fixed.append([replace(c, resident=resident) for c in cs])
    disk_gbs = cat.disk(stack.disk).read_gbs
    return Problem(
        items=items,
        servers=list(servers),
        slots=slots,
        cands=fixed,
        mode=mode,
        cost_cents=round(sum(s.cost_usd for s in servers) * 100),
        host_margin_bytes=[rules_for("llama.cpp").host_margin_bytes for _ in servers],
        cores=[float(s.cores(cat)) for s in servers],
        disk_gbs=[s.disk_read_gbs or disk_gbs for s in servers],
        host_slot=host_slot,
        require_server=require_server,
    )


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class RoleResult:
    decode_tok_s: float
    swap_in_s: float | None
    failures: list[str]


@dataclass
class Evaluation:
    memory_ok: bool
    key: tuple[int, int, int, int]  # (failures, -quality, cost in cents, GPUs used): smaller is better
    failing: list[str]
    quality: int
    n_gpus: int  # devices holding model layers: GPUs 1 each, a host HOST_DEVICE_WEIGHT
    used_bytes: list[int]  # per DevSlot: resident + largest on-demand (+ services on hosts)
    margin_bytes: list[int]
    roles: dict[int, RoleResult]
    overflow: list[str]


def evaluate(p: Problem, assign: Sequence[int]) -> Evaluation:
    """Score an assignment (candidate index per item; UNPLACED; PENDING for items not decided yet)."""
    n = len(p.slots)
    res_mem = [0] * n
    od_mem = [0] * n
    margin = [0] * n
    res_tau = [0.0] * n
    od_tau = [0.0] * n
    cores = [0.0] * len(p.servers)
    od_files = [0] * len(p.servers)
    used_gpus: set[int] = set()
    chosen: list[tuple[int, Candidate]] = []
    failing: list[str] = []
    n_failures = 0
    roles: dict[int, RoleResult] = {}
    quality = 0
    for ii, ci in enumerate(assign):
        if ci == PENDING:
            continue
        if ci == UNPLACED:
            failing.append(p.items[ii].name)
            n_failures += 1
            roles[ii] = RoleResult(0.0, None, ["nothing fits"])
            continue
        c = p.cands[ii][ci]
        chosen.append((ii, c))
        quality += c.quality
        cores[c.server] += c.cores
        used_gpus.update(c.gpu_slots)
        if c.uses_cpu:
            used_gpus.add(p.host_slot[c.server])
        for si, b in c.mem:
            if c.resident:
                res_mem[si] += b
            else:
                od_mem[si] = max(od_mem[si], b)
        for si, m in c.margin:
            margin[si] = max(margin[si], m)
        for si, t in c.tau:
            if c.resident:
                res_tau[si] += t
            else:
                od_tau[si] = max(od_tau[si], t)
        if not c.resident and p.items[ii].is_model:
            od_files[c.server] += c.file_bytes
    used = [res_mem[i] + od_mem[i] for i in range(n)]
    overflow: list[str] = []
    for i, sl in enumerate(p.slots):
        extra = margin[i] if sl.is_gpu else p.host_margin_bytes[sl.server]
        if used[i] + extra > sl.capacity_bytes:
            overflow.append(f"{p.servers[sl.server].name}/{'gpu' + str(sl.gpu) if sl.is_gpu else 'cpu'}")
    for s in range(len(p.servers)):
        if cores[s] > p.cores[s]:
            overflow.append(f"{p.servers[s].name}/cores")
    req = p.require_server
    req_used = req is None or PENDING in assign or any(c.server == req or req in c.split_servers for _, c in chosen)
    if not req_used:
        overflow.append(f"{p.servers[req or 0].name} unused")
    memory_ok = not overflow
    for ii, c in chosen:
        it = p.items[ii]
        if not it.is_model:
            roles[ii] = RoleResult(0.0, None, [])
            continue
        others = 0.0
        for si, t in c.tau:
            others += (res_tau[si] - t + od_tau[si]) if c.resident else res_tau[si]
        tok_s = 1.0 / (c.step_s + others) if c.step_s + others > 0 else 0.0
        fails: list[str] = []
        if it.min_tok_s is not None and tok_s < it.min_tok_s * (1 - 1e-9):
            fails.append(f"{tok_s:.1f} tok/s < target {it.min_tok_s:g}")
        swap: float | None = None
        assert it.role is not None
        if not c.resident:
            hs = p.host_slot[c.server]
            free = p.slots[hs].capacity_bytes - used[hs] - p.host_margin_bytes[c.server]
            rate = p.disk_gbs[c.server]
            if free >= od_files[c.server]:
                rate = page_cache_gbs(p.slots[hs].device.bandwidth_gbs, bool(c.gpu_slots))
            swap = c.file_bytes / (rate * 1e9)
            if it.role.residency == "always":
                fails.append("must stay loaded (residency: always) but the serial plan loads one model at a time")
            elif it.role.max_swap_in_s is not None and swap > it.role.max_swap_in_s * (1 + 1e-9):
                fails.append(f"swap-in {swap:.1f} s > {it.role.max_swap_in_s:g} s")
        roles[ii] = RoleResult(tok_s, swap, fails)
        if fails:
            failing.append(it.name)
            n_failures += len(fails)
    n_dev = sum(1 if p.slots[si].is_gpu else HOST_DEVICE_WEIGHT for si in used_gpus)
    key = (n_failures, -quality, p.cost_cents, n_dev)
    return Evaluation(memory_ok, key, failing, quality, n_dev, used, margin, roles, overflow)


# ------------------------------------------------------------------------------------------ search


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
    if it.min_tok_s is not None and c.alone_tok_s < it.min_tok_s * (1 - 1e-9):
        return False
    return c.resident or it.role is None or it.role.residency != "always"


# A candidate as the search sees it (tuples of ints / floats, no dict building in the hot loop):
# (ci, mem ((slot, bytes, fixed extra, is_gpu), ...), tau ((slot, s), ...), resident, step_s, file_bytes,
#  cores, server, layer slots, quality, uses a GPU, may meet (alone), servers used, touched slots)
_SC = tuple[
    int,
    tuple[tuple[int, int, int, bool], ...],
    tuple[tuple[int, float], ...],
    bool,
    float,
    int,
    float,
    int,
    tuple[int, ...],
    int,
    bool,
    bool,
    tuple[int, ...],
    tuple[int, ...],
]


def _compile(p: Problem) -> list[list[_SC]]:
    out: list[list[_SC]] = []
    for ii, cs in enumerate(p.cands):
        it = p.items[ii]
        row: list[_SC] = []
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
                (
                    ci,
                    mem,
                    c.tau,
                    c.resident,
                    c.step_s,
                    c.file_bytes if it.is_model else 0,
                    c.cores,
                    c.server,
                    tuple(layer_slots),
                    c.quality,
                    bool(c.gpu_slots),
                    _may_meet(it, c) if it.is_model else True,
                    tuple(sorted({c.server, *c.split_servers})),
                    touched,
                )
            )
        row.sort(key=lambda sc: -sc[9])  # best quality first (stable)
        out.append(row)
    return out


def _guided(row: list[_SC], guide: Sequence[float]) -> list[_SC]:
    """Candidates in descending order of `guide` (their LP values), quality order among equals."""
    return sorted(row, key=lambda sc: -guide[sc[0]])


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
    lookup: dict[tuple[object, ...], int] = {}
    if all(g < 0 for g in group):
        return group, lookup, []
    sigs = [[_twin_sig(p, c, group) for c in cs] for cs in p.cands]
    for ii, cs in enumerate(p.cands):
        for ci, c in enumerate(cs):
            lookup[(ii, sigs[ii][ci], c.gpu_slots)] = ci
    return group, lookup, sigs


def _twin_sig(p: Problem, c: Candidate, group: Sequence[int]) -> tuple[object, ...]:
    """Everything the search sees of `c` with its twin GPU slots replaced by their group."""

    def g(si: int) -> object:
        return ("g", group[si]) if group[si] >= 0 else si

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
        tuple(sorted(((g(si), b) for si, b in c.mem), key=repr)),
        tuple(sorted(((g(si), m) for si, m in c.margin), key=repr)),
        tuple(sorted(((g(si), t) for si, t in c.tau), key=repr)),
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


def solve(
    p: Problem,
    *,
    incumbent: tuple[int, int, int, int] | None = None,
    node_limit: int = DEFAULT_NODE_LIMIT,
    time_limit_s: float = MILP_TIME_LIMIT_S,
) -> Solution | None:
    """The best assignment strictly better than `incumbent` (or None), proven optimal whenever possible.

    The branch and bound (`branch_and_bound`) proves small and medium problems (every preset) in well under a
    second. When it stops at its node limit, the plans that miss no target are searched next
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
        zero = _solve_zero_failures(p, incumbent, deadline)
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
        sol = branch_and_bound(p, incumbent=incumbent, node_limit=node_limit)
    except PlannerError:  # the node limit came before any plan
        sol = None
    else:
        if sol is None or sol.exact:
            return sol
    from planner.plan.milp import beating_value, solve_milp

    bar = sol.evaluation.key if sol is not None else incumbent
    nodes = sol.nodes if sol is not None else node_limit
    zero = _solve_zero_failures(p, bar, deadline)
    if zero.solution is not None and (sol is None or zero.solution.evaluation.key < sol.evaluation.key):
        sol = replace(zero.solution, nodes=nodes + zero.solution.nodes, quality_bound=zero.quality_bound)
        bar = sol.evaluation.key
    nodes += zero.nodes
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


def _solve_zero_failures(p: Problem, bar: tuple[int, int, int, int] | None, deadline: float) -> _ZeroFailures:
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

    if zbar is not None and _lp_excludes(zp, zbar, deadline):
        return _ZeroFailures(None, True, 0, None)  # the relaxation proves that nothing beats the bar
    lp = solve_milp(zp, max_failures=0, relax=True, time_limit_s=max(0.0, deadline - time.monotonic()))
    if lp.status == "infeasible":
        return _ZeroFailures(None, False, 0, None)
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
    ans = solve_milp(zp, incumbent=zbar, time_limit_s=max(0.0, deadline - time.monotonic()), max_failures=0)
    nodes += ans.nodes
    if ans.status == "infeasible":
        # nothing meeting every target beats zbar: settled if zbar (found, or the bar) misses no target
        return _ZeroFailures(found, zbar is not None, nodes, q_bound)
    q_bound = _lower(q_bound, ans.quality_bound())
    if ans.status == "feasible" and ans.assign is not None:
        # the time limit stopped HiGHS with a plan in hand: keep it if it is really better
        assign = lift(ans.assign)
        ev = evaluate(p, assign)
        if ev.memory_ok and ev.key[0] == 0 and (zbar is None or ev.key < zbar):
            found = Solution(p, assign, ev, ans.nodes, False, q_bound)
    if found is not None:
        found = replace(found, quality_bound=q_bound)
    if ans.status != "optimal" or ans.assign is None or ans.objective is None:
        return _ZeroFailures(found, False, nodes, q_bound)
    assign = lift(ans.assign)
    ev = evaluate(p, assign)
    if not ev.memory_ok or ev.key[0] != 0 or ans.weights.value(ev.key) > ans.objective + 0.5:
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


def _lp_excludes(zp: Problem, bar: tuple[int, int, int, int], deadline: float) -> bool:
    """The linear relaxation proves that no plan of the zero-failure problem `zp` beats `bar`, which meets
    every target (the quality row is infeasible): ~0.02 s where the search would spend seconds."""
    from planner.plan.milp import solve_milp

    ans = solve_milp(zp, incumbent=bar, max_failures=0, relax=True, time_limit_s=max(0.0, deadline - time.monotonic()))
    return ans.status == "infeasible"


def branch_and_bound(
    p: Problem,
    *,
    incumbent: tuple[int, int, int, int] | None = None,
    node_limit: int = DEFAULT_NODE_LIMIT,
    max_failures: int | None = None,
    guide: Sequence[Sequence[float]] | None = None,
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
        t_max.append(it.min_tok_s * (1 - 1e-9) if it.min_tok_s is not None else None)
        swap_max.append(it.role.max_swap_in_s * (1 + 1e-9) if it.role and it.role.max_swap_in_s is not None else None)
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
    placed: list[tuple[int, _SC]] = []
    quality = 0
    unplaced = 0
    devs = 0
    best_key = incumbent
    best_assign: list[int] | None = None
    nodes = 0

    def swap_rate_best(c: _SC, extra_file: int) -> float:
        s = c[7]
        hs = p.host_slot[s]
        free = cap[hs] - (res_mem[hs] + od_mem[hs]) - p.host_margin_bytes[s]
        rate = p.disk_gbs[s]
        if free >= od_files[s] + extra_file:
            rate = max(rate, page_cache_gbs(host_bw[s], c[10]))
        return rate

    def failures() -> int:
        """A lower bound on the placed items' failures in any completion (exact for tok/s and residency)."""
        total = unplaced
        for ii, c in placed:
            if not is_model[ii]:
                continue
            step = c[4]
            if c[3]:
                for si, t in c[2]:
                    step += res_tau[si] - t + od_tau[si]
            else:
                for si, _t in c[2]:
                    step += res_tau[si]
            tm = t_max[ii]
            if tm is not None and (1.0 / step if step > 0 else 0.0) < tm:
                total += 1
            if not c[3]:
                if always[ii]:
                    total += 1
                else:
                    sm = swap_max[ii]
                    if sm is not None and c[5] / (swap_rate_best(c, 0) * 1e9) > sm:
                        total += 1
        return total

    def fits(c: _SC) -> bool:
        for si, b, m, g in c[1]:
            extra = (m if m > margin[si] else margin[si]) if g else m
            if c[3]:
                tot = res_mem[si] + b + od_mem[si]
            else:
                o = od_mem[si]
                tot = res_mem[si] + (b if b > o else o)
            if tot + extra > cap[si]:
                return False
        return cores[c[7]] + c[6] <= core_cap[c[7]]

    def meets(c: _SC, ii: int) -> bool:
        """Could `c` still meet its item's targets? Load only grows, so a miss now is a miss later."""
        if not c[11]:
            return False
        tm = t_max[ii]
        if tm is not None:
            step = c[4]
            if c[3]:
                for si, _t in c[2]:
                    step += res_tau[si] + od_tau[si]
            else:
                for si, _t in c[2]:
                    step += res_tau[si]
            if step > 0 and 1.0 / step < tm:
                return False
        if not c[3]:
            sm = swap_max[ii]
            if sm is not None and c[5] / (swap_rate_best(c, c[5]) * 1e9) > sm:
                return False
        return True

    def canonical(ii: int, c: _SC) -> bool:
        """False when the same candidate on lower-indexed empty twin GPUs exists (a mirror image)."""
        cand = p.cands[ii][c[0]]
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
        return (ii, twin_sigs[ii][c[0]], t) not in twin_lookup

    def push(ii: int, c: _SC) -> list[tuple[int, int, int, float]]:
        nonlocal quality, devs
        undo = [(si, od_mem[si], margin[si], od_tau[si]) for si in c[13]]
        resident = c[3]
        for si, b, m, g in c[1]:
            if resident:
                res_mem[si] += b
            elif b > od_mem[si]:
                od_mem[si] = b
            if g and m > margin[si]:
                margin[si] = m
        for si, t in c[2]:
            if resident:
                res_tau[si] += t
            elif t > od_tau[si]:
                od_tau[si] = t
        for si in c[13]:
            touch[si] += 1
        cores[c[7]] += c[6]
        if not resident:
            od_files[c[7]] += c[5]
        for s in c[12]:
            server_use[s] += 1
        for si in c[8]:
            gpu_ref[si] += 1
            if gpu_ref[si] == 1:
                devs += 1 if is_gpu[si] else HOST_DEVICE_WEIGHT
        quality += c[9]
        placed.append((ii, c))
        assign[ii] = c[0]
        return undo

    def pop(ii: int, c: _SC, undo: list[tuple[int, int, int, float]]) -> None:
        nonlocal quality, devs
        assign[ii] = PENDING
        placed.pop()
        quality -= c[9]
        for si in c[8]:
            gpu_ref[si] -= 1
            if gpu_ref[si] == 0:
                devs -= 1 if is_gpu[si] else HOST_DEVICE_WEIGHT
        for s in c[12]:
            server_use[s] -= 1
        cores[c[7]] -= c[6]
        if c[3]:
            for si, b, _m, _g in c[1]:
                res_mem[si] -= b
            for si, t in c[2]:
                res_tau[si] -= t
        else:
            od_files[c[7]] -= c[5]
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
            while m < end and not (fits(row[m]) and meets(row[m], jj)):
                m += 1
            dst_m[jj] = m
            qa: int | None = row[i][9] if i < end else None
            qm: int | None = row[m][9] if m < end else None
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
        if nodes > node_limit:
            raise _NodeLimit
        if k == n:
            if req is not None and not server_use[req]:
                return
            ev = evaluate(p, assign)
            if ev.memory_ok and (best_key is None or ev.key < best_key) and ev.key[0] <= f_limit:
                best_key = ev.key
                best_assign = list(assign)
            return
        if bound(k) is None:
            return
        ii = order[k]
        # children: candidates that fit, those that can still meet their targets first (quality order kept)
        meeting: list[_SC] = []
        rest: list[_SC] = []
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
        taken: list[tuple[int, _SC | None, list[tuple[int, int, int, float]]]] = []
        for ii in (order[k] for k in range(n)):
            pick: tuple[tuple[int, int], _SC | None] = ((failures() + 1, 0), None)
            for c in comp[ii]:
                if not fits(c):
                    continue
                undo = push(ii, c)
                score = (failures(), -c[9])
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
        if ev.memory_ok and (best_key is None or ev.key < best_key) and ev.key[0] <= f_limit:
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


# ------------------------------------------------------------------------------------------ option kinds


@dataclass
class OptionResult:
    kind: OptionKind
    solution: Solution | None
    why_not: str = ""
    considered: int = 0  # server sets tried


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
) -> OptionResult:
    """Best plan over server sets: all existing servers when there are two or more, else the main
    server plus each purchasable new server (cheapest first, pruned by the incumbent). With `split`,
    one role's layers must span two servers (llama.cpp RPC)."""
    kind: OptionKind = "split" if split else "two-server"
    sets: list[list[Server]] = [list(existing[:3])] if len(existing) >= 2 else [[existing[0], s] for s in new_options]
    if not sets:
        return OptionResult(kind, None, "no second server within the budget (see --budget / --allow)")
    best: Solution | None = None
    tried = 0
    clock = _Clock(time_limit_s)
    split_ii = _split_items(stack) if split else []
    set_bound = _SetBound(stack, existing[0], cat, cache, split_ii[0] if split_ii else None)
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
    # bounds of the sets the limits left unsettled (a better plan may hide there): the answer is not proven
    open_bounds: list[int | None] = []
    why_limit = ""

    def attempt(p: Problem, incumbent: tuple[int, int, int, int] | None) -> Solution | None:
        nonlocal why_limit
        try:
            sol = clock.solve(p, incumbent, node_limit)
        except SearchLimitError as exc:
            open_bounds.append(exc.quality_bound)
            why_limit = (
                f"the search stopped at its limits ({node_limit} nodes and --time-limit {time_limit_s:g} s for this "
                "option kind) without a plan; a larger --time-limit may find one"
            )
            return None
        if sol is not None and not sol.exact:
            open_bounds.append(sol.quality_bound)
        return sol

    for k, (bnd, servers) in enumerate(ordered):
        incumbent = best.evaluation.key if best else None
        if incumbent is not None and bnd >= incumbent:
            break
        if clock.exhausted():
            # the time is spent: the sets not searched may hold a better plan (each at most its bound)
            open_bounds += [-b[1] if len(srv) == 2 else None for b, srv in ordered[k:]]
            why_limit = (
                f"the search's {time_limit_s:g} s ran out with {len(ordered) - k} server set(s) not searched "
                "(a larger --time-limit searches them)"
            )
            break
        tried += 1
        if split:
            for ii in split_ii:
                p = make_problem(
                    stack,
                    servers,
                    cat,
                    cache,
                    mode="concurrent",
                    split_item=ii,
                    split_pair=(0, 1),
                    require_server=1,
                    min_quality=set_bound.min_quality(servers[1], best.evaluation.key if best else None),
                )
                if not p.cands[ii]:
                    continue
                sol = attempt(p, best.evaluation.key if best else None)
                if _better(sol, best):
                    best = sol
        else:
            p = make_problem(
                stack,
                servers,
                cat,
                cache,
                mode="concurrent",
                require_server=1,
                min_quality=set_bound.min_quality(servers[1], incumbent) if len(servers) == 2 else None,
            )
            sol = attempt(p, incumbent)
            if _better(sol, best):
                best = sol
        if progress:
            progress(tried)
    if best is not None and best.evaluation.key[0] == 0:
        # a set whose plans meeting every target score less than the best plan's cannot beat it
        open_bounds = [b for b in open_bounds if b is None or b >= best.evaluation.quality]
    if best is not None:
        return OptionResult(kind, _unsettled(best, open_bounds) if open_bounds else best, "", tried)
    if why_limit:
        return OptionResult(kind, None, why_limit, tried)
    why = "no second server with a GPU to split a model over" if split else "nothing fits"
    return OptionResult(kind, None, why, tried)


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
    """`time_limit_s` shared by the searches of one option kind: only time inside `solve` counts (building the
    candidates of the next server set does not use it up)."""

    def __init__(self, time_limit_s: float) -> None:
        self.limit_s = time_limit_s
        self.used_s = 0.0

    def exhausted(self) -> bool:
        return self.used_s >= self.limit_s

    def solve(self, p: Problem, incumbent: tuple[int, int, int, int] | None, node_limit: int) -> Solution | None:
        t0 = time.monotonic()
        try:
            return solve(
                p, incumbent=incumbent, node_limit=node_limit, time_limit_s=max(0.0, self.limit_s - self.used_s)
            )
        finally:
            self.used_s += time.monotonic() - t0


def unproven_note(kind: str, sol: Solution, time_limit_s: float) -> str:
    """The plan's note for an option whose optimality was not proven: what stopped the search, and how far
    from the optimum the plan can be."""
    text = (
        f"{kind}: best plan found, not proven optimal: the search stopped at its limits ({sol.nodes} nodes, "
        f"{time_limit_s:g} s of search)"
    )
    misses = sol.evaluation.key[0]
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
    server and its best (model, quant) whose weights fit the second server's GPU memory + RAM at all (the
    split item: main + second), the set's cost, no devices."""

    def __init__(self, stack: Stack, main: Server, cat: Catalog, cache: EstimateCache, split_item: int | None) -> None:
        self.cat = cat
        self.items = stack_items(stack)
        self.split_item = split_item
        main_p = make_problem(stack, [main], cat, cache, mode="concurrent")
        self.main_q: list[int | None] = [
            max((c.quality for c in cs), default=None) if ii != split_item else None
            for ii, cs in enumerate(main_p.cands)
        ]
        self.main_cap = _raw_capacity(main, cat)
        self.main_cost = main.cost_usd
        self.combos = [
            [(q[4], int(cast(int, q[5]["quality"]))) for q in item_combos(ii, it, cat, cache, stack)]
            if it.is_model
            else []
            for ii, it in enumerate(self.items)
        ]

    def item_bounds(self, second: Server) -> list[int]:
        """Per item: the most quality points it can score on {main, second} (unplaced scores 0)."""
        cap = _raw_capacity(second, self.cat)
        out: list[int] = []
        for ii, it in enumerate(self.items):
            if not it.is_model:
                out.append(0)
                continue
            room = cap + self.main_cap if ii == self.split_item else cap
            q = max([self.main_q[ii] or 0, *(qq for b, qq in self.combos[ii] if b <= room)])
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
    return sum(d.capacity_bytes - d.reserved_bytes for d in server.gpu_devices(cat)) + server.host(cat).capacity_bytes


def _split_items(stack: Stack) -> list[int]:
    """The role tried as the split one: the first role that stays loaded, in stack order (the presets and the
    README put the big reasoner first)."""
    items = stack_items(stack)
    scored = []
    for i, it in enumerate(items):
        if it.role is None or it.role.residency != "always":
            continue
        scored.append((i, it))
    return [i for i, _ in scored[:1]] if scored else []


def fit_sentence(sol: Solution, ii: int) -> str:
    """'the 70B at Q4_K_M with 16k context needs 46.1 GiB; two 4090s give 48 GiB of which 2 GiB must stay
    free: fits with 0.1 GiB to spare' for item `ii` of a solution."""
    p = sol.problem
    ci = sol.assign[ii]
    it = p.items[ii]
    if ci < 0:
        return f"{it.name}: nothing fits"
    c = p.cands[ii][ci]
    if not it.is_model:
        return f"{it.name}: {fmt_gib(c.total_bytes)} RAM on {p.servers[c.server].name}"
    gpu_ids = [p.slots[s].device.id for s in c.gpu_slots]
    counts: dict[str, int] = {}
    for g in gpu_ids:
        counts[g] = counts.get(g, 0) + 1
    where = " + ".join(f"{n}x {g}" if n > 1 else g for g, n in counts.items()) or "the CPU"
    cap = sum(p.slots[s].capacity_bytes for s in c.gpu_slots)
    marg = sum(m for _, m in c.margin)
    on_gpus = sum(b for s, b in c.mem if p.slots[s].is_gpu)
    ctx_k = f"{it.ctx // 1024}k" if it.ctx % 1024 == 0 else str(it.ctx)
    head = f"{it.name}: {c.model_ref} at {c.quant} with {ctx_k} context × {it.parallel} needs {fmt_gib(c.total_bytes)}"
    if not c.gpu_slots:
        return head + " of RAM (CPU only)"
    spare = sum(
        p.slots[s].capacity_bytes - sol.evaluation.used_bytes[s] - sol.evaluation.margin_bytes[s] for s in c.gpu_slots
    )
    off = f", {fmt_gib(c.total_bytes - on_gpus)} offloaded to RAM" if c.uses_cpu else ""
    return (
        f"{head}; {where} give {fmt_gib(cap)} of which {fmt_gib(marg)} must stay free{off}: fits with "
        f"{fmt_gib(max(0, spare))} to spare" + (" (shared)" if spare < cap - marg - on_gpus - 1 else "")
    )


def option_why(sol: Solution | None, kind: str, why_not: str = "") -> str:
    if sol is None:
        return f"{kind}: {why_not or 'no plan'}"
    ev = sol.evaluation
    p = sol.problem
    parts: list[str] = []
    model_items = [i for i, it in enumerate(p.items) if it.is_model]
    biggest = max(
        model_items, key=lambda i: p.cands[i][sol.assign[i]].total_bytes if sol.assign[i] >= 0 else -1, default=None
    )
    if biggest is not None:
        parts.append(fit_sentence(sol, biggest))
    for ii, rr in ev.roles.items():
        if rr.failures:
            parts.append(f"{p.items[ii].name} fails: {'; '.join(rr.failures)}")
    if ev.failing:
        parts.insert(0, f"misses targets for {', '.join(ev.failing)}")
    else:
        parts.insert(0, "meets every target")
    cost = p.cost_cents / 100
    if cost:
        parts.append(f"buys ${cost:,.0f} of hardware")
    return "; ".join(parts) + "."


def quality_score(sol: Solution) -> float:
    n = sum(1 for it in sol.problem.items if it.is_model)
    return round(sol.evaluation.quality / (MODEL_POINTS * max(1, n)), 4)
