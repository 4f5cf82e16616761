"""Bench records from predictions and measurements: the library behind `agiplan bench`.

One `BenchRun` per measured configuration: its predicted side (from `estimate()` or from the plan's
placement), what was measured, residuals and verdict. Nothing here prints, parses options or runs an
engine; the CLI (planner/cli/bench_cmd.py) adds those, and the scripts under bench/ can call it as well.
Calibration from a run (measured ÷ predicted) lives in planner/calibration.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planner.errors import PlannerError, UnknownIdError
from planner.measure.results import BenchRun, Measured, Predicted, predicted_from_estimate, residuals

if TYPE_CHECKING:
    from planner.estimate.types import Device, Estimate, RunConfig
    from planner.measure.bench_llama import LlamaBenchConfig, WorkerJob
    from planner.measure.endpoint import LevelResult, OllamaTimings
    from planner.model.arch import ModelSpec
    from planner.plan.schema import Placement, Plan, PlanServer

PlanRunKind = Literal["plan-alone", "plan-together"]

# ---------------------------------------------------------------------------------- a GGUF, on llama-server


def run_config(lcfg: LlamaBenchConfig, gpu_layers: int | None, has_gpus: bool) -> RunConfig:
    """The estimator's configuration for a llama.cpp bench run: the same context, slots, KV types and
    batches; GPU layers as asked, else the estimate's choice (all on the host when there is no GPU)."""
    from planner.estimate.types import RunConfig

    return RunConfig(
        engine="llama.cpp",
        ctx=lcfg.ctx,
        parallel=lcfg.parallel,
        kv_type_k=lcfg.kv_type_k,
        kv_type_v=lcfg.kv_type_v,
        flash_attn=lcfg.flash_attn,
        n_ubatch=lcfg.n_ubatch,
        n_batch=lcfg.n_batch,
        gpu_layers=gpu_layers if gpu_layers is not None else (None if has_gpus else 0),
        swa_full=lcfg.swa_full,
        depth_tokens=lcfg.depth_tokens,
    )


def predict(spec: ModelSpec, cfg: RunConfig, gpus: list[Device], host: Device) -> tuple[Estimate, Estimate | None]:
    """The uncalibrated estimate, and the same with this host's calibration profile (None without one)."""
    from planner.calibration import calibration_for_devices
    from planner.estimate.estimate import estimate

    est = estimate(spec, cfg, gpus, host)
    cal = calibration_for_devices([*gpus, host])
    return est, (estimate(spec, cfg, gpus, host, calibration=cal) if cal else None)


def bench_config(lcfg: LlamaBenchConfig, gpu_layers: int | None, est: Estimate) -> LlamaBenchConfig:
    """The llama.cpp run to make: `-ngl` as asked, else as many layers as the estimate puts on GPUs."""
    return replace(lcfg, gpu_layers=gpu_layers if gpu_layers is not None else est.gpu_layers)


def gguf_run(
    spec: ModelSpec, path: Path, lcfg: LlamaBenchConfig, kind: str, est: Estimate, est_cal: Estimate | None
) -> BenchRun:
    """The record of one GGUF run before it is measured (verdict "partial" until `finish_gguf_run`)."""
    return BenchRun(
        model=spec.arch.name,
        engine="llama.cpp",
        kind="synthetic" if kind == "synthetic" else "model",
        model_path=str(path),
        quant=est.weights.file_type,
        ctx=lcfg.ctx,
        parallel=lcfg.parallel,
        kv_type=lcfg.kv_type_k,
        flash_attn=lcfg.flash_attn,
        gpu_layers=lcfg.gpu_layers,
        predicted=predicted_from_estimate(est, est_cal),
        verdict="partial",
    )


def finish_gguf_run(run: BenchRun, measured: Measured, *, fits: bool, interrupted: bool) -> None:
    """Record what was measured and the residuals. An interrupted run stays "partial" with a note."""
    run.measured = measured
    assert run.predicted is not None
    run.residuals = residuals(run.predicted, measured)
    if interrupted:
        run.notes.append("interrupted: fewer repetitions than asked")
        return
    run.verdict = "measured"
    if not fits:
        run.notes.append("the estimate said this does not fit, yet llama.cpp loaded it")


# ------------------------------------------------------------------------------------------- endpoints


def endpoint_run(level: LevelResult, name: str, n_gen: int, ollama: bool) -> BenchRun:
    """One concurrency level of an OpenAI-compatible endpoint (no prediction: its settings are unknown)."""
    m = Measured(
        ttft_s=_r(level.ttft_s),
        decode_tok_s=_r(level.decode_tok_s),
        decode_spread_tok_s=_r2(level.decode_spread_tok_s),
        aggregate_tok_s=_r(level.aggregate_tok_s),
        repetitions=len(level.ok),
        n_gen=n_gen,
        requests_ok=len(level.ok),
        requests_failed=level.failed,
    )
    bad = level.failed > 0 or level.interrupted
    return BenchRun(
        model=name,
        engine="ollama" if ollama else "openai",
        kind="endpoint",
        ctx=0,
        concurrency=level.concurrency,
        measured=m,
        verdict="error" if bad else "measured",
        error="; ".join(sorted(set(level.errors)))[:500] or None,
        notes=["no prediction: the endpoint's model file and settings are unknown here (not calibrated)"],
    )


