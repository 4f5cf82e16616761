"""llama-batched-bench's slot curve (planner/measure/batched_bench.py) and the calibration fitted to it
(planner/calibration.py: fit_slot_curve, calibrate_from_slot_curve).

The `engines` test runs the real llama-batched-bench of the pinned llama.cpp build on the real Gemma 3 270M
Q4_K_M GGUF at the calibration's sequence counts and fits the profile to it; how close the calibrated model
comes at 1–16 sequences is measured by bench/batched_accuracy.py, not asserted (a timed test flakes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_fixtures import require_tools

from planner.calibration import (
    StepParts,
    calibrate_from_slot_curve,
    calibration_for_devices,
    fit_slot_curve,
    load_profile,
)
from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.estimate.devices import host_device
from planner.estimate.estimate import estimate
from planner.estimate.types import DeviceCalibration, RunConfig
from planner.measure.batched_bench import CALIBRATION_SLOTS, SlotPoint, parse_batched_bench, run_batched_bench
from planner.sources.gguf_file import read_gguf

# The format string of tools/batched-bench/batched-bench.cpp (llama.cpp b11434) with --output-format jsonl
JSONL = (
    '{{"n_kv_max": 2560, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 0, "is_pp_shared": 0, "n_gpu_layers": 0, '
    '"n_threads": 2, "n_threads_batch": 2, "pp": 128, "tg": 32, "pl": {pl}, "n_kv": {n_kv}, "t_pp": 0.5, '
    '"speed_pp": {spp}, "t_tg": 1.0, "speed_tg": {stg}, "t": 1.5, "speed": 100.0}}'
)


def test_parse_reads_the_jsonl_lines_and_skips_the_log() -> None:
    text = "\n".join(
        [
            "llama_model_loader: loaded meta data with 40 key-value pairs",
            JSONL.format(pl=1, n_kv=160, spp=512.0, stg=97.9),
            "main: some log line {not json}",
            JSONL.format(pl=16, n_kv=2560, spp=600.0, stg=233.0),
        ]
    )
    points = parse_batched_bench(text)
    assert [p.slots for p in points] == [1, 16]
    assert points[1].aggregate_decode_tok_s == 233.0
    assert points[1].step_s == pytest.approx(16 / 233.0)  # one token for each of 16 sequences
    assert points[0].mean_depth_tokens == 128 + 16


def test_parse_rejects_a_broken_line() -> None:
    with pytest.raises(PlannerError, match="cannot read"):
        parse_batched_bench('{"speed_tg": 5, "pl": "x"}')


def test_fit_recovers_known_ratios() -> None:
    # step = a / 0.5 + b / 0.8 + fixed: the fit returns 0.5 and 0.8 exactly
    parts = [StepParts(0.010, 0.004, 0.001), StepParts(0.015, 0.012, 0.001), StepParts(0.010, 0.028, 0.001)]
    steps = [p.a_s / 0.5 + p.b_s / 0.8 + p.fixed_s for p in parts]
    assert fit_slot_curve(parts, steps) == (pytest.approx(0.5, rel=1e-9), pytest.approx(0.8, rel=1e-9))
    # no a part at any point (a GPU has no many-column pass): only the b ratio is fitted
    gpu = [StepParts(0.0, p.b_s, p.fixed_s + p.a_s / 0.5) for p in parts]
    assert fit_slot_curve(gpu, steps) == (1.0, pytest.approx(0.8, rel=1e-9))


CHECK_SLOTS = (1, 2, 4, 8, 16)  # the curve issue 13 checks; 2, 4, 8, 16 are not calibrated on


def _curve(spec: object, host: object, truth: dict[str, DeviceCalibration], slots: tuple[int, ...]) -> list[SlotPoint]:
    curve = []
    for b in slots:
        cfg = RunConfig(ctx=160, parallel=b, flash_attn=False, gpu_layers=0, depth_tokens=144, prompt_tokens=128)
        sp = estimate(spec, cfg, [], host, calibration=truth, suggest=False).speed  # type: ignore[arg-type]
        curve.append(SlotPoint(b, 128, 32, sp.prefill_tok_s * b, sp.aggregate_tok_s))
    return curve


def test_calibration_from_a_curve_round_trips(gemma_gguf_path: Path, tmp_path: Path) -> None:
    # a curve at 1, 6, 12 sequences made by the estimator itself with decode × 0.6, prefill × 0.9, per-slot
    # compute × 0.4 and the many-column pass × 0.7: the fit finds those ratios, saves them with the curve,
    # and the calibrated estimate then gives the points it was not fitted on (2, 4, 8, 16)
    cat = load_catalog()
    spec = read_gguf(gemma_gguf_path)
    host = host_device(cat, None, 16)
    truth = {host.id: DeviceCalibration(0.6, 0.9, 0.4, 0.7)}
    profile = tmp_path / "calibration.json"
    fit = calibrate_from_slot_curve(
        spec,
        _curve(spec, host, truth, CALIBRATION_SLOTS),
        gpus=[],
        host=host,
        gpu_layers=0,
        flash_attn=False,
        model="gemma",
        path=profile,
    )
    assert (fit.decode_ratio, fit.prefill_ratio) == (pytest.approx(0.6, rel=1e-6), pytest.approx(0.9, rel=1e-6))
    assert (fit.batch_ratio, fit.pass_ratio) == (pytest.approx(0.4, rel=1e-6), pytest.approx(0.7, rel=1e-6))
    saved = load_profile(profile)
    assert saved is not None
    assert [p.slots for p in saved.entries[host.id].slot_curve] == list(CALIBRATION_SLOTS)
    cal = calibration_for_devices([host], profile)
    assert cal[host.id] == DeviceCalibration(*(pytest.approx(r, rel=1e-6) for r in (0.6, 0.9, 0.4, 0.7)))
    assert json.loads(profile.read_text())["entries"][host.id]["pass_ratio"] == pytest.approx(0.7, rel=1e-6)
    for want, got in zip(_curve(spec, host, truth, CHECK_SLOTS), _curve(spec, host, cal, CHECK_SLOTS), strict=True):
        assert got.aggregate_decode_tok_s == pytest.approx(want.aggregate_decode_tok_s, rel=1e-6), want.slots


def test_calibration_needs_the_one_sequence_point(gemma_gguf_path: Path, tmp_path: Path) -> None:
    # the decode and prefill ratios come from one sequence: a curve without it is refused, nothing is saved
    cat = load_catalog()
    spec = read_gguf(gemma_gguf_path)
    host = host_device(cat, None, 16)
    curve = _curve(spec, host, {}, (2, 4))
    with pytest.raises(PlannerError, match="include 1"):
        calibrate_from_slot_curve(
            spec, curve, gpus=[], host=host, gpu_layers=0, flash_attn=False, model="g", path=tmp_path / "c.json"
        )
    assert not (tmp_path / "c.json").exists()


def test_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match="no such GGUF"):
        run_batched_bench(tmp_path / "absent.gguf")
    with pytest.raises(PlannerError, match="1 … 512"):
        run_batched_bench(tmp_path / "absent.gguf", slots=[0])


@pytest.mark.slow
@pytest.mark.engines
def test_real_batched_bench_curve_calibrates(gemma_gguf_path: Path, tmp_path: Path) -> None:
    """The real llama-batched-bench (Gemma 3 270M Q4_K_M, 2 threads) gives one point per sequence count, and
    the calibration fitted on it predicts every point. How close is measured by bench/batched_accuracy.py on
    an idle machine (issue 13's 20 %), not asserted here: a timed test flakes on a busy host."""
    require_tools("llama-batched-bench")
    res = run_batched_bench(gemma_gguf_path, slots=CALIBRATION_SLOTS, threads=2, timeout_s=600, repetitions=1)
    assert [p.slots for p in res.points] == list(CALIBRATION_SLOTS)
    assert all(p.aggregate_decode_tok_s > 0 for p in res.points)
    cat = load_catalog()
    fit = calibrate_from_slot_curve(
        read_gguf(gemma_gguf_path),
        res.points,
        gpus=[],
        host=host_device(cat, None, 16),
        gpu_layers=0,
        flash_attn=False,
        model="gemma-3-270m",
        path=tmp_path / "calibration.json",
    )
    assert [p.slots for p in fit.points] == list(CALIBRATION_SLOTS)
    assert all(p.predicted_aggregate_tok_s > 0 for p in fit.points)
    assert (tmp_path / "calibration.json").is_file()  # the curve is kept in the profile


def test_cli_batched_rejects_bad_input(gemma_gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from planner.cli import app

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    runner = CliRunner()
    # the CLI's main() turns a PlannerError into one line and exit 2 (tests/test_cli_help.py)
    r = runner.invoke(app, ["bench", "--model", str(gemma_gguf_path), "--batched", "1,x"])
    assert isinstance(r.exception, PlannerError) and "--batched takes integers" in str(r.exception)
    r = runner.invoke(app, ["bench", "--model", str(gemma_gguf_path), "--batched", "0,4"])
    assert isinstance(r.exception, PlannerError) and "1 … 512" in str(r.exception)
    assert not (tmp_path / "agiplan").exists()  # nothing written
