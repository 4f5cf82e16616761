"""The stack file: the roles (models) and services a person wants to run, validated with pydantic.

YAML shape (see README "## recommend"):

    name: agents
    quality_floor_kld: 0.11        # default quant ladder keeps quants with mean KLD <= this
    disk: nvme-gen4                # where on-demand models are read from (catalog disks)
    link: 1GbE                     # network between servers, for a model split over two (default 1GbE)
    roles:
      - name: reasoner
        models: [qwen2.5-72b, llama-3.3-70b]   # candidates, preferred first (catalog id, .gguf, hf:...)
        quants: [Q4_K_M, IQ4_XS]               # optional; else the default ladder above the floor
        ctx: 16384                             # tokens per conversation
        parallel: 1                            # conversations at once (slots)
        min_tok_s: 8                           # decode target per slot, under the planned load
        residency: always                      # or on-demand (+ max_swap_in_s)
        draft: llama-3.2-3b                    # optional: speculative decoding (or {model, quant, n_max, ...})
      - name: helper
        share_with: reasoner                   # extra slots on the reasoner's loaded model
    services:
      - {name: vector-db, cpu_cores: 2, ram_gib: 8, disk_gib: 50}

Loaders raise `PlannerError("file: field.path: what is expected")` on bad input, never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from planner.errors import PlannerError, UnknownIdError
from planner.estimate.speculative import LLAMA_CPP_DRAFT_N_MAX, LLAMA_CPP_DRAFT_N_MIN
from planner.io import read_text_bounded
from planner.plan.contention import DEFAULT_LINK, parse_link
from planner.yaml_strict import load_yaml_text

PRESETS: tuple[str, ...] = ("deep", "agents", "ensemble")
DEFAULT_QUALITY_FLOOR_KLD = 0.11  # keeps Q3_K_M (0.102) and IQ3_M (0.103), drops Q2_K (0.445): catalog quants.yaml

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", min_length=1, max_length=64)]
# Bounds checked before any work: the presets have 5 roles; 64 roles or services is far past a real stack
# on a few servers and keeps a hostile file (100k roles) from running the solver until killed.
MAX_ROLES = 64
MAX_SERVICES = 64
MAX_CANDIDATES = 32  # models or quants listed for one role
# A stack file is hand-written: the presets are ~1 KiB, 64 roles ~20 KiB. The strict (pure-Python) YAML
# loader reads ~100 KB/s on its worst input (a 255 KB flow sequence took 2.8 s on the 2-core machine under
# load), so 128 KiB keeps every stack file within the 5 s bound.
STACK_MAX_BYTES = 128 << 10

Task = Literal["reasoner", "coder", "chat", "summarizer", "embedding", "vision"]


class _Closed(BaseModel):
    # strict: a number a person types is a number ("8192" and `true` are refused, not coerced)
    model_config = ConfigDict(extra="forbid", strict=True)


_QUANT_SUFFIX = re.compile(r"^(?P<model>.+):(?P<quant>[A-Za-z0-9][A-Za-z0-9_]*)$")


def split_model_quant(text: str) -> tuple[str, str | None]:
    """`MODEL[:QUANT]` (llama-3.2-3b:Q8_0) as (model, quant); `hf:owner/name` alone keeps its prefix."""
    m = _QUANT_SUFFIX.match(text)
    if m is None or m.group("model") == "hf":
        return text, None
    return m.group("model"), m.group("quant")


class DraftSpec(_Closed):
    """The draft model of a role (speculative decoding, llama.cpp -md): a catalog id, .gguf or hf:owner/name,
    `MODEL:QUANT` or with `quant`; the tokens drafted a step (--spec-draft-n-max, default 3 as in llama.cpp
    b11434) and the fewest worth verifying (--spec-draft-n-min); the acceptance rate if known (default: by the
    role's task, planner.estimate.speculative); its layers on the GPUs (-ngld; default all)."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    quant: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    n_max: int = Field(default=LLAMA_CPP_DRAFT_N_MAX, ge=1, le=64)
    n_min: int = Field(default=LLAMA_CPP_DRAFT_N_MIN, ge=0, le=64)
    acceptance: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    gpu_layers: int | None = Field(default=None, ge=0, le=100_000)

    @model_validator(mode="after")
    def _quant_once(self) -> Self:
        model, quant = split_model_quant(self.model)
        if quant is not None:
            if self.quant is not None:
                raise ValueError(f"draft '{self.model}' names its quant twice; drop ':{quant}' or quant:")
            self.model, self.quant = model, quant
        if self.n_min > self.n_max:
            raise ValueError(f"draft n_min ({self.n_min}) must not exceed n_max ({self.n_max})")
        return self


class RoleSpec(_Closed):
    """One agent role served by one model. `models` are candidates in order of preference; without them
    `task` picks the catalog models tagged with that role, best catalog quality score first."""

    name: Name
    models: list[Annotated[str, StringConstraints(min_length=1, max_length=512)]] = Field(
        default_factory=list, max_length=MAX_CANDIDATES
    )
    task: Task | None = None
    quants: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=MAX_CANDIDATES
    )
    engines: list[Literal["llama.cpp", "vllm"]] | None = None
    ctx: int = Field(default=8192, gt=0, le=1_048_576)
    parallel: int = Field(default=1, gt=0, le=256)
    min_tok_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    residency: Literal["always", "on-demand"] = "always"
    max_swap_in_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    adapters: list[str] = Field(
        default_factory=list, max_length=MAX_CANDIDATES
    )  # LoRA adapters served on this role's model
    share_with: Name | None = None  # served as extra slots of another role's loaded model
    kv_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    # ctx past a model's trained context only with its documented extension (catalog context_extension: YaRN)
    allow_context_extension: bool = False
    draft: DraftSpec | None = None  # speculative decoding: planned on llama.cpp only

    @field_validator("draft", mode="before")
    @classmethod
    def _draft_shorthand(cls, value: object) -> object:
        return {"model": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_models(self) -> Self:
        if self.share_with is not None:
            if self.models or self.task or self.quants or self.draft:
                raise ValueError("a role with share_with uses the other role's model; drop models/task/quants/draft")
            return self
        if self.draft is not None and self.engines is not None and "llama.cpp" not in self.engines:
            raise ValueError("a draft model is planned on llama.cpp only; add llama.cpp to engines or drop draft")
        if not self.models and self.task is None:
            raise ValueError("give models: [candidate ids, preferred first] or task: reasoner|coder|chat|...")
        if self.max_swap_in_s is not None and self.residency != "on-demand":
            raise ValueError("max_swap_in_s applies to residency: on-demand")
        return self


class ServiceSpec(_Closed):
    """A process without a model (vector DB, indexer, web UI): it needs host cores, RAM and disk."""

    name: Name
    cpu_cores: float = Field(default=1.0, ge=0, le=4096)
    ram_gib: float = Field(default=1.0, ge=0, le=1 << 20)
    disk_gib: float = Field(default=0.0, ge=0, le=1 << 30)


class Stack(_Closed):
    name: Name = "stack"
    description: str = ""
    quality_floor_kld: float = Field(default=DEFAULT_QUALITY_FLOOR_KLD, gt=0, allow_inf_nan=False)
    disk: str = "nvme-gen4"
    # a purchasable part with a catalog used price (e.g. a used RTX 3090) is bought used; off: new only
    allow_used: bool = False
    # the network between servers, priced when a model is split over two (llama.cpp RPC): 1GbE, 2.5GbE, 10GbE …
    link: str = Field(default=DEFAULT_LINK, max_length=40)
    roles: list[RoleSpec] = Field(min_length=1, max_length=MAX_ROLES)
    services: list[ServiceSpec] = Field(default_factory=list, max_length=MAX_SERVICES)

    @model_validator(mode="after")
    def _names(self) -> Self:
        seen: set[str] = set()
        for item in [*(r.name for r in self.roles), *(s.name for s in self.services)]:
            if item in seen:
                raise ValueError(f"name '{item}' is used twice (roles and services need unique names)")
            seen.add(item)
        by_name = {r.name: r for r in self.roles}
        for r in self.roles:
            if r.share_with is None:
                continue
            host = by_name.get(r.share_with)
            if host is None:
                raise ValueError(f"role '{r.name}': share_with '{r.share_with}' is not a role of this stack")
            if host.share_with is not None:
                raise ValueError(f"role '{r.name}': share_with '{r.share_with}' itself shares; point at its base")
        return self

    @model_validator(mode="after")
    def _link(self) -> Self:
        parse_link(self.link)  # ValueError -> "link: expected a line rate such as 1GbE …"
        return self

    def role(self, name: str) -> RoleSpec:
        for r in self.roles:
            if r.name == name:
                return r
        raise UnknownIdError("role", name, [r.name for r in self.roles], "Roles are the names in the stack file.")


def _format_errors(origin: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"{origin}: " + "; ".join(parts) + more


def parse_stack(data: object, origin: str = "stack") -> Stack:
    """Validate a stack given as parsed YAML/JSON data; errors name `origin` and the field path."""
    if not isinstance(data, dict):
        raise PlannerError(f"{origin}: expected a mapping with 'roles:' at the top, got {type(data).__name__}.")
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        raise PlannerError(_format_errors(origin, exc)) from None


def load_stack(path: Path | str) -> Stack:
    """Read and validate a stack YAML file (a regular file of at most STACK_MAX_BYTES, strict YAML)."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise PlannerError(f"{p}: no such stack file (or use --preset {'|'.join(PRESETS)}).")
    text = read_text_bounded(p, "stack file", STACK_MAX_BYTES)
    return parse_stack(load_yaml_text(text, str(p)), str(p))


def preset_dir() -> Path:
    return Path(__file__).parent / "presets"


def load_preset(name: str) -> Stack:
    """One of the shipped stacks: deep, agents, ensemble (planner/plan/presets/NAME.yaml)."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise UnknownIdError("preset", name, PRESETS, f"Presets: {', '.join(PRESETS)}; or pass a stack file.")
    return load_stack(preset_dir() / f"{key}.yaml")


_ASSIGN_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)\.([a-z_]+)\s*=\s*(.+?)\s*$")


def apply_override(stack: Stack, text: str) -> Stack:
    """`ROLE.FIELD=VALUE` (e.g. reasoner.ctx=32768, coder.quants=Q8_0,Q6_K): a changed, re-validated stack."""
    m = _ASSIGN_RE.match(text)
    if not m:
        raise PlannerError(f"what-if '{text}': expected ROLE.FIELD=VALUE (e.g. reasoner.ctx=32768) or '+N GPU-ID'.")
    role_name, field, value = m.groups()
    role = stack.role(role_name)
    if field not in RoleSpec.model_fields or field in ("name",):
        known = ", ".join(f for f in RoleSpec.model_fields if f != "name")
        raise PlannerError(f"what-if '{text}': roles have no field '{field}' (known: {known}).")
    parsed: object
    if field in ("models", "quants", "engines", "adapters"):
        parsed = [v.strip() for v in value.split(",")]
    else:
        parsed = load_yaml_text(value, f"what-if '{text}'")
    data = stack.model_dump()
    for r in data["roles"]:
        if r["name"] == role.name:
            r[field] = parsed
    return parse_stack(data, f"what-if '{text}'")
