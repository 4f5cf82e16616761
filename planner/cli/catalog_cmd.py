"""`agiplan catalog models|hardware|quants|engines|show`: list and inspect the built-in catalog.

Presentation only: the data and every lookup come from planner.catalog. JSON output is stable:
`models`, `quants`, `engines` print a list of entries (their catalog fields plus derived ones such as
`bits_per_weight` and `quality_rank`); `hardware` prints {"gpus", "cpus", "ram_prices", "disks"};
`show` prints {"kind", "entry"}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from planner.cli._output import Format, print_json, stdout_console

if TYPE_CHECKING:  # imported lazily at run time: `agiplan --help` must not load pydantic models or rich tables
    from planner.catalog import Catalog
    from planner.catalog.schema import CpuEntry, EngineEntry, GpuEntry, ModelEntry, QuantEntry


def load_catalog() -> Catalog:
    from planner.catalog import load_catalog as _load

    return _load()


catalog_app = typer.Typer(
    name="catalog",
    help="List the built-in models, hardware, quantizations and engines (every figure with its source).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")


# ---------------------------------------------------------------------------------------------- JSON


def _model_json(cat: Catalog, m: ModelEntry) -> dict[str, Any]:
    out = m.model_dump(mode="json")
    out["quality_rank"] = cat.quality_rank(m.id)
    out["resolved_base"] = cat.base_model(m.id).id
    return out


def _quant_json(cat: Catalog, q: QuantEntry) -> dict[str, Any]:
    out = q.model_dump(mode="json")
    bpw, src = cat.quant_bpw(q.id)
    out["bits_per_weight"] = round(bpw, 4)
    out["bits_per_weight_source"] = src
    return out


def _gpu_json(g: GpuEntry) -> dict[str, Any]:
    return g.model_dump(mode="json")


def _cpu_json(c: CpuEntry) -> dict[str, Any]:
    out = c.model_dump(mode="json")
    out["peak_bandwidth_gbs"] = c.peak_bandwidth_gbs
    return out


def _entry_json(cat: Catalog, kind: str, entry: Any) -> dict[str, Any]:
    if kind == "model":
        return _model_json(cat, entry)
    if kind == "quant":
        return _quant_json(cat, entry)
    if kind == "cpu":
        return _cpu_json(entry)
    out: dict[str, Any] = entry.model_dump(mode="json")
    return out


# ---------------------------------------------------------------------------------------------- tables


def _render(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], fmt: Format) -> None:
    if fmt is Format.markdown:
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        typer.echo("\n".join(lines) + "\n")
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for h in headers:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*r)
    stdout_console().print(table)


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _price(usd: float | None, date: str | None) -> str:
    return "-" if usd is None else f"${usd:,.0f} ({date})"


@catalog_app.command("models")
def models_cmd(fmt: FormatOpt = Format.table) -> None:
    """Models: shapes, context, sliding window, experts, roles and quality score."""
    cat = load_catalog()
    if fmt is Format.json:
        print_json([_model_json(cat, m) for m in cat.models.values()])
        return
    rows = []
    for m in cat.models.values():
        a = cat.arch(m.id)
        swa = f"{a.sliding_window}" if a.sliding_window else "-"
        moe = f"{a.experts.active}/{a.experts.count}" if a.experts else "-"
        q = f"{m.quality.score:g} ({m.quality.benchmark})" if m.quality else "-"
        params = f"{a.params_total / 1e9:.2f}B" if a.params_total else "-"
        rows.append(
            [
                m.id + (f" → {m.base}" if m.base else ""),
                a.architecture,
                params,
                str(a.n_layers),
                f"{a.n_heads}/{a.n_kv_heads} {a.attention_kind}",
                str(a.context_trained),
                swa,
                moe,
                ",".join(m.roles),
                q,
            ]
        )
    headers = ["id", "arch", "params", "layers", "heads/kv", "ctx", "SWA", "MoE", "roles", "quality"]
    _render("Models (catalog/models.yaml)", headers, rows, fmt)


@catalog_app.command("hardware")
def hardware_cmd(fmt: FormatOpt = Format.table) -> None:
    """GPUs (memory, bandwidth, FP16 TFLOPS, price) and CPUs (cores, DDR channels, AVX-512, price)."""
    cat = load_catalog()
    if fmt is Format.json:
        print_json(
            {
                "gpus": [_gpu_json(g) for g in cat.gpus.values()],
                "cpus": [_cpu_json(c) for c in cat.cpus.values()],
                "ram_prices": [p.model_dump(mode="json") for p in cat.ram_prices.values()],
                "disks": [d.model_dump(mode="json") for d in cat.disks.values()],
            }
        )
        return
    gpu_rows = [
        [
            g.id,
            g.vendor,
            f"{g.memory_mib:,}",
            _num(g.bandwidth_gbs, 0),
            _num(g.fp16_tflops, 1),
            str(g.tdp_w),
            ",".join(g.backends),
            _price(g.price_usd, g.price_date),
        ]
        for g in cat.gpus.values()
    ]
    headers = ["id", "vendor", "MiB", "GB/s", "FP16 TFLOPS", "W", "backends", "price"]
    _render("GPUs (catalog/hardware.yaml)", headers, gpu_rows, fmt)
    cpu_rows = [
        [
            c.id,
            f"{c.cores}/{c.threads}",
            f"{c.memory_channels}x {c.ddr}-{c.ddr_speed_mts}",
            _num(c.peak_bandwidth_gbs, 1),
            "yes" if c.avx512 else "no",
            _num(c.fp32_gflops, 0),
            str(c.max_ram_gib),
            _price(c.price_usd, c.price_date),
        ]
        for c in cat.cpus.values()
    ]
    headers = ["id", "cores/thr", "memory", "GB/s peak", "AVX-512", "FP32 GFLOPS", "max GiB", "price"]
    _render("CPUs", headers, cpu_rows, fmt)
    ram_rows = [[p.ddr, f"${p.usd_per_gib:.2f}", p.price_date] for p in cat.ram_prices.values()]
    _render("RAM price", ["type", "USD/GiB", "date"], ram_rows, fmt)


@catalog_app.command("quants")
def quants_cmd(fmt: FormatOpt = Format.table) -> None:
    """Quantizations: bits per weight (derived for GGUF tensor types) and quality cost vs FP16."""
    cat = load_catalog()
    if fmt is Format.json:
        print_json([_quant_json(cat, q) for q in cat.quants.values()])
        return
    rows = []
    for q in cat.quants.values():
        bpw, src = cat.quant_bpw(q.id)
        rows.append(
            [
                q.id,
                q.kind,
                f"{bpw:.4g}",
                src,
                "-" if q.quality_loss is None else f"{q.quality_loss:.4g}",
                "yes" if q.kv_cache_type else "",
                ",".join(q.formats),
            ]
        )
    headers = ["id", "kind", "bpw", "bpw from", "KLD vs F16", "KV type", "formats"]
    _render("Quantizations (catalog/quants.yaml)", headers, rows, fmt)


@catalog_app.command("engines")
def engines_cmd(fmt: FormatOpt = Format.table) -> None:
    """Engines: formats, backends, KV cache types and memory rules with their sources."""
    cat = load_catalog()
    if fmt is Format.json:
        print_json([e.model_dump(mode="json") for e in cat.engines.values()])
        return
    rows = [
        [e.id, ",".join(e.formats), ",".join(e.backends), ",".join(e.kv_cache_types), _rules(e)]
        for e in cat.engines.values()
    ]
    _render("Engines (catalog/engines.yaml)", ["id", "formats", "backends", "KV types", "rules"], rows, fmt)


def _rules(e: EngineEntry) -> str:
    return "; ".join(f"{k}={r.value}{' ' + r.unit if r.unit else ''}" for k, r in e.rules.items())


@catalog_app.command("show")
def show_cmd(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Any catalog id: model, GPU, CPU, quant, engine.")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Every field of one catalog entry, with its sources."""
    cat = load_catalog()
    kind, entry = cat.find(entry_id)
    data = _entry_json(cat, kind, entry)
    if fmt is Format.json:
        print_json({"kind": kind, "entry": data})
        return
    rows = [[k, _flat(v)] for k, v in data.items() if v not in (None, [], {})]
    _render(f"{kind} {data.get('id', entry_id)}", ["field", "value"], rows, fmt)


def _flat(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_flat(x)}" for k, x in v.items() if x not in (None, [], {}))
    if isinstance(v, list):
        return ", ".join(_flat(x) for x in v)
    return str(v)
