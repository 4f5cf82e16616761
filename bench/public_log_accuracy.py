"""agiplan's memory estimator against public llama.cpp / Ollama / vLLM allocation logs of larger models.

Run by hand: `python bench/public_log_accuracy.py [--format table|json]`. Every row of
bench/data/public_logs.yaml is a log someone posted (URL in the row) with the settings needed to replay
it; this script builds the same model, devices and run configuration, calls `estimate()` and prints
logged vs predicted per component (weights / KV / compute per device; vLLM: weights, non-torch,
activation, KV memory and KV tokens per GPU) with the error, then the max and median |error| per
component. Nothing here is fitted to these logs but vLLM's activations per batched token (fitted on the two
issue #10517 rows, planner/estimate/compute.py says so): it measures the estimator as it is.

Logs are from older builds; the rows' notes say where a build's rules differ from the llama.cpp the
estimator follows (llama-server of b11434, the [engines] extra), and those gaps are reported, not hidden.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.catalog import Catalog, load_catalog
from planner.errors import PlannerError
from planner.estimate.devices import gpu_device, host_device
from planner.estimate.engines import rules_for
from planner.estimate.estimate import estimate
from planner.estimate.kv import layer_kv_bytes, llama_cpp_layout, vllm_page_bytes
from planner.estimate.placement import layer_table
from planner.estimate.types import Device, DeviceUsage, Estimate, RunConfig
from planner.model.arch import ModelArch, ModelSpec, Source
from planner.sources.resolve import resolve_model
from planner.units import GIB, MIB

DATA_PATH = Path(__file__).with_name("data") / "public_logs.yaml"
HOST_NAMES = ("CPU", "CPU_Mapped", "CUDA_Host")  # llama.cpp's names for host buffers

# ---------------------------------------------------------------------------------------- the dataset


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArchIn(_Strict):
    """Shapes of a model the catalog does not hold (from its config.json, cited in arch_source)."""

    name: str
    architecture: str
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int | None = None
    head_dim_k: int | None = None
    head_dim_v: int | None = None
    ffn: int = Field(gt=0)
    vocab: int = Field(gt=0)
    context_trained: int = Field(gt=0)
    tied_embeddings: bool = False
    arch_source: str

    @model_validator(mode="after")
    def _head_dims(self) -> ArchIn:
        if self.head_dim is None and (self.head_dim_k is None or self.head_dim_v is None):
            raise ValueError("give head_dim, or both head_dim_k and head_dim_v")
        return self

    def to_arch(self) -> ModelArch:
        k = self.head_dim_k or self.head_dim or 0
        v = self.head_dim_v or self.head_dim or 0
        return ModelArch(
            name=self.name,
            architecture=self.architecture,
            n_layers=self.layers,
            hidden_size=self.hidden,
            n_heads=self.heads,
            n_kv_heads=self.kv_heads,
            head_dim_k=k,
            head_dim_v=v,
            ffn_size=self.ffn,
            vocab_size=self.vocab,
            context_trained=self.context_trained,
            tied_embeddings=self.tied_embeddings,
            source=Source("hub", self.arch_source),
        )


class ModelRef(_Strict):
    catalog: str | None = None
    arch: ArchIn | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelRef:
        if (self.catalog is None) == (self.arch is None):
            raise ValueError("give exactly one of catalog (a catalog id) or arch (inline shapes)")
        return self


class DeviceIn(_Strict):
    """A GPU the catalog does not hold, or one whose memory the log states (vLLM's total_gpu_memory)."""

    name: str
    memory_mib: int | None = None
    total_gpu_memory_gib: float | None = None

    @model_validator(mode="after")
    def _size(self) -> DeviceIn:
        if (self.memory_mib is None) == (self.total_gpu_memory_gib is None):
            raise ValueError("give exactly one of memory_mib or total_gpu_memory_gib")
        return self

    @property
    def capacity_bytes(self) -> int:
        if self.memory_mib is not None:
            return self.memory_mib * MIB
        return int((self.total_gpu_memory_gib or 0.0) * GIB)


class Settings(_Strict):
    # llama.cpp / Ollama
    n_ctx: int | None = None
    n_seq: int = 1
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = False
    n_ubatch: int = 512
    n_gpu_layers: int | None = None
    tensor_split: list[float] | None = None
    device_layers: dict[str, int] | None = None  # layers per device where only that is known
    # vLLM
    tensor_parallel: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_num_seqs: int = 256
    vllm_version: str | None = None  # the version the row's log came from (its V0 / V1 profile rules)


class Logged(_Strict):
    """Figures exactly as the log printed them (llama.cpp MiB, vLLM GiB)."""

    weights_mib: dict[str, float] = Field(default_factory=dict)
    kv_mib: dict[str, float] = Field(default_factory=dict)
    kv_total_mib: float | None = None
    compute_mib: dict[str, float] = Field(default_factory=dict)
    weights_gib: float | None = None
    non_torch_gib: float | None = None
    activation_gib: float | None = None
    kv_cache_gib: float | None = None
    instance_limit_gib: float | None = None
    kv_tokens: int | None = None
    gpu_blocks: int | None = None
    fits: bool | None = None


class Row(_Strict):
    id: str
    source: str = Field(pattern=r"^https://github\.com/[^/]+/[^/]+/(issues|pull)/\d+")
    source_detail: str
    engine: Literal["llama.cpp", "ollama", "vllm"]
    build: str
    model: ModelRef
    model_file: str | None = None
    quant: str | None
    settings: Settings
    devices: list[str | DeviceIn]
    device_notes: str | None = None
    logged: Logged
    notes: str | None = None

    @model_validator(mode="after")
    def _engine_settings(self) -> Row:
        s = self.settings
        if self.engine == "vllm":
            if s.tensor_parallel is None or s.gpu_memory_utilization is None or s.max_model_len is None:
                raise ValueError("vLLM rows need tensor_parallel, gpu_memory_utilization and max_model_len")
            if len(self.devices) != s.tensor_parallel:
                raise ValueError("vLLM rows list one device per tensor-parallel rank")
        elif s.n_ctx is None:
            raise ValueError("llama.cpp / Ollama rows need n_ctx")
        return self


class Dataset(_Strict):
    schema_version: Literal[1]
    rows: list[Row]


def load_dataset(path: Path = DATA_PATH) -> Dataset:
    with path.open(encoding="utf-8") as f:
        return Dataset.model_validate(yaml.safe_load(f))


# ---------------------------------------------------------------------------------------- replaying a row


@dataclass(frozen=True)
class Comparison:
    row: str
    component: str  # weights / kv / kv_total / compute / non_torch / activation / kv_tokens / fits ...
    device: str
    logged: float
    predicted: float
    unit: str  # MiB, GiB, tokens, blocks, bool

    @property
    def error_pct(self) -> float | None:
        if self.unit == "bool" or self.logged == 0:
            return None
        return 100.0 * (self.predicted - self.logged) / self.logged


@dataclass(frozen=True)
class Replay:
    row: Row
    comparisons: list[Comparison]
    notes: list[str]


def spec_for(row: Row) -> ModelSpec:
    if row.model.catalog is not None:
        return resolve_model(row.model.catalog)
    assert row.model.arch is not None
    return ModelSpec(ref=row.id, arch=row.model.arch.to_arch())


def _device(cat: Catalog, d: str | DeviceIn, i: int) -> Device:
    if isinstance(d, str):
        return gpu_device(cat, d)
    return Device(
        id=f"gpu{i}",
        kind="gpu",
        name=d.name,
        capacity_bytes=d.capacity_bytes,
        bandwidth_gbs=1000.0,
        compute_tflops=100.0,
        vendor="nvidia",
        backend="cuda",
        source=Source("formula", f"hand-built from the log: {d.name}"),
    )


def devices_for(cat: Catalog, row: Row) -> tuple[list[Device], bool]:
    """The row's GPUs; with a tensor split, capacities scaled to the split (so fit is not judged)."""
    gpus = [_device(cat, d, i) for i, d in enumerate(row.devices)]
    split = row.settings.tensor_split
    if split is None:
        return gpus, True
    top = max(g.capacity_bytes for g in gpus)
    scaled = [replace(g, capacity_bytes=int(top * w / max(split))) for g, w in zip(gpus, split, strict=True)]
    return scaled, False


def run_config(row: Row) -> RunConfig:
    s = row.settings
    if row.engine == "vllm":
        assert s.max_model_len is not None and s.gpu_memory_utilization is not None
        return RunConfig(
            engine="vllm",
            ctx=s.max_model_len,
            parallel=s.max_num_seqs,
            gpu_memory_utilization=s.gpu_memory_utilization,
            **({"vllm_version": s.vllm_version} if s.vllm_version else {}),
        )
    assert s.n_ctx is not None
    return RunConfig(
        engine=row.engine,
        ctx=s.n_ctx // s.n_seq,
        parallel=s.n_seq,
        kv_type_k=s.type_k,
        kv_type_v=s.type_v,
        flash_attn=s.flash_attn,
        n_ubatch=s.n_ubatch,
        gpu_layers=s.n_gpu_layers,
    )


def _usage(est: Estimate, name: str) -> DeviceUsage:
    if name in HOST_NAMES:
        return est.devices[-1]
    if name.startswith("CUDA") and name[4:].isdigit():
        return est.devices[int(name[4:])]
    raise ValueError(f"unknown llama.cpp buffer name {name!r}")


def _host_model_bytes(est: Estimate) -> int:
    """Host weights as llama.cpp's *model* buffer counts them: without the CPU_REPACK copies."""
    table = layer_table(est.arch, est.weights)
    host = est.devices[-1]
    repack = sum(table.layer_repack_bytes.get(i, 0) for i in host.layers)
    if host.holds_output:
        repack += table.output_repack_bytes
    return host.memory.weights_bytes - repack


def replay_llama_cpp(cat: Catalog, row: Row) -> Replay:
    spec = spec_for(row)
    cfg = run_config(row)
    gpus, judge_fit = devices_for(cat, row)
    host = host_device(cat, None, 1024)
    out: list[Comparison] = []
    notes: list[str] = []
    lg = row.logged
    layout = llama_cpp_layout(spec.arch, cfg)

    if row.settings.device_layers is not None:
        # KV only: layers per device known, the model's weights are not (see the row's notes)
        per_layer = layer_kv_bytes(spec.arch, cfg, layout, 0)
        for name, logged in lg.kv_mib.items():
            n = row.settings.device_layers[name]
            out.append(Comparison(row.id, "kv", name, logged, n * per_layer / MIB, "MiB"))
        return Replay(row, out, [f"per-layer KV {per_layer / MIB:.2f} MiB x logged layers per device"])

    quant = row.quant or "Q4_K_M"
    est = estimate(spec, cfg, gpus, host, quant=quant, suggest=False)
    if row.quant is None:
        notes.append("file type not logged: weights not compared (placement used Q4_K_M)")
    else:
        for name, logged in lg.weights_mib.items():
            u = _usage(est, name)
            pred = _host_model_bytes(est) if not u.device.is_gpu else u.memory.weights_bytes
            out.append(Comparison(row.id, "weights", name, logged, pred / MIB, "MiB"))
        if lg.weights_mib:
            total_logged = sum(lg.weights_mib.values())
            total_pred = sum(d.memory.weights_bytes for d in est.devices[:-1]) + _host_model_bytes(est)
            out.append(Comparison(row.id, "weights_total", "all", total_logged, total_pred / MIB, "MiB"))
    for name, logged in lg.kv_mib.items():
        out.append(Comparison(row.id, "kv", name, logged, _usage(est, name).memory.kv_cache_bytes / MIB, "MiB"))
    if lg.kv_total_mib is not None:
        kv_total = sum(d.memory.kv_cache_bytes for d in est.devices)
        out.append(Comparison(row.id, "kv_total", "all", lg.kv_total_mib, kv_total / MIB, "MiB"))
    for name, logged in lg.compute_mib.items():
        out.append(Comparison(row.id, "compute", name, logged, _usage(est, name).memory.compute_bytes / MIB, "MiB"))
    if lg.fits is not None and judge_fit:
        out.append(Comparison(row.id, "fits", "all", float(lg.fits), float(est.fits), "bool"))
    layers = [f"{d.device.name}: {len(d.layers)}{'+out' if d.holds_output else ''}" for d in est.devices]
    notes.append("predicted layers: " + ", ".join(layers))
    return Replay(row, out, notes)


def replay_vllm(cat: Catalog, row: Row) -> Replay:
    spec = spec_for(row)
    cfg = run_config(row)
    gpus, _ = devices_for(cat, row)
    host = host_device(cat, None, 1024)
    quant = row.quant or "BF16"
    est = estimate(spec, cfg, gpus, host, quant=quant, suggest=False)
    # vLLM starts when one max_model_len sequence fits: judge fit with one slot
    start = estimate(spec, replace(cfg, parallel=1), gpus, host, quant=quant, suggest=False)
    g = est.devices[0]
    m = g.memory
    util = cfg.gpu_memory_utilization
    reserved = int(g.device.capacity_bytes * util)
    non_torch = rules_for("vllm").non_torch_bytes  # the overhead part vLLM logs as non-torch memory
    lg = row.logged
    out: list[Comparison] = []
    pairs: list[tuple[str, float | None, float]] = [
        ("instance_limit", lg.instance_limit_gib, reserved / GIB),
        ("weights", lg.weights_gib, m.weights_bytes / GIB),
        ("non_torch", lg.non_torch_gib, non_torch / GIB),
        ("activation", lg.activation_gib, m.compute_bytes / GIB),
        ("kv", lg.kv_cache_gib, m.kv_cache_bytes / GIB),
    ]
    for comp, logged, pred in pairs:
        if logged is not None:
            out.append(Comparison(row.id, comp, "GPU0", logged, pred, "GiB"))
    if lg.kv_tokens is not None:
        out.append(Comparison(row.id, "kv_tokens", "min rank", lg.kv_tokens, est.kv_capacity_tokens, "tokens"))
    if lg.gpu_blocks is not None:
        out.append(Comparison(row.id, "gpu_blocks", "min rank", lg.gpu_blocks, est.kv_capacity_tokens / 16, "blocks"))
    if lg.fits is not None:
        out.append(Comparison(row.id, "fits", "all", float(lg.fits), float(start.fits), "bool"))
    page = vllm_page_bytes(spec.arch, "auto", len(gpus))
    notes = [
        f"page {page} B per 16-token block per rank; overhead = CUDA graphs + non-torch (engine rules); "
        + next(n for n in est.notes if n.startswith("memory profile of"))
    ]
    return Replay(row, out, notes)


def replay(cat: Catalog, row: Row) -> Replay:
    try:
        if row.engine == "vllm":
            return replay_vllm(cat, row)
        return replay_llama_cpp(cat, row)
    except PlannerError as e:
        return Replay(row, [], [f"not replayed: {e}"])


# ---------------------------------------------------------------------------------------- report


def summary(comparisons: list[Comparison]) -> dict[str, dict[str, float | int]]:
    """Per component: n, max and median |error %| (bool components: n and the number that disagree)."""
    by: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        by[c.component].append(c)
    out: dict[str, dict[str, float | int]] = {}
    for comp, cs in sorted(by.items()):
        if cs[0].unit == "bool":
            out[comp] = {"n": len(cs), "wrong": sum(1 for c in cs if c.logged != c.predicted)}
            continue
        errs = [abs(e) for c in cs if (e := c.error_pct) is not None]
        out[comp] = {"n": len(cs), "max_abs_pct": max(errs), "median_abs_pct": statistics.median(errs)}
    return out


def _fmt(v: float, unit: str) -> str:
    if unit == "bool":
        return "fits" if v else "no-fit"
    if unit in ("tokens", "blocks"):
        return f"{v:,.0f}"
    return f"{v:,.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--format", choices=("table", "json"), default="table")
    args = p.parse_args(argv)
    cat = load_catalog()
    data = load_dataset()
    replays = [replay(cat, r) for r in data.rows]
    comps = [c for r in replays for c in r.comparisons]
    if args.format == "json":
        rows: list[dict[str, Any]] = [
            {
                "id": r.row.id,
                "source": r.row.source,
                "notes": r.notes,
                "comparisons": [asdict(c) for c in r.comparisons],
            }
            for r in replays
        ]
        json.dump({"rows": rows, "summary": summary(comps)}, sys.stdout, indent=2)
        print()
        return 0
    head = f"{'row':34} {'component':14} {'device':9} {'logged':>12} {'predicted':>12} {'unit':6} {'error':>8}"
    print(head)
    print("-" * len(head))
    for r in replays:
        for c in r.comparisons:
            err = c.error_pct
            e = "" if err is None else f"{err:+.1f}%"
            if c.unit == "bool":
                e = "ok" if c.logged == c.predicted else "WRONG"
            print(
                f"{c.row:34} {c.component:14} {c.device:9} {_fmt(c.logged, c.unit):>12} "
                f"{_fmt(c.predicted, c.unit):>12} {c.unit:6} {e:>8}"
            )
        for n in r.notes:
            print(f"{'':34} note: {n}")
    print()
    print("summary (|error| per component)")
    for comp, s in summary(comps).items():
        if "wrong" in s:
            print(f"  {comp:14} n={s['n']:<3} wrong={s['wrong']}")
        else:
            print(f"  {comp:14} n={s['n']:<3} max={s['max_abs_pct']:6.1f}%  median={s['median_abs_pct']:6.1f}%")
    print()
    print("sources:")
    for row in data.rows:
        print(f"  {row.id}: {row.source} ({row.source_detail})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
