"""The saved bench result (`agiplan bench --out bench.json`): host, runs (predicted vs measured), verdicts.

Schema-versioned and closed (extra="forbid"), like the plan file; `report` reads it back with
`load_result`. JSON shape (stable keys, issue #4):

    {schema_version, kind: "agiplan-bench", created_at, agiplan_version, complete,
     host {hostname, cpu, cores, threads, ram_total_bytes, ram_bandwidth_gbs, disk_read_gbs, gpus[], device_id,
           notes[]},
     runs[] {model, engine, kind, role, server, ctx, parallel, kv_type, flash_attn, gpu_layers, concurrency,
             predicted {weights_bytes, kv_cache_bytes, compute_bytes, decode_tok_s, prefill_tok_s, ...} | null,
             measured {weights_bytes, kv_cache_bytes, compute_bytes, peak_rss_bytes, decode_tok_s, prefill_tok_s,
                       ttft_s, ...},
             verdict, min_tok_s, residuals {...}, notes[], error},
     calibration {device_id, decode_ratio, prefill_ratio, ...} | null}

`complete` is False when the run was interrupted (Ctrl-C) or failed mid-way: what was measured is kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from planner.estimate.types import Estimate
from planner.io import load_versioned, write_json_atomic

BENCH_SCHEMA_VERSION = 1
BENCH_KIND = "agiplan-bench"

# deployed: one role of a running `agiplan deploy` folder, through its endpoint (planner.measure.deployed)
RunKind = Literal["model", "synthetic", "endpoint", "plan-alone", "plan-together", "deployed"]
Verdict = Literal["pass", "fail", "measured", "partial", "error"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuSummary(_Closed):
    index: int
    name: str
    memory_total_bytes: int = Field(ge=0)
    catalog_id: str | None = None


class HostSummary(_Closed):
    """What the bench ran on. `device_id` is the id its CPU runs are calibrated under (catalog id or 'cpu')."""

    hostname: str
    cpu: str
    cores: int = Field(ge=1)
    threads: int = Field(ge=1)
    ram_total_bytes: int = Field(ge=0)
    ram_bandwidth_gbs: float | None = None
    disk_read_gbs: float | None = None
    gpus: list[GpuSummary] = Field(default_factory=list)
    device_id: str = "cpu"
    notes: list[str] = Field(default_factory=list)


class Predicted(_Closed):
    """The estimator's figures for the same model and configuration on this host's devices (uncalibrated,
    so that measured ÷ predicted is a clean ratio; `*_calibrated` repeat them with this host's profile)."""

    weights_bytes: int = Field(ge=0)
    kv_cache_bytes: int = Field(ge=0)
    compute_bytes: int = Field(ge=0)
    overhead_bytes: int = Field(ge=0, default=0)
    decode_tok_s: float = Field(ge=0)
    prefill_tok_s: float = Field(ge=0)
    decode_range_tok_s: tuple[float, float] | None = None
    aggregate_tok_s: float | None = None
    decode_tok_s_calibrated: float | None = None
    prefill_tok_s_calibrated: float | None = None
    fits: bool = True


class Measured(_Closed):
    """What was measured. Memory from llama.cpp's own buffer lines; speeds are medians over repetitions,
    with the spread [min, max]; `llama_*_tok_s` are the engine's own timings of the same runs (llama-server's
    `timings`, which are also the speeds of the runs bench starts on llama-server; Ollama's eval counts)."""

    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    compute_bytes: int | None = None
    output_bytes: int | None = None
    peak_rss_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    gpu_memory_bytes: int | None = None
    decode_tok_s: float | None = None
    decode_spread_tok_s: tuple[float, float] | None = None
    prefill_tok_s: float | None = None
    prefill_spread_tok_s: tuple[float, float] | None = None
    ttft_s: float | None = None
    aggregate_tok_s: float | None = None
    llama_decode_tok_s: float | None = None
    llama_prefill_tok_s: float | None = None
    load_s: float | None = None
    repetitions: int = Field(ge=0, default=0)
    n_prompt: int | None = None
    n_gen: int | None = None
    depth_tokens: int | None = None
    requests_ok: int | None = None
    requests_failed: int | None = None


class BenchRun(_Closed):
    model: str
    engine: str  # llama.cpp (llama-server started by the bench), openai (an endpoint), ollama
    kind: RunKind
    role: str | None = None
    server: str | None = None  # the plan's server the role runs on (deployed runs)
    model_path: str | None = None
    quant: str | None = None
    ctx: int = Field(ge=0)
    parallel: int = Field(ge=1, default=1)
    kv_type: str = "f16"
    flash_attn: bool = True
    gpu_layers: int | None = None
    concurrency: int | None = None
    predicted: Predicted | None = None
    measured: Measured = Field(default_factory=Measured)
    verdict: Verdict = "measured"
    min_tok_s: float | None = None
    residuals: dict[str, float] = Field(default_factory=dict)  # relative: measured / predicted - 1
    notes: list[str] = Field(default_factory=list)
    error: str | None = None


class CalibrationUpdate(_Closed):
    """What the bench wrote into the calibration profile, and how it moves this run's estimate."""

    device_id: str
    decode_ratio: float
    prefill_ratio: float
    profile_path: str
    samples: int
    decode_tok_s_before: float
    decode_tok_s_after: float
    prefill_tok_s_before: float
    prefill_tok_s_after: float


class BenchResult(_Closed):
    schema_version: int = BENCH_SCHEMA_VERSION
    kind: Literal["agiplan-bench"] = "agiplan-bench"
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    agiplan_version: str
    host: HostSummary
    runs: list[BenchRun] = Field(default_factory=list)
    complete: bool = False
    calibration: list[CalibrationUpdate] = Field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.verdict in ("fail", "error") for r in self.runs)


