"""Reports: one Report object from a Plan (+ bench results), rendered as Markdown in English or Russian.

Entry points: `render_report(plan, bench_runs, lang) -> str` (what `agiplan recommend --report` and
`agiplan report` write), `build_report(plan, bench)`, `load_bench(path)`, `render_markdown(report, lang)`.
"""

from __future__ import annotations

from planner.report.markdown import render_markdown, render_report
from planner.report.model import REPORT_KIND, REPORT_SCHEMA_VERSION, BenchFile, Report, build_report, load_bench

__all__ = [
    "REPORT_KIND",
    "REPORT_SCHEMA_VERSION",
    "BenchFile",
    "Report",
    "build_report",
    "load_bench",
    "render_markdown",
    "render_report",
]