def add_ollama_figures(
    run: BenchRun, name: str, timings: OllamaTimings | None, running: list[dict[str, Any]] | None
) -> None:
    """Ollama's own timings (`/api/generate`) and its GPU memory for `name` (`/api/ps`) on `run`."""
    if timings is not None:
        run.measured.llama_decode_tok_s = _r(timings.eval_tok_s)
        run.measured.llama_prefill_tok_s = _r(timings.prompt_tok_s)
        run.notes.append(f"Ollama's own timings: eval {timings.eval_tokens} tokens, load {timings.load_s:.2f} s")
    for entry in running or []:
        if entry.get("name") == name or entry.get("model") == name:
            run.measured.gpu_memory_bytes = int(entry.get("size_vram", 0))
            run.notes.append(f"Ollama /api/ps: size {entry.get('size')} bytes")


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _r2(x: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if x is None else (round(x[0], 3), round(x[1], 3))


# ----------------------------------------------------------------------------------------- plan servers


def plan_server(plan: Plan, plan_path: Path, server: str, option: int | None) -> PlanServer:
    """The server named `server` of plan option `option` (default: the recommended one, else the first)."""
    idx = option if option is not None else (plan.recommended if plan.recommended is not None else 0)
    if not 0 <= idx < len(plan.options):
        raise PlannerError(f"{plan_path}: option {idx} does not exist (the plan has {len(plan.options)}).")
    servers = {s.name: s for s in plan.options[idx].servers}
    if server not in servers:
        raise UnknownIdError("server", server, list(servers), f"Servers of option {idx} in {plan_path}.")
    return servers[server]


def unbenchable_plan_run(pl: Placement) -> BenchRun | None:
    """An error record for a placement the llama-server bench cannot run as planned, else None: vLLM
    placements (benched through their endpoint) and embedding models (the bench measures decoding)."""
    from planner.deploy import serves_embeddings

    if pl.engine == "vllm":
        why = "vLLM placements are benched through their endpoint: agiplan bench --endpoint URL"
    elif serves_embeddings(pl):
        why = (
            f"{pl.model_name} is an embedding model: the bench measures decoding, which is not its job; "
            "start llama-server as `agiplan deploy` writes it (--embeddings) and measure it there"
        )
    else:
        return None
    return BenchRun(
        model=pl.model_name, engine=pl.engine, kind="plan-alone", role=pl.role, ctx=pl.ctx,
        parallel=pl.parallel, verdict="error", error=why,
    )  # fmt: skip


def plan_job(pl: Placement, path: Path, lcfg: LlamaBenchConfig, server: PlanServer) -> WorkerJob:
    """The worker that benches placement `pl` of `server` as planned (its context, slots, KV type, layers,
    experts kept on the CPU, and GPUs, pinned with the vendor's visible-devices variable)."""
    from planner.deploy import placement_vendor, visible_devices_env
    from planner.measure.bench_llama import WorkerJob

    cfg = replace(
        lcfg,
        ctx=pl.ctx,
        parallel=pl.parallel,
        kv_type_k=pl.kv_type,
        kv_type_v=pl.kv_type,
        flash_attn=pl.flash_attn,
        gpu_layers=pl.gpu_layers,
        n_cpu_moe=pl.n_cpu_moe,
    )
    try:
        cfg.check()
    except PlannerError as e:
        raise PlannerError(f"role {pl.role} (ctx {pl.ctx}): {e}") from None
    env = visible_devices_env(placement_vendor(server, pl), pl.gpu_indices, "llama.cpp")
    return WorkerJob(pl.role, path, cfg, env)


def plan_run(pl: Placement, model_path: Path, kind: PlanRunKind, m: Measured | None, error: str | None) -> BenchRun:
    """One placement benched alone or with the other roles of its server, against the plan's figures.
    Verdict: pass / fail against the role's tok/s target, "measured" without one, "error" without a speed."""
    mem = pl.memory
    pred = Predicted(
        weights_bytes=mem.weights_bytes,
        kv_cache_bytes=mem.kv_cache_bytes,
        compute_bytes=mem.compute_bytes,
        overhead_bytes=mem.overhead_bytes,
        decode_tok_s=pl.decode_tok_s_alone if kind == "plan-alone" else pl.decode_tok_s,
        prefill_tok_s=pl.prefill_tok_s,
    )
    run = BenchRun(
        model=pl.model_name, engine=pl.engine, kind="plan-alone" if kind == "plan-alone" else "plan-together",
        role=pl.role, model_path=str(model_path), quant=pl.quant, ctx=pl.ctx,
        parallel=pl.parallel, kv_type=pl.kv_type, flash_attn=pl.flash_attn, gpu_layers=pl.gpu_layers,
        predicted=pred, min_tok_s=pl.min_tok_s, error=error,
    )  # fmt: skip
    if m is not None:
        run.measured = m
        run.residuals = residuals(pred, m)
    if error or m is None or m.decode_tok_s is None:
        run.verdict = "error"
    elif pl.min_tok_s is not None:
        run.verdict = "pass" if m.decode_tok_s >= pl.min_tok_s else "fail"
    else:
        run.verdict = "measured"
    return run
