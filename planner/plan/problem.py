"""The placement problem: what is placed (items), where it can go (candidates), and how a plan scores.

Candidates: role × model candidate × quant × server × GPU subset (CPU offload where llama.cpp's fit
puts it; CPU-only as a subset of its own) × engine, every number from `planner.estimate.estimate()`
(memoized). Dominated candidates (same devices, no better quality, no less memory / bandwidth time /
step time / file size) are dropped.

Feasibility per device: GPU d holds Σ(always-resident usage) + max(on-demand usage) + one margin (the
largest margin of the engines on it, not one per model); the host RAM holds the same plus services
and the host margin; services' cores fit the CPU. On-demand roles need to fit only when swapped in.

Objective (`evaluate`; lexicographic, smaller is better): (floors missed, −quality points, cost in cents,
devices holding model layers: each GPU 1, a host 10 — CPU decoding is an order of magnitude slower, so
an idle GPU is preferred to CPU layers). Floors: decode tok/s per slot under the planned concurrent load
(planner.plan.contention; a role's `min_tok_s`, else its task's default, planner.plan.objective), swap-in
time of on-demand roles, and "stays loaded" for always roles in the serial kind. The search is
planner.plan.solver; the option kinds over server sets planner.plan.options.

Quality points per placement (planner.plan.objective.Points): model preference, then quant tier, less the
relative shortfall when it misses its floor even alone. Unplaced role: 0 points.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from planner.catalog import Catalog
from planner.errors import EstimateError, PlannerError
from planner.estimate.context import context_limit
from planner.estimate.estimate import QUANT_LADDER, estimate, resolve_weights
from planner.estimate.speculative import DraftConfig, check_draft_vocabulary, vocabulary
from planner.estimate.speed import GB, RpcLink, decode_eta_table
from planner.estimate.types import Device, Estimate, MemoryParts, RunConfig
from planner.model.arch import ModelSpec, ModelWeights
from planner.plan.contention import StepProfile, page_cache_gbs, parse_link, rpc_step_s, step_profile
from planner.plan.objective import (
    TASK_FLOORS,
    Key,
    Points,
    below_floor,
    combo_points,
    over_limit,
    quant_tier,
    role_task,
    shortfall,
)
from planner.plan.servers import Server
from planner.plan.stack import RoleSpec, ServiceSpec, Stack
from planner.units import GIB, MIB

Mode = Literal["serial", "concurrent"]
UNPLACED = -1
PENDING = -2

VLLM_QUANTS: tuple[str, ...] = ("BF16", "FP8", "AWQ-INT4", "GPTQ-INT4")
# Quants the catalog gives no KLD for: the nearest GGUF quant's figure (an assumption, stated in the plan).
ASSUMED_KLD: dict[str, str] = {"AWQ-INT4": "Q4_K_M", "GPTQ-INT4": "Q4_K_M", "FP8": "Q8_0"}
RPC_SERVER_HOST_BYTES = 150 * MIB  # rpc-server process on the remote node (gguf-parser-go RAM footprint)
MAX_SUBSET_GPUS = 4  # all GPU subsets up to this many cards; contiguous ranges beyond
HOST_DEVICE_WEIGHT = 10


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
    min_tok_s: float | None = None  # the decode floor: the stack's min_tok_s, else the task's default
    task: str = ""
    floor_is_default: bool = False  # min_tok_s / prefill_floor_tok_s come from the task's default
    prefill_floor_tok_s: float | None = None  # an embedder's floor (its default; checked alone)

    @property
    def is_model(self) -> bool:
        return self.role is not None


def stack_items(stack: Stack, cat: Catalog) -> list[Item]:
    """The items of a stack, each with its floor: the largest `min_tok_s` of the role and the roles sharing
    its model, else the default of the role's task (planner.plan.objective.TASK_FLOORS)."""
    items: list[Item] = []
    for r in stack.roles:
        if r.share_with is not None:
            continue
        members = tuple(m for m in stack.roles if m.share_with == r.name)
        targets = [x.min_tok_s for x in (r, *members) if x.min_tok_s is not None]
        task = role_task(cat, r.task, r.models[0] if r.models else None)
        default = TASK_FLOORS[task]
        items.append(
            Item(
                name=r.name,
                role=r,
                members=members,
                ctx=max([r.ctx, *(m.ctx for m in members)]),
                parallel=r.parallel + sum(m.parallel for m in members),
                min_tok_s=max(targets) if targets else default.decode_tok_s,
                task=task,
                floor_is_default=not targets,
                prefill_floor_tok_s=None if targets else default.prefill_tok_s,
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
    parts: tuple[tuple[int, MemoryParts], ...] = ()  # (DevSlot index, its memory by part)
    preference: int = 0  # place of the model in the role's list (objective.Points)
    tier: int = 0  # quant tier (objective.QUANT_TIERS index)
    rpc_link: RpcLink | None = None  # split over servers: the network its steps and prompt tokens cross

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
        # a candidate by its estimate (by id: every estimate stays in `_est` as long as this cache) and slots:
        # second servers that differ only in CPU or RAM share the estimates with every layer on the GPUs
        self.cands_by_est: dict[tuple[object, ...], Candidate] = {}
        self.combos: dict[tuple[object, ...], list[Combo]] = {}
        # the dominated candidates of one server's candidates of an item (`undominated`), by the candidates' ids:
        # the main server's are pruned once, not once per second server tried
        self.dominated: dict[tuple[int, ...], frozenset[int]] = {}
        self._residency: dict[tuple[int, bool], tuple[Candidate, Candidate]] = {}  # (id, resident) -> (c, copy)
        # option kinds search side by side in threads (planner.plan.recommend): one memo fill at a time, so a
        # ModelWeights is made once per key and its `_sizes` entry (by id) stays its own
        self._lock = threading.RLock()

    def spec(self, ref: str) -> ModelSpec:
        with self._lock:
            if ref not in self._specs:
                from planner.sources.resolve import resolve_model

                self._specs[ref] = resolve_model(ref)
            return self._specs[ref]

    def weights(self, ref: str, quant: str | None, engine: str) -> ModelWeights:
        key = (ref, quant, engine)
        with self._lock:
            if key not in self._weights:
                w = resolve_weights(self.spec(ref), quant, engine)
                self._weights[key] = w
                self._sizes[id(w)] = (w.total_bytes, w.file_bytes or w.total_bytes, w.token_embedding_bytes)
            return self._weights[key]

    def sizes(self, w: ModelWeights) -> tuple[int, int, int]:
        """(total, file, token_embd) bytes of weights returned by `weights`."""
        return self._sizes[id(w)]

    def with_residency(self, c: Candidate, resident: bool) -> Candidate:
        """`c` with `resident` set, memoized: every server set of an option kind repeats the main server's."""
        key = (id(c), resident)
        with self._lock:
            hit = self._residency.get(key)
            if hit is None:  # the entry holds `c`, so its id stays its own
                hit = (c, replace(c, resident=resident))
                self._residency[key] = hit
            return hit[1]

    def estimate(
        self, ref: str, quant: str | None, cfg: RunConfig, gpus: Sequence[Device], host: Device
    ) -> Estimate | None:
        """estimate() for these inputs, or None when the estimator refuses the combination."""
        with self._lock:
            return self._estimate(ref, quant, cfg, gpus, host)

    def _estimate(
        self, ref: str, quant: str | None, cfg: RunConfig, gpus: Sequence[Device], host: Device
    ) -> Estimate | None:
        # With every layer on the GPUs, the host only holds token_embd and runtime buffers: the numbers do
        # not depend on which CPU it is, so such estimates are shared across hosts.
        gpu_key: tuple[object, ...] = (ref, quant, cfg, tuple(gpus), None, None)
        if gpus and gpu_key in self._est:
            self.hits += 1
            return self._est[gpu_key]
        # the whole host, not its CPU alone: two servers with one CPU and different RAM differ in what fits
        key: tuple[object, ...] = (ref, quant, cfg, tuple(gpus), host)
        if key in self._est:
            self.hits += 1
            return self._est[key]
        # The host's RAM size decides only whether the estimate fits, never the placement or the speed
        # (estimate() reads no host capacity): a server that differs in RAM alone takes the estimate with its
        # own host device, kept under its own key (candidates are memoized by the estimate's id).
        ram_key: tuple[object, ...] = (ref, quant, cfg, tuple(gpus), replace(host, capacity_bytes=0, name=""))
        if ram_key in self._est:
            self.hits += 1
            self._est[key] = on_host(self._est[ram_key], host)
            return self._est[key]
        self.calls += 1
        try:
            w = self.weights(ref, quant, cfg.engine)
            spec = replace(self.spec(ref), weights=w)
            est: Estimate | None = estimate(spec, cfg, gpus, host, quant=w.file_type, suggest=False)
        except EstimateError:
            est = None
        if gpus and est is not None and not est.devices[-1].layers and not est.devices[-1].holds_output:
            self._est[gpu_key] = est
            return est
        self._est[key] = self._est[ram_key] = est
        return est


def on_host(est: Estimate | None, host: Device) -> Estimate | None:
    """`est` with `host` as its host device (the last entry): what fits there is measured against this host."""
    if est is None or est.devices[-1].device == host:
        return est
    return replace(est, devices=(*est.devices[:-1], replace(est.devices[-1], device=host)))


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


def role_draft(cat: Catalog, cache: EstimateCache, role: RoleSpec, target: ModelSpec) -> DraftConfig | None:
    """The role's draft model for candidate `target`, None without one. A model the role lists by name whose
    vocabulary the draft does not share is an error; a model its task picked is skipped (None)."""
    if role.draft is None:
        return None
    spec = cache.spec(role.draft.model)
    try:
        check_draft_vocabulary(vocabulary(target, cat), vocabulary(spec, cat))
    except EstimateError as e:
        if not role.models:
            return None
        raise PlannerError(f"role '{role.name}': {e}") from None
    return DraftConfig(
        spec,
        quant=role.draft.quant,
        n_max=role.draft.n_max,
        n_min=role.draft.n_min,
        acceptance=role.draft.acceptance,
        task=role.task,
        gpu_layers=role.draft.gpu_layers,
        kv_type_k=role.kv_type,
        kv_type_v=role.kv_type,
    )


def role_quants(cat: Catalog, role: RoleSpec, floor_kld: float) -> list[str]:
    if role.quants:
        return [cat.quant(q).id for q in role.quants]
    return [q for q in QUANT_LADDER if quant_kld(cat, q) <= floor_kld]


# the margin of `could_meet_floor` against the speed model's details `step_lower_bound_s` does not follow
STEP_BOUND_SHARE = 0.9


@dataclass(frozen=True)
class ReadRates:
    """How fast a server's devices can read weights at most (`read_rates`): each GPU's rate (bytes/s) and
    memory, the fastest first, and the host's rate."""

    gpus: tuple[tuple[float, int], ...]  # (bytes/s, memory bytes)
    host_bytes_s: float


def read_rates(gpus: Sequence[Device], host: Device) -> ReadRates:
    """Each device's bandwidth × its largest η (of any weight family, planner.estimate.speed): no device reads
    weights faster in the speed model."""

    def rate(d: Device) -> float:
        return d.bandwidth_gbs * GB * max(decode_eta_table(d).values())

    on_gpus = sorted(((rate(d), d.available_bytes) for d in gpus if rate(d) > 0), key=lambda r: -r[0])
    return ReadRates(tuple(on_gpus), rate(host))


def step_lower_bound_s(read_bytes: int, rates: ReadRates) -> float:
    """A lower bound on the decode step (s) of a dense llama.cpp model whose step reads `read_bytes`, with
    its layers on the devices of `rates` (planner.estimate.speed: bytes / (η × bandwidth) per device, plus fixed
    times, KV and the hybrid slow-down, all left out here): the bytes fill the fastest GPUs first, each up to
    its memory, the rest is read from host RAM. 0 when the host's bandwidth is unknown."""
    left = read_bytes
    step_s = 0.0
    for rate, cap_bytes in rates.gpus:
        here = min(left, cap_bytes)
        if here > 0:
            step_s += here / rate
            left -= here
    if left > 0:
        if rates.host_bytes_s <= 0:
            return 0.0
        step_s += left / rates.host_bytes_s
    return step_s


def could_meet_floor(cb: Combo, floor_tok_s: float | None, rates: ReadRates) -> bool:
    """Whether combo `cb` may decode at `floor_tok_s` alone with its layers on the devices of `rates`
    (`step_lower_bound_s`, with a 10 % margin). False only when no placement there meets the floor."""
    if floor_tok_s is None or cb.step_read_bytes <= 0:
        return True
    step_s = step_lower_bound_s(cb.step_read_bytes, rates) * STEP_BOUND_SHARE
    return step_s <= 0 or not below_floor(1.0 / step_s, floor_tok_s)


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
            slots.append(DevSlot(si, gi, d, d.available_bytes))
        h = s.host(cat)
        host_slot.append(len(slots))
        slots.append(DevSlot(si, -1, h, h.capacity_bytes))
    return slots, host_slot


def _candidate_from_estimate(
    est: Estimate,
    cb: Combo,
    item_index: int,
    it: Item,
    *,
    server: int,
    slot_map: Sequence[int],  # est.devices index -> DevSlot index
    extra_step_s: float = 0.0,
    split_servers: tuple[int, ...] = (),
    extra_host: tuple[int, int] | None = None,
    rpc_link: RpcLink | None = None,
) -> Candidate:
    """The candidate of choice `cb` for item `item_index` with estimate `est` on `server`."""
    prof: StepProfile = step_profile(est, extra_step_s, embedding_bytes=cb.sizes[2])
    mem: dict[int, int] = {}
    parts: dict[int, MemoryParts] = {}
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
        parts[si] = parts.get(si, MemoryParts()) + u.memory
        if t > 0:
            tau.append((si, t))
    if extra_host is not None:
        mem[extra_host[0]] = mem.get(extra_host[0], 0) + extra_host[1]
        parts[extra_host[0]] = parts.get(extra_host[0], MemoryParts()) + MemoryParts(overhead_bytes=extra_host[1])
    return Candidate(
        item=item_index,
        model_ref=cb.ref,
        model_name=est.arch.name,
        quant=est.weights.file_type or cb.label,
        engine=cb.cfg.engine,
        server=server,
        gpu_slots=tuple(gpu_slots),
        uses_cpu=uses_cpu,
        quality=placement_points(it, cb, est, prof.step_s).total,
        mem=tuple(sorted(mem.items())),
        margin=tuple(margin),
        tau=tuple(tau),
        step_s=prof.step_s,
        file_bytes=cb.sizes[1],
        est=est,
        split_servers=split_servers,
        parts=tuple(sorted(parts.items())),
        preference=cb.preference,
        tier=cb.tier,
        rpc_link=rpc_link,
    )


def placement_points(it: Item, cb: Combo, est: Estimate, step_s: float) -> Points:
    """The points of model item `it` placed as `cb` with estimate `est`, decoding alone at one step per
    `step_s`: an embedder is held to its prefill floor, the rest to their decode floor."""
    if it.prefill_floor_tok_s is not None:
        short = shortfall(est.speed.prefill_tok_s, it.prefill_floor_tok_s)
    else:
        short = shortfall(1.0 / step_s if step_s > 0 else 0.0, it.min_tok_s)
    return Points(cb.preference, cb.tier, short)


def _alone_fits(c: Candidate, slots: Sequence[DevSlot], host_margin: Sequence[int]) -> bool:
    marg = dict(c.margin)
    for si, b in c.mem:
        s = slots[si]
        extra = marg.get(si, 0) if s.is_gpu else host_margin[s.server]
        if b + extra > s.capacity_bytes:
            return False
    return True


@dataclass(frozen=True)
class Combo:
    """One (model, quant, engine) choice of a model item, before any device is chosen."""

    ref: str
    quant: str | None  # asked of resolve_weights (None: the file's own quantization)
    label: str  # the quant as the candidate shows it (upper case; the file's type for a fixed file)
    engine: str  # the role's engine name (llama.cpp or vllm; `cfg.engine` is the estimator's)
    cfg: RunConfig
    quality: int  # an upper bound on its placements' points (objective.combo_points)
    sizes: tuple[int, int, int]  # weights: (total, file, token_embd) bytes
    preference: int = 0  # place in the role's model list
    tier: int = 0  # objective.QUANT_TIERS index
    # the bytes every decode step reads, where they bound its speed (`step_lower_bound_s`): a dense model on
    # llama.cpp reads all its weights but token_embd (a row lookup) per token; 0: no bound (MoE, vLLM)
    step_read_bytes: int = 0

    @property
    def weight_bytes(self) -> int:
        return self.sizes[0]


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
        draft = role_draft(cat, cache, role, spec)
        if role.draft is not None and draft is None:
            continue  # a catalog model of the role's task whose vocabulary the draft does not share
        if not context_limit(cat, spec.catalog_id or "", spec.arch.context_trained).allows(
            it.ctx, extension_ok=role.allow_context_extension
        ):
            continue  # past the trained context (recommend.context_notes says so in the plan)
        fixed_file = spec.weights is not None and spec.weights.exact
        quants: list[str | None] = [None] if fixed_file else list(role_quants(cat, role, stack.quality_floor_kld))
        engines = list(role.engines or ["llama.cpp", "vllm"])
        if draft is not None:
            engines = ["llama.cpp"]  # drafts are planned on llama.cpp only (planner.estimate.estimate)
        for quant in quants:
            q_up = (quant or (spec.weights.file_type if spec.weights else "") or "").upper()
            is_vllm_q = q_up in VLLM_QUANTS
            for engine in engines:
                if engine == "vllm" and (not is_vllm_q or fixed_file):
                    continue
                if engine == "llama.cpp" and is_vllm_q and q_up not in ("BF16",):
                    continue
                kld = quant_kld(cat, q_up) if q_up else 0.0
                tier = quant_tier(kld).index
                quality = combo_points(pref, tier)
                cfg = RunConfig(
                    engine="vllm" if engine == "vllm" else "llama.cpp",
                    ctx=it.ctx,
                    parallel=it.parallel,
                    kv_type_k=role.kv_type,
                    kv_type_v=role.kv_type,
                    flash_attn=True,
                    draft=draft,
                )
                try:
                    w = cache.weights(ref, quant, cfg.engine)
                except (EstimateError, PlannerError):
                    continue
                sizes = cache.sizes(w)
                # a draft makes a step yield more than one token: no bound from the bytes one token reads
                dense_llama = cfg.engine == "llama.cpp" and not spec.arch.is_moe and draft is None
                read_bytes = sizes[0] - sizes[2] if dense_llama else 0
                combos.append(Combo(ref, quant, q_up, engine, cfg, quality, sizes, pref, tier, read_bytes))
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
    meet_floors: bool = False,
) -> tuple[list[DevSlot], list[int], list[list[Candidate]]]:
    """Every feasible-alone, non-dominated candidate of each item on `servers`. With `split_item`, that
    item gets only llama.cpp RPC candidates spanning `split_pair` = (host server, remote server). With
    `meet_floors`, combos that cannot meet their floor (`could_meet_floor`) are not estimated on the servers
    after the first nor split."""
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
                    parts=((host_slot[si], MemoryParts(overhead_bytes=int(it.service.ram_gib * GIB))),),
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
            combos = [cb for cb in combos if cb.quality >= floor_q]
        # the candidates by server (the split ones first): dominance is only ever between candidates on the same
        # devices, so each part is pruned apart (`undominated`), in the same order as all of them together
        kept: list[Candidate] = []
        if split_item == ii:
            assert split_pair is not None
            a, b = split_pair
            link = parse_link(stack.link)
            split_rates = read_rates([*gpus[a], *gpus[b]], hosts[a])
            for cb in combos:
                if cb.engine == "vllm" or not gpus[b]:
                    continue
                devs = [*gpus[a], *gpus[b]]
                if meet_floors and not could_meet_floor(cb, it.min_tok_s, split_rates):
                    continue
                if cb.weight_bytes > sum(sl.capacity_bytes for sl in slots if sl.server in (a, b)):
                    continue
                est = cache.estimate(cb.ref, cb.quant, cb.cfg, devs, hosts[a])
                if est is None or not est.fits:  # the estimator's verdict: recommend and estimate agree
                    continue
                smap = [gpu_slot_index[(a, g)] for g in range(len(gpus[a]))]
                smap += [gpu_slot_index[(b, g)] for g in range(len(gpus[b]))]
                smap.append(host_slot[a])
                c = _candidate_from_estimate(
                    est,
                    cb,
                    ii,
                    it,
                    server=a,
                    slot_map=smap,
                    extra_step_s=rpc_step_s(est.arch.hidden_size, it.parallel, link),
                    split_servers=(a, b),
                    extra_host=(host_slot[b], RPC_SERVER_HOST_BYTES),
                    rpc_link=link,
                )
                if _alone_fits(c, slots, host_margin):
                    cands.append(c)
            kept += undominated(cands)
        for si in range(len(servers) if split_item != ii else 0):
            # the first server's candidates are memoized whole: with a quality floor, filter them instead of
            # re-building them from the floor-filtered combos
            filter_here = si == 0 and floor_q is not None
            here = combos
            if meet_floors and si > 0:
                rates = read_rates(gpus[si], hosts[si])
                here = [cb for cb in combos if could_meet_floor(cb, it.min_tok_s, rates)]
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
                item_combos(ii, it, cat, cache, stack) if filter_here else here,
                stack.quality_floor_kld,
            )
            # memoized (the server's candidates are the cache's): the main server's are pruned once per item
            kept += undominated(built, cache, min_quality=floor_q if filter_here else None)
        kept.sort(key=_candidate_order)
        out.append(kept)
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
    """Candidates of item `ii` on server `si` (memoized combo by combo: the main server's are the same for every
    second server tried, and a server seen before under other quality or floor filters reuses them)."""
    assert it.role is not None
    srv = servers[si]
    base = (
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
    )
    out: list[Candidate] = []
    cap_host = slots[host_slot[si]].capacity_bytes
    for cb in combos:
        key = (*base, cb.ref, cb.quant, cb.engine)
        hit = cache.server_cands.get(key)
        if hit is not None:
            out += hit
            continue
        mine: list[Candidate] = []
        subsets: list[tuple[int, ...]] = gpu_subsets(len(gpus[si]))
        if cb.engine == "llama.cpp":
            subsets = [*subsets, ()]
        for sub in subsets:
            devs = [gpus[si][g] for g in sub]
            if cb.engine == "vllm" and (not devs or any(d.vendor not in ("nvidia", "amd") for d in devs)):
                continue
            if cb.weight_bytes > sum(d.available_bytes for d in devs) + cap_host:
                continue
            est = cache.estimate(cb.ref, cb.quant, cb.cfg, devs, hosts[si])
            if est is None or not est.fits:  # the estimator's verdict: recommend and estimate agree
                continue
            smap = [gpu_slot_index[(si, g)] for g in sub] + [host_slot[si]]
            by_est = (id(est), *base[:5], si, *smap, cb.ref, cb.quant, cb.engine)
            c = cache.cands_by_est.get(by_est)
            if c is None:
                c = _candidate_from_estimate(est, cb, ii, it, server=si, slot_map=smap)
                cache.cands_by_est[by_est] = c
            if _alone_fits(c, slots, host_margin):
                mine.append(c)
        cache.server_cands[key] = mine
        out += mine
    return out


