"""`agiplan bench`: measure on this machine and compare with the estimate; calibrate later estimates.

Modes (exactly one): `--model PATH` (a GGUF on the real llama-server), `--synthetic ID --quant Q` (a
random-weight GGUF of a catalog model, written to the cache, then benched), `--endpoint URL --model-name
NAME` (a running OpenAI-compatible server), `--plan plan.json --server NAME` (every role of that server
alone, then all together as planned), `--plan plan.json --deployment DIR` (each role of a running `agiplan
deploy` folder through its endpoint, against the plan), `--show-calibration`.

Presentation and orchestration only; measuring lives in planner.measure (bench records in
planner.measure.records), predicting in planner.estimate, calibration maths in planner.calibration.
Progress goes to stderr; data (table or JSON) to stdout. Ctrl-C stops, keeps what was measured (and
writes it to --out), and exits 130.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from planner.cli._output import Format, print_json, stderr_console, stdout_console
from planner.errors import PlannerError, shown
from planner.units import fmt_gib

if TYPE_CHECKING:
    from rich.progress import Progress

    from planner.estimate.types import Device
    from planner.measure.bench_llama import LlamaBenchConfig, WorkerJob
    from planner.measure.deployed import Deployed
    from planner.measure.endpoint import EndpointConfig
    from planner.measure.results import BenchResult, BenchRun
    from planner.measure.synthetic import SyntheticFile
    from planner.plan.schema import Placement


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


@contextlib.contextmanager
def _progress() -> Iterator[Progress]:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("{task.description}", style="bold", markup=False),  # descriptions hold model names and URLs
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    )
    with prog:
        yield prog


def bench_command(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Path to a .gguf to run on llama-server.")] = None,
    synthetic: Annotated[
        str | None, typer.Option("--synthetic", help="Catalog model id: bench a random-weight GGUF of it.")
    ] = None,
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="Quantization of --synthetic (Q4_K_M).")] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="OpenAI-compatible server URL (http://127.0.0.1:8080).")
    ] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Model name the endpoint serves.")] = None,
    concurrency: Annotated[str, typer.Option("--concurrency", help="Endpoint: concurrent requests, e.g. 1,4,8.")] = "1",
    plan: Annotated[Path | None, typer.Option("--plan", help="Plan file from 'agiplan recommend --out'.")] = None,
    server: Annotated[str | None, typer.Option("--server", help="Server of the plan to bench (its name).")] = None,
    deployment: Annotated[
        Path | None,
        typer.Option("--deployment", help="With --plan: bench each role of this running 'agiplan deploy' folder."),
    ] = None,
    option: Annotated[
        int | None, typer.Option("--option", help="Plan option index (default: the recommended one).")
    ] = None,
    show_calibration: Annotated[
        bool, typer.Option("--show-calibration", help="Print this host's calibration profile and exit.")
    ] = False,
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Context per conversation (tokens).")] = 2048,
    parallel: Annotated[int, typer.Option("--parallel", "-np", help="Conversations (slots).")] = 1,
    kv_type: Annotated[str, typer.Option("--kv-type", help="KV cache type: f16, q8_0, q4_0.")] = "f16",
    flash_attn: Annotated[bool, typer.Option("--flash-attn/--no-flash-attn", help="Flash attention.")] = True,
    gpu_layers: Annotated[
        int | None, typer.Option("--gpu-layers", "-ngl", help="Layers on GPUs (default: the estimate's).")
    ] = None,
    depth: Annotated[int, typer.Option("--depth", help="Tokens already in context before timing.")] = 0,
    n_prompt: Annotated[int, typer.Option("--prompt-tokens", help="Prompt tokens timed for prefill.")] = 128,
    n_gen: Annotated[int, typer.Option("--gen", help="Tokens generated for decode timing.")] = 32,
    repetitions: Annotated[int, typer.Option("--repetitions", "-r", help="Timed repetitions.")] = 3,
    timeout: Annotated[float, typer.Option("--timeout", help="Endpoint: seconds per request.")] = 120.0,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="OPENAI_API_KEY", help="Endpoint: bearer token; never printed or saved."),
    ] = None,
    on_this_host: Annotated[
        bool,
        typer.Option(
            "--on-this-host",
            help="Plan: bench the roles on this host's devices even where it lacks the plan's GPUs (noted per run).",
        ),
    ] = False,
    calibrate: Annotated[
        bool, typer.Option("--calibrate/--no-calibrate", help="Save measured ÷ predicted in the profile.")
    ] = True,
    measure_host: Annotated[
        bool, typer.Option("--measure-host", help="Also measure RAM bandwidth and the model disk's read speed.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Save the result (JSON) here.")] = None,
    batched: Annotated[
        str | None,
        typer.Option(
            "--batched",
            help="With --model/--synthetic: run llama-batched-bench at these sequence counts (1,6,12 calibrates: "
            "1 for one stream, 6 and 12 for the CPU's batched kernels), save the slot curve in the calibration "
            "profile.",
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", help="--batched: CPU threads.")] = None,
) -> None:
    """Measure memory and speed on this machine, compare with the estimate, and calibrate it."""
    if fmt is Format.markdown:
        raise PlannerError(
            "bench prints a table or json; for Markdown, save the result with --out and run "
            "'agiplan report PLAN.json RESULT.json'."
        )
    if deployment is not None and plan is None:
        raise PlannerError("--deployment needs --plan FILE (the plan it was deployed from).")
    modes = [x for x in (model, synthetic, endpoint, plan) if x is not None] + ([1] if show_calibration else [])
    if len(modes) != 1:
        raise PlannerError(
            "give exactly one of --model PATH, --synthetic ID, --endpoint URL, --plan FILE or --show-calibration."
        )
    if show_calibration:
        _show_calibration(fmt)
        return
    if batched is not None:
        if endpoint is not None or plan is not None:
            raise PlannerError("--batched runs a GGUF: give --model PATH or --synthetic ID.")
        from planner.measure.batched_bench import check_slots
        from planner.measure.llama_tools import find_tools

        find_tools()  # checked before anything is spent: no synthetic file is written without the engine
        check_slots(_batched_levels(batched))
        if model:
            path = _model_path(model)
        else:
            from planner.measure.synthetic import check_room_for, synthetic_file

            batched_file = synthetic_file(synthetic or "", quant or "Q4_K_M")
            check_room_for([batched_file])
            path = _write_synthetic(batched_file)
        _bench_batched(
            path, batched, threads, n_prompt, n_gen, gpu_layers or 0, flash_attn, calibrate, fmt, repetitions
        )
        return
    from planner.measure.bench_llama import LlamaBenchConfig

    lcfg = LlamaBenchConfig(
        ctx=ctx,
        parallel=parallel,
        kv_type_k=kv_type,
        kv_type_v=kv_type,
        flash_attn=flash_attn,
        gpu_layers=gpu_layers or 0,
        n_prompt=n_prompt,
        n_gen=n_gen,
        depth_tokens=depth,
        repetitions=repetitions,
    )
    if endpoint is None:
        lcfg.check()
    if endpoint is not None and not model_name:
        raise PlannerError("--endpoint needs --model-name NAME (the model the server serves).")
    if endpoint is not None and api_key is not None:
        from planner.redact import header_value, register_secret

        register_secret(api_key)  # masked everywhere from here on, even if it is refused just below
        api_key = header_value(api_key, "--api-key (or $OPENAI_API_KEY)")
    if endpoint is not None:  # bad --concurrency / --timeout / URL: refused before a result exists, so nothing is saved
        _endpoint_config(endpoint, model_name or "", concurrency, n_gen, timeout, api_key).check()
    if plan is not None and not server and deployment is None:
        raise PlannerError("--plan needs --server NAME (one of the plan's servers) or --deployment DIR.")
    # checked before anything is spent (written, loaded, started); refusals save no --out
    to_write: SyntheticFile | None = None
    if model is not None or synthetic is not None:
        from planner.measure.llama_tools import find_tools
        from planner.measure.synthetic import check_room_for, synthetic_file

        find_tools()  # llama-server runs the bench: no synthetic file is written without it
        if synthetic is not None:
            to_write = synthetic_file(synthetic, quant or "Q4_K_M")
            check_room_for([to_write])
    result = _new_result(measure_host, Path(model) if model else None)
    deployed = _load_deployed(plan, deployment, option) if plan is not None and deployment is not None else None
    planned = None
    if plan is not None and deployed is None:
        planned = _prepare_plan(result, plan, server or "", option, lcfg, on_this_host)
    code = 0
    try:
        if endpoint is not None:
            code = _bench_endpoint(result, endpoint, model_name or "", concurrency, n_gen, timeout, ctx, api_key)
        elif deployed is not None:
            code = _bench_deployed(result, deployed, n_gen, repetitions, timeout)
        elif planned is not None:
            code = _bench_plan(result, planned)
        else:
            path = _write_synthetic(to_write) if to_write is not None else _model_path(model or "")
            code = _bench_gguf(result, path, lcfg, gpu_layers, "synthetic" if synthetic else "model", calibrate)
        result.complete = code == 0
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (planner/cli/_errors.py turns it into this)
        from planner.cli._errors import interrupted_exit_code

        stderr_console().print("interrupted: keeping what was measured", style="yellow")
        code = interrupted_exit_code()
    finally:
        if out is not None:
            from planner.measure.results import save_result

            save_result(result, out)
    _render(result, fmt)
    if code:
        raise typer.Exit(code=code)


# ------------------------------------------------------------------------------------------- helpers


_HOST_CACHE: dict[str, Any] = {}


def _host(measure: bool, disk: Path | None) -> tuple[Any, list[Device], Device]:
    from planner.catalog import load_catalog
    from planner.measure.host import detect_this_host, planning_devices

    cat = load_catalog()
    if measure:
        with _progress() as prog:
            task = prog.add_task("measuring host", total=1.0)
            info = detect_this_host(
                cat, measure_bandwidth=True, disk_path=disk, progress=lambda f: prog.update(task, completed=f)
            )
    else:
        info = detect_this_host(cat)
    gpus, host = planning_devices(cat, info)
    _HOST_CACHE.update(info=info, gpus=gpus, host=host, cat=cat)
    return info, gpus, host


def _new_result(measure: bool, disk: Path | None) -> BenchResult:
    from planner import __version__
    from planner.measure.host import host_summary
    from planner.measure.results import BenchResult

    disk_file = disk if disk is not None and disk.is_file() else None
    info, _gpus, host = _host(measure, disk_file)
    return BenchResult(agiplan_version=__version__, host=host_summary(info, host))


def _model_path(ref: str) -> Path:
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    if p.suffix.lower() == ".gguf" or "/" in ref:
        raise PlannerError(f"{ref}: no such GGUF file.")
    raise PlannerError(
        f"--model takes a .gguf file on this machine; to bench catalog model '{ref}' before downloading it, "
        f"use --synthetic {ref} --quant Q4_K_M."
    )


def _write_synthetic(f: SyntheticFile) -> Path:
    """The synthetic GGUF of `f`, written now unless it is cached (disk room was checked before)."""
    from planner.measure.synthetic import synthetic_for_catalog

    if f.cached:
        return f.path
    with _progress() as prog:
        task = prog.add_task(f"writing synthetic {f.model_id} {f.quant}", total=None)

        def step(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        return synthetic_for_catalog(f.model_id, f.quant, out_dir=f.path.parent, progress=step)


def _run_progress(prog: Progress, label: str) -> Any:
    task = prog.add_task(label, total=None)

    def update(phase: str, done: int, total: int) -> None:
        prog.update(task, description=f"{label}: {phase}", completed=done, total=total)

    return update


def _bench_gguf(
    result: BenchResult, path: Path, lcfg: LlamaBenchConfig, gpu_layers: int | None, kind: str, calibrate: bool
) -> int:
    from planner.calibration import calibrate_from_run
    from planner.measure.bench_llama import run_llama_bench
    from planner.measure.records import bench_config, finish_gguf_run, gguf_run, predict, run_config
    from planner.sources.gguf_file import read_gguf

    gpus: list[Device] = _HOST_CACHE["gpus"]
    host: Device = _HOST_CACHE["host"]
    spec = read_gguf(path)
    cfg = run_config(lcfg, gpu_layers, bool(gpus))
    est, est_cal = predict(spec, cfg, gpus, host)
    lcfg = bench_config(lcfg, gpu_layers, est)
    run = gguf_run(spec, path, lcfg, kind, est, est_cal)
    result.runs.append(run)
    with _progress() as prog:
        res = run_llama_bench(path, lcfg, progress=_run_progress(prog, spec.arch.name))
    finish_gguf_run(run, res.to_measured(), fits=est.fits, interrupted=res.interrupted)
    if res.interrupted:
        raise KeyboardInterrupt
    if calibrate:
        result.calibration.extend(calibrate_from_run(spec, cfg, est, run, gpus, host, _HOST_CACHE["cat"]))
    return 0


def _endpoint_config(
    url: str, name: str, concurrency: str, n_gen: int, timeout: float, api_key: str | None
) -> EndpointConfig:
    from planner.measure.endpoint import EndpointConfig

    parts = [x.strip() for x in concurrency.split(",") if x.strip()]
    if any(not x.isdigit() or len(x) > 6 for x in parts):  # bounded as text: int() of 5,000 digits fails
        raise PlannerError(f"--concurrency takes integers separated by commas, got {shown(concurrency)!r}.")
    return EndpointConfig(
        url=url, model_name=name, concurrency=tuple(int(x) for x in parts), max_tokens=n_gen, timeout_s=timeout,
        api_key=api_key,
    )  # fmt: skip


def _bench_endpoint(
    result: BenchResult,
    url: str,
    name: str,
    concurrency: str,
    n_gen: int,
    timeout: float,
    ctx: int,
    api_key: str | None = None,
) -> int:
    from planner.measure.endpoint import bench_endpoint, is_ollama, ollama_ps, ollama_timings
    from planner.measure.records import add_ollama_figures, endpoint_run
    from planner.redact import redact

    cfg = _endpoint_config(url, name, concurrency, n_gen, timeout, api_key)
    levels = cfg.concurrency
    cfg.check()
    ollama = is_ollama(url, timeout_s=min(timeout, 5.0))
    with _progress() as prog:
        task = prog.add_task(f"{name} at {redact(url)}", total=len(levels))
        measured = bench_endpoint(cfg, progress=lambda done, total: prog.update(task, completed=done))
    failed = False
    for lv in measured:
        run = endpoint_run(lv, name, n_gen, ollama)
        failed = failed or run.verdict == "error"
        result.runs.append(run)
        if lv.interrupted:
            raise KeyboardInterrupt
    if len(measured) < len(levels):
        failed = True
    if ollama and result.runs:
        add_ollama_figures(result.runs[0], name, ollama_timings(cfg), ollama_ps(url))
    return 1 if failed else 0


def _load_deployed(plan_path: Path, folder: Path, option: int | None) -> Deployed:
    from planner.measure.deployed import load_deployed
    from planner.plan.schema import load_plan

    deployed = load_deployed(load_plan(plan_path), plan_path, folder)
    if option is not None and option != deployed.option:
        raise PlannerError(f"--option {option}: {folder} deploys option {deployed.option}; leave --option out.")
    return deployed


def _bench_deployed(result: BenchResult, deployed: Deployed, n_gen: int, repetitions: int, timeout: float) -> int:
    """Each role of a running deployment through its endpoint, one after the other (planner.measure.deployed)."""
    from planner.measure.deployed import bench_role

    with _progress() as prog:
        task = prog.add_task(f"deployment {deployed.folder}", total=len(deployed.roles))
        for r in deployed.roles:
            prog.update(task, description=f"{r.server}/{r.placement.role} through its deployed server")
            result.runs.append(bench_role(r, deployed.api_key, n_gen=n_gen, repetitions=repetitions, timeout_s=timeout))
            prog.advance(task)
    return 1 if result.failed else 0


@dataclass(frozen=True)
class _PlanBench:
    """A plan's server ready to bench: every check passed, the synthetic files still to write, one worker
    job per benchable role, and what this host lacks of the plan's GPUs (with --on-this-host)."""

    server: str
    jobs: list[WorkerJob]
    placements: dict[str, tuple[Placement, Path]]
    to_write: list[SyntheticFile]
    gpu_gap: str | None


