"""Finding, parsing and validating the catalog YAML files, and the `Catalog` object the rest of agiplan reads.

Where the data lives: `$AGIPLAN_CATALOG_DIR` if set; else `planner/_catalog_data/` (an installed wheel,
see pyproject's force-include); else `<repo>/catalog/`. Invalid data raises `CatalogError` with one line
per problem, each naming the file and the field path (`models.yaml: models[3].kv_heads: ...`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from planner.catalog.schema import (
    CpuEntry,
    DdrGeneration,
    DiskEntry,
    EngineEntry,
    EnginesFile,
    GpuEntry,
    HardwareFile,
    ModelEntry,
    ModelsFile,
    QuantEntry,
    QuantsFile,
    RamPrice,
)
from planner.errors import CatalogError, PlannerError, UnknownIdError
from planner.gguf_constants import ggml_block_sizes
from planner.io import read_text_bounded
from planner.model.arch import ExpertSpec, ModelArch, Source
from planner.model.quant_scheme import bits_per_weight

ENV_DIR = "AGIPLAN_CATALOG_DIR"
FILES = ("models.yaml", "quants.yaml", "hardware.yaml", "engines.yaml")
# the largest catalog file is under 50 KiB (models.yaml); 4 MiB is 80 times that, and bounds a hostile folder
_MAX_CATALOG_FILE_BYTES = 4 << 20

_PKG_DIR = Path(__file__).resolve().parent.parent  # planner/
_INSTALLED_DIR = _PKG_DIR / "_catalog_data"
_REPO_DIR = _PKG_DIR.parent / "catalog"

_M = TypeVar("_M", bound=BaseModel)
_E = TypeVar("_E")


def catalog_dir() -> Path:
    """The directory the default catalog is read from (see the module docstring for the order)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    if (_INSTALLED_DIR / "models.yaml").is_file():
        return _INSTALLED_DIR
    return _REPO_DIR


def load_catalog() -> Catalog:
    """The catalog from `catalog_dir()`, parsed once per directory per process."""
    return _load_cached(str(catalog_dir().resolve()))


@functools.cache
def _load_cached(path: str) -> Catalog:
    from planner.catalog.cache import cached_catalog  # validated catalog kept on disk between runs

    return cached_catalog(Path(path), load_catalog_dir)


def load_catalog_dir(path: Path | str) -> Catalog:
    """Parse and validate the four catalog files in `path` (uncached; for tests and user catalogs)."""
    root = Path(path)
    if not root.is_dir():
        raise CatalogError(
            f"Catalog directory {root} does not exist. Set {ENV_DIR} to a directory with {', '.join(FILES)}."
        )
    problems: list[str] = []
    models = _parse(root / "models.yaml", ModelsFile, problems)
    quants = _parse(root / "quants.yaml", QuantsFile, problems)
    hardware = _parse(root / "hardware.yaml", HardwareFile, problems)
    engines = _parse(root / "engines.yaml", EnginesFile, problems)
    if models is None or quants is None or hardware is None or engines is None:
        raise CatalogError("Invalid catalog data:\n" + "\n".join(problems))
    cat = Catalog(
        root=root,
        models=_by_id("models.yaml", "models", models.models, problems),
        quants=_by_id("quants.yaml", "quants", quants.quants, problems),
        gpus=_by_id("hardware.yaml", "gpus", hardware.gpus, problems),
        cpus=_by_id("hardware.yaml", "cpus", hardware.cpus, problems),
        engines=_by_id("engines.yaml", "engines", engines.engines, problems),
        ram_prices={p.ddr: p for p in hardware.ram_prices},
        disks={d.id: d for d in hardware.disks},
    )
    problems.extend(_cross_checks(cat))
    if problems:
        raise CatalogError("Invalid catalog data:\n" + "\n".join(problems))
    return cat


# ---------------------------------------------------------------------------------------------- parsing