def dominates(b: Candidate, a: Candidate) -> bool:
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
    keep = undominated(cands)
    keep.sort(key=_candidate_order)
    return keep


def _dominance_vectors(group: Sequence[Candidate]) -> list[tuple[float, ...]]:
    """Candidates on the same devices as vectors, where `dominates(b, a)` is `b`'s vector entry by entry no
    larger than `a`'s: −quality, step time, file size, then memory, margins and decode times per DevSlot over
    the slots any of them uses (0 where one does not: memory, margins and times are never negative)."""
    mem_slots = sorted({si for c in group for si, _ in c.mem})
    margin_slots = sorted({si for c in group for si, _ in c.margin})
    tau_slots = sorted({si for c in group for si, _ in c.tau})
    out: list[tuple[float, ...]] = []
    for c in group:
        mem, margin, tau = dict(c.mem), dict(c.margin), dict(c.tau)
        out.append(
            (
                -c.quality,
                c.step_s,
                c.file_bytes,
                *(mem.get(si, 0) for si in mem_slots),
                *(margin.get(si, 0) for si in margin_slots),
                *(tau.get(si, 0.0) for si in tau_slots),
            )
        )
    return out


def _candidate_order(c: Candidate) -> tuple[int, int, int, float]:
    """The order of an item's candidates: best quality first, then fewer GPUs, less memory, faster."""
    return (-c.quality, len(c.gpu_slots), c.total_bytes, c.step_s)