def _prepare_plan(
    result: BenchResult, plan_path: Path, server: str, option: int | None, lcfg: LlamaBenchConfig, on_this_host: bool
) -> _PlanBench:
    """Check before anything is spent, in this order: the engine (the llama.cpp tools), this host's GPUs against
    the plan's, each role's settings, then disk room and cache cap for every synthetic file at once.
    Placements the bench cannot run go into `result` as error records."""
    from planner.measure.host import plan_gpu_gap
    from planner.measure.llama_tools import find_tools
    from planner.measure.records import plan_job, plan_server, unbenchable_plan_run
    from planner.measure.synthetic import check_room_for, synthetic_file
    from planner.plan.schema import load_plan

    srv = plan_server(load_plan(plan_path), plan_path, server, option)
    benched = []
    for pl in srv.placements:
        skipped = unbenchable_plan_run(pl)
        if skipped is not None:
            result.runs.append(skipped)
        else:
            benched.append(pl)
    if benched:
        find_tools()
    gap = plan_gpu_gap(srv, benched, _HOST_CACHE["info"])
    if gap is not None and not on_this_host:
        raise PlannerError(
            f"server {srv.name!r} of the plan places roles on {gap}. Bench on that server, or add --on-this-host "
            "to run the roles on this host's devices (the figures then do not check the plan)."
        )
    jobs: list[WorkerJob] = []
    placements: dict[str, tuple[Placement, Path]] = {}
    to_write: dict[Path, SyntheticFile] = {}
    for pl in benched:
        if Path(pl.model).expanduser().is_file():
            path = _model_path(pl.model)
        else:
            f = synthetic_file(pl.model, pl.quant)
            path = f.path
            if not f.cached:
                to_write[f.path] = f
        jobs.append(plan_job(pl, path, lcfg, srv))
        placements[pl.role] = (pl, path)
    check_room_for(list(to_write.values()))
    return _PlanBench(server, jobs, placements, list(to_write.values()), gap)


