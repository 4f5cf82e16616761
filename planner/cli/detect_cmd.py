"""`agiplan detect`: this host's GPUs, CPU, RAM (optionally measured bandwidth); its JSON is a server file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from planner.cli._output import Format, print_json, stderr_console, stdout_console
from planner.units import fmt_gib

if TYPE_CHECKING:
    from planner.hardware.detect import HostInfo

Candidates = list[tuple[str, list[str]]]


def _catalog_candidates() -> tuple[Candidates | None, Candidates | None, str | None]:
    """(gpu candidates, cpu candidates, note) from the built-in catalog; matching is skipped if it fails."""
    from planner.catalog import load_catalog
    from planner.errors import PlannerError

    try:
        catalog = load_catalog()
    except PlannerError as exc:
        summary = " ".join(str(exc).strip().splitlines()[:2])
        return None, None, f"catalog not loaded ({summary}): catalog ids not matched"
    return catalog.gpu_name_candidates(), catalog.cpu_name_candidates(), None


def _render_table(host: HostInfo) -> None:
    from rich.table import Table

    out = stdout_console()
    if host.gpus:
        table = Table(title=f"GPUs on {host.hostname}", title_justify="left")
        for col in ("#", "name", "vendor", "total", "free", "used", "driver", "catalog id", "source"):
            table.add_column(col, justify="right" if col in ("#", "total", "free", "used") else "left")
        for g in host.gpus:
            table.add_row(
                str(g.index),
                g.name,
                g.vendor,
                fmt_gib(g.memory_total_bytes),
                fmt_gib(g.memory_free_bytes),
                fmt_gib(g.memory_used_bytes),
                g.driver_version or "-",
                g.catalog_id or "-",
                g.source,
            )
        out.print(table)
    else:
        out.print(f"No GPU detected on {host.hostname} — CPU-only planning.")

    cpu = host.cpu
    info = Table(show_header=False, title="CPU and memory", title_justify="left")
    info.add_column("field")
    info.add_column("value")
    info.add_row("CPU", cpu.model_name + (f" ({cpu.catalog_id})" if cpu.catalog_id else ""))
    info.add_row("cores / threads", f"{cpu.cores_physical} / {cpu.threads}")
    info.add_row("AVX2 / AVX-512", f"{'yes' if cpu.avx2 else 'no'} / {'yes' if cpu.avx512 else 'no'}")
    info.add_row("RAM total / available", f"{fmt_gib(host.ram_total_bytes)} / {fmt_gib(host.ram_available_bytes)}")
    if host.ram_bandwidth_gbs is not None:
        info.add_row("RAM read bandwidth", f"{host.ram_bandwidth_gbs:.1f} GB/s (one process, one thread)")
    if host.disk_read_gbs is not None:
        info.add_row("disk read", f"{host.disk_read_gbs:.2f} GB/s")
    out.print(info)
    for note in host.notes:
        out.print(f"note: {note}")


def register(app: typer.Typer) -> None:
    @app.command("detect")
    def detect(
        fmt: Annotated[
            Format, typer.Option("--format", "-f", help="table, or json (a server file for recommend).")
        ] = Format.table,
        measure: Annotated[
            bool, typer.Option("--measure", help="Also measure RAM read bandwidth (a few seconds).")
        ] = False,
        seconds: Annotated[float, typer.Option("--seconds", min=0.1, help="Time spent measuring RAM bandwidth.")] = 2.0,
        buffer_mib: Annotated[
            int, typer.Option("--buffer-mib", min=1, help="RAM buffer size; far above the CPU cache.")
        ] = 256,
        disk: Annotated[
            Path | None,
            typer.Option("--disk", help="With --measure: also time a sequential read of this file."),
        ] = None,
    ) -> None:
        """Show this host's GPUs, CPU, cores, AVX-512 and RAM; works without any GPU."""
        from planner.hardware.detect import detect_host
        from planner.units import MIB

        if disk is not None and not measure:
            raise typer.BadParameter("--disk needs --measure", param_hint="--disk")
        if fmt is Format.markdown:
            fmt = Format.table  # a single host needs no Markdown form; the table reads fine
        gpu_candidates, cpu_candidates, catalog_note = _catalog_candidates()

        def run(progress: Callable[[float], None] | None = None) -> HostInfo:
            return detect_host(
                measure=measure,
                progress=progress,
                catalog_gpus=gpu_candidates,
                catalog_cpus=cpu_candidates,
                measure_seconds=seconds,
                measure_buffer_bytes=buffer_mib * MIB,
                disk_path=disk,
            )

        if measure:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(
                TextColumn("measuring RAM bandwidth"),
                BarColumn(),
                TimeElapsedColumn(),
                console=stderr_console(),
                transient=True,
            ) as bar:
                task = bar.add_task("ram", total=1.0)
                host = run(lambda fraction: bar.update(task, completed=fraction))
        else:
            host = run()
        if catalog_note:
            host.notes.append(catalog_note)

        if fmt is Format.json:
            print_json(host.to_dict())
        else:
            _render_table(host)