def _placement_key(c: Candidate) -> tuple[object, ...]:
    return (c.server, c.gpu_slots, c.uses_cpu, c.split_servers)


def undominated(
    cands: Sequence[Candidate], cache: EstimateCache | None = None, *, min_quality: int | None = None
) -> list[Candidate]:
    """The candidates of `cands` scoring at least `min_quality` that no other one of the same devices
    dominates (the first of equals stays), by devices in order of first appearance, each in `cands`' order.

    With `cache`, the dominated ones are memoized by the candidates' ids (only for candidates the cache holds,
    so an id stays theirs), and found among all of `cands` before the quality filter: a candidate that dominates
    another scores at least as much, so it passes any filter the other passes, and filtering first would drop
    the same ones."""
    dominated: frozenset[int]
    key = tuple(id(c) for c in cands) if cache is not None else None
    hit = cache.dominated.get(key) if cache is not None and key is not None else None
    if hit is not None:
        dominated = hit
    else:
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, c in enumerate(cands):
            groups.setdefault(_placement_key(c), []).append(i)
        out: set[int] = set()
        for idx in groups.values():
            vecs = _dominance_vectors([cands[i] for i in idx])
            for k, i in enumerate(idx):
                v = vecs[k]
                # dominated by another (`dominates`: every entry no larger); of equals, the first stays
                if any(m != k and all(map(operator.le, w, v)) and (w != v or m < k) for m, w in enumerate(vecs)):
                    out.add(id(cands[i]))
        dominated = frozenset(out)
        if cache is not None and key is not None:
            cache.dominated[key] = dominated
    # devices in order of first appearance among the candidates that pass the filter, dominated or not
    by_devices: dict[tuple[object, ...], list[Candidate]] = {}
    for c in cands:
        if min_quality is None or c.quality >= min_quality:
            group = by_devices.setdefault(_placement_key(c), [])
            if id(c) not in dominated:
                group.append(c)
    return [c for group in by_devices.values() for c in group]


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
    meet_floors: bool = False,
) -> Problem:
    """One option's problem. `min_quality` (per item) leaves out candidates scoring less: the caller knows
    they are in no plan better than its incumbent, so they are not estimated on servers after the first; so
    are, with `meet_floors`, combos that cannot meet their floor there (the caller's incumbent meets every
    floor, so a better plan does too)."""
    from planner.estimate.engines import rules_for

    items = stack_items(stack, cat)
    slots, host_slot, cands = build_candidates(
        items,
        servers,
        cat,
        cache,
        stack,
        split_item=split_item,
        split_pair=split_pair,
        min_quality=min_quality,
        meet_floors=meet_floors,
    )
    n_models = sum(1 for it in items if it.is_model)
    fixed: list[list[Candidate]] = []
    for it, cs in zip(items, cands, strict=True):
        resident = it.service is not None or (
            it.role is not None and (it.role.residency == "always" if mode == "concurrent" else n_models == 1)
        )
        fixed.append([c if c.resident == resident else cache.with_residency(c, resident) for c in cs])
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


