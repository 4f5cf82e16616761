"""The catalog's data model: pydantic classes per YAML file and entry kind, strict and closed (extra=forbid).

Every entry carries `source` (a URL or document reference for its figures) and may carry
`sources: {field_name: source}` for figures that come from elsewhere. Prices always come with
`price_date` (YYYY-MM) and a `sources["price_usd"]` citation; street and used prices likewise
(`street_price_usd` / `used_price_usd`, each with its `_date` and its `sources` entry). Bits per weight
of GGUF tensor types are NOT stored here: they are derived from `gguf.GGML_QUANT_SIZES` (see planner/catalog/load.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9.\-]*$"

EntryId = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=64)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
YearMonth = Annotated[str, StringConstraints(pattern=r"^(19|20)\d\d-(0[1-9]|1[0-2])$")]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]

Role = Literal["reasoner", "coder", "chat", "summarizer", "embedding", "vision"]
Vendor = Literal["nvidia", "amd", "intel", "apple"]
Backend = Literal["cuda", "rocm", "vulkan", "metal", "sycl", "cpu"]
WeightFormat = Literal["gguf", "safetensors", "awq", "gptq", "fp8", "exl2"]
DdrGeneration = Literal["DDR4", "DDR5"]


class _Strict(BaseModel):
    """Closed, immutable, no silent coercion of strings into numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class _Sourced(_Strict):
    """An entry whose figures carry provenance: `source` for all, `sources[field]` where a figure differs."""

    source: NonEmptyStr
    sources: dict[str, NonEmptyStr] = Field(default_factory=dict)

    def source_of(self, field_name: str) -> str:
        """The citation for one field: its own when given, else the entry's."""
        return self.sources.get(field_name, self.source)

    @model_validator(mode="after")
    def _sources_name_fields(self) -> Self:
        known = set(type(self).model_fields)
        unknown = sorted(k for k in self.sources if k.split(".")[0] not in known)
        if unknown:
            raise ValueError(f"sources names unknown field(s): {', '.join(unknown)}")
        return self


PriceBasis = Literal["street", "used", "msrp"]


@dataclass(frozen=True)
class PartPrice:
    """What one unit of a part costs to buy: the figure, its month, its citation and which price it is
    (street: new at retail; used: second-hand; msrp: launch list price, when no street price is known)."""

    usd: float
    date: str
    basis: PriceBasis
    source: str

    @property
    def condition(self) -> Literal["new", "used"]:
        return "used" if self.basis == "used" else "new"


class _Priced(_Sourced):
    """Launch list price (`price_usd`, MSRP) and, where a dated public page states them, the street price
    of a new unit and the used price (each with its month and its own citation in `sources`)."""

    price_usd: PosFloat | None = None
    price_date: YearMonth | None = None
    street_price_usd: PosFloat | None = None
    street_price_date: YearMonth | None = None
    used_price_usd: PosFloat | None = None
    used_price_date: YearMonth | None = None

    @model_validator(mode="after")
    def _price_has_date_and_source(self) -> Self:
        for prefix in ("", "street_", "used_"):
            value, date = getattr(self, f"{prefix}price_usd"), getattr(self, f"{prefix}price_date")
            if value is None and date is not None:
                raise ValueError(f"{prefix}price_date without {prefix}price_usd")
            if value is not None:
                if date is None:
                    raise ValueError(f"{prefix}price_usd needs {prefix}price_date (YYYY-MM)")
                if f"{prefix}price_usd" not in self.sources:
                    raise ValueError(f"{prefix}price_usd needs its own citation in sources.{prefix}price_usd")
        return self

    def purchase_price(self, *, allow_used: bool = False) -> PartPrice | None:
        """The price a buyer pays today: used when allowed and known, else street, else launch MSRP;
        None when the catalog has no price at all."""
        order: tuple[tuple[str, PriceBasis], ...] = (("used_", "used"), ("street_", "street"), ("", "msrp"))
        for prefix, basis in order:
            if basis == "used" and not allow_used:
                continue
            value, date = getattr(self, f"{prefix}price_usd"), getattr(self, f"{prefix}price_date")
            if value is not None:
                return PartPrice(usd=float(value), date=date, basis=basis, source=self.sources[f"{prefix}price_usd"])
        return None


# ---------------------------------------------------------------------------------------------- models