@functools.cache
def _unique_key_loader() -> Any:
    """A YAML SafeLoader (libyaml's when present: ~8x faster on the catalog) that refuses duplicate mapping
    keys (plain YAML keeps the last one silently). Built on first use: yaml costs ~20 ms to import, and a
    warm catalog cache never parses YAML."""
    import yaml

    base: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return dict(loader.construct_mapping(node, deep=deep))

    loader: Any = type("UniqueKeyLoader", (base,), {})
    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return loader


def _read_yaml(file: Path, problems: list[str]) -> Any:
    if not file.exists():
        problems.append(f"{file.name}: file missing in {file.parent}")
        return None
    try:  # a catalog folder can be anyone's ($AGIPLAN_CATALOG_DIR): read it as outside input
        text = read_text_bounded(file, "catalog file", _MAX_CATALOG_FILE_BYTES)
    except PlannerError as exc:
        problems.append(f"{file.name}: cannot read: {exc}")
        return None
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        problems.append(f"{file.name}: YAML syntax error at {where}: {problem}")
        return None


def _parse(file: Path, schema: type[_M], problems: list[str]) -> _M | None:
    data = _read_yaml(file, problems)
    if data is None and not any(p.startswith(file.name) for p in problems):
        problems.append(f"{file.name}: empty file")
    if data is None:
        return None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(f"{file.name}: {_loc(err['loc'], data)}: {err['msg']}")
        return None


def _loc(loc: Iterable[int | str], data: Any) -> str:
    """('models', 3, 'kv_heads') -> 'models[3].kv_heads'; names the entry's id when the error is on it."""
    out = ""
    node: Any = data
    entry_id: str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                entry_id = node["id"]
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    if entry_id:
        return f"{out} (id {entry_id})"
    return out or "(top level)"


def _by_id(file: str, key: str, entries: list[_E], problems: list[str]) -> dict[str, _E]:
    out: dict[str, _E] = {}
    for i, e in enumerate(entries):
        eid: str = e.id  # type: ignore[attr-defined]
        if eid in out:
            problems.append(f"{file}: {key}[{i}].id: duplicate id '{eid}'")
        out[eid] = e
    return out


def _cross_checks(cat: Catalog) -> list[str]:
    from planner.gguf_constants import gguf_constants  # the tables only: no numpy at start-up

    gguf = gguf_constants()
    problems: list[str] = []
    ggml_types = {t.name for t in gguf.GGMLQuantizationType}
    model_list = list(cat.models.values())
    for i, m in enumerate(model_list):
        where = f"models.yaml: models[{i}]"
        if m.base is not None:
            base = cat.models.get(m.base)
            if base is None:
                problems.append(f"{where}.base: unknown base model '{m.base}' (id {m.id})")
            elif base.base is not None:
                problems.append(f"{where}.base: '{m.base}' is itself a fine-tune; use its base (id {m.id})")
        for qid in m.gguf_sizes:
            if qid not in cat.quants:
                problems.append(f"{where}.gguf_sizes.{qid}: unknown quant '{qid}' (id {m.id})")
    for i, q in enumerate(cat.quants.values()):
        where = f"quants.yaml: quants[{i}]"
        if q.kind == "tensor_type" and (q.ggml_type or q.id) not in ggml_types:
            problems.append(f"{where}.ggml_type: '{q.ggml_type or q.id}' is not a gguf.GGMLQuantizationType")
        if q.kind == "file_type" and q.base_type not in ggml_types:
            problems.append(f"{where}.base_type: '{q.base_type}' is not a gguf.GGMLQuantizationType")
    for ddr in ("DDR4", "DDR5"):
        if ddr not in cat.ram_prices:
            problems.append(f"hardware.yaml: ram_prices: no price for {ddr}")
    return problems


# ---------------------------------------------------------------------------------------------- the catalog