def residuals(predicted: Predicted, measured: Measured) -> dict[str, float]:
    """measured / predicted - 1 for every figure both sides have (0.1 = measured is 10 % higher)."""
    pairs = {
        "weights_bytes": (measured.weights_bytes, predicted.weights_bytes),
        "kv_cache_bytes": (measured.kv_cache_bytes, predicted.kv_cache_bytes),
        "compute_bytes": (measured.compute_bytes, predicted.compute_bytes),
        "decode_tok_s": (measured.decode_tok_s, predicted.decode_tok_s),
        "prefill_tok_s": (measured.prefill_tok_s, predicted.prefill_tok_s),
    }
    out: dict[str, float] = {}
    for key, (m, p) in pairs.items():
        if m is not None and p:
            out[key] = round(m / p - 1.0, 4)
    return out


def save_result(result: BenchResult, path: Path) -> None:
    """Write atomically (temp file + rename): an interrupted bench never leaves a half-written file.
    Every string passes through planner.redact (an endpoint's error may echo its API key)."""
    from planner.redact import redact_strings

    write_json_atomic(Path(path), redact_strings(result.model_dump(mode="json")))


def load_result(path: Path) -> BenchResult:
    return load_versioned(Path(path), BENCH_KIND, BENCH_SCHEMA_VERSION, BenchResult)


def predicted_from_estimate(est: Estimate, calibrated: Estimate | None = None) -> Predicted:
    """The predicted side of a run from `estimate()` (summed over devices); `calibrated` adds the speeds
    of the same estimate with this host's calibration profile applied."""
    mem = est.memory
    sp = est.speed
    return Predicted(
        weights_bytes=mem.weights_bytes,
        kv_cache_bytes=mem.kv_cache_bytes,
        compute_bytes=mem.compute_bytes,
        overhead_bytes=mem.overhead_bytes,
        decode_tok_s=round(sp.decode_tok_s, 3),
        prefill_tok_s=round(sp.prefill_tok_s, 3),
        decode_range_tok_s=(round(sp.decode_low_tok_s, 3), round(sp.decode_high_tok_s, 3)),
        aggregate_tok_s=round(sp.aggregate_tok_s, 3),
        decode_tok_s_calibrated=round(calibrated.speed.decode_tok_s, 3) if calibrated else None,
        prefill_tok_s_calibrated=round(calibrated.speed.prefill_tok_s, 3) if calibrated else None,
        fits=est.fits,
    )
