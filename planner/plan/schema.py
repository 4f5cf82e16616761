"""The saved plan (`agiplan recommend --out plan.json`): the contract between recommend, bench, report
and deploy. Schema-versioned; every model is closed (extra="forbid") so a foreign or edited file is
rejected with the field path.

JSON shape (stable keys, issue #3):
    {schema_version, kind: "agiplan-plan", created_at, agiplan_version, stack_name,
     options[] {kind, servers[] {name, new, cost_usd, hardware, cpu, ram_bytes, devices[] {id, index, kind,
                used_bytes, capacity_bytes, memory{...}},
                placements[] {role, model, quant, ctx, parallel, engine, devices, gpu_indices, memory_bytes,
                              memory{...}, decode_tok_s, draft{model, quant, n_max, n_min, acceptance,
                              gpu_layers, memory_bytes, speedup} | null, ...}, services[]},
                total_cost_usd, meets_targets, quality_score, why, failing_roles[]},
     recommended, assumptions[]}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from planner.estimate.speculative import DraftConfig
from planner.estimate.types import RunConfig, SplitMode
from planner.io import load_versioned
from planner.io import read_versioned_json as read_versioned_json  # re-exported: callers import it from here
from planner.io import write_json_atomic as write_json_atomic  # re-exported
from planner.sources.resolve import resolve_model

PLAN_SCHEMA_VERSION = 1
PLAN_KIND = "agiplan-plan"

OptionKind = Literal["one-server-serial", "one-server-concurrent", "two-server", "split"]
OPTION_KINDS: tuple[OptionKind, ...] = ("one-server-serial", "one-server-concurrent", "two-server", "split")
EngineName = Literal["llama.cpp", "ollama", "vllm"]
Residency = Literal["always", "on-demand"]


MAX_GPUS_PER_SERVER = 16  # as planner.plan.servers plans them
_CONTROL_CHARS = frozenset([*map(chr, range(0x20)), "\x7f", "\x85", "\u2028", "\u2029"])


def _no_control_chars(text: str) -> str:
    """Free text (model paths, hardware descriptions, notes) may hold anything printable but no control
    character: no newline, carriage return, NUL or Unicode line separator that could end a line of a
    generated script, YAML file or Modelfile."""
    bad = next((c for c in text if c in _CONTROL_CHARS), None)
    if bad is not None:
        raise ValueError(f"control character {bad!r} is not allowed here")
    return text


# Names that become file names, process names, YAML keys and command-line values (roles, servers, the
# stack): the stack file's grammar (planner.plan.stack.Name), so any plan recommend writes passes.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", min_length=1, max_length=64)]
# Identifiers written into flags (quant, KV type, catalog ids, versions): the same characters plus '+'.
Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$", min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_no_control_chars)]


class _Closed(BaseModel):
    # extra="forbid": a foreign key is an error; allow_inf_nan=False: NaN and ±inf never pass as numbers
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class MemoryBreakdown(_Closed):
    weights_bytes: int = Field(ge=0)
    kv_cache_bytes: int = Field(ge=0)
    compute_bytes: int = Field(ge=0)
    overhead_bytes: int = Field(ge=0)


class PlanDevice(_Closed):
    """One memory pool of a server: a GPU (index = its position in the server, CUDA/ROCm order) or the host."""

    id: Ident  # catalog id (rtx-4090) or "cpu"
    index: int = Field(ge=-1, lt=MAX_GPUS_PER_SERVER)  # GPU index on that server; -1 for the host
    kind: Literal["gpu", "cpu"]
    name: Text
    used_bytes: int = Field(ge=0)
    capacity_bytes: int = Field(ge=0)
    margin_bytes: int = Field(ge=0, default=0)
    memory: MemoryBreakdown  # summed over the placements resident at the same time


class PlanDraft(_Closed):
    """The draft model a placement runs for speculative decoding (llama.cpp -md): what deploy passes on and
    what the placement's memory and speed already include."""

    model: Text  # catalog id, .gguf path or hf:owner/name, as the stack named it
    model_name: Text
    quant: Ident
    n_max: int = Field(ge=1, le=64)  # --spec-draft-n-max
    n_min: int = Field(ge=0, le=64)  # --spec-draft-n-min
    acceptance: float = Field(ge=0, le=1)  # the rate the speed assumes
    acceptance_given: bool = False  # True: the stack's; False: the default for the role's task
    gpu_layers: int = Field(ge=0)  # -ngld
    n_layers: int = Field(gt=0)
    memory_bytes: int = Field(ge=0)  # the draft's part of the placement's memory
    speedup: float = Field(ge=0)  # decode per slot with the draft ÷ without, at the planned slots