class Catalog:
    """All catalog entries by id, plus lookups that raise `UnknownIdError` with suggestions."""

    def __init__(
        self,
        root: Path,
        models: dict[str, ModelEntry],
        quants: dict[str, QuantEntry],
        gpus: dict[str, GpuEntry],
        cpus: dict[str, CpuEntry],
        engines: dict[str, EngineEntry],
        ram_prices: dict[DdrGeneration, RamPrice],
        disks: dict[str, DiskEntry],
    ) -> None:
        self.root = root
        self.models = models
        self.quants = quants
        self.gpus = gpus
        self.cpus = cpus
        self.engines = engines
        self.ram_prices = ram_prices
        self.disks = disks

    # -- lookups -------------------------------------------------------------------------------------

    def model(self, model_id: str) -> ModelEntry:
        return _get(self.models, model_id, "model", "See 'agiplan catalog models'.")

    def gpu(self, gpu_id: str) -> GpuEntry:
        return _get(self.gpus, gpu_id, "GPU", "See 'agiplan catalog hardware'.")

    def cpu(self, cpu_id: str) -> CpuEntry:
        return _get(self.cpus, cpu_id, "CPU", "See 'agiplan catalog hardware'.")

    def disk(self, disk_id: str) -> DiskEntry:
        return _get(self.disks, disk_id, "disk", "See 'agiplan catalog hardware'.")

    def quant(self, quant_id: str) -> QuantEntry:
        return _get(self.quants, quant_id, "quant", "See 'agiplan catalog quants'.")

    def engine(self, engine_id: str) -> EngineEntry:
        return _get(self.engines, engine_id, "engine", "See 'agiplan catalog engines'.")

    def find(self, entry_id: str) -> tuple[str, ModelEntry | QuantEntry | GpuEntry | CpuEntry | EngineEntry]:
        """Any kind of id -> (kind, entry); kind is 'model', 'quant', 'gpu', 'cpu' or 'engine'."""
        tables: list[tuple[str, Mapping[str, Any]]] = [
            ("model", self.models),
            ("gpu", self.gpus),
            ("cpu", self.cpus),
            ("quant", self.quants),
            ("engine", self.engines),
        ]
        for kind, table in tables:
            key = _match(table, entry_id)
            if key is not None:
                return kind, table[key]
        known = [k for _, t in tables for k in t]
        hint = "See 'agiplan catalog models|hardware|quants|engines'."
        raise UnknownIdError("catalog id", entry_id, known, hint)

    def gpu_name_candidates(self) -> list[tuple[str, list[str]]]:
        """(id, [name, *device names]) of every GPU: what planner.hardware.match.match_gpu matches against."""
        return [(gid, [g.name, *g.names]) for gid, g in self.gpus.items()]

    def cpu_name_candidates(self) -> list[tuple[str, list[str]]]:
        """(id, [name, *device names]) of every CPU: what planner.hardware.match.match_cpu matches against."""
        return [(cid, [c.name, *c.names]) for cid, c in self.cpus.items()]

    # -- models --------------------------------------------------------------------------------------

    def base_model(self, model_id: str) -> ModelEntry:
        """The entry that holds the architecture: the model itself, or the base of a fine-tune."""
        m = self.model(model_id)
        return self.models[m.base] if m.base is not None else m

    def arch(self, model_id: str) -> ModelArch:
        """The planning shapes of a catalog model (fine-tunes resolve to their base's architecture)."""
        m = self.model(model_id)
        b = self.base_model(model_id)
        via = f" → {b.id}" if b is not m else ""
        source = Source(kind="catalog", detail=f"catalog/models.yaml: {m.id}{via} ({b.source})")
        # The schema guarantees these are set on a base entry; asserts narrow the Optional types.
        assert b.layers and b.hidden_size and b.heads and b.kv_heads and b.head_dim_k and b.head_dim_v
        assert b.ffn_size and b.vocab_size and b.context_trained and b.architecture
        experts = None
        if b.experts is not None:
            e = b.experts
            experts = ExpertSpec(e.count, e.active, e.ffn_size, e.shared, e.shared_ffn_size)
        return ModelArch(
            name=m.name,
            architecture=b.architecture,
            n_layers=b.layers,
            hidden_size=b.hidden_size,
            n_heads=b.heads,
            n_kv_heads=b.kv_heads,
            head_dim_k=b.head_dim_k,
            head_dim_v=b.head_dim_v,
            ffn_size=b.ffn_size,
            vocab_size=b.vocab_size,
            context_trained=b.context_trained,
            source=source,
            sliding_window=b.sliding_window,
            swa_layers=b.swa_pattern.swa_layers(b.layers) if b.swa_pattern is not None else None,
            experts=experts,
            tied_embeddings=bool(b.tied_embeddings),
            is_embedding="embedding" in m.roles,
            params_total=b.params,
        )

    def quality_rank(self, model_id: str) -> int | None:
        """1 = best among catalog models scored on the same benchmark; None when the model has no score.
        Fine-tunes without their own score are not ranked."""
        m = self.model(model_id)
        if m.quality is None:
            return None
        bench = m.quality.benchmark
        peers = sorted(
            (x.quality.score for x in self.models.values() if x.quality and x.quality.benchmark == bench),
            reverse=True,
        )
        return peers.index(m.quality.score) + 1

    # -- quants --------------------------------------------------------------------------------------

    def quant_bpw(self, quant_id: str, model: str | None = None) -> tuple[float, str]:
        """Bits per weight of a quant and where the figure comes from.

        tensor types: block bytes × 8 / block size from gguf.GGML_QUANT_SIZES (exact).
        file types: the published effective bpw whose `model` matches `model` (case-insensitive
        substring either way), else the first published one, else the base tensor type's bpw.
        float / awq / gptq / fp8: the stored `bpw`. exl2: the top of its range (pass the real bits instead).
        """
        q = self.quant(quant_id)
        if q.kind == "tensor_type":
            return tensor_type_bpw(q.ggml_type or q.id), "gguf.GGML_QUANT_SIZES"
        if q.kind == "file_type":
            assert q.base_type is not None
            if q.published_bpw:
                hit = q.published_bpw[0]
                if model:
                    key = model.lower()
                    for p in q.published_bpw:
                        if p.model.lower() in key or key in p.model.lower():
                            hit = p
                            break
                return hit.bpw, f"{hit.source} ({hit.model})"
            return tensor_type_bpw(q.base_type), f"gguf.GGML_QUANT_SIZES ({q.base_type}, base type)"
        if q.kind == "exl2":
            assert q.bpw_range is not None
            return q.bpw_range[1], f"{q.source} (exl2 upper bound)"
        assert q.bpw is not None
        return q.bpw, q.source_of("bpw")

    # -- prices --------------------------------------------------------------------------------------

    def ram_price_usd_per_gib(self, ddr: str) -> float:
        key = ddr.strip().upper()
        for gen, price in self.ram_prices.items():
            if gen == key:
                return price.usd_per_gib
        raise UnknownIdError("RAM generation", ddr, list(self.ram_prices), "Use DDR4 or DDR5.")


def tensor_type_bpw(ggml_type: str) -> float:
    """Bits per weight of a GGUF tensor type: type_size × 8 / block_size, from gguf.GGML_QUANT_SIZES."""
    sizes = ggml_block_sizes()
    if ggml_type.upper() not in sizes:
        raise UnknownIdError("GGUF tensor type", ggml_type, list(sizes), "")
    return bits_per_weight(ggml_type)


def _match(table: Mapping[str, Any], key: str) -> str | None:
    if key in table:
        return key
    folded = key.strip().lower()
    for k in table:
        if k.lower() == folded:
            return k
    return None


def _get(table: Mapping[str, _E], key: str, kind: str, hint: str) -> _E:
    k = _match(table, key)
    if k is None:
        raise UnknownIdError(kind, key, list(table), hint)
    return table[k]
