"""The saved plan (`agiplan recommend --out plan.json`): the contract between recommend, bench, report
and deploy. Schema-versioned; every model is closed (extra="forbid") so a foreign or edited file is
rejected with the field path.

JSON shape (stable keys, issue #3):
    {schema_version, kind: "agiplan-plan", created_at, agiplan_version, stack_name,
     options[] {kind, servers[] {name, new, cost_usd, hardware, cpu, ram_bytes, devices[] {id, index, kind,
                used_bytes, capacity_bytes, memory{...}},
                placements[] {role, model, quant, ctx, parallel, engine, devices, gpu_indices, memory_bytes,
                              memory{...}, decode_tok_s, ...}, services[]},
                total_cost_usd, meets_targets, quality_score, why, failing_roles[]},
     recommended, assumptions[]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from planner.io import load_versioned
from planner.io import read_versioned_json as read_versioned_json  # re-exported: callers import it from here
from planner.io import write_json_atomic as write_json_atomic  # re-exported

PLAN_SCHEMA_VERSION = 1
PLAN_KIND = "agiplan-plan"

OptionKind = Literal["one-server-serial", "one-server-concurrent", "two-server", "split"]
OPTION_KINDS: tuple[OptionKind, ...] = ("one-server-serial", "one-server-concurrent", "two-server", "split")
EngineName = Literal["llama.cpp", "ollama", "vllm"]
Residency = Literal["always", "on-demand"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryBreakdown(_Closed):
    weights_bytes: int = Field(ge=0)
    kv_cache_bytes: int = Field(ge=0)
    compute_bytes: int = Field(ge=0)
    overhead_bytes: int = Field(ge=0)


class PlanDevice(_Closed):
    """One memory pool of a server: a GPU (index = its position in the server, CUDA/ROCm order) or the host."""

    id: str  # catalog id (rtx-4090) or "cpu"
    index: int  # GPU index on that server; -1 for the host
    kind: Literal["gpu", "cpu"]
    name: str
    used_bytes: int = Field(ge=0)
    capacity_bytes: int = Field(ge=0)
    margin_bytes: int = Field(ge=0, default=0)
    memory: MemoryBreakdown  # summed over the placements resident at the same time


class Placement(_Closed):
    """One role served by one model on one server. `devices` lists the catalog ids of the GPUs it uses
    (one entry per card) plus "cpu" when layers are offloaded; `gpu_indices` the same GPUs by index.
    `memory_bytes` equals what `agiplan estimate` reports for the same model, quant, ctx, parallel,
    engine and GPUs."""

    role: str
    model: str  # what was resolved: catalog id, .gguf path or hf:owner/name
    model_name: str
    quant: str
    ctx: int = Field(gt=0)
    parallel: int = Field(gt=0)
    engine: EngineName
    devices: list[str]
    gpu_indices: list[int] = Field(default_factory=list)
    gpu_layers: int = Field(ge=0)  # llama.cpp -ngl (layers + output head on GPUs)
    n_cpu_moe: int = Field(ge=0, default=0)  # llama.cpp --n-cpu-moe: layers whose routed experts stay on the CPU
    n_layers: int = Field(gt=0)
    kv_type: str = "f16"
    flash_attn: bool = True
    residency: Residency = "always"
    memory_bytes: int = Field(ge=0)
    memory: MemoryBreakdown
    memory_by_device: dict[str, int] = Field(default_factory=dict)  # "gpu0"/"cpu" -> bytes
    kv_capacity_tokens: int = Field(ge=0)
    full_ctx_slots: int | None = None  # slots the KV cache holds at full ctx at once (vLLM queues the rest)
    decode_tok_s: float = Field(ge=0)  # per slot, all roles of the option decoding at once (contention)
    decode_tok_s_alone: float = Field(ge=0)  # this role alone on its devices
    prefill_tok_s: float = Field(ge=0)
    min_tok_s: float | None = None
    meets_target: bool
    swap_in_s: float | None = None  # on-demand roles: time to load from disk / page cache
    # ctx past the trained context: the documented extension the engine must be started with (catalog)
    context_extension: str = ""
    gpu_memory_utilization: float | None = None  # vLLM: fraction of each card's TOTAL memory
    tensor_parallel: int = 1
    adapters: list[str] = Field(default_factory=list)
    shares_base_with: str | None = None  # role whose loaded model this role reuses (LoRA / slots)
    split_hosts: list[str] = Field(default_factory=list)  # split kind: servers the layers span
    # an embedding model, served for /v1/embeddings (llama-server --embeddings); None: a plan written before
    # agiplan recorded it (deploy looks the model up)
    embedding: bool | None = None
    n_ubatch: int | None = None  # llama.cpp -b / -ub the memory was planned for (encoders: ctx); None: defaults
    note: str = ""


class PlanService(_Closed):
    name: str
    cpu_cores: float = Field(ge=0)
    ram_bytes: int = Field(ge=0)
    disk_bytes: int = Field(ge=0)


class PlanServer(_Closed):
    name: str
    new: bool  # to be bought
    cost_usd: float = Field(ge=0)  # 0 for existing servers
    hardware: str  # "2x rtx-4090, ryzen-9-7950x, 128 GiB"
    cpu: str | None  # catalog id
    gpus: list[str]  # catalog ids, index order
    ram_bytes: int = Field(ge=0)
    devices: list[PlanDevice]
    placements: list[Placement]
    services: list[PlanService] = Field(default_factory=list)
    parts: list[dict[str, Any]] = Field(default_factory=list)  # what to buy: {id, kind, count, price_usd, price_date}

    @field_validator("parts")
    @classmethod
    def _parts_typed(cls, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The part dicts are free-form for the solver but read by report: check the types it relies on."""
        for i, part in enumerate(parts):
            for key in ("id", "kind", "price_date"):
                if key in part and part[key] is not None and not isinstance(part[key], str):
                    raise ValueError(f"part {i}: '{key}' must be a string")
            count = part.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError(f"part {i}: 'count' must be a positive integer")
            price = part.get("price_usd")
            if price is not None and (not isinstance(price, int | float) or isinstance(price, bool) or price < 0):
                raise ValueError(f"part {i}: 'price_usd' must be a non-negative number or null")
        return parts


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
    role: str = ""
    roles: list[str] = Field(default_factory=list)
    model: str = ""
    quant: str = ""
    ctx: int = 0
    parallel: int = 0
    devices: str = ""  # "2x rtx-4090 + rtx-3090"; "" when the model runs on the CPU only
    need_bytes: int = 0
    capacity_bytes: int = 0
    margin_bytes: int = 0
    offload_bytes: int = 0
    spare_bytes: int = 0
    shared: bool = False
    misses: list[RoleMiss] = Field(default_factory=list)
    cost_usd: float = 0.0
    detail: str = ""
    sets_left: int = 0
    limit_s: float = 0.0


