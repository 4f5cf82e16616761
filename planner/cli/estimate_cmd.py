"""`agiplan estimate MODEL`: memory per device and speed for one model on given hardware.

Presentation only; the numbers come from planner.estimate. JSON keys: see planner/estimate/serialize.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from planner.cli._output import Format, print_json, stdout_console
from planner.units import fmt_gib

if TYPE_CHECKING:
    from rich.text import Text

    from planner.catalog import Catalog
    from planner.estimate.speculative import DraftConfig
    from planner.model.arch import ModelSpec

BAR_WIDTH = 40
SEGMENTS = (
    ("weights_bytes", "weights", "cyan"),
    ("kv_cache_bytes", "KV", "magenta"),
    ("compute_bytes", "compute", "yellow"),
    ("overhead_bytes", "overhead", "red"),
)


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_command)


def estimate_command(
    model: Annotated[str, typer.Argument(help="Catalog id, path to a .gguf, or hf:owner/name.")],
    quant: Annotated[
        str | None, typer.Option("--quant", "-q", help="Quantization (Q4_K_M, Q8_0, BF16, AWQ-INT4 ...).")
    ] = None,
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Context per conversation (tokens).")] = 4096,
    parallel: Annotated[int, typer.Option("--parallel", "-np", help="Conversations served at once (slots).")] = 1,
    kv_type: Annotated[str, typer.Option("--kv-type", help="KV cache type: f16, q8_0, q4_0.")] = "f16",
    flash_attn: Annotated[bool, typer.Option("--flash-attn/--no-flash-attn", help="Flash attention.")] = True,
    engine: Annotated[str, typer.Option("--engine", "-e", help="llama.cpp, ollama or vllm.")] = "llama.cpp",
    gpu: Annotated[list[str] | None, typer.Option("--gpu", "-g", help="GPU catalog id; repeat per card.")] = None,
    cpu: Annotated[str | None, typer.Option("--cpu", help="CPU catalog id of the host.")] = None,
    ram: Annotated[float | None, typer.Option("--ram", help="Host RAM in GiB.")] = None,
    gpu_layers: Annotated[
        int | None, typer.Option("--gpu-layers", "-ngl", help="Layers on the GPUs (default: as many as fit).")
    ] = None,
    gpu_memory_utilization: Annotated[
        float, typer.Option("--gpu-memory-utilization", help="vLLM: fraction of each GPU's TOTAL memory.")
    ] = 0.9,
    depth: Annotated[int, typer.Option("--depth", help="Tokens already in context when decode speed is quoted.")] = 0,
    draft: Annotated[
        str | None,
        typer.Option("--draft", help="Draft model for speculative decoding: MODEL[:QUANT] (llama.cpp -md)."),
    ] = None,
    draft_max: Annotated[int, typer.Option("--draft-max", help="Tokens drafted a step (--spec-draft-n-max).")] = 3,
    draft_min: Annotated[int, typer.Option("--draft-min", help="Fewest drafted tokens worth verifying.")] = 0,
    acceptance: Annotated[
        float | None,
        typer.Option("--acceptance", help="Draft tokens the target accepts (0-1); default 0.7 (code 0.8)."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """Memory (weights, KV cache, compute, overhead) per device, fit, and decode / prefill speed."""
    from planner.catalog import load_catalog
    from planner.estimate.devices import gpu_devices, host_device, unified_host
    from planner.estimate.engines import rules_for
    from planner.estimate.estimate import estimate
    from planner.estimate.serialize import estimate_dict
    from planner.estimate.types import RunConfig
    from planner.sources.resolve import resolve_model

    eng = rules_for(engine).engine
    cat = load_catalog()
    gpus = gpu_devices(cat, gpu or [])
    host = unified_host(cat, gpu or [], host_device(cat, cpu, ram))  # one pool on unified-memory machines
    spec = resolve_model(model, quant=quant)
    draft_cfg = _draft_config(cat, spec, draft, draft_max, draft_min, acceptance) if draft else None
    cfg = RunConfig(
        engine=eng,
        ctx=ctx,
        parallel=parallel,
        kv_type_k=kv_type,
        kv_type_v=kv_type,
        flash_attn=flash_attn,
        gpu_layers=gpu_layers,
        gpu_memory_utilization=gpu_memory_utilization,
        depth_tokens=depth,
        draft=draft_cfg,
    )
    from planner.calibration import calibration_for_devices

    calibration = calibration_for_devices([*gpus, host])
    est = estimate(spec, cfg, gpus, host, quant=quant, calibration=calibration)
    data = estimate_dict(est)
    from planner.estimate.context import context_limit

    too_long = context_limit(cat, spec.catalog_id or "", est.arch.context_trained).note(ctx)
    if too_long is not None:  # fits in memory, but past what the model was trained on (issue 12)
        data["notes"].append(too_long)
        data["context_warning"] = too_long
    if fmt is Format.json:
        print_json(data)
    elif fmt is Format.markdown:
        typer.echo(render_markdown(data))
    else:
        render_table(data)
    if not est.fits:
        raise typer.Exit(code=1)


def _draft_config(
    cat: Catalog, target: ModelSpec, ref: str, n_max: int, n_min: int, acceptance: float | None
) -> DraftConfig:
    """--draft MODEL[:QUANT] resolved and checked against the target's vocabulary."""
    from planner.estimate.speculative import DraftConfig, check_draft_vocabulary, vocabulary
    from planner.plan.stack import split_model_quant
    from planner.sources.resolve import resolve_model

    model, quant = split_model_quant(ref)
    spec = resolve_model(model, quant=quant)
    check_draft_vocabulary(vocabulary(target, cat), vocabulary(spec, cat))
    task = None
    if target.catalog_id is not None and "coder" in cat.model(target.catalog_id).roles:
        task = "coder"
    return DraftConfig(spec, quant=quant, n_max=n_max, n_min=n_min, acceptance=acceptance, task=task)