class SwaPattern(_Strict):
    """Which layers use the sliding window: all of them, or all but every n-th (Gemma 3: every 6th is global,
    i.e. layer i is global when i % n == n - 1, as llama.cpp's `set_swa_pattern(n)`), or an explicit list."""

    all: bool = False
    every_nth_global: Annotated[int, Field(ge=2)] | None = None
    layers: list[bool] | None = None  # True = sliding-window layer

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [self.all, self.every_nth_global is not None, self.layers is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of all: true, every_nth_global: N, layers: [...]")
        return self

    def swa_layers(self, n_layers: int) -> tuple[bool, ...]:
        if self.all:
            return (True,) * n_layers
        if self.every_nth_global is not None:
            n = self.every_nth_global
            return tuple(i % n != n - 1 for i in range(n_layers))
        assert self.layers is not None
        return tuple(self.layers)


class ExpertsEntry(_Strict):
    count: PosInt
    active: PosInt
    ffn_size: PosInt
    shared: NonNegInt = 0
    shared_ffn_size: NonNegInt = 0

    @model_validator(mode="after")
    def _active_le_count(self) -> Self:
        if self.active > self.count:
            raise ValueError(f"active experts ({self.active}) exceed count ({self.count})")
        if self.shared and not self.shared_ffn_size:
            raise ValueError("shared experts need shared_ffn_size")
        return self


class GgufSize(_Strict):
    """A published GGUF file size (whole file, bytes) and where it was read. Hub listings round (4.92 GB):
    `precision_bytes` says how far the true size may be from `bytes` (0 = exact, read from the file)."""

    bytes: PosInt
    precision_bytes: NonNegInt = 0
    source: NonEmptyStr
    file: str | None = None


HubRepo = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*/[A-Za-z0-9][A-Za-z0-9._\-]*$")]


class GgufDownload(_Strict):
    """Where a model's GGUF files are published: a Hub repository and the file name, `{quant}` standing for the
    quant id (bartowski: `Llama-3.3-70B-Instruct-{quant}.gguf`). `source` says whether the name was seen on the
    Hub or follows the publisher's naming unverified. A quant's own `gguf_sizes[quant].file` wins."""

    repo: HubRepo
    file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*\{quant\}[A-Za-z0-9._\-]*\.gguf$")]
    source: NonEmptyStr

    def file_for(self, quant: str) -> str:
        return self.file.replace("{quant}", quant)


class CheckpointDownload(_Strict):
    """A quantized checkpoint for vLLM (AWQ / GPTQ / FP8): the Hub repository vLLM serves."""

    repo: HubRepo
    source: NonEmptyStr


class Downloads(_Strict):
    """What `agiplan deploy`'s fetch.sh downloads for a model: GGUF files by quant, checkpoints by quant id."""

    gguf: GgufDownload | None = None
    checkpoints: dict[str, CheckpointDownload] = Field(default_factory=dict)


class Quality(_Strict):
    """One benchmark score for ranking; higher is better. Compare only scores of the same benchmark."""

    score: float
    benchmark: NonEmptyStr  # e.g. "MMLU (5-shot)", "LMSYS Arena Elo", "MTEB multilingual"
    source: NonEmptyStr


_ARCH_FIELDS = (
    "layers",
    "hidden_size",
    "heads",
    "kv_heads",
    "head_dim_k",
    "head_dim_v",
    "ffn_size",
    "vocab_size",
    "context_trained",
    "params",
)


class ModelEntry(_Sourced):
    """A model family member. Fine-tunes set `base` and leave the architecture to the base entry."""

    id: EntryId
    name: NonEmptyStr
    family: NonEmptyStr
    base: EntryId | None = None
    architecture: NonEmptyStr | None = None  # llama.cpp general.architecture
    roles: list[Role] = Field(min_length=1)
    languages: list[Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]] = Field(default_factory=list)
    version_note: str | None = None
    hf_repo: NonEmptyStr
    layers: PosInt | None = None
    hidden_size: PosInt | None = None
    heads: PosInt | None = None
    kv_heads: PosInt | None = None
    head_dim_k: PosInt | None = None
    head_dim_v: PosInt | None = None
    ffn_size: PosInt | None = None
    vocab_size: PosInt | None = None
    context_trained: PosInt | None = None
    # a documented extension past the trained context (RoPE scaling / YaRN), how it is switched on
    context_extended: PosInt | None = None
    context_extension: NonEmptyStr | None = None
    sliding_window: PosInt | None = None
    swa_pattern: SwaPattern | None = None
    experts: ExpertsEntry | None = None
    tied_embeddings: bool | None = None
    params: PosInt | None = None
    gguf_sizes: dict[str, GgufSize] = Field(default_factory=dict)
    quality: Quality | None = None
    downloads: Downloads | None = None  # Hub repositories / files deploy's fetch.sh downloads

    @model_validator(mode="after")
    def _shape_is_sane(self) -> Self:
        if self.base is None:
            required = (*_ARCH_FIELDS, "architecture", "tied_embeddings")
            missing = [f for f in required if getattr(self, f) is None]
            if missing:
                raise ValueError(f"missing field(s) {', '.join(missing)} (or set base: <model id>)")
        else:
            given = [
                f
                for f in (*_ARCH_FIELDS, "architecture", "experts", "swa_pattern", "context_extended")
                if getattr(self, f)
            ]
            given += ["sliding_window"] if self.sliding_window is not None else []
            if given:
                raise ValueError(f"fine-tune of '{self.base}' must not redefine {', '.join(given)}; it uses the base's")
            return self
        if self.heads is not None and self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads})")
        if (self.context_extended is None) != (self.context_extension is None):
            raise ValueError("context_extended and context_extension go together")
        if self.context_extended is not None and self.context_extended <= (self.context_trained or 0):
            raise ValueError(f"context_extended ({self.context_extended}) must exceed context_trained")
        if (self.sliding_window is None) != (self.swa_pattern is None):
            raise ValueError("sliding_window and swa_pattern go together")
        explicit = self.swa_pattern.layers if self.swa_pattern is not None else None
        if explicit is not None and self.layers is not None and len(explicit) != self.layers:
            raise ValueError(f"swa_pattern.layers has {len(explicit)} entries, not {self.layers}")
        return self


