"""Bench records without an engine: plan verdicts, endpoint levels, GGUF runs, calibration from a run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from planner.calibration import calibrate_from_run, load_profile
from planner.catalog import load_catalog
from planner.errors import PlannerError, UnknownIdError
from planner.estimate.devices import gpu_devices, host_device
from planner.estimate.types import RunConfig
from planner.measure.bench_llama import LlamaBenchConfig
from planner.measure.endpoint import LevelResult, OllamaTimings, StreamResult
from planner.measure.records import (
    add_ollama_figures,
    bench_config,
    endpoint_run,
    finish_gguf_run,
    gguf_run,
    plan_job,
    plan_run,
    plan_server,
    predict,
    run_config,
    unbenchable_plan_run,
)
from planner.measure.results import BenchRun, Measured
from planner.plan.schema import MemoryBreakdown, Placement, Plan, PlanOption, PlanServer
from planner.sources.resolve import resolve_model


@pytest.fixture(autouse=True)
def _own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # never the user's calibration profile


MEM = MemoryBreakdown(weights_bytes=1000, kv_cache_bytes=100, compute_bytes=10, overhead_bytes=0)


def _placement(role: str = "chat", min_tok_s: float | None = 10.0, **kw: object) -> Placement:
    fields: dict[str, object] = dict(
        role=role, model="gemma-3-270m", model_name="Gemma 3 270m", quant="Q4_K_M", ctx=256, parallel=1,
        engine="llama.cpp", devices=["cpu"], gpu_layers=0, n_layers=18, memory_bytes=1110, memory=MEM,
        kv_capacity_tokens=256, decode_tok_s=40.0, decode_tok_s_alone=50.0, prefill_tok_s=300.0,
        min_tok_s=min_tok_s, meets_target=True,
    )  # fmt: skip
    fields.update(kw)
    return Placement.model_validate(fields)


# ------------------------------------------------------------------------------------------------ plans

# (kind, target tok/s, measured decode tok/s, worker error, verdict, predicted decode: alone or contended)
PLAN_RUNS = [
    ("plan-alone", 10.0, 55.0, None, "pass", 50.0),  # above the target; predicted = decode_tok_s_alone
    ("plan-together", 10.0, 5.0, None, "fail", 40.0),  # below the target; predicted = decode_tok_s
    ("plan-alone", None, 55.0, None, "measured", 50.0),  # no target: just measured
    ("plan-alone", 10.0, None, None, "error", 50.0),  # no speed came back
    ("plan-together", 10.0, 55.0, "worker died", "error", 40.0),  # an error wins over a speed
]


@pytest.mark.parametrize(("kind", "target", "decode", "error", "verdict", "predicted"), PLAN_RUNS)
def test_plan_run_verdicts(
    kind: str, target: float | None, decode: float | None, error: str | None, verdict: str, predicted: float
) -> None:
    m = Measured(decode_tok_s=decode, weights_bytes=1100)
    run = plan_run(_placement(min_tok_s=target), Path("/m.gguf"), kind, m, error)  # type: ignore[arg-type]
    assert (run.kind, run.verdict, run.error, run.model_path) == (kind, verdict, error, "/m.gguf")
    assert run.predicted is not None and run.predicted.decode_tok_s == predicted
    assert run.residuals["weights_bytes"] == 0.1  # 1100 / 1000 - 1


def test_plan_run_without_measurement_is_an_error() -> None:
    run = plan_run(_placement(), Path("/m.gguf"), "plan-alone", None, "load failed")
    assert run.verdict == "error" and run.residuals == {}


def test_placements_the_bench_cannot_run_point_to_the_endpoint_mode() -> None:
    run = unbenchable_plan_run(_placement(engine="vllm"))
    assert run is not None
    assert run.verdict == "error" and run.engine == "vllm"
    assert "vLLM placements are benched through their endpoint: agiplan bench --endpoint URL" in (run.error or "")
    assert unbenchable_plan_run(_placement()) is None


def test_experts_kept_on_the_cpu_are_benched_as_planned() -> None:
    """llama-server takes --n-cpu-moe, so a MoE placement that keeps the routed experts of 7 layers on the CPU is
    benched as planned (llama-cpp-python, which the bench ran before, had no such option: it was refused)."""
    assert unbenchable_plan_run(_placement(n_cpu_moe=7)) is None
    job = plan_job(_placement(n_cpu_moe=7), Path("/m.gguf"), LlamaBenchConfig(), _plan().options[0].servers[0])
    assert job.cfg.n_cpu_moe == 7


def _plan() -> Plan:
    server = PlanServer(
        name="box", new=False, cost_usd=0, hardware="this host", cpu=None, gpus=[], ram_bytes=2**30, devices=[],
        placements=[_placement()],
    )  # fmt: skip
    option = PlanOption(kind="one-server-concurrent", servers=[server], total_cost_usd=0, meets_targets=True, why="t")
    return Plan(
        schema_version=1, created_at="2026-01-01T00:00:00Z", agiplan_version="0.1.0", stack_name="t",
        options=[option], recommended=0,
    )  # fmt: skip


# (server, option, error type, message)
PLAN_SERVER_ERRORS = [
    ("box", 3, PlannerError, "p.json: option 3 does not exist (the plan has 1)."),
    ("bx", None, UnknownIdError, "Unknown server 'bx'. Did you mean box? Servers of option 0 in p.json."),
]


@pytest.mark.parametrize(("server", "option", "error", "message"), PLAN_SERVER_ERRORS)
def test_plan_server_errors(server: str, option: int | None, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as e:
        plan_server(_plan(), Path("p.json"), server, option)
    assert str(e.value) == message


def test_plan_job_takes_the_placement_settings_and_gpus() -> None:
    srv = plan_server(_plan(), Path("p.json"), "box", None)
    assert srv.name == "box"
    nvidia = srv.model_copy(update={"gpus": ["rtx-4090", "rtx-4090", "rtx-4090"]})
    job = plan_job(_placement(gpu_indices=[0, 2], kv_type="q8_0"), Path("/m.gguf"), LlamaBenchConfig(n_gen=8), nvidia)
    assert (job.key, job.cfg.ctx, job.cfg.kv_type_v, job.cfg.n_gen) == ("chat", 256, "q8_0", 8)
    assert job.env == {"CUDA_VISIBLE_DEVICES": "0,2"}
    # AMD cards are pinned with ROCm's variable (it was CUDA_VISIBLE_DEVICES whatever the vendor)
    amd = srv.model_copy(update={"gpus": ["rx-7900-xtx", "rx-7900-xtx"]})
    assert plan_job(_placement(gpu_indices=[1]), Path("/m.gguf"), LlamaBenchConfig(), amd).env == {
        "ROCR_VISIBLE_DEVICES": "1"
    }
    with pytest.raises(PlannerError, match=r"^role chat \(ctx 256\): depth 0 \+ prompt 300"):
        plan_job(_placement(), Path("/m.gguf"), LlamaBenchConfig(n_prompt=300), srv)


# -------------------------------------------------------------------------------------------- endpoints


def _level(*results: StreamResult, interrupted: bool = False) -> LevelResult:
    return LevelResult(concurrency=len(results), results=list(results), wall_s=2.0, interrupted=interrupted)


OK = StreamResult(ok=True, ttft_s=0.12345, n_tokens=32, decode_tok_s=20.00049)
BAD = StreamResult(ok=False, error="HTTP 500")

# (level, ollama, verdict, engine, error)
ENDPOINT_RUNS = [
    (_level(OK, OK), False, "measured", "openai", None),
    (_level(OK, BAD, BAD), True, "error", "ollama", "HTTP 500"),  # errors are listed once
    (_level(OK, interrupted=True), False, "error", "openai", None),  # Ctrl-C mid-level
]


@pytest.mark.parametrize(("level", "ollama", "verdict", "engine", "error"), ENDPOINT_RUNS)
def test_endpoint_run(level: LevelResult, ollama: bool, verdict: str, engine: str, error: str | None) -> None:
    run = endpoint_run(level, "m", 32, ollama)
    assert (run.verdict, run.engine, run.error, run.ctx, run.predicted) == (verdict, engine, error, 0, None)
    assert run.measured.decode_tok_s == 20.0 and run.measured.ttft_s == 0.123  # rounded to 3 places
    assert run.measured.requests_failed == level.failed and run.measured.n_gen == 32


def test_ollama_figures_land_on_the_run() -> None:
    run = endpoint_run(_level(OK), "m", 32, True)
    timings = OllamaTimings(prompt_tokens=10, prompt_tok_s=100.0004, eval_tokens=32, eval_tok_s=20.0004, load_s=1.5)
    add_ollama_figures(run, "m", timings, [{"name": "other", "size_vram": 1}, {"name": "m", "size_vram": 7}])
    assert (run.measured.llama_decode_tok_s, run.measured.gpu_memory_bytes) == (20.0, 7)
    assert run.notes[-2:] == ["Ollama's own timings: eval 32 tokens, load 1.50 s", "Ollama /api/ps: size None bytes"]


# -------------------------------------------------------------------------------- GGUF runs, calibration


@pytest.fixture(scope="module")
def gemma_cpu() -> tuple[object, RunConfig, list[object], object]:
    cat = load_catalog()
    lcfg = LlamaBenchConfig(ctx=1024)
    return cat, run_config(lcfg, None, has_gpus=False), [], host_device(cat, None, None)


def test_gguf_run_predicts_then_records_the_measurement(gemma_cpu) -> None:  # type: ignore[no-untyped-def]
    _cat, cfg, gpus, host = gemma_cpu
    assert cfg.gpu_layers == 0  # no GPU: all on the host
    spec = resolve_model("gemma-3-270m")
    est, est_cal = predict(spec, cfg, gpus, host)
    assert est_cal is None
    lcfg = bench_config(LlamaBenchConfig(ctx=1024), None, est)
    run = gguf_run(spec, Path("/g.gguf"), lcfg, "synthetic", est, est_cal)
    assert (run.kind, run.verdict, run.gpu_layers, run.model_path) == ("synthetic", "partial", 0, "/g.gguf")
    finish_gguf_run(run, Measured(decode_tok_s=1.0, prefill_tok_s=1.0), fits=False, interrupted=True)
    assert (run.verdict, run.notes) == ("partial", ["interrupted: fewer repetitions than asked"])
    finish_gguf_run(run, Measured(decode_tok_s=1.0, prefill_tok_s=1.0), fits=False, interrupted=False)
    assert run.verdict == "measured" and "does not fit" in run.notes[-1]
    assert "decode_tok_s" in run.residuals


def _run(decode: float | None, prefill: float | None) -> BenchRun:
    return BenchRun(
        model="Gemma 3 270m", engine="llama.cpp", kind="model", ctx=1024,
        measured=Measured(decode_tok_s=decode, prefill_tok_s=prefill),
    )  # fmt: skip


def test_calibrate_from_run_saves_measured_over_predicted(gemma_cpu, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cat, cfg, gpus, host = gemma_cpu
    spec = resolve_model("gemma-3-270m")
    est, _ = predict(spec, cfg, gpus, host)
    profile = tmp_path / "cal.json"
    run = _run(est.speed.decode_tok_s * 2, est.speed.prefill_tok_s / 2)
    (up,) = calibrate_from_run(spec, cfg, est, run, gpus, host, cat, profile)
    assert (up.device_id, up.samples, up.profile_path) == ("cpu", 1, str(profile))
    assert up.decode_ratio == pytest.approx(2.0) and up.prefill_ratio == pytest.approx(0.5)
    assert up.decode_tok_s_after == pytest.approx(2 * up.decode_tok_s_before, rel=1e-3)
    prof = load_profile(profile)
    assert prof is not None and prof.entries["cpu"].model == "Gemma 3 270m"


# (measured decode, prefill, GPU layers of the estimate, note added)
NOT_CALIBRATED = [
    (None, 100.0, 0, None),  # no decode speed: nothing to compare
    (10.0, 100.0, 5, "not calibrated: the model is split over several devices"),  # 4090 + CPU
]


@pytest.mark.parametrize(("decode", "prefill", "gpu_layers", "note"), NOT_CALIBRATED)
def test_calibrate_from_run_skips(  # type: ignore[no-untyped-def]
    gemma_cpu, tmp_path, decode: float | None, prefill: float, gpu_layers: int, note: str | None
) -> None:
    cat, _cfg, _gpus, host = gemma_cpu
    gpus = gpu_devices(cat, ["rtx-4090"]) if gpu_layers else []
    cfg = run_config(LlamaBenchConfig(ctx=1024), gpu_layers, bool(gpus))
    spec = resolve_model("gemma-3-270m")
    est, _ = predict(spec, cfg, gpus, host)
    run = _run(decode, prefill)
    assert calibrate_from_run(spec, cfg, est, run, gpus, host, cat, tmp_path / "cal.json") == []
    assert run.notes == ([note] if note else [])
    assert not (tmp_path / "cal.json").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe); a calibration profile must be a regular file"),  # hung
        (lambda p: p.write_bytes(b" " * (5 << 20)), "larger than the 4096 KiB agiplan reads"),  # read whole
        (lambda p: p.write_bytes(b"\xff{}"), "not UTF-8 text (byte 0)"),
    ],
    ids=["fifo", "5-MiB", "not-utf8"],
)
def test_calibration_profile_is_read_as_outside_input(tmp_path: Path, make: Any, message: str) -> None:
    """Issue 15: the profile is a file on disk like any other: only a regular file, bounded, one-line errors."""
    profile = tmp_path / "calibration.json"
    make(profile)
    with pytest.raises(PlannerError, match=re.escape(message)):
        load_profile(profile)