MissCode = Literal["unplaced", "below_floor", "swap_slow", "must_stay_loaded"]


@dataclass(frozen=True)
class Miss:
    """A floor a role misses, as a code and its numbers (the renderers phrase it; `text` is the English one
    the plan's notes carry): below_floor (tok/s, floor), swap_slow (s, limit s), must_stay_loaded, unplaced."""

    code: MissCode
    value: float = 0.0
    limit: float = 0.0

    @property
    def text(self) -> str:
        if self.code == "below_floor":
            return f"{self.value:.1f} tok/s < floor {self.limit:g}"
        if self.code == "swap_slow":
            return f"swap-in {self.value:.1f} s > {self.limit:g} s"
        if self.code == "must_stay_loaded":
            return "must stay loaded (residency: always) but the serial plan loads one model at a time"
        return "nothing fits"


@dataclass
class RoleResult:
    decode_tok_s: float
    swap_in_s: float | None
    failures: list[Miss]


@dataclass
class Evaluation:
    memory_ok: bool
    key: Key
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
            roles[ii] = RoleResult(0.0, None, [Miss("unplaced")])
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
        fails: list[Miss] = []
        if below_floor(tok_s, it.min_tok_s):
            fails.append(Miss("below_floor", tok_s, it.min_tok_s or 0.0))
        swap: float | None = None
        assert it.role is not None
        if not c.resident:
            hs = p.host_slot[c.server]
            free = p.slots[hs].capacity_bytes - used[hs] - p.host_margin_bytes[c.server]
            rate = p.disk_gbs[c.server]
            if free >= od_files[c.server]:
                # the faster of the two, as the branch and bound and the MILP take it (a measured disk may beat
                # the page cache's PCIe cap): more free RAM never makes a swap-in slower
                rate = max(rate, page_cache_gbs(p.slots[hs].device.bandwidth_gbs, bool(c.gpu_slots)))
            swap = c.file_bytes / (rate * 1e9)
            if it.role.residency == "always":
                fails.append(Miss("must_stay_loaded"))
            elif over_limit(swap, it.role.max_swap_in_s):
                fails.append(Miss("swap_slow", swap, it.role.max_swap_in_s or 0.0))
        roles[ii] = RoleResult(tok_s, swap, fails)
        if fails:
            failing.append(it.name)
            n_failures += len(fails)
    n_dev = sum(1 if p.slots[si].is_gpu else HOST_DEVICE_WEIGHT for si in used_gpus)
    key = Key(n_failures, -quality, p.cost_cents, n_dev)
    return Evaluation(memory_ok, key, failing, quality, n_dev, used, margin, roles, overflow)
