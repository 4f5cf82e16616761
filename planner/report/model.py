"""The report object: one Plan (and optional bench results) turned into what a reader needs, in a fixed order.

`build_report(plan, bench_runs)` gathers: the options side by side with each role's speed and what breaks
first (margins recomputed with the estimator for context ×2 and one more slot), per server the roles and
the memory per device, what to buy, predicted vs measured, the deployment commands of the recommended
option, and where every number comes from. Renderers (markdown.py, the CLI's JSON) only format it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import PlannerError
from planner.io import validation_message
from planner.plan.schema import (
    Gain,
    Placement,
    Plan,
    PlanDevice,
    PlanOption,
    PlanServer,
    Reason,
    read_versioned_json,
)

if TYPE_CHECKING:
    from planner.estimate.types import Estimate, RunConfig

REPORT_SCHEMA_VERSION = 1
REPORT_KIND = "agiplan-report"
BENCH_KIND = "agiplan-bench"
BENCH_SCHEMA_VERSION = 1

Fit = Literal["fits", "breaks", "unknown"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------------- bench input (lenient)


class BenchFigures(BaseModel):
    """Predicted or measured figures of one bench run; only these keys are read, others are ignored."""

    model_config = ConfigDict(extra="allow")

    weights_bytes: float | None = None
    kv_cache_bytes: float | None = None
    compute_bytes: float | None = None
    peak_rss_bytes: float | None = None
    decode_tok_s: float | None = None
    prefill_tok_s: float | None = None
    ttft_s: float | None = None


class BenchRunIn(BaseModel):
    """One run of `agiplan bench` as the report reads it (extra keys allowed: the bench schema may grow)."""

    model_config = ConfigDict(extra="allow")

    model: str
    engine: str
    ctx: int = Field(ge=0)
    predicted: BenchFigures | None = None
    measured: BenchFigures = Field(default_factory=BenchFigures)
    verdict: str = "measured"
    role: str | None = None
    server: str | None = None


class BenchFile(_Closed):
    """A bench result file: host summary (kept as given) and its runs."""

    path: str
    host: dict[str, Any]
    runs: list[BenchRunIn]


def load_bench(path: Path) -> BenchFile:
    """Read a bench JSON (kind agiplan-bench, schema_version 1); one-line PlannerError on anything else."""
    raw = read_versioned_json(Path(path), BENCH_KIND, BENCH_SCHEMA_VERSION)
    host = raw.get("host", {})
    runs = raw.get("runs", [])
    if not isinstance(host, dict):
        raise PlannerError(f"{path}: host: expected an object.")
    if not isinstance(runs, list):
        raise PlannerError(f"{path}: runs: expected a list.")
    out: list[BenchRunIn] = []
    for i, r in enumerate(runs):
        try:
            out.append(BenchRunIn.model_validate(r))
        except ValidationError as e:
            raise PlannerError(f"{path}: runs.{i}.{validation_message(e)}.") from e
    return BenchFile(path=str(path), host=host, runs=out)


# ----------------------------------------------------------------------------------------- the report


class DeviceView(_Closed):
    id: str
    index: int
    kind: Literal["gpu", "cpu"]
    name: str
    used_bytes: int
    capacity_bytes: int
    margin_bytes: int
    free_bytes: int  # capacity - used - margin (negative: over)
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int


class RoleView(_Closed):
    role: str
    model: str
    model_name: str
    quant: str
    ctx: int
    parallel: int
    engine: str
    devices: list[str]
    gpu_indices: list[int]
    kv_type: str
    flash_attn: bool
    residency: str
    memory_bytes: int
    decode_tok_s: float
    decode_tok_s_alone: float
    prefill_tok_s: float
    min_tok_s: float | None
    meets_target: bool
    swap_in_s: float | None
    shares_base_with: str | None
    split_hosts: list[str]
    note: str
    draft_model_name: str | None = None  # speculative decoding: the draft model, its quant and decode speed-up
    draft_quant: str | None = None
    draft_speedup: float | None = None


class PartView(_Closed):
    option: int
    server: str
    id: str
    kind: str
    count: int
    price_usd: float | None
    price_date: str | None
    condition: Literal["new", "used"] = "new"  # a plan written before conditions were recorded: new
    price_basis: str | None = None  # street / used / msrp / estimate / assumption; None: not recorded


class ServerView(_Closed):
    name: str
    new: bool
    cost_usd: float
    hardware: str
    devices: list[DeviceView]
    roles: list[RoleView]
    parts: list[PartView]


class Headroom(_Closed):
    """Whether the role still fits with its context doubled, and with one more slot, on the plan's devices
    (other roles' memory unchanged). `*_extra_bytes`: what the change adds; `*_device`: where it breaks."""

    role: str
    server: str
    ctx_x2: Fit
    ctx_x2_extra_bytes: int | None = None
    ctx_x2_device: str | None = None
    slot_plus1: Fit
    slot_plus1_extra_bytes: int | None = None
    slot_plus1_device: str | None = None
    reason: str = ""


class OptionView(_Closed):
    index: int
    kind: str
    recommended: bool
    meets_targets: bool
    total_cost_usd: float
    quality_score: float
    why: str
    reasons: list[Reason] = Field(default_factory=list)  # phrased per language by i18n.why_text
    compared_with: int | None = None  # what a dearer option buys over this one (i18n.purchase_text)
    extra_cost_usd: float = 0.0
    buys: list[Gain] = Field(default_factory=list)
    same_as: int | None = None
    failing_roles: list[str]
    servers: list[ServerView]
    headroom: list[Headroom]
    largest_free_bytes: int  # room for one more role: the most free memory on one GPU (0: no GPU free)
    largest_free_device: str

    def role(self, name: str) -> RoleView | None:
        for s in self.servers:
            for r in s.roles:
                if r.role == name:
                    return r
        return None


class BenchMetric(_Closed):
    name: str
    predicted: float | None
    measured: float | None
    residual: float | None  # measured / predicted - 1


class BenchView(_Closed):
    file: str
    host: str
    model: str
    engine: str
    ctx: int
    role: str | None
    server: str | None
    verdict: str
    metrics: list[BenchMetric]
    ttft_s: float | None
    peak_rss_bytes: float | None


class DeployProcessView(_Closed):
    name: str
    kind: str
    engine: str
    roles: list[str]
    command: str  # shell line: ENV=... argv


class DeployView(_Closed):
    server: str
    processes: list[DeployProcessView]
    endpoints: dict[str, str]  # role -> base URL
    notes: list[str]
    error: str | None = None


class SourceLine(_Closed):
    what: str
    source: str


class Report(_Closed):
    kind: Literal["agiplan-report"] = "agiplan-report"
    schema_version: int = REPORT_SCHEMA_VERSION
    stack_name: str
    plan_created_at: str
    agiplan_version: str
    recommended: int | None
    options: list[OptionView]
    role_names: list[str]  # every role of every option, first-seen order
    parts: list[PartView]
    bench: list[BenchView]
    deployment: list[DeployView]
    assumptions: list[str]
    sources: list[SourceLine]


# ----------------------------------------------------------------------------------------- builders


def _device_view(d: PlanDevice) -> DeviceView:
    return DeviceView(
        id=d.id,
        index=d.index,
        kind=d.kind,
        name=d.name,
        used_bytes=d.used_bytes,
        capacity_bytes=d.capacity_bytes,
        margin_bytes=d.margin_bytes,
        free_bytes=d.capacity_bytes - d.used_bytes - d.margin_bytes,
        weights_bytes=d.memory.weights_bytes,
        kv_cache_bytes=d.memory.kv_cache_bytes,
        compute_bytes=d.memory.compute_bytes,
        overhead_bytes=d.memory.overhead_bytes,
    )


def _role_view(p: Placement) -> RoleView:
    return RoleView(
        role=p.role,
        model=p.model,
        model_name=p.model_name,
        quant=p.quant,
        ctx=p.ctx,
        parallel=p.parallel,
        engine=p.engine,
        devices=list(p.devices),
        gpu_indices=list(p.gpu_indices),
        kv_type=p.kv_type,
        flash_attn=p.flash_attn,
        residency=p.residency,
        memory_bytes=p.memory_bytes,
        decode_tok_s=p.decode_tok_s,
        decode_tok_s_alone=p.decode_tok_s_alone,
        prefill_tok_s=p.prefill_tok_s,
        min_tok_s=p.min_tok_s,
        meets_target=p.meets_target,
        swap_in_s=p.swap_in_s,
        shares_base_with=p.shares_base_with,
        split_hosts=list(p.split_hosts),
        note=p.note,
        draft_model_name=p.draft.model_name if p.draft else None,
        draft_quant=p.draft.quant if p.draft else None,
        draft_speedup=p.draft.speedup if p.draft else None,
    )


def _parts(index: int, s: PlanServer) -> list[PartView]:
    out: list[PartView] = []
    for part in s.parts:
        price = part.get("price_usd")
        date = part.get("price_date")
        out.append(
            PartView(
                option=index,
                server=s.name,
                id=str(part.get("id", "?")),
                kind=str(part.get("kind", "")),
                count=int(part.get("count", 1)),
                price_usd=float(price) if isinstance(price, int | float) else None,
                price_date=str(date) if date is not None else None,
                condition="used" if part.get("condition") == "used" else "new",
                price_basis=str(part["price_basis"]) if part.get("price_basis") is not None else None,
            )
        )
    return out


# The estimator's inputs for one placement on one server -> its estimates (as planned, ctx×2, +1 slot).
HeadroomMemo = dict["HeadroomInputs", tuple["Estimate", "Estimate", "Estimate"]]


def headroom(server: PlanServer, p: Placement, memo: HeadroomMemo | None = None) -> Headroom:
    """Recompute `p` with the estimator at ctx×2 and at parallel+1 and check that what it adds fits in what
    the plan leaves free on each of its devices. Models that cannot be resolved offline (hf: refs, missing
    files) or engines without a fixed footprint give "unknown". `memo` (one per report) keeps the estimates
    of a placement that several options repeat on the same hardware, so they are computed once."""
    if p.shares_base_with:
        return Headroom(role=p.role, server=server.name, ctx_x2="unknown", slot_plus1="unknown", reason="shared")
    if p.model.startswith("hf:"):
        return Headroom(role=p.role, server=server.name, ctx_x2="unknown", slot_plus1="unknown", reason="hf")
    if p.split_hosts:
        return Headroom(role=p.role, server=server.name, ctx_x2="unknown", slot_plus1="unknown", reason="split")
    try:
        key = _headroom_inputs(server, p)
        if memo is not None and key in memo:
            base, ctx2, slot = memo[key]
        else:
            base, ctx2, slot = _headroom_estimates(key)
            if memo is not None:
                memo[key] = (base, ctx2, slot)
    except (PlannerError, KeyError, IndexError, ValueError) as e:
        return Headroom(
            role=p.role, server=server.name, ctx_x2="unknown", slot_plus1="unknown", reason=str(e).split("\n")[0]
        )
    by_index = {d.index: d for d in server.devices}
    cpu = next((d for d in server.devices if d.kind == "cpu"), None)

    def verdict(bigger: Any) -> tuple[Fit, int, str | None]:
        if p.engine == "vllm":
            # vLLM's footprint is fixed by --gpu-memory-utilization; what changes is whether the KV it gets
            # holds every slot at full context.
            need = bigger.config.ctx * bigger.config.parallel
            ok = bigger.fits and bigger.kv_capacity_tokens >= need
            return ("fits" if ok else "breaks"), 0, None if ok else ",".join(f"gpu{i}" for i in p.gpu_indices)
        extra_total = 0
        broken: str | None = None
        gi = 0
        for d0, d1 in zip(base.devices, bigger.devices, strict=True):
            extra = d1.used_bytes - d0.used_bytes
            extra_total += extra
            if d0.device.is_gpu:
                dev = by_index.get(p.gpu_indices[gi]) if gi < len(p.gpu_indices) else None
                label = f"gpu{p.gpu_indices[gi]}" if gi < len(p.gpu_indices) else d0.device.id
                gi += 1
            else:
                dev, label = cpu, "cpu"
            if dev is None:
                continue
            if extra > dev.capacity_bytes - dev.used_bytes - dev.margin_bytes and broken is None:
                broken = label
        return ("breaks" if broken else "fits"), extra_total, broken

    c_fit, c_extra, c_dev = verdict(ctx2)
    s_fit, s_extra, s_dev = verdict(slot)
    return Headroom(
        role=p.role,
        server=server.name,
        ctx_x2=c_fit,
        ctx_x2_extra_bytes=c_extra,
        ctx_x2_device=c_dev,
        slot_plus1=s_fit,
        slot_plus1_extra_bytes=s_extra,
        slot_plus1_device=s_dev,
    )


# What the estimator needs to recompute a placement: model ref, quant (None: a GGUF file's own), the run
# config as planned, the GPU ids it uses, the server's CPU id and RAM bytes. Also the report's memo key.
HeadroomInputs = tuple[str, "str | None", "RunConfig", tuple[str, ...], "str | None", "int | None"]


def _headroom_inputs(server: PlanServer, p: Placement) -> HeadroomInputs:
    gpu_ids = tuple(server.gpus[i] for i in p.gpu_indices)
    return p.model, p.estimate_quant(), p.run_config(), gpu_ids, server.cpu, server.ram_bytes


def _headroom_estimates(inputs: HeadroomInputs) -> tuple[Estimate, Estimate, Estimate]:
    """The placement estimated as planned, at ctx×2 and at parallel+1 on its server's devices."""
    from dataclasses import replace

    from planner.catalog import load_catalog
    from planner.estimate.devices import gpu_device, host_device
    from planner.estimate.estimate import estimate
    from planner.sources.resolve import resolve_model

    model, quant, cfg, gpu_ids, cpu, ram_bytes = inputs
    cat = load_catalog()
    spec = resolve_model(model)
    gpus = [gpu_device(cat, g) for g in gpu_ids]
    host = host_device(cat, cpu, ram_bytes / 2**30 if ram_bytes else None)

    def run(ctx: int, parallel: int) -> Estimate:
        return estimate(spec, replace(cfg, ctx=ctx, parallel=parallel), gpus, host, quant=quant, suggest=False)

    return run(cfg.ctx, cfg.parallel), run(cfg.ctx * 2, cfg.parallel), run(cfg.ctx, cfg.parallel + 1)


def _option_view(
    i: int, opt: PlanOption, recommended: int | None, margins: bool, memo: HeadroomMemo | None = None
) -> OptionView:
    servers: list[ServerView] = []
    rooms: list[Headroom] = []
    best_free, best_dev = 0, ""
    for s in opt.servers:
        devs = [_device_view(d) for d in s.devices]
        for d in devs:
            if d.kind == "gpu" and d.free_bytes > best_free:
                best_free, best_dev = d.free_bytes, f"{s.name}/gpu{d.index}"
        servers.append(
            ServerView(
                name=s.name,
                new=s.new,
                cost_usd=s.cost_usd,
                hardware=s.hardware,
                devices=devs,
                roles=[_role_view(p) for p in s.placements],
                parts=_parts(i, s),
            )
        )
        if margins:
            rooms += [headroom(s, p, memo) for p in s.placements]
    return OptionView(
        index=i,
        kind=opt.kind,
        recommended=recommended == i,
        meets_targets=opt.meets_targets,
        total_cost_usd=opt.total_cost_usd,
        quality_score=opt.quality_score,
        why=opt.why,
        reasons=list(opt.reasons),
        compared_with=opt.compared_with,
        extra_cost_usd=opt.extra_cost_usd,
        buys=list(opt.buys),
        same_as=opt.same_as,
        failing_roles=list(opt.failing_roles),
        servers=servers,
        headroom=rooms,
        largest_free_bytes=best_free,
        largest_free_device=best_dev,
    )


_METRICS = ("weights_bytes", "kv_cache_bytes", "compute_bytes", "decode_tok_s", "prefill_tok_s")


def _bench_views(files: Sequence[BenchFile]) -> list[BenchView]:
    out: list[BenchView] = []
    for f in files:
        host = str(f.host.get("hostname") or f.host.get("cpu") or "?")
        for r in f.runs:
            metrics: list[BenchMetric] = []
            for key in _METRICS:
                pv = getattr(r.predicted, key) if r.predicted else None
                mv = getattr(r.measured, key)
                if pv is None and mv is None:
                    continue
                res = round(mv / pv - 1.0, 4) if (pv and mv is not None) else None
                metrics.append(BenchMetric(name=key, predicted=pv, measured=mv, residual=res))
            out.append(
                BenchView(
                    file=Path(f.path).name,
                    host=host,
                    model=r.model,
                    engine=r.engine,
                    ctx=r.ctx,
                    role=r.role,
                    server=r.server,
                    verdict=r.verdict,
                    metrics=metrics,
                    ttft_s=r.measured.ttft_s,
                    peak_rss_bytes=r.measured.peak_rss_bytes,
                )
            )
    return out


def _deployment(plan: Plan) -> list[DeployView]:
    from planner.deploy import build_deployment

    if plan.recommended is None:
        return []
    out: list[DeployView] = []
    for s in plan.options[plan.recommended].servers:
        try:
            dep = build_deployment(plan, s.name, plan.recommended)
        except PlannerError as e:
            out.append(DeployView(server=s.name, processes=[], endpoints={}, notes=[], error=str(e)))
            continue
        out.append(
            DeployView(
                server=s.name,
                processes=[
                    DeployProcessView(name=p.name, kind=p.kind, engine=p.engine, roles=list(p.roles), command=p.shell())
                    for p in dep.processes
                ],
                endpoints={e.role: f"{e.base_url} (model {e.model_name})" for e in dep.endpoints if e.server == s.name},
                notes=dep.notes,
            )
        )
    return out


def _sources(plan: Plan, bench: Sequence[BenchFile]) -> list[SourceLine]:
    from planner.catalog import load_catalog

    cat = load_catalog()
    lines: list[SourceLine] = []
    gpu_ids: list[str] = []
    model_ids: list[str] = []
    part_ids: list[str] = []
    for opt in plan.options:
        for s in opt.servers:
            for item, seen in (
                *((g, gpu_ids) for g in s.gpus),
                *((p.model, model_ids) for p in s.placements),
                *((str(x.get("id")), part_ids) for x in s.parts),
            ):
                if item not in seen:
                    seen.append(item)
    for g in gpu_ids:
        if g in cat.gpus:
            e = cat.gpus[g]
            lines.append(SourceLine(what=f"gpu:{g}:memory", source=e.sources.get("memory_mib", e.source)))
    for pid in part_ids:
        if pid in cat.gpus or pid in cat.cpus:
            e2 = cat.gpus.get(pid) or cat.cpus[pid]
            lines.append(SourceLine(what=f"price:{pid}", source=e2.sources.get("price_usd", e2.source)))
    for m in model_ids:
        if m in cat.models:
            lines.append(SourceLine(what=f"model:{m}", source=cat.models[m].source))
        elif m.endswith(".gguf"):
            lines.append(SourceLine(what=f"model:{Path(m).name}", source="gguf-header"))
        else:
            lines.append(SourceLine(what=f"model:{m}", source="hf-config"))
    for f in bench:
        lines.append(SourceLine(what=f"bench:{Path(f.path).name}", source="measured"))
    return lines


def build_report(
    plan: Plan, bench: Sequence[BenchFile] = (), *, margins: bool = True, deployment: bool = True
) -> Report:
    """The report object for `plan` and optional bench files. `margins`: recompute ctx×2 / +1 slot with the
    estimator (cheap: three estimates per role); `deployment`: include the recommended option's commands."""
    roles: list[str] = []
    for opt in plan.options:
        for s in opt.servers:
            roles += [p.role for p in s.placements if p.role not in roles]
    memo: HeadroomMemo = {}  # per report: a placement repeated across options is estimated once
    options = [_option_view(i, o, plan.recommended, margins, memo) for i, o in enumerate(plan.options)]
    return Report(
        stack_name=plan.stack_name,
        plan_created_at=plan.created_at,
        agiplan_version=plan.agiplan_version,
        recommended=plan.recommended,
        options=options,
        role_names=roles,
        parts=[p for o in options for s in o.servers for p in s.parts],
        bench=_bench_views(bench),
        deployment=_deployment(plan) if deployment else [],
        assumptions=list(plan.assumptions),
        sources=_sources(plan, bench),
    )
