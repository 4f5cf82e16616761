"""MoE prompt processing on this machine: the real llama-bench (the [engines] extra) against agiplan's prefill model,
with and without the experts' read per micro-batch (planner/estimate/speed.py, the MoE note at PREFILL_PROMPT_TOKENS).

Two synthetic GGUFs with random weights (random, so that the router spreads tokens over the experts as a trained
model does; a sparse file's zero weights would send every token to the same experts), 4-layer cuts at Q4_K_M:
Qwen3-30B-A3B (128 experts, 8 active) and the dense Qwen2.5-7B. The dense cut calibrates this host (its tg32 sets
the decode ratio, its pp512 at -ub 512 the prefill ratio); the MoE cut's pp512 at -ub 16, 64 and 512 are then
predictions. Run by hand on an otherwise idle machine (speed is not asserted in tests); about 2 minutes on 2 cores
and 3 GB of disk in a temporary folder.

    python bench/moe_prompt_cpu.py [--threads 2] [--repetitions 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from unittest import mock

from planner.catalog import load_catalog
from planner.estimate import speed
from planner.estimate.devices import host_device
from planner.estimate.estimate import estimate
from planner.estimate.types import Device, DeviceCalibration, RunConfig, Speed
from planner.measure.llama_tools import LlamaTools, find_tools
from planner.measure.synthetic import write_synthetic_gguf
from planner.model.arch import ModelSpec
from planner.sources.resolve import resolve_model

QUANT = "Q4_K_M"
LAYERS = 4
PROMPT = 512
UBATCHES = (16, 64, 512)


def cut(ref: str) -> ModelSpec:
    spec = resolve_model(ref)
    return replace(spec, arch=replace(spec.arch, n_layers=LAYERS, swa_layers=None, params_total=None))


def llama_bench(tools: LlamaTools, path: Path, args: list[str], threads: int, repetitions: int) -> float:
    """tok/s of one llama-bench test (its average over `repetitions`)."""
    cmd = [str(tools.path("llama-bench")), "-m", str(path), "-t", str(threads), "-r", str(repetitions)]
    out = subprocess.run(
        [*cmd, *args, "-o", "jsonl"], env=tools.env(), capture_output=True, text=True, timeout=900, check=True
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1, out.stdout
    return float(rows[0]["avg_ts"])


def predict(spec: ModelSpec, host: Device, ubatch: int, calibration: dict[str, DeviceCalibration]) -> Speed:
    cfg = RunConfig(ctx=1024, gpu_layers=0, prompt_tokens=PROMPT, n_ubatch=ubatch, n_batch=ubatch)
    return estimate(spec, cfg, [], host, quant=QUANT, suggest=False, calibration=calibration).speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=2)
    args = ap.parse_args()
    tools = find_tools()
    host = host_device(load_catalog(), None, 16)
    dense, moe = cut("qwen2.5-7b"), cut("qwen3-30b-a3b")
    with tempfile.TemporaryDirectory(prefix="agiplan-moe-") as tmp:
        files = {}
        for name, spec in (("dense", dense), ("moe", moe)):
            files[name] = write_synthetic_gguf(spec.arch, QUANT, Path(tmp) / f"{name}.gguf", sparse=False)
        measured: dict[tuple[str, str], float] = {}
        for name, path in files.items():
            measured[(name, "tg32")] = llama_bench(tools, path, ["-p", "0", "-n", "32"], args.threads, args.repetitions)
            for ub in UBATCHES:
                pp = ["-p", str(PROMPT), "-n", "0", "-b", str(ub), "-ub", str(ub)]
                measured[(name, f"ub{ub}")] = llama_bench(tools, path, pp, args.threads, args.repetitions)
    base = predict(dense, host, 512, {})
    calibration = {
        host.id: DeviceCalibration(
            decode_ratio=measured[("dense", "tg32")] / base.decode_tok_s,
            prefill_ratio=measured[("dense", "ub512")] / base.prefill_tok_s,
        )
    }
    print(
        f"calibrated on the dense cut: decode ratio {calibration[host.id].decode_ratio:.3f}, "
        f"prefill ratio {calibration[host.id].prefill_ratio:.3f} ({args.threads} threads)"
    )
    print(f"{'model':6} {'test':>6} {'measured':>9} {'agiplan':>9} {'error':>7} {'no expert read':>15} {'error':>7}")
    for name, spec in (("dense", dense), ("moe", moe)):
        for ub in UBATCHES:
            got = measured[(name, f"ub{ub}")]
            with_read = predict(spec, host, ub, calibration).prefill_tok_s
            with mock.patch.object(speed, "_expert_read_s_per_prompt_token", return_value=0.0):
                without = predict(spec, host, ub, calibration).prefill_tok_s
            print(
                f"{name:6} {'ub' + str(ub):>6} {got:9.1f} {with_read:9.1f} {(with_read / got - 1) * 100:+6.1f}% "
                f"{without:15.1f} {(without / got - 1) * 100:+6.1f}%"
            )
        tg, got_tg = predict(spec, host, 512, calibration).decode_tok_s, measured[(name, "tg32")]
        print(f"{name:6} {'tg32':>6} {got_tg:9.1f} {tg:9.1f} {(tg / got_tg - 1) * 100:+6.1f}%")


if __name__ == "__main__":
    main()