def _bench_plan(result: BenchResult, planned: _PlanBench) -> int:
    """Write the synthetic files, then bench every role alone, then all together."""
    from planner.measure.bench_llama import run_workers
    from planner.measure.records import plan_run

    for f in planned.to_write:
        _write_synthetic(f)
    jobs, placements, server = planned.jobs, planned.placements, planned.server

    def record(run: BenchRun) -> None:
        if planned.gpu_gap is not None:
            run.notes.append(f"benched on this host, which lacks {planned.gpu_gap}: not the plan's devices")
        result.runs.append(run)

    with _progress() as prog:
        task = prog.add_task(f"{server}: roles one by one", total=len(jobs) + 1)
        for job in jobs:
            prog.update(task, description=f"{server}: {job.key} alone")
            (o,) = run_workers([job])
            pl, path = placements[job.key]
            record(plan_run(pl, path, "plan-alone", o.measured, o.error))
            prog.advance(task)
        if len(jobs) > 1:
            prog.update(task, description=f"{server}: all {len(jobs)} roles together")
            for o in run_workers(jobs):
                pl, path = placements[o.key]
                record(plan_run(pl, path, "plan-together", o.measured, o.error))
        prog.advance(task)
    return 1 if result.failed else 0


def _batched_levels(levels: str) -> list[int]:
    try:
        return [int(x) for x in levels.split(",") if x.strip()]
    except ValueError:
        raise PlannerError(f"--batched takes integers separated by commas, got {levels!r}.") from None