class Placement(_Closed):
    """One role served by one model on one server. `devices` lists the catalog ids of the GPUs it uses
    (one entry per card) plus "cpu" when layers are offloaded; `gpu_indices` the same GPUs by index.
    `memory_bytes` equals what `agiplan estimate` reports for the same model, quant, ctx, parallel,
    engine and GPUs."""

    role: Name
    model: Text  # what was resolved: catalog id, .gguf path or hf:owner/name
    model_name: Text
    quant: Ident
    ctx: int = Field(gt=0, le=2**24)
    parallel: int = Field(gt=0, le=4096)
    engine: EngineName
    devices: list[Ident]
    # index on the GPU's own server (a split placement lists the other servers' GPUs too)
    gpu_indices: list[Annotated[int, Field(ge=0, lt=MAX_GPUS_PER_SERVER)]] = Field(default_factory=list)
    gpu_layers: int = Field(ge=0)  # llama.cpp -ngl (layers + output head on GPUs)
    n_cpu_moe: int = Field(ge=0, default=0)  # llama.cpp --n-cpu-moe: layers whose routed experts stay on the CPU
    n_layers: int = Field(gt=0)
    kv_type: Ident = "f16"
    flash_attn: bool = True
    residency: Residency = "always"
    memory_bytes: int = Field(ge=0)
    memory: MemoryBreakdown
    # "gpu0"/"cpu" -> bytes; a split placement names the server: "main/gpu0"
    memory_by_device: dict[
        Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9][A-Za-z0-9_.\-]*/)?(gpu[0-9]+|cpu)$")],
        Annotated[int, Field(ge=0)],
    ] = Field(default_factory=dict)
    kv_capacity_tokens: int = Field(ge=0)
    full_ctx_slots: int | None = None  # slots the KV cache holds at full ctx at once (vLLM queues the rest)
    decode_tok_s: float = Field(ge=0)  # per slot, all roles of the option decoding at once (contention)
    decode_tok_s_alone: float = Field(ge=0)  # this role alone on its devices
    prefill_tok_s: float = Field(ge=0)
    min_tok_s: float | None = None
    meets_target: bool
    swap_in_s: float | None = Field(default=None, ge=0)  # on-demand roles: time to load from disk / page cache
    # ctx past the trained context: the documented extension the engine must be started with (catalog)
    context_extension: Text = ""
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)  # vLLM: fraction of each card's TOTAL memory
    tensor_parallel: int = Field(default=1, ge=1, le=MAX_GPUS_PER_SERVER)
    adapters: list[Text] = Field(default_factory=list)
    shares_base_with: Name | None = None  # role whose loaded model this role reuses (LoRA / slots)
    split_hosts: list[Name] = Field(default_factory=list)  # split kind: servers the layers span
    # an embedding model, served for /v1/embeddings (llama-server --embeddings); None: a plan written before
    # agiplan recorded it (deploy looks the model up)
    embedding: bool | None = None
    n_ubatch: int | None = Field(default=None, gt=0, le=2**24)  # llama.cpp -b / -ub the memory was planned for
    note: Text = ""
    # llama.cpp -sm over several GPUs: recommend plans `layer`; `tensor` (EXPERIMENTAL in b11434) only by hand
    split_mode: SplitMode = "layer"
    draft: PlanDraft | None = None  # speculative decoding

    def run_config(self) -> RunConfig:
        """The estimator's inputs as planned: what `agiplan estimate` re-runs (report headroom, property tests)."""
        return RunConfig(
            engine=self.engine,
            ctx=self.ctx,
            parallel=self.parallel,
            kv_type_k=self.kv_type,
            kv_type_v=self.kv_type,
            flash_attn=self.flash_attn,
            gpu_layers=self.gpu_layers if self.engine != "vllm" else None,
            cpu_moe_layers=self.n_cpu_moe,
            gpu_memory_utilization=self.gpu_memory_utilization or 0.9,
            split_mode=self.split_mode,
            draft=self.draft_config(),
        )

    def draft_config(self) -> DraftConfig | None:
        """The draft as the estimator takes it (its model resolved: a catalog id, or a .gguf's header)."""
        d = self.draft
        if d is None:
            return None
        return DraftConfig(
            resolve_model(d.model),
            quant=None if d.model.endswith(".gguf") else d.quant,
            n_max=d.n_max,
            n_min=d.n_min,
            acceptance=d.acceptance,
            gpu_layers=d.gpu_layers,
            kv_type_k=self.kv_type,
            kv_type_v=self.kv_type,
        )

    def estimate_quant(self) -> str | None:
        """The quant to ask the estimator for: None for a GGUF file (its own tensors' types)."""
        return None if self.model.endswith(".gguf") else self.quant


