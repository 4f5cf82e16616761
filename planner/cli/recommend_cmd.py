"""`agiplan recommend [STACK.yaml | --preset NAME]`: one server or two — the best plan of each kind.

Presentation only; the answers come from planner.plan (stack, servers, solver, recommend, whatif).
JSON: planner.plan.schema.Plan (`options[]`, `recommended`, `assumptions`, `what_ifs`, `relaxations`).
Exit codes: 0 a plan meets every target; 1 nothing meets them within the budget; 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from planner.cli._output import Format, print_json, stderr_console, stdout_console
from planner.cli.estimate_cmd import memory_bar
from planner.plan.schema import PlanOption
from planner.report.i18n import purchase_text
from planner.units import fmt_gib


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend_command)


def recommend_command(
    stack_file: Annotated[Path | None, typer.Argument(help="Stack YAML (roles, services); see README.")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Built-in stack: deep, agents, ensemble.")] = None,
    server: Annotated[
        list[str] | None,
        typer.Option("--server", "-s", help='Existing server, e.g. "main: 2x rtx-4090, ryzen-9-7950x, 128GiB".'),
    ] = None,
    server_file: Annotated[
        list[Path] | None, typer.Option("--server-file", help="JSON of 'agiplan detect --format json'.")
    ] = None,
    budget: Annotated[float | None, typer.Option("--budget", help="USD for new hardware.")] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="Only these catalog CPU/GPU ids may be bought.")
    ] = None,
    what_if: Annotated[
        list[str] | None,
        typer.Option("--what-if", help='"+1 rtx-4090", "reasoner.ctx=32768", "budget=3000", "link=10GbE".'),
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", help="table, json, or markdown (the report 'agiplan report' writes)."),
    ] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Save the plan (JSON) for bench / report.")] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the Markdown report (see 'agiplan report').")
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="Report language: en or ru.")] = "en",
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help="Seconds for the whole search, building candidates included (default 60); past it the best plan "
            "found is shown, flagged not proven optimal, with a bound. Only placements too large for the exact branch "
            "and bound get near it.",
        ),
    ] = 60.0,
) -> None:
    """Place the stack's models on your server(s): serial, concurrent, a second server, or a split — side by side."""
    from planner.catalog import load_catalog
    from planner.errors import PlannerError
    from planner.plan.request import assemble_servers, plan_stack
    from planner.plan.schema import save_plan
    from planner.plan.stack import load_preset, load_stack
    from planner.plan.whatif import best_effort

    if (stack_file is None) == (preset is None):
        raise PlannerError("give a stack file or --preset deep|agents|ensemble (one of them).")
    if report is not None or fmt is Format.markdown:
        from planner.report.i18n import check_lang

        check_lang(lang)  # before a search that may take a while
    stack = load_stack(stack_file) if stack_file is not None else load_preset(preset or "")
    cat = load_catalog()
    servers, notes = assemble_servers(cat, server or [], server_file or [])
    # large stacks search for tens of seconds: say what is being searched (a spinner on a terminal only)
    with stderr_console().status("searching", spinner="dots") as status:
        plan = plan_stack(
            stack,
            servers,
            cat,
            budget_usd=budget,
            allow=allow,
            what_ifs=what_if or [],
            time_limit_s=time_limit,
            assumptions=notes,
            progress=status.update,
        )
    if out is not None:
        save_plan(plan, out)
        stderr_console().print(f"wrote the plan to {out} (agiplan report / deploy / bench read it)")
    markdown = None
    if report is not None or fmt is Format.markdown:
        from planner.report import render_report

        markdown = render_report(plan, [], lang)
    if report is not None and markdown is not None:
        from planner.io import write_text_atomic

        write_text_atomic(report, markdown)
        stderr_console().print(f"wrote {report}")
    data = plan.model_dump(mode="json")
    if fmt is Format.json:
        print_json(data)
    elif fmt is Format.markdown and markdown is not None:
        sys.stdout.write(markdown)
        sys.stdout.flush()
    else:
        render_table(data)
    if plan.recommended is None:
        err = stderr_console()
        best = best_effort(plan)
        who = ", ".join(best.failing_roles) if best and best.failing_roles else "every role"
        err.print(f"nothing meets every target within the budget: {who} fail(s).")
        for r in plan.relaxations:
            err.print(f"  would work: {r}")
        if not plan.relaxations:
            err.print("  no relaxation tried (lower quant, shorter context, more budget) meets the targets either.")
        raise typer.Exit(code=1)