def _bench_batched(
    path: Path,
    levels: str,
    threads: int | None,
    n_prompt: int,
    n_gen: int,
    gpu_layers: int,
    flash_attn: bool,
    calibrate: bool,
    fmt: Format,
    repetitions: int,
) -> None:
    """llama-batched-bench's slot curve (best of `repetitions` runs) against the estimate, calibrated when asked."""
    from planner.calibration import calibrate_from_slot_curve
    from planner.measure.batched_bench import check_slots, run_batched_bench
    from planner.sources.gguf_file import read_gguf

    slots = _batched_levels(levels)
    check_slots(slots)
    spec = read_gguf(path)
    _host(False, None)
    with _progress() as prog:
        prog.add_task(f"llama-batched-bench {spec.arch.name} at {levels}", total=None)
        res = run_batched_bench(
            path,
            slots=slots,
            prompt_tokens=n_prompt,
            gen_tokens=n_gen,
            threads=threads,
            gpu_layers=gpu_layers,
            flash_attn=flash_attn,
            repetitions=repetitions,
        )
    gpus: list[Device] = _HOST_CACHE["gpus"] if gpu_layers else []
    fit = calibrate_from_slot_curve(
        spec,
        res.points,
        gpus=gpus,
        host=_HOST_CACHE["host"],
        gpu_layers=gpu_layers,
        flash_attn=flash_attn,
        model=spec.arch.name,
        save=calibrate,
    )
    rows = [
        {
            "slots": p.slots,
            "measured_aggregate_tok_s": round(p.measured_aggregate_tok_s, 2),
            "predicted_before_tok_s": round(before, 2),
            "predicted_after_tok_s": round(p.predicted_aggregate_tok_s, 2),
        }
        for p, before in zip(fit.points, fit.predicted_before_tok_s, strict=True)
    ]
    if fmt is Format.json:
        print_json(
            {
                "model": str(path),
                "build": res.build,
                "threads": res.threads,
                "device": fit.device_id,
                "decode_ratio": fit.decode_ratio,
                "batch_ratio": fit.batch_ratio,
                "pass_ratio": fit.pass_ratio,
                "prefill_ratio": fit.prefill_ratio,
                "calibrated": calibrate,
                "points": rows,
            }
        )
        return
    from rich.table import Table

    con = stdout_console()
    con.print(f"{spec.arch.name} · llama-batched-bench · {res.build} · {res.threads} thread(s) · -ngl {gpu_layers}")
    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("sequences", "measured tok/s", "predicted", "calibrated", "Δ"):
        t.add_column(col, justify="right")
    for r in rows:
        m, a = r["measured_aggregate_tok_s"], r["predicted_after_tok_s"]
        t.add_row(
            str(r["slots"]), f"{m:.1f}", f"{r['predicted_before_tok_s']:.1f}", f"{a:.1f}", f"{(a / m - 1) * 100:+.1f} %"
        )
    con.print(t)
    saved = f" · saved in {fit.profile_path}" if calibrate else " (not saved: --no-calibrate)"
    con.print(
        f"{fit.device_id}: decode × {fit.decode_ratio:.3f}, batched pass × {fit.pass_ratio:.3f}, "
        f"per-slot compute × {fit.batch_ratio:.3f}, "
        f"prefill × {fit.prefill_ratio:.3f}{saved}"
    )