class PlanService(_Closed):
    name: Name
    cpu_cores: float = Field(ge=0)
    ram_bytes: int = Field(ge=0)
    disk_bytes: int = Field(ge=0)


class PlanServer(_Closed):
    name: Name
    new: bool  # to be bought
    cost_usd: float = Field(ge=0)  # 0 for existing servers
    hardware: Text  # "2x rtx-4090, ryzen-9-7950x, 128 GiB"
    cpu: Ident | None  # catalog id
    gpus: list[Ident] = Field(max_length=MAX_GPUS_PER_SERVER)  # catalog ids, index order
    ram_bytes: int = Field(ge=0)
    devices: list[PlanDevice]
    placements: list[Placement]
    services: list[PlanService] = Field(default_factory=list)
    parts: list[dict[str, Any]] = Field(
        default_factory=list
    )  # what to buy: {id, kind, count, price_usd, price_date, condition, price_basis, price_source}

    @field_validator("parts")
    @classmethod
    def _parts_typed(cls, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The part dicts are free-form for the solver but read by report: check the types it relies on."""
        for i, part in enumerate(parts):
            for key in ("id", "kind", "price_date", "price_basis", "price_source"):
                if key in part and part[key] is not None and not isinstance(part[key], str):
                    raise ValueError(f"part {i}: '{key}' must be a string")
            if part.get("condition", "new") not in ("new", "used"):
                raise ValueError(f"part {i}: 'condition' must be new or used")
            count = part.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError(f"part {i}: 'count' must be a positive integer")
            price = part.get("price_usd")
            if price is not None and (
                not isinstance(price, int | float) or isinstance(price, bool) or not math.isfinite(price) or price < 0
            ):
                raise ValueError(f"part {i}: 'price_usd' must be a non-negative number or null")
        return parts

    @model_validator(mode="after")
    def _indices_and_names(self) -> PlanServer:
        """GPU indices name GPUs of this server (a split placement's also name the other hosts' GPUs, so they
        are only bounded); each role appears once; a shared base is a role of this server."""
        roles = [p.role for p in self.placements]
        dup = _first_duplicate(roles)
        if dup is not None:
            raise ValueError(f"role '{dup}' is placed twice on server '{self.name}'")
        for p in self.placements:
            if not p.split_hosts:
                bad = [i for i in p.gpu_indices if i >= len(self.gpus)]
                if bad:
                    raise ValueError(
                        f"role '{p.role}': GPU index {bad[0]} but server '{self.name}' has {len(self.gpus)} GPU(s)"
                    )
            if p.shares_base_with is not None and p.shares_base_with not in roles:
                raise ValueError(f"role '{p.role}': shares_base_with '{p.shares_base_with}' is not a role here")
        for d in self.devices:
            if d.kind == "gpu" and not 0 <= d.index < len(self.gpus):
                raise ValueError(f"device '{d.name}': GPU index {d.index} but the server has {len(self.gpus)} GPU(s)")
        return self


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


class RoleMiss(_Closed):
    """A floor a role misses: below_floor (value tok/s < limit), swap_slow (value s > limit s),
    must_stay_loaded, unplaced."""

    code: Literal["unplaced", "below_floor", "swap_slow", "must_stay_loaded"]
    value: float = 0.0
    limit: float = 0.0


class Reason(_Closed):
    """One part of why an option is what it is, as a code and its numbers; the renderers phrase it
    (planner.report.i18n.why_text), so a Russian report is Russian throughout. Codes: meets_all; misses
    (roles); fit (the largest role: what it needs, on which devices, what is left); role_misses (role,
    misses); buys_hardware (cost_usd); no_plan (detail: nothing_fits, no_second_server, no_split_role,
    no_split_gpu, search_limit, time_out_sets with sets_left and limit_s)."""

    code: Literal["meets_all", "misses", "fit", "role_misses", "buys_hardware", "no_plan"]
    role: Text = ""
    roles: list[Name] = Field(default_factory=list)
    model: Text = ""
    quant: Text = ""
    ctx: int = 0
    parallel: int = 0
    devices: Text = ""  # "2x rtx-4090 + rtx-3090"; "" when the model runs on the CPU only
    need_bytes: int = 0
    capacity_bytes: int = 0
    margin_bytes: int = 0
    offload_bytes: int = 0
    spare_bytes: int = 0
    shared: bool = False
    misses: list[RoleMiss] = Field(default_factory=list)
    cost_usd: float = 0.0
    detail: Text = ""
    sets_left: int = 0
    limit_s: float = 0.0


class Gain(_Closed):
    """What an option's extra cost buys one role over the option it is compared with: a better model
    (`model`: a higher place in the role's list), a better quant tier (`tier`), or its floor met (`floor`)."""

    role: Name
    kind: Literal["model", "tier", "floor"]
    model: Text
    quant: Text
    tier: Text
    decode_tok_s: float
    instead_model: Text = ""  # the compared option's placement ("" when it left the role unplaced)
    instead_quant: Text = ""
    instead_tier: Text = ""
    instead_decode_tok_s: float = 0.0


class PlanOption(_Closed):
    kind: OptionKind
    servers: list[PlanServer]
    total_cost_usd: float = Field(ge=0)
    meets_targets: bool
    quality_score: float = 0.0
    why: Text  # the English phrasing of `reasons` (plans written before them have only this)
    reasons: list[Reason] = Field(default_factory=list)
    failing_roles: list[Name] = Field(default_factory=list)
    # money must buy something: against the cheapest option (`compared_with`), what the extra cost buys;
    # `same_as`: the same model placements as that cheaper option (the extra hardware buys nothing)
    compared_with: int | None = Field(default=None, ge=0)
    extra_cost_usd: float = Field(default=0.0, ge=0)
    buys: list[Gain] = Field(default_factory=list)
    same_as: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _unique_names(self) -> PlanOption:
        """Server names are unique in an option, a role is served by one server, and a split names servers
        of the option."""
        names = [s.name for s in self.servers]
        dup = _first_duplicate(names)
        if dup is not None:
            raise ValueError(f"server name '{dup}' is used twice")
        dup = _first_duplicate([p.role for s in self.servers for p in s.placements])
        if dup is not None:
            raise ValueError(f"role '{dup}' is placed on two servers")
        for s in self.servers:
            for p in s.placements:
                unknown = [h for h in p.split_hosts if h not in names]
                if unknown:
                    raise ValueError(f"role '{p.role}': split host '{unknown[0]}' is not a server of this option")
        return self


class Plan(_Closed):
    schema_version: int
    kind: Literal["agiplan-plan"] = "agiplan-plan"
    created_at: Text
    agiplan_version: Ident
    stack_name: Name
    options: list[PlanOption]
    recommended: int | None  # index into options; None when nothing meets the targets
    assumptions: list[Text] = Field(default_factory=list)
    # optional, added by recommend: --what-if deltas against the recommended option, and when nothing meets
    # the targets, the nearest relaxations that do (lower quant, shorter context, more budget)
    what_ifs: list[dict[str, Any]] = Field(default_factory=list)
    relaxations: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _recommended_is_an_option(self) -> Plan:
        if self.recommended is not None and not 0 <= self.recommended < len(self.options):
            raise ValueError(f"recommended must index one of the {len(self.options)} options, or be null")
        return self


def save_plan(plan: Plan, path: Path) -> None:
    write_json_atomic(path, plan.model_dump(mode="json"))


def load_plan(path: Path) -> Plan:
    return load_versioned(path, PLAN_KIND, PLAN_SCHEMA_VERSION, Plan)