def render_table(data: dict[str, Any]) -> None:
    from rich.table import Table  # lazy: keeps `agiplan --help` fast
    from rich.text import Text

    con = stdout_console()
    con.print(Text(f"stack {data['stack_name']}: {len(data['options'])} options", style="bold"))
    for i, o in enumerate(data["options"]):
        star = i == data["recommended"]
        head = Text(f"\n[{i}] {o['kind']}", style="bold green" if star else "bold")
        if star:
            head.append("  ★ recommended", style="bold green")
        head.append(
            f"  · {'meets every target' if o['meets_targets'] else 'misses targets'}"
            f" · buy ${o['total_cost_usd']:,.0f} · quality {o['quality_score']:.3f}"
        )
        con.print(head)
        for s in o["servers"]:
            line = f"  server {s['name']} ({s['hardware']})"
            if s["new"]:
                bits = ", ".join(
                    f"{p['count']:g}× {p['id']}{' used' if p.get('condition') == 'used' else ''} ${p['price_usd']:,.0f}"
                    if p["kind"] != "ram"
                    else f"{p['count']:g} GiB {p['id'].split('-')[0]} ${p['price_usd']:,.0f}"
                    for p in s["parts"]
                )
                line += f"  NEW ${s['cost_usd']:,.0f}: {bits}"
            con.print(line)
            t = Table(show_header=True, header_style="bold", box=None, pad_edge=False, padding=(0, 1))
            for col in ("  device", "memory (█ weights █ KV █ compute █ overhead ╳ margin · free)", "used / capacity"):
                t.add_column(col)
            for d in s["devices"]:
                dev = dict(d, reserved_bytes=0)
                label = f"  gpu{d['index']} {d['id']}" if d["kind"] == "gpu" else "  host RAM"
                t.add_row(label, memory_bar(dev, 32), f"{fmt_gib(d['used_bytes'])} / {fmt_gib(d['capacity_bytes'])}")
            con.print(t)
            if s["placements"]:
                r = Table(show_header=True, header_style="bold", box=None, pad_edge=False, padding=(0, 1))
                for col in (
                    "  role",
                    "model",
                    "quant",
                    "engine",
                    "ctx",
                    "slots",
                    "devices",
                    "memory",
                    "tok/s",
                    "alone",
                    "target",
                    "",
                ):
                    r.add_column(col)
                for p in s["placements"]:
                    ok = Text("ok", style="green") if p["meets_target"] else Text("MISS", style="bold red")
                    extra = ""
                    if p["residency"] == "on-demand" and p["swap_in_s"] is not None:
                        extra = f" swap {p['swap_in_s']:.1f}s"
                    if p["shares_base_with"]:
                        extra = f" slots of {p['shares_base_with']}"
                    if p["split_hosts"]:
                        extra = f" split {'+'.join(p['split_hosts'])}"
                    if p.get("embedding"):
                        # an embedder's work is prefill (one pass per input); its decode rate says little
                        extra += f" embeds {p['prefill_tok_s']:,.0f} tok/s"
                    r.add_row(
                        f"  {p['role']}",
                        p["model"],
                        p["quant"],
                        p["engine"],
                        str(p["ctx"]),
                        str(p["parallel"]),
                        ",".join(p["devices"]),
                        fmt_gib(p["memory_bytes"]) if p["memory_bytes"] else "-",
                        f"{p['decode_tok_s']:.1f}",
                        f"{p['decode_tok_s_alone']:.1f}",
                        f"{p['min_tok_s']:g}" if p["min_tok_s"] is not None else "-",
                        Text.assemble(ok, extra),
                    )
                con.print(r)
            for sv in s["services"]:
                con.print(
                    f"  service {sv['name']}: {sv['cpu_cores']:g} cores, {fmt_gib(sv['ram_bytes'])} RAM", style="dim"
                )
        con.print(f"  why: {o['why']}", style="italic")
        bought = purchase_text("en", PlanOption.model_validate(o))
        if bought:
            con.print(f"  {bought}", style="italic")
    for w in data.get("what_ifs", []):
        con.print(Text(f"\nwhat if {w['summary']}", style="cyan"))
    for r in data.get("relaxations", []):
        con.print(Text(f"\nwould work: {r}", style="yellow"))
    for a in data["assumptions"]:
        con.print(f"assumed: {a}", style="dim")