# ------------------------------------------------------------------------------------------ rendering


def _show_calibration(fmt: Format) -> None:
    from planner.calibration import load_profile, profile_path

    prof = load_profile()
    if fmt is Format.json:
        print_json({"path": str(profile_path()), "profile": prof.model_dump(mode="json") if prof else None})
        return
    con = stdout_console()
    if prof is None or not prof.entries:
        con.print(f"no calibration profile at {profile_path()}: run 'agiplan bench --model FILE.gguf' first")
        return
    con.print(f"calibration profile {profile_path()} (host {prof.hostname})")
    from rich.table import Table

    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("device", "decode ×", "prefill ×", "samples", "last model", "measured at"):
        t.add_column(col)
    for e in prof.entries.values():
        ratios = (f"{e.decode_ratio:.3f}", f"{e.prefill_ratio:.3f}")
        t.add_row(e.device_id, *ratios, str(e.samples), e.model, e.measured_at)
    con.print(t)


def _gib(n: int | None) -> str:
    return "—" if n is None else fmt_gib(n, 3)


def _tok(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _render(result: BenchResult, fmt: Format) -> None:
    if fmt is Format.json:
        print_json(result.model_dump(mode="json"))
        return
    from rich.table import Table
    from rich.text import Text

    con = stdout_console()
    h = result.host
    con.print(
        Text.assemble(
            (h.hostname, "bold"),
            f" · {h.cpu} · {h.cores} cores · RAM {_gib(h.ram_total_bytes)}"
            + (f" · {h.ram_bandwidth_gbs:.1f} GB/s measured" if h.ram_bandwidth_gbs else "")
            + (f" · {len(h.gpus)} GPU(s)" if h.gpus else " · no GPU"),
        )
    )
    for run in result.runs:
        title = f"{run.role + ': ' if run.role else ''}{run.model} · {run.engine} · {run.kind}"
        if run.concurrency:
            title += f" · concurrency {run.concurrency}"
        elif run.ctx:
            title += f" · ctx {run.ctx} × {run.parallel} · KV {run.kv_type} · -ngl {run.gpu_layers}"
        con.print(Text.assemble("\n", (title, "bold"), "  ", (run.verdict.upper(), _verdict_style(run.verdict))))
        t = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("", "predicted", "measured", "Δ"):
            t.add_column(col, justify="right" if col else "left")
        p, m = run.predicted, run.measured
        rows: list[tuple[str, str, str, str]] = [
            ("weights", _gib(p.weights_bytes if p else None), _gib(m.weights_bytes), _pct(run, "weights_bytes")),
            ("KV cache", _gib(p.kv_cache_bytes if p else None), _gib(m.kv_cache_bytes), _pct(run, "kv_cache_bytes")),
            ("compute", _gib(p.compute_bytes if p else None), _gib(m.compute_bytes), _pct(run, "compute_bytes")),
            ("peak RSS", "", _gib(m.peak_rss_bytes), ""),
            ("decode tok/s", _tok(p.decode_tok_s if p else None), _tok(m.decode_tok_s), _pct(run, "decode_tok_s")),
            ("prefill tok/s", _tok(p.prefill_tok_s if p else None), _tok(m.prefill_tok_s), _pct(run, "prefill_tok_s")),
        ]
        if m.gpu_memory_bytes is not None:
            rows.insert(4, ("GPU memory", "", _gib(m.gpu_memory_bytes), ""))
        if m.ttft_s is not None:
            rows.append(("TTFT s", "", f"{m.ttft_s:.3f}", ""))
        if m.aggregate_tok_s is not None:
            rows.append(("aggregate tok/s", "", _tok(m.aggregate_tok_s), ""))
        if m.llama_decode_tok_s is not None:
            rows.append(("engine's own decode tok/s", "", _tok(m.llama_decode_tok_s), ""))
        if run.min_tok_s is not None:
            rows.append(("target tok/s", f"≥ {run.min_tok_s:g}", _tok(m.decode_tok_s), ""))
        for row in rows:
            if any(row[1:]):
                t.add_row(*row)
        con.print(t)
        if p is not None and p.decode_tok_s_calibrated is not None:
            con.print(f"  calibrated estimate: decode {p.decode_tok_s_calibrated:.1f} tok/s", style="dim")
        for n in run.notes:
            con.print(f"  note: {n}", style="dim")
        if run.error:
            con.print(f"  error: {run.error}", style="red")
    for c in result.calibration:
        con.print(
            f"\ncalibrated {c.device_id}: decode × {c.decode_ratio:.3f}, prefill × {c.prefill_ratio:.3f} "
            f"({c.samples} sample(s)) → estimate decode {c.decode_tok_s_before:.1f} → {c.decode_tok_s_after:.1f} "
            f"tok/s, prefill {c.prefill_tok_s_before:.0f} → {c.prefill_tok_s_after:.0f} tok/s · {c.profile_path}"
        )
    if not result.complete:
        con.print("incomplete: interrupted or failed; the runs above are what was measured", style="yellow")


def _pct(run: BenchRun, key: str) -> str:
    r = run.residuals.get(key)
    return "" if r is None else f"{r * 100:+.1f} %"


def _verdict_style(v: str) -> str:
    return {"pass": "bold green", "fail": "bold red", "error": "bold red", "partial": "yellow"}.get(v, "bold")