class Gain(_Closed):
    """What an option's extra cost buys one role over the option it is compared with: a better model
    (`model`: a higher place in the role's list), a better quant tier (`tier`), or its floor met (`floor`)."""

    role: str
    kind: Literal["model", "tier", "floor"]
    model: str
    quant: str
    tier: str
    decode_tok_s: float
    instead_model: str = ""  # the compared option's placement ("" when it left the role unplaced)
    instead_quant: str = ""
    instead_tier: str = ""
    instead_decode_tok_s: float = 0.0


class PlanOption(_Closed):
    kind: OptionKind
    servers: list[PlanServer]
    total_cost_usd: float = Field(ge=0)
    meets_targets: bool
    quality_score: float = 0.0
    why: str  # the English phrasing of `reasons` (plans written before them have only this)
    reasons: list[Reason] = Field(default_factory=list)
    failing_roles: list[str] = Field(default_factory=list)
    # money must buy something: against the cheapest option (`compared_with`), what the extra cost buys;
    # `same_as`: the same model placements as that cheaper option (the extra hardware buys nothing)
    compared_with: int | None = None
    extra_cost_usd: float = 0.0
    buys: list[Gain] = Field(default_factory=list)
    same_as: int | None = None


class Plan(_Closed):
    schema_version: int
    kind: Literal["agiplan-plan"] = "agiplan-plan"
    created_at: str
    agiplan_version: str
    stack_name: str
    options: list[PlanOption]
    recommended: int | None  # index into options; None when nothing meets the targets
    assumptions: list[str] = Field(default_factory=list)
    # optional, added by recommend: --what-if deltas against the recommended option, and when nothing meets
    # the targets, the nearest relaxations that do (lower quant, shorter context, more budget)
    what_ifs: list[dict[str, Any]] = Field(default_factory=list)
    relaxations: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _recommended_is_an_option(self) -> Plan:
        if self.recommended is not None and not 0 <= self.recommended < len(self.options):
            raise ValueError(f"recommended must index one of the {len(self.options)} options, or be null")
        return self


def save_plan(plan: Plan, path: Path) -> None:
    write_json_atomic(path, plan.model_dump(mode="json"))


def load_plan(path: Path) -> Plan:
    return load_versioned(path, PLAN_KIND, PLAN_SCHEMA_VERSION, Plan)