class ModelsFile(_Strict):
    models: list[ModelEntry]


# ---------------------------------------------------------------------------------------------- quants


QuantKind = Literal["float", "tensor_type", "file_type", "awq", "gptq", "exl2", "fp8"]


class PublishedBpw(_Strict):
    """Effective bits per weight of a GGUF file type as published for one model (whole file / params)."""

    model: NonEmptyStr  # the model it was measured on, e.g. "Llama-3.1-8B"
    bpw: PosFloat
    source: NonEmptyStr


class QuantQuality(_Strict):
    """Quality cost vs the 16-bit model: `ppl_delta` = perplexity increase, `kld` = mean KL divergence."""

    reference_model: NonEmptyStr
    ppl_delta: float | None = None
    kld: Annotated[float, Field(ge=0)] | None = None
    source: NonEmptyStr

    @model_validator(mode="after")
    def _has_a_number(self) -> Self:
        if self.ppl_delta is None and self.kld is None:
            raise ValueError("give ppl_delta and/or kld")
        return self


class QuantEntry(_Sourced):
    """A weight (or KV cache) number format.

    `float` / `awq` / `gptq` / `fp8` store `bpw`; `tensor_type` derives it from gguf.GGML_QUANT_SIZES
    (`ggml_type` names the GGMLQuantizationType, default = id); `file_type` names its `base_type`
    and may list `published_bpw` per model; `exl2` takes its bits as a parameter (`bpw_range`).
    `quality_loss` orders quants for a solver: higher = worse, in the unit named by `quality_loss_unit`.
    """

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    name: NonEmptyStr
    kind: QuantKind
    formats: list[WeightFormat] = Field(min_length=1)
    bpw: PosFloat | None = None
    ggml_type: str | None = None
    base_type: str | None = None
    published_bpw: list[PublishedBpw] = Field(default_factory=list)
    bpw_range: Annotated[list[PosFloat], Field(min_length=2, max_length=2)] | None = None
    group_size: PosInt | None = None
    kv_cache_type: bool = False
    quality: QuantQuality | None = None
    quality_loss: Annotated[float, Field(ge=0)] | None = None
    quality_loss_unit: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _kind_rules(self) -> Self:
        if self.kind == "tensor_type" and self.bpw is not None:
            raise ValueError("tensor_type bpw is derived from gguf.GGML_QUANT_SIZES; do not store it")
        if self.kind in ("float", "awq", "gptq", "fp8") and self.bpw is None:
            raise ValueError(f"{self.kind} quant needs bpw")
        if self.kind == "file_type" and self.base_type is None:
            raise ValueError("file_type needs base_type (its main GGUF tensor type)")
        if self.kind == "exl2" and self.bpw_range is None:
            raise ValueError("exl2 needs bpw_range: [min, max]")
        if self.bpw_range is not None and self.bpw_range[0] > self.bpw_range[1]:
            raise ValueError("bpw_range must be [min, max]")
        if (self.quality_loss is None) != (self.quality_loss_unit is None):
            raise ValueError("quality_loss and quality_loss_unit go together")
        return self