def memory_bar(dev: dict[str, Any], width: int = BAR_WIDTH) -> Text:
    """Stacked bar of one device: weights / KV / compute / overhead, then the margin (╳) and free (·)."""
    from rich.text import Text

    avail = max(1, dev["capacity_bytes"] - dev["reserved_bytes"])
    text = Text()
    used_cells = 0
    for key, _label, style in SEGMENTS:
        part = dev["memory"][key] - (dev.get("reclaimable_bytes", 0) if key == "weights_bytes" else 0)
        cells = round(width * part / avail)
        cells = min(cells, max(0, width - used_cells))
        text.append("█" * cells, style=style)
        used_cells += cells
    margin_cells = min(round(width * dev["margin_bytes"] / avail), max(0, width - used_cells))
    text.append("╳" * margin_cells, style="dim red")
    text.append("·" * max(0, width - used_cells - margin_cells), style="dim")
    if dev.get("shortfall_bytes", 0) or dev.get("resident_bytes", dev["used_bytes"]) + dev["margin_bytes"] > avail:
        text.append(" OVER", style="bold red")
    return text


def render_table(data: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    con = stdout_console()
    m = data["model"]
    head = (
        f"{m['name']} · {data['quant']} ({data['bits_per_weight']:.2f} bpw"
        f"{', read from file' if data['weights_exact'] else ', derived'}) · {m['attention']} "
        f"· {data['engine']} · ctx {data['config']['ctx']} × {data['config']['parallel']} slot(s) "
        f"· KV {data['config']['kv_type_k']}"
    )
    con.print(Text(head, style="bold"))
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("device", "memory (█ weights █ KV █ compute █ overhead ╳ margin · free)", "used / capacity", "layers"):
        t.add_column(col)
    for d in data["devices"]:
        t.add_row(
            d["id"],
            memory_bar(d),
            f"{fmt_gib(d['resident_bytes'], 2)} / {fmt_gib(d['capacity_bytes'] - d['reserved_bytes'], 2)}"
            + (f" (+{fmt_gib(d['reclaimable_bytes'], 2)} page cache)" if d["reclaimable_bytes"] else "")
            + (f" (short {fmt_gib(d['shortfall_bytes'], 2)})" if d["shortfall_bytes"] else ""),
            str(d["layers"]) + (" +out" if d["holds_output"] else ""),
        )
    con.print(t)
    mem = data["memory"]
    con.print(
        f"weights {fmt_gib(mem['weights_bytes'], 2)} · KV {fmt_gib(mem['kv_cache_bytes'], 2)} · compute "
        f"{fmt_gib(mem['compute_bytes'], 2)} · overhead {fmt_gib(mem['overhead_bytes'], 2)} · total "
        f"{fmt_gib(mem['total_bytes'], 2)}"
    )
    sp = data["speed"]
    lo, hi = sp["decode_range_tok_s"]
    con.print(
        f"decode {sp['decode_tok_s']:.1f} tok/s ({lo:.1f}–{hi:.1f}) · prefill {sp['prefill_tok_s']:.0f} tok/s"
        + (
            f" · {data['config']['parallel']} slots: {sp['decode_tok_s_per_slot']:.1f} tok/s each, "
            f"{sp['aggregate_tok_s']:.1f} total"
            if data["config"]["parallel"] > 1
            else ""
        )
        + (" [calibrated]" if sp["calibrated"] else "")
    )
    if (d := data.get("draft")) is not None:
        con.print(
            f"draft {d['model']} ({d['quant']}, {d['gpu_layers']} layers on GPUs): "
            f"{fmt_gib(d['memory']['total_bytes'], 2)} · {d['n_max']} drafted a step at acceptance "
            f"{d['acceptance']:.2f}: {d['tokens_per_step']:.2f} tokens a step · decode ×{d['speedup']:.2f} "
            f"(without the draft {d['decode_tok_s_without']:.1f} tok/s)"
        )
    verdict = Text("FITS", style="bold green") if data["fits"] else Text("DOES NOT FIT", style="bold red")
    con.print(
        verdict,
        f" KV holds {data['kv_capacity_tokens']} tokens; {data['gpu_layers']} of "
        f"{data['n_layers'] + 1} layers (incl. output) on GPUs",
    )
    for n in data["notes"]:
        con.print(f"  note: {n}", style="dim")
    for s in data["suggestions"]:
        con.print(f"  would fit: {s['detail']}", style="yellow")
    for k, v in data["sources"].items():
        con.print(f"  source of {k}: {v['kind']}: {v['detail']}", style="dim")


def render_markdown(data: dict[str, Any]) -> str:
    m = data["model"]
    lines = [
        f"### {m['name']} · {data['quant']} · {data['engine']} · ctx {data['config']['ctx']} × "
        f"{data['config']['parallel']}",
        "",
        "| device | weights | KV | compute | overhead | used | capacity | fits |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in data["devices"]:
        mm = d["memory"]
        lines.append(
            f"| {d['id']} | {fmt_gib(mm['weights_bytes'], 2)} | {fmt_gib(mm['kv_cache_bytes'], 2)} | "
            f"{fmt_gib(mm['compute_bytes'], 2)} | {fmt_gib(mm['overhead_bytes'], 2)} | {fmt_gib(d['used_bytes'], 2)} | "
            f"{fmt_gib(d['capacity_bytes'] - d['reserved_bytes'], 2)} | {'yes' if d['fits'] else 'no'} |"
        )
    sp = data["speed"]
    lines += [
        "",
        f"Decode {sp['decode_tok_s']:.1f} tok/s ({sp['decode_range_tok_s'][0]:.1f}–{sp['decode_range_tok_s'][1]:.1f}), "
        f"prefill {sp['prefill_tok_s']:.0f} tok/s. **{'Fits' if data['fits'] else 'Does not fit'}.**",
    ]
    lines += [f"- {n}" for n in data["notes"]]
    lines += [f"- would fit: {s['detail']}" for s in data["suggestions"]]
    return "\n".join(lines)
