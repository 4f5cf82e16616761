"""`agiplan report PLAN [BENCH ...] -o report.md [--lang ru]`: a Markdown (or JSON) report of a saved plan.

Presentation only: the report object comes from planner.report; `--format json` prints it (kind
agiplan-report, schema_version) instead of Markdown. Messages go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from planner.cli._output import Format, print_json


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


def report_command(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON written by `agiplan recommend --out`.")],
    bench: Annotated[
        list[Path] | None, typer.Argument(help="Bench result JSON files (`agiplan bench --out`), optional.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the report here (default: stdout).")] = None,
    lang: Annotated[str, typer.Option("--lang", help="Report language: en or ru.")] = "en",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="markdown (default) or json.")] = Format.markdown,
    margins: Annotated[
        bool, typer.Option("--margins/--no-margins", help="Recompute ctx×2 / +1 slot headroom with the estimator.")
    ] = True,
) -> None:
    """Write the Markdown report of a plan (and bench results): options, servers, what to buy, sources.

    Summary, options side by side, per-server roles and memory charts, what to buy, measured vs predicted,
    deployment commands, sources."""
    from planner.errors import PlannerError
    from planner.io import write_json_atomic, write_text_atomic
    from planner.plan.schema import load_plan
    from planner.report import build_report, load_bench, render_markdown
    from planner.report.i18n import check_lang

    check_lang(lang)
    if fmt is Format.table:
        raise PlannerError("--format table does not apply to reports; use markdown or json.")
    plan = load_plan(plan_file)
    bench_files = [load_bench(b) for b in bench or []]
    report = build_report(plan, bench_files, margins=margins)
    if out is None:
        if fmt is Format.json:
            print_json(report.model_dump(mode="json"))
        else:
            typer.echo(render_markdown(report, lang), nl=False)
    else:
        try:
            if fmt is Format.json:
                write_json_atomic(out, report.model_dump(mode="json"))
            else:
                write_text_atomic(out, render_markdown(report, lang))
        except OSError as e:  # both formats: one line, no traceback
            raise PlannerError(f"cannot write {out}: {e.strerror or e}.") from e
    if out is not None:
        typer.echo(f"wrote {out}", err=True)