class QuantsFile(_Strict):
    quants: list[QuantEntry]


# ---------------------------------------------------------------------------------------------- hardware


class GpuEntry(_Priced):
    """A GPU. `memory_mib` is what the driver reports as total (nvidia-smi / NVML), not the marketing size.
    `bandwidth_gbs` in 10^9 B/s = bus width (bits) / 8 × data rate (GT/s). `fp16_tflops`: dense tensor-core
    FP16 with FP32 accumulate unless `fp16_note` says otherwise."""

    id: EntryId
    name: NonEmptyStr
    vendor: Vendor
    arch: NonEmptyStr
    names: list[NonEmptyStr] = Field(min_length=1)
    memory_mib: PosInt
    memory_type: NonEmptyStr
    bus_width_bits: PosInt
    bandwidth_gbs: PosFloat
    fp16_tflops: PosFloat
    fp16_note: str | None = None
    tdp_w: PosInt
    backends: list[Backend] = Field(min_length=1)
    form: Literal["consumer", "workstation", "datacenter"]
    # A machine whose GPU and CPU share one memory (Apple M-series, Ryzen AI Max, DGX Spark): memory_mib is the
    # whole pool, gpu_share the part the GPU may use by default; the rest is the host's RAM.
    unified_memory: bool = False
    gpu_share: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _unified_has_share(self) -> Self:
        if self.unified_memory != (self.gpu_share is not None):
            raise ValueError("unified_memory and gpu_share go together (the part of the pool the GPU may use)")
        return self


class CpuEntry(_Priced):
    """A CPU. `fp32_gflops` = cores × boost GHz × FP32 FLOPs/cycle/core (stated in `fp32_formula`); a
    peak for prefill estimates, not sustained."""

    id: EntryId
    name: NonEmptyStr
    vendor: Vendor
    names: list[NonEmptyStr] = Field(min_length=1)
    cores: PosInt
    threads: PosInt
    boost_ghz: PosFloat
    memory_channels: PosInt
    ddr: DdrGeneration
    ddr_speed_mts: PosInt
    max_ram_gib: PosInt
    avx512: bool
    fp32_gflops: PosFloat
    fp32_formula: NonEmptyStr
    tdp_w: PosInt

    @model_validator(mode="after")
    def _threads(self) -> Self:
        if self.threads < self.cores:
            raise ValueError(f"threads ({self.threads}) < cores ({self.cores})")
        return self

    @property
    def peak_bandwidth_gbs(self) -> float:
        """Theoretical DRAM bandwidth: channels × MT/s × 8 B (64-bit channel) / 1000."""
        return self.memory_channels * self.ddr_speed_mts * 8 / 1000


class RamPrice(_Strict):
    ddr: DdrGeneration
    usd_per_gib: PosFloat
    price_date: YearMonth
    source: NonEmptyStr
    note: str | None = None


class DiskEntry(_Sourced):
    id: EntryId
    name: NonEmptyStr
    read_gbs: PosFloat


class HardwareFile(_Strict):
    gpus: list[GpuEntry]
    cpus: list[CpuEntry]
    ram_prices: list[RamPrice] = Field(min_length=1)
    disks: list[DiskEntry] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------- engines


RuleValue = int | float | bool | str


class EngineRule(_Strict):
    """One memory rule or default of an engine, with its unit and the source file that sets it."""

    value: RuleValue
    unit: str | None = None
    source: NonEmptyStr
    note: str | None = None


class EngineEntry(_Sourced):
    id: EntryId
    name: NonEmptyStr
    formats: list[WeightFormat] = Field(min_length=1)
    vendors: list[Vendor] = Field(min_length=1)
    backends: list[Backend] = Field(min_length=1)
    kv_cache_types: list[NonEmptyStr] = Field(min_length=1)
    multi_model: bool
    rules: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")], EngineRule] = Field(default_factory=dict)

    def rule(self, name: str) -> EngineRule:
        try:
            return self.rules[name]
        except KeyError:
            known = ", ".join(sorted(self.rules))
            raise KeyError(f"engine {self.id} has no rule '{name}' (known: {known})") from None


class EnginesFile(_Strict):
    engines: list[EngineEntry]
