"""Decode / prefill speed of agiplan's estimator against published llama-bench results.

Run by hand: `python bench/speed_accuracy.py`. Every row is a published measurement from
shared/data/calibration_speed.md (source in the row); the model shapes are the models' published
configs. Prints predicted vs published tok/s and the error, and a summary per device class.
The efficiency factors in planner/estimate/speed.py were fitted to these rows, so this shows the
fit's residuals, not an independent validation — except the rows marked `held_out`.

Then the split-half evaluation of issue #13 (`split_half`): the published runs in CASES, by metric
(one-stream decode, prefill, aggregate decode at >= 4 sequences) and group (consumer GPU, datacenter GPU,
multi-GPU, llama.cpp -sm tensor, vLLM TP, CPU, AMD), alternate between a fit half and a test half; the
factors added for batched decode, layer split, prompt length, datacenter parts and vLLM were set on the fit
half, and the table reports the
test half (median |error|), with and without the one-number correction the fit half would still suggest.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from planner.catalog import load_catalog
from planner.estimate.devices import gpu_devices, host_device, unified_host
from planner.estimate.estimate import estimate
from planner.estimate.types import Device, RunConfig
from planner.model.arch import ExpertSpec, ModelArch, ModelSpec, Source
from planner.sources.resolve import resolve_model
from planner.units import GIB


def _llama(name: str, layers: int, hidden: int, heads: int, ffn: int, vocab: int, ctx: int) -> ModelArch:
    return ModelArch(
        name=name,
        architecture="llama",
        n_layers=layers,
        hidden_size=hidden,
        n_heads=heads,
        n_kv_heads=heads,
        head_dim_k=hidden // heads,
        head_dim_v=hidden // heads,
        ffn_size=ffn,
        vocab_size=vocab,
        context_trained=ctx,
        source=Source("formula", f"{name} config.json"),
    )


# LLaMA 1 7B / 13B (huggyllama configs), CodeLlama 7B (codellama/CodeLlama-7b-hf config.json)
LLAMA_7B = _llama("LLaMA 7B", 32, 4096, 32, 11008, 32000, 2048)
LLAMA_13B = _llama("LLaMA 13B", 40, 5120, 40, 13824, 32000, 2048)
CODELLAMA_7B = _llama("CodeLlama 7B", 32, 4096, 32, 11008, 32016, 16384)
LLAMA2_70B = replace(
    _llama("Llama 2 70B", 80, 8192, 64, 28672, 32000, 4096), n_kv_heads=8
)  # PR #8035 benchmarks "Llama-70B IQ2_M": Llama 2 70B shapes
# Llama 2 7B (meta-llama/Llama-2-7b-hf config.json): LLaMA 7B shapes with a 4096-token context
LLAMA2_7B = replace(_llama("Llama 2 7B", 32, 4096, 32, 11008, 32000, 4096))
# Gemma 2 2B (google/gemma-2-2b config.json): 26 layers, hidden 2304, 8 heads / 4 KV heads of 256, FFN 9216,
# vocab 256000, tied embeddings, sliding window 4096 on every other layer (llama.cpp: il % 2 == 0), 2.61 B params
GEMMA2_2B = ModelArch(
    name="Gemma 2 2B",
    architecture="gemma2",
    n_layers=26,
    hidden_size=2304,
    n_heads=8,
    n_kv_heads=4,
    head_dim_k=256,
    head_dim_v=256,
    ffn_size=9216,
    vocab_size=256000,
    context_trained=8192,
    source=Source("formula", "google/gemma-2-2b config.json"),
    sliding_window=4096,
    swa_layers=tuple(i % 2 == 0 for i in range(26)),
    tied_embeddings=True,
    params_total=2_614_341_888,
)


@dataclass(frozen=True)
class Row:
    label: str
    spec: ModelSpec
    quant: str
    gpus: tuple[str, ...]
    host_cpu: str | None
    gpu_layers: int | None
    decode_tok_s: float | None
    prefill_tok_s: float | None
    source: str
    host_bandwidth_gbs: float | None = None
    held_out: bool = False
    # build 1275 (Sep 2023) ran CPU-resident layers' prompt matmuls on the CPU; current llama.cpp streams them
    # to the GPU, which agiplan models — those published pp figures are not comparable
    pp_comparable: bool = True


def _spec(arch: ModelArch) -> ModelSpec:
    return ModelSpec(ref=arch.name, arch=arch)


BENCH = "llama.cpp examples/llama-bench/README.md (build 1275, i9-13900K + RTX 3090 Ti)"
ROWS = [
    Row(
        "3090 Ti · LLaMA 7B Q4_0",
        _spec(LLAMA_7B),
        "Q4_0",
        ("rtx-3090-ti",),
        "core-i9-13900k",
        None,
        131.42,
        2368.8,
        BENCH,
        pp_comparable=False,  # same card, pp 4035 four months later (PR #4812): a software change
    ),
    Row(
        "3090 Ti · LLaMA 13B Q4_0",
        _spec(LLAMA_13B),
        "Q4_0",
        ("rtx-3090-ti",),
        "core-i9-13900k",
        None,
        82.17,
        None,
        BENCH,
    ),
    Row(
        "3090 Ti · 7B Q4_0 (Jan 2024)",
        _spec(LLAMA_7B),
        "Q4_0",
        ("rtx-3090-ti",),
        "core-i9-13900k",
        None,
        127.43,
        4035.47,
        "llama.cpp PR #4812",
    ),
    Row(
        "4090 · CodeLlama 7B F16",
        _spec(CODELLAMA_7B),
        "F16",
        ("rtx-4090",),
        None,
        None,
        61.03,
        11048,
        "llama.cpp PR #4766",
    ),
    Row(
        "4090 · CodeLlama 7B Q8_0",
        _spec(CODELLAMA_7B),
        "Q8_0",
        ("rtx-4090",),
        None,
        None,
        98.13,
        7664,
        "llama.cpp PR #4766",
    ),
    Row("3090 · LLaMA 7B Q4_0", _spec(LLAMA_7B), "Q4_0", ("rtx-3090",), None, None, 121.82, 3408, "llama.cpp PR #4766"),
    Row("3090 · LLaMA 7B F16", _spec(LLAMA_7B), "F16", ("rtx-3090",), None, None, 48.52, 4185, "llama.cpp PR #4766"),
    Row(
        "7900 XTX · Qwen2.5-Coder-7B Q4_K_M",
        resolve_model("qwen2.5-7b"),
        "Q4_K_M",
        ("rx-7900-xtx",),
        None,
        None,
        112.0,
        3900.0,
        "llama.cpp issue #20934 (ROCm, -fa 1; tg128 110–114, pp ≈ 3800–4000)",
    ),
    # CPU only, Ryzen 9 7950X, Llama-3-8B (ik_llama.cpp README, "t/s (llama.cpp)" column); memory configuration
    # not stated — agiplan assumes the officially supported DDR5-5200 dual channel (83.2 GB/s).
    *(
        Row(
            f"7950X CPU · Llama-3-8B {q}",
            resolve_model("llama-3-8b"),
            q,
            (),
            "ryzen-9-7950x",
            0,
            tg,
            pp,
            "ik_llama.cpp README (mainline build 3441)",
        )
        for q, tg, pp in (
            ("F16", 4.20, 112.4),
            ("Q8_0", 7.40, 118.1),
            ("Q4_K_S", 13.24, 98.9),
            ("Q4_0", 10.97, 104.5),
            ("Q2_K_S", 18.70, 110.1),
        )
    ),
    # CPU only, i9-13900K, 8 threads (the best thread count in the table)
    Row(
        "13900K CPU · LLaMA 7B Q4_0 (8 t)",
        _spec(LLAMA_7B),
        "Q4_0",
        (),
        "core-i9-13900k",
        0,
        16.71,
        None,
        BENCH,
        held_out=True,
    ),
    # partial offload: 3090 Ti + 13900K, -ngl 10 / 20 / 30 (build 1275)
    *(
        Row(
            f"3090 Ti + 13900K · 7B Q4_0 -ngl {n}",
            _spec(LLAMA_7B),
            "Q4_0",
            ("rtx-3090-ti",),
            "core-i9-13900k",
            n,
            tg,
            pp,
            BENCH,
            pp_comparable=False,
        )
        for n, tg, pp in ((10, 13.45, 373.0), (20, 21.36, 473.0), (30, 40.04, 632.0))
    ),
    # 4090 + EPYC 7742 (8-channel DDR4-3200), Llama-70B IQ2_M, -ngl 72 of 81, fa 1
    Row(
        "4090 + EPYC 7742 · 70B IQ2_M -ngl 72",
        _spec(LLAMA2_70B),
        "IQ2_M",
        ("rtx-4090",),
        "epyc-7742",
        72,
        17.34,
        572.8,
        "llama.cpp PR #8035",
        held_out=True,
    ),
    # ---- rows added after the fit (all held out) ----
    # RTX 4080, mainline llama.cpp of 2025-06-01, Qwen2.5-7B-Instruct in bf16/f16, no speculation: "45 t/s"
    # (ikawrakow, who owns this card, in ik_llama.cpp issue #322; a chat-style generation, not llama-bench)
    Row(
        "4080 · Qwen2.5-7B F16",
        resolve_model("qwen2.5-7b"),
        "F16",
        ("rtx-4080",),
        None,
        None,
        45.0,
        None,
        "https://github.com/ikawrakow/ik_llama.cpp/issues/322 (comment 2025-06-01, mainline)",
        held_out=True,
    ),
    # RTX 4080 / Ryzen 9 7950X, Gemma-2-2b Q4_K_S, mainline llama.cpp build 3631 (Aug 2024), llama-bench "t/s
    # (llama.cpp)" column. GPU: -ngl 100 -fa 1 tg128 251.86, pp512 19127.14 (without FA: 239.20 / 18413.90).
    # CPU only (same PR, no FA): tg128 32.68 at 4 threads, pp512 278.34 at 16 threads.
    Row(
        "4080 · Gemma-2-2B Q4_K_S (fa 1)",
        ModelSpec(ref="gemma-2-2b", arch=GEMMA2_2B),
        "Q4_K_S",
        ("rtx-4080",),
        None,
        None,
        251.86,
        19127.14,
        "https://github.com/ikawrakow/ik_llama.cpp/pull/27 (llama.cpp build 3631)",
        held_out=True,
    ),
    Row(
        "7950X CPU · Gemma-2-2B Q4_K_S",
        ModelSpec(ref="gemma-2-2b", arch=GEMMA2_2B),
        "Q4_K_S",
        (),
        "ryzen-9-7950x",
        0,
        32.68,
        278.34,
        "https://github.com/ikawrakow/ik_llama.cpp/pull/27 (llama.cpp build 3631)",
        held_out=True,
    ),
    # RX 7900 XTX, ROCm, current llama.cpp master (2026), "llama 8B Q4_K_M" (Llama 3.x 8B shapes), ubatch 512:
    # tg64 105.75, pp2048 3189.36 (the master column of the PR's table)
    Row(
        "7900 XTX · Llama-3.1-8B Q4_K_M (2026)",
        resolve_model("llama-3.1-8b"),
        "Q4_K_M",
        ("rx-7900-xtx",),
        None,
        None,
        105.75,
        3189.36,
        "https://github.com/ggml-org/llama.cpp/pull/26284 (ROCm, tg64 / pp2048, ub 512)",
        held_out=True,
    ),
    # lhl's llm-tracker "AMD GPUs" page: Llama-2-7B Q4_0 (3.56 GiB), llama.cpp 6db2b41a (1988), Jan 2024, ROCm 6.0,
    # -p 3968 (pp3968: long prompt, no flash attention, so not comparable with agiplan's short-prompt prefill).
    # Same page, same build: RTX 4090 158.4 / 5415 (5950X host). 7900 XT + 7900 XTX together: default layer split.
    *(
        Row(
            label,
            _spec(LLAMA2_7B),
            "Q4_0",
            gpus,
            None,
            None,
            tg,
            pp,
            "https://llm-tracker.info/howto/AMD-GPUs (AUGMXNT/llm-tracker.info-vault howto/AMD GPUs.md; "
            "llama.cpp build 1988, Jan 2024)",
            held_out=True,
            pp_comparable=False,
        )
        for label, gpus, tg, pp in (
            ("7900 XTX · Llama-2-7B Q4_0 (Jan 2024)", ("rx-7900-xtx",), 119.09, 2575.87),
            ("4090 · Llama-2-7B Q4_0 (Jan 2024)", ("rtx-4090",), 158.4, 5415.0),
            ("7900 XT + 7900 XTX · Llama-2-7B Q4_0", ("rx-7900-xt", "rx-7900-xtx"), 107.15, 2408.34),
        )
    ),
]


def predict(row: Row) -> tuple[float, float, float]:
    cat = load_catalog()
    gpus: list[Device] = gpu_devices(cat, list(row.gpus))
    host = host_device(
        cat, row.host_cpu, 128 if row.host_cpu is None or row.host_cpu.startswith(("epyc", "thread")) else 64
    )
    cfg = RunConfig(ctx=512, gpu_layers=row.gpu_layers, flash_attn=True)
    est = estimate(row.spec, cfg, gpus, host, quant=row.quant, suggest=False)
    return est.speed.decode_tok_s, est.speed.prefill_tok_s, est.weights.total_bytes / GIB


def _group(row: Row) -> str:
    """Device class of a row for the summary: the GPU ids joined, '+ CPU' for partial offload, or the CPU id."""
    if not row.gpus:
        return f"{row.host_cpu} (CPU only)"
    gpus = " + ".join(row.gpus)
    return f"{gpus} + CPU" if row.gpu_layers is not None and row.gpu_layers > 0 else gpus


# ------------------------------------------------------------------ split-half evaluation (issue #13)
# Every published run below is a Case; the rows of each (metric, group) alternate between the fit half
# (even positions) and the test half (odd positions). The fit half sets one correction per (metric, group):
# the median of published / predicted. The test half is reported with speed.py as it is and with that
# correction; speed.py's factors were set from the fit half only. Sources: shared/data/concurrency_speed.csv
# (row numbers in `source`), shared/data/calibration_speed.md, issue #13.

CSV = "shared/data/concurrency_speed.csv"


@dataclass(frozen=True)
class Case:
    label: str
    model: str | ModelSpec
    quant: str | None
    gpus: tuple[str, ...]
    metric: str  # decode (one stream), prefill, batched (aggregate decode at `slots` >= 4)
    published_tok_s: float
    source: str
    slots: int = 1
    prompt_tokens: int = 512
    depth_tokens: int = 0
    engine: str = "llama.cpp"
    flash_attn: bool = True
    host_cpu: str | None = None
    gpu_layers: int | None = None
    split_mode: str = "layer"
    vllm_version: str = ""  # vLLM rows: the version that ran (empty: agiplan's default)


def _ub(gpu: str, model: str, quant: str, b: int, value: float, src: str) -> Case:
    """llama-bench pp512 at -ub B: the developers' proxy for B sequences decoding together. One sequence reads
    its short KV once per micro-batch, not once per token: modelled at depth 0."""
    return Case(f"{gpu} · {model} {quant} pp512 -ub {b}", model, quant, (gpu,), "batched", value, src, slots=b)


CASES: list[Case] = [
    # --- single-stream decode
    Case(
        "4090 · Llama 3 8B Q4_0 -ub 1",
        "llama-3-8b",
        "Q4_0",
        ("rtx-4090",),
        "decode",
        193.09,
        f"{CSV} row 232 (PR #20586)",
    ),
    Case(
        "4090 · Llama 3 8B IQ3_XXS -ub 1",
        "llama-3-8b",
        "IQ3_XXS",
        ("rtx-4090",),
        "decode",
        235.58,
        f"{CSV} row 337 (PR #8215)",
    ),
    Case(
        "3090 · Llama 3 8B IQ3_XXS -ub 1",
        "llama-3-8b",
        "IQ3_XXS",
        ("rtx-3090",),
        "decode",
        143.46,
        f"{CSV} row 333 (PR #8215)",
    ),
    Case(
        "3090 · Llama 3 8B BF16 -ub 1",
        "llama-3-8b",
        "BF16",
        ("rtx-3090",),
        "decode",
        58.27,
        f"{CSV} row 192 (PR #14262)",
    ),
    Case("4090 · CodeLlama 7B F16", _spec(CODELLAMA_7B), "F16", ("rtx-4090",), "decode", 61.03, "llama.cpp PR #4766"),
    Case("4090 · CodeLlama 7B Q8_0", _spec(CODELLAMA_7B), "Q8_0", ("rtx-4090",), "decode", 98.13, "llama.cpp PR #4766"),
    Case("3090 · LLaMA 7B Q4_0", _spec(LLAMA_7B), "Q4_0", ("rtx-3090",), "decode", 121.82, "llama.cpp PR #4766"),
    Case("3090 · LLaMA 7B F16", _spec(LLAMA_7B), "F16", ("rtx-3090",), "decode", 48.52, "llama.cpp PR #4766"),
    Case("4080 · Qwen2.5-7B F16", "qwen2.5-7b", "F16", ("rtx-4080",), "decode", 45.0, "ik_llama.cpp issue #322"),
    Case("3090 Ti · LLaMA 7B Q4_0", _spec(LLAMA_7B), "Q4_0", ("rtx-3090-ti",), "decode", 127.43, "llama.cpp PR #4812"),
    Case(
        "A100 PCIe · LLaMA 7B F16 tg128",
        _spec(LLAMA_7B),
        "F16",
        ("a100-80gb",),
        "decode",
        74.77,
        f"{CSV} row 322 (PR #6017)",
        flash_attn=False,
    ),
    Case(
        "A100 · Qwen3-30B-A3B vLLM c1",
        "qwen3-30b-a3b",
        None,
        ("a100-80gb",),
        "decode",
        103.92,
        f"{CSV} row 353 (tt-inference-server GPU reference)",
        engine="vllm",
        depth_tokens=128,
    ),
    Case(
        "A100 · Qwen3-30B-A3B vLLM c1 ISL 4096",
        "qwen3-30b-a3b",
        None,
        ("a100-80gb",),
        "decode",
        96.91,
        f"{CSV} row 358",
        engine="vllm",
        depth_tokens=4096 + 64,
    ),
    Case(
        "A100 · Qwen3-30B-A3B vLLM c1 ISL 2048",
        "qwen3-30b-a3b",
        None,
        ("a100-80gb",),
        "decode",
        100.57,
        f"{CSV} row 356",
        engine="vllm",
        depth_tokens=2048 + 64,
    ),
    Case(
        "7900 XTX · Llama 8B Q4_K_M tg64",
        "llama-3.1-8b",
        "Q4_K_M",
        ("rx-7900-xtx",),
        "decode",
        105.81,
        f"{CSV} row 273",
    ),
    Case(
        "7900 XTX · Llama 8B Q4_K_M tg64 @ d4096",
        "llama-3.1-8b",
        "Q4_K_M",
        ("rx-7900-xtx",),
        "decode",
        98.54,
        f"{CSV} row 274",
        depth_tokens=4096,
    ),
    Case(
        "7900 XTX · Qwen2.5-Coder-7B Q4_K_M",
        "qwen2.5-7b",
        "Q4_K_M",
        ("rx-7900-xtx",),
        "decode",
        112.0,
        "llama.cpp issue #20934",
    ),
    Case(
        "7900 XTX · Llama 8B Q3_K_M -ub 1", "llama-3-8b", "Q3_K_M", ("rx-7900-xtx",), "decode", 124.49, f"{CSV} row 284"
    ),
    *(
        Case(
            f"7950X CPU · Llama-3-8B {q}",
            "llama-3-8b",
            q,
            (),
            "decode",
            tg,
            "ik_llama.cpp README",
            host_cpu="ryzen-9-7950x",
            gpu_layers=0,
        )
        for q, tg in (("F16", 4.20), ("Q8_0", 7.40), ("Q4_K_S", 13.24), ("Q4_0", 10.97), ("Q2_K_S", 18.70))
    ),
    Case(
        "7950X CPU · Gemma-2-2B Q4_K_S",
        ModelSpec(ref="gemma-2-2b", arch=GEMMA2_2B),
        "Q4_K_S",
        (),
        "decode",
        32.68,
        "ik_llama.cpp PR #27",
        host_cpu="ryzen-9-7950x",
        gpu_layers=0,
    ),
    Case(
        "13900K CPU · LLaMA 7B Q4_0 (8 t)",
        _spec(LLAMA_7B),
        "Q4_0",
        (),
        "decode",
        16.71,
        "llama.cpp llama-bench README",
        host_cpu="core-i9-13900k",
        gpu_layers=0,
    ),
    *(
        Case(
            f"{n} × 4090 · Llama-3.1-8B Q4_K_M",
            "llama-3.1-8b",
            "Q4_K_M",
            ("rtx-4090",) * n,
            "decode",
            141.4 / (1 + slower),
            f"issue #13 (measured {slower:.0%} below one card's 141.4 t/s)",
        )
        for n, slower in ((2, 0.13), (4, 0.17), (8, 0.19))
    ),
    Case(
        "7900 XT + 7900 XTX · Llama-2-7B Q4_0",
        _spec(LLAMA2_7B),
        "Q4_0",
        ("rx-7900-xt", "rx-7900-xtx"),
        "decode",
        107.15,
        "llm-tracker.info AMD GPUs",
    ),
    # --- prefill
    *(
        Case(
            f"A100 PCIe · LLaMA 7B F16 pp{p}",
            _spec(LLAMA_7B),
            "F16",
            ("a100-80gb",),
            "prefill",
            v,
            f"{CSV} row {r} (PR #6017)",
            prompt_tokens=p,
            flash_attn=False,
        )
        for r, p, v in (
            (317, 512, 8668.24),
            (318, 1024, 8251.25),
            (319, 2048, 7592.36),
            (320, 4096, 6574.66),
            (321, 8192, 5112.25),
        )
    ),
    Case(
        "A100 PCIe · LLaMA 7B Q8_0 pp512",
        _spec(LLAMA_7B),
        "Q8_0",
        ("a100-80gb",),
        "prefill",
        6914.08,
        f"{CSV} row 323",
        flash_attn=False,
    ),
    Case(
        "4090 · CodeLlama 7B F16 pp512",
        _spec(CODELLAMA_7B),
        "F16",
        ("rtx-4090",),
        "prefill",
        11048,
        "llama.cpp PR #4766",
    ),
    Case(
        "4090 · CodeLlama 7B Q8_0 pp512",
        _spec(CODELLAMA_7B),
        "Q8_0",
        ("rtx-4090",),
        "prefill",
        7664,
        "llama.cpp PR #4766",
    ),
    Case("3090 · LLaMA 7B Q4_0 pp512", _spec(LLAMA_7B), "Q4_0", ("rtx-3090",), "prefill", 3408, "llama.cpp PR #4766"),
    Case("3090 · LLaMA 7B F16 pp512", _spec(LLAMA_7B), "F16", ("rtx-3090",), "prefill", 4185, "llama.cpp PR #4766"),
    Case(
        "4090 · Llama 3 8B Q4_0 pp512 -ub 512",
        "llama-3-8b",
        "Q4_0",
        ("rtx-4090",),
        "prefill",
        10358.75,
        f"{CSV} row 329",
    ),
    Case(
        "5090 · Llama 3 8B Q4_0 pp512 -ub 512",
        "llama-3-8b",
        "Q4_0",
        ("rtx-5090",),
        "prefill",
        16129.48,
        f"{CSV} row 252",
    ),
    Case(
        "3090 Ti · LLaMA 7B Q4_0 pp512",
        _spec(LLAMA_7B),
        "Q4_0",
        ("rtx-3090-ti",),
        "prefill",
        4035.47,
        "llama.cpp PR #4812",
    ),
    Case(
        "4080 · Gemma-2-2B Q4_K_S pp512",
        ModelSpec(ref="gemma-2-2b", arch=GEMMA2_2B),
        "Q4_K_S",
        ("rtx-4080",),
        "prefill",
        19127.14,
        "ik_llama.cpp PR #27",
    ),
    Case(
        "7900 XTX · Llama 8B Q4_K_M pp2048",
        "llama-3.1-8b",
        "Q4_K_M",
        ("rx-7900-xtx",),
        "prefill",
        3226.54,
        f"{CSV} row 271",
        prompt_tokens=2048,
    ),
    Case(
        "7900 XTX · Llama 8B Q4_K_M pp2048 @ d4096",
        "llama-3.1-8b",
        "Q4_K_M",
        ("rx-7900-xtx",),
        "prefill",
        2693.13,
        f"{CSV} row 272",
        prompt_tokens=2048,
        depth_tokens=4096,
    ),
    Case(
        "7900 XTX · Llama-3.1-8B Q4_K_M pp2048 (PR #26284)",
        "llama-3.1-8b",
        "Q4_K_M",
        ("rx-7900-xtx",),
        "prefill",
        3189.36,
        "llama.cpp PR #26284",
        prompt_tokens=2048,
    ),
    Case(
        "7900 XTX · Qwen2.5-Coder-7B Q4_K_M pp512",
        "qwen2.5-7b",
        "Q4_K_M",
        ("rx-7900-xtx",),
        "prefill",
        3900.0,
        "llama.cpp issue #20934",
    ),
    *(
        Case(
            f"7950X CPU · Llama-3-8B {q} pp512",
            "llama-3-8b",
            q,
            (),
            "prefill",
            pp,
            "ik_llama.cpp README",
            host_cpu="ryzen-9-7950x",
            gpu_layers=0,
        )
        for q, pp in (("F16", 112.4), ("Q8_0", 118.1), ("Q4_K_S", 98.9), ("Q4_0", 104.5), ("Q2_K_S", 110.1))
    ),
    Case(
        "7950X CPU · Gemma-2-2B Q4_K_S pp512",
        ModelSpec(ref="gemma-2-2b", arch=GEMMA2_2B),
        "Q4_K_S",
        (),
        "prefill",
        278.34,
        "ik_llama.cpp PR #27",
        host_cpu="ryzen-9-7950x",
        gpu_layers=0,
    ),
    # --- aggregate decode at >= 4 sequences
    *(
        _ub("rtx-4090", "llama-3-8b", "Q4_0", b, v, f"{CSV} PR #15131 / #7676")
        for b, v in ((10, 1216.63), (12, 1460.17), (14, 1684.51), (16, 1930.5), (32, 3427.61))
    ),
    *(
        _ub("rtx-3090", "llama-3-8b", "F16", b, v, f"{CSV} PR #15131")
        for b, v in ((8, 423.63), (10, 492.08), (12, 585.9), (14, 671.95), (16, 764.17))
    ),
    *(
        _ub("rtx-5090", "llama-3-8b", "Q4_0", b, v, f"{CSV} PR #20586")
        for b, v in ((4, 967.76), (8, 1382.43), (16, 2498.42), (32, 4236.84))
    ),
    *(_ub("rtx-4090", "llama-3-8b", "IQ3_XXS", b, v, f"{CSV} PR #8215") for b, v in ((4, 731.84), (8, 1162.57))),
    *(_ub("rtx-3090", "llama-3-8b", "IQ3_XXS", b, v, f"{CSV} PR #8215") for b, v in ((4, 367.51), (8, 527.16))),
    *(_ub("rx-7900-xtx", "llama-3-8b", "Q3_K_M", b, v, f"{CSV} PR #26705") for b, v in ((4, 308.64),)),
    *(
        _ub("rx-7900-xtx", "llama-3-8b", "Q2_K", b, v, f"{CSV} PR #26705")
        for b, v in ((4, 306.84), (7, 362.93), (8, 380.13))
    ),
]


# NVIDIA DGX Spark (GB10, unified LPDDR5X 273 GB/s), Qwen2.5-Coder-7B Q8_0, llama-batched-bench PP=512 TG=32 and
# llama-bench, build 2f68ce7cf (6918), Nov 2025 (ggml-org/llama.cpp benches/dgx-spark.md, CSV rows 4-9, 76-77)
SPARK = f"{CSV} (benches/dgx-spark.md, build 6918)"
CASES += [
    Case("DGX Spark · Qwen2.5 7B Q8_0 tg32", "qwen2.5-7b", "Q8_0", ("dgx-spark",), "decode", 29.3, SPARK),
    Case(
        "DGX Spark · Qwen2.5 7B Q8_0 B=1 @ 528",
        "qwen2.5-7b",
        "Q8_0",
        ("dgx-spark",),
        "decode",
        29.24,
        SPARK,
        depth_tokens=528,
    ),
    *(
        Case(
            f"DGX Spark · Qwen2.5 7B Q8_0 tg32 @ d{d}",
            "qwen2.5-7b",
            "Q8_0",
            ("dgx-spark",),
            "decode",
            v,
            SPARK,
            depth_tokens=d,
        )
        for d, v in ((4096, 28.27), (8192, 27.42), (16384, 25.93), (32768, 22.7))  # CSV rows 79, 81, 83, 85
    ),
    Case(
        "DGX Spark · Qwen2.5 7B Q8_0 pp2048",
        "qwen2.5-7b",
        "Q8_0",
        ("dgx-spark",),
        "prefill",
        2276.28,
        SPARK,
        prompt_tokens=2048,
    ),
    Case(
        "DGX Spark · Qwen2.5 7B Q8_0 pp2048 @ d4096",
        "qwen2.5-7b",
        "Q8_0",
        ("dgx-spark",),
        "prefill",
        2090.96,
        SPARK,
        prompt_tokens=2048,
        depth_tokens=4096,
    ),
    *(
        Case(
            f"DGX Spark · Qwen2.5 7B Q8_0 B={b}",
            "qwen2.5-7b",
            "Q8_0",
            ("dgx-spark",),
            "batched",
            v,
            SPARK,
            slots=b,
            depth_tokens=528,
        )
        for b, v in ((4, 104.33), (8, 195.67), (16, 335.01), (32, 593.27))
    ),
]


# gpt-oss 120B (openai/gpt-oss-120b config.json): 36 layers, hidden 2880, 64 heads / 8 KV heads of 64, 128 experts
# of width 2880 with 4 active, vocab 201088, a 128-token window on every other layer, 116.83 B params. MXFP4 is
# not among agiplan's quants: Q4_0 (4.5 bpw, the same 'q4' kernel family) stands in for MXFP4 (4.25 bpw).
GPT_OSS_120B = ModelArch(
    name="gpt-oss 120B",
    architecture="gpt-oss",
    n_layers=36,
    hidden_size=2880,
    n_heads=64,
    n_kv_heads=8,
    head_dim_k=64,
    head_dim_v=64,
    ffn_size=2880,
    vocab_size=201088,
    context_trained=131072,
    source=Source("formula", "openai/gpt-oss-120b config.json"),
    sliding_window=128,
    swa_layers=tuple(i % 2 == 0 for i in range(36)),
    experts=ExpertSpec(count=128, active=4, ffn_size=2880),
    params_total=116_829_156_672,
)
GPT_OSS_120B_SPEC = ModelSpec(ref="gpt-oss-120b", arch=GPT_OSS_120B)
# gpt-oss 20B (openai/gpt-oss-20b config.json): the 120B's layer shape with 24 layers and 32 experts, 20.91 B params.
GPT_OSS_20B_SPEC = ModelSpec(
    ref="gpt-oss-20b",
    arch=replace(
        GPT_OSS_120B,
        name="gpt-oss 20B",
        n_layers=24,
        swa_layers=tuple(i % 2 == 0 for i in range(24)),
        experts=ExpertSpec(count=32, active=4, ffn_size=2880),
        params_total=20_914_757_184,
        source=Source("formula", "openai/gpt-oss-20b config.json"),
    ),
)
TP_PR = f"{CSV} rows 222-233 (PR #19378, 4 x RTX 4090)"


@dataclass(frozen=True)
class SplitModeRun:
    """One llama-bench test of PR #19378's 4 x RTX 4090 table, gpt-oss 120B under -sm layer and -sm tensor."""

    test: str
    metric: str
    prompt_tokens: int
    depth_tokens: int
    layer_tok_s: float
    tensor_tok_s: float


# in the order fit / test alternate within each metric: decode d0 (fit), d65536 (test); prefill pp512 d0 (fit),
# pp8192 d0 (test), pp512 @ d65536 (fit), pp8192 @ d65536 (test)
SPLIT_MODE_RUNS = (
    SplitModeRun("tg128", "decode", 512, 0, 180.36, 179.79),
    SplitModeRun("tg128 @ d65536", "decode", 512, 65536, 118.65, 147.89),
    SplitModeRun("pp512", "prefill", 512, 0, 3822.24, 5446.21),
    SplitModeRun("pp8192", "prefill", 8192, 0, 4675.65, 5211.46),
    SplitModeRun("pp512 @ d65536", "prefill", 512, 65536, 2308.57, 3538.01),
    SplitModeRun("pp8192 @ d65536", "prefill", 8192, 65536, 3034.32, 3762.05),
)


def _split_mode_case(run: SplitModeRun, split_mode: str) -> Case:
    return Case(
        f"4 × 4090 · gpt-oss 120B -sm {split_mode} {run.test}",
        GPT_OSS_120B_SPEC,
        "Q4_0",
        ("rtx-4090",) * 4,
        run.metric,
        run.tensor_tok_s if split_mode == "tensor" else run.layer_tok_s,
        TP_PR,
        prompt_tokens=run.prompt_tokens,
        depth_tokens=run.depth_tokens,
        split_mode=split_mode,
    )


# The -sm tensor rows, predicted as they are, each from agiplan's whole estimate. (Until the MoE prompt fix they were
# predicted as the published -sm layer figure × agiplan's tensor / layer ratio, to keep agiplan's 3.9 × too fast MoE
# prompt rate out; that ratio now carries the -sm layer pipelining error of the MoE rows, see MOE_PROMPT_CASES.)
CASES += [_split_mode_case(run, "tensor") for run in SPLIT_MODE_RUNS]

# Mixture-of-experts prompt processing (llama.cpp llama-bench prompt rates), reported apart from the split halves: no
# factor was fitted on them; they check the experts' read per micro-batch (speed.py, the MoE note at
# PREFILL_PROMPT_TOKENS). gpt-oss runs MXFP4, stood in for by Q4_0 (see GPT_OSS_120B). DGX Spark: llama-bench pp2048
# at depth 0 and 16384 (rows 88-116).
SPARK_MOE = f"{CSV} rows 88-116 (DGX Spark, llama-bench pp2048)"
MOE_PROMPT_CASES: list[Case] = [
    *(
        Case(
            f"DGX Spark · {label} pp2048" + (f" @ d{depth}" if depth else ""),
            spec,
            quant,
            ("dgx-spark",),
            "prefill",
            value,
            f"{SPARK_MOE} row {row}",
            prompt_tokens=2048,
            depth_tokens=depth,
        )
        for label, spec, quant, rows in (
            ("Qwen3-30B-A3B Q8_0", "qwen3-30b-a3b", "Q8_0", ((0, 3175.6, 108), (16384, 1900.9, 114))),
            ("gpt-oss 120B", GPT_OSS_120B_SPEC, "Q4_0", ((0, 1937.5, 98), (16384, 1411.4, 104))),
            ("gpt-oss 20B", GPT_OSS_20B_SPEC, "Q4_0", ((0, 3782.8, 88), (16384, 2470.3, 94))),
        )
        for depth, value, row in rows
    ),
    Case("RTX 3090 · gpt-oss 20B pp512", GPT_OSS_20B_SPEC, "Q4_0", ("rtx-3090",), "prefill", 4702.8, f"{CSV} row 245"),
    *(_split_mode_case(run, "layer") for run in SPLIT_MODE_RUNS if run.metric == "prefill"),
]


# vLLM 0.5.4 tensor parallel = n_gpus (LambdaLabsML/vllm-benchmark benchmark_v0.md, "Tensor Parallel v.s. Data
# Parallel"): output tok/s of a burst of 320 ShareGPT prompts at max-num-seqs 256, on 1 / 2 / 4 / 8 SXM cards
# (NVLink). Modelled as aggregate decode at 256 sequences, 300 tokens deep (ShareGPT prompts and replies average a
# few hundred tokens: an assumption). 70B at TP 1 is left out: one 80 GB card holds its FP8 weights and about 7k
# tokens of KV, so the burst ran a handful of sequences at a time, not 256.
VLLM_TP = f"{CSV} rows 125-172 (LambdaLabsML/vllm-benchmark, vLLM 0.5.4)"
CASES += [
    Case(
        f"{n} × {gpu} · {model} {quant} vLLM 0.5.4 TP{n} burst",
        model,
        quant,
        (gpu,) * n,
        "batched",
        value,
        f"{VLLM_TP} row {row}",
        slots=256,
        depth_tokens=300,
        engine="vllm",
        vllm_version="0.5.4",
    )
    for gpu, model, quant, runs in (
        (
            "a100-80gb",
            "llama-3.1-8b",
            "FP8",
            ((1, 1517.54, 125), (2, 1854.27, 129), (4, 1899.76, 134), (8, 1972.26, 141)),
        ),
        ("h100", "llama-3.1-8b", "FP8", ((1, 3400.4, 149), (2, 3688.64, 153), (4, 3475.27, 158), (8, 3931.83, 165))),
        (
            "a100-80gb",
            "mistral-7b-v0.3",
            "BF16",
            ((1, 1591.4, 127), (2, 1861.61, 131), (4, 2228.35, 136), (8, 2381.43, 144)),
        ),
        (
            "h100",
            "mistral-7b-v0.3",
            "BF16",
            ((1, 3281.19, 151), (2, 3758.54, 155), (4, 4133.32, 160), (8, 4397.11, 168)),
        ),
        ("a100-80gb", "llama-3.1-70b", "FP8", ((2, 662.64, 130), (4, 956.53, 135), (8, 1162.78, 142))),
        ("h100", "llama-3.1-70b", "FP8", ((2, 1727.69, 154), (4, 2242.99, 159), (8, 2572.8, 166))),
    )
    for n, value, row in runs
]


GROUP_ORDER = ("consumer GPU", "datacenter GPU", "multi-GPU", "-sm tensor", "vLLM TP", "CPU", "AMD", "unified memory")


def case_group(c: Case, cat: object) -> str:
    from planner.catalog import Catalog

    assert isinstance(cat, Catalog)
    if not c.gpus:
        return "CPU"
    if c.split_mode == "tensor":
        return "-sm tensor"
    if (c.engine == "vllm" and len(c.gpus) > 1) or c.vllm_version:
        return "vLLM TP"
    if len(c.gpus) > 1:
        return "multi-GPU"
    g = cat.gpu(c.gpus[0])
    if g.unified_memory:
        return "unified memory"
    if g.vendor == "amd":
        return "AMD"
    return "datacenter GPU" if g.form == "datacenter" else "consumer GPU"


def predict_case(c: Case) -> float:
    """agiplan's figure for a published run: its estimate's decode, prefill or aggregate tok/s."""
    cat = load_catalog()
    spec = resolve_model(c.model) if isinstance(c.model, str) else c.model
    host = host_device(cat, c.host_cpu, 128 if c.host_cpu is None or c.host_cpu.startswith(("epyc", "thread")) else 64)
    cfg = RunConfig(
        engine=c.engine,  # type: ignore[arg-type]
        ctx=max(512, c.prompt_tokens + c.depth_tokens + 128),
        parallel=c.slots,
        flash_attn=c.flash_attn,
        gpu_layers=c.gpu_layers,
        depth_tokens=c.depth_tokens,
        prompt_tokens=c.prompt_tokens,
        split_mode=c.split_mode,  # type: ignore[arg-type]
    )
    if c.vllm_version:
        cfg = replace(cfg, vllm_version=c.vllm_version)
    host = unified_host(cat, list(c.gpus), host)
    est = estimate(spec, cfg, gpu_devices(cat, list(c.gpus)), host, quant=c.quant, suggest=False)
    sp = est.speed
    return {"decode": sp.decode_tok_s, "prefill": sp.prefill_tok_s, "batched": sp.aggregate_tok_s}[c.metric]


def split_half() -> None:
    cat = load_catalog()
    cells: dict[tuple[str, str], list[tuple[Case, float]]] = {}
    for c in CASES:
        cells.setdefault((c.metric, case_group(c, cat)), []).append((c, predict_case(c)))
    print(
        f"\n{'metric':8} {'group':15} {'fit n':>5} {'correction':>10} {'test n':>6} "
        f"{'median |err|':>12} {'corrected':>10}"
    )
    for metric in ("decode", "prefill", "batched"):
        for group in GROUP_ORDER:
            rows = cells.get((metric, group))
            if not rows:
                continue
            fit, test = rows[0::2], rows[1::2]
            corr = statistics.median(c.published_tok_s / p for c, p in fit)
            if not test:
                print(f"{metric:8} {group:15} {len(fit):5} {corr:10.3f} {0:6}  (no test row)")
                continue
            raw = statistics.median(abs(p / c.published_tok_s - 1) * 100 for c, p in test)
            fixed = statistics.median(abs(p * corr / c.published_tok_s - 1) * 100 for c, p in test)
            print(f"{metric:8} {group:15} {len(fit):5} {corr:10.3f} {len(test):6} {raw:11.1f}% {fixed:9.1f}%")
    print("\nrows (F = fit half, T = test half): published, predicted, error")
    for (metric, group), rows in cells.items():
        for i, (c, p) in enumerate(rows):
            half = "F" if i % 2 == 0 else "T"
            print(
                f"  {half} {metric:7} {group:14} {c.label[:58]:58} {c.published_tok_s:9.1f} {p:9.1f} "
                f"{(p / c.published_tok_s - 1) * 100:+6.1f}%"
            )


def moe_prompt() -> None:
    print("\nMoE prompt processing (no factor fitted on these rows): published, predicted, error")
    errors = []
    for c in MOE_PROMPT_CASES:
        p = predict_case(c)
        errors.append(abs(p / c.published_tok_s - 1) * 100)
        print(f"  {c.label[:58]:58} {c.published_tok_s:9.1f} {p:9.1f} {(p / c.published_tok_s - 1) * 100:+6.1f}%")
    print(f"  median |error| {statistics.median(errors):.1f} % over {len(errors)} rows")


def vllm_host_cost() -> None:
    """What the vLLM 0.5.4 burst rows leave per running sequence per step once agiplan's steady step is taken out:
    agiplan's step without host time (the same estimate at a vLLM version that overlaps it, 0.6.4) against the
    published step, 256 / published tok/s at the 256 sequences the rows are modelled at. The residual holds the
    host's work per sequence (what agiplan charges vLLM < 0.6 for) and whatever else the steady 256-sequence step
    leaves out of a burst: its prompts' prefill and its tail, as requests finish. Then the test half predicted with
    one figure per node (GPU kind), the median of its fit-half rows: what a per-host calibration would give."""
    rows = [c for c in CASES if c.vllm_version]
    fit_ids = {id(c) for c in rows[0::2]}
    implied: dict[int, tuple[float, float]] = {}
    print("\nvLLM 0.5.4 bursts: step without host time (ms), published step (ms), implied host ms per sequence")
    for c in rows:
        gpu_step_s = c.slots / predict_case(replace(c, vllm_version="0.6.4"))
        step_s = c.slots / c.published_tok_s
        implied[id(c)] = (gpu_step_s, (step_s - gpu_step_s) / c.slots)
        half = "F" if id(c) in fit_ids else "T"
        print(f"  {half} {c.label[:58]:58} {gpu_step_s * 1e3:7.1f} {step_s * 1e3:7.1f} {implied[id(c)][1] * 1e3:7.3f}")
    per_node = {
        gpu: statistics.median(implied[id(c)][1] for c in rows if id(c) in fit_ids and c.gpus[0] == gpu)
        for gpu in sorted({c.gpus[0] for c in rows})
    }
    errors = []
    for c in rows:
        if id(c) in fit_ids:
            continue
        gpu_step_s, _ = implied[id(c)]
        predicted = c.slots / (gpu_step_s + c.slots * per_node[c.gpus[0]])
        errors.append(abs(predicted / c.published_tok_s - 1) * 100)
    nodes = ", ".join(f"{gpu} {v * 1e3:.3f} ms" for gpu, v in per_node.items())
    print(
        f"  per node (fit-half median): {nodes}; test half with them: median |error| "
        f"{statistics.median(errors):.1f} %, max {max(errors):.1f} % over {len(errors)} rows"
    )


def main() -> None:
    print(
        f"{'row':44} {'size GiB':>8} {'tg pub':>7} {'tg ours':>7} {'err':>7}  {'pp pub':>7} {'pp ours':>7} {'err':>7}"
    )
    tg_err: list[float] = []
    pp_err: list[float] = []
    by_group: dict[str, list[float]] = {}
    for row in ROWS:
        tg, pp, size = predict(row)
        e_tg = (tg / row.decode_tok_s - 1) * 100 if row.decode_tok_s else None
        e_pp = (pp / row.prefill_tok_s - 1) * 100 if row.prefill_tok_s and row.pp_comparable else None
        if e_tg is not None:
            tg_err.append(abs(e_tg))
            by_group.setdefault(_group(row), []).append(e_tg)
            if row.held_out:
                by_group.setdefault("held out (all)", []).append(e_tg)
        if e_pp is not None:
            pp_err.append(abs(e_pp))
        mark = " *" if row.held_out else ""
        print(
            f"{row.label + mark:44} {size:8.2f} {row.decode_tok_s or 0:7.2f} {tg:7.2f} "
            f"{(f'{e_tg:+.1f}%' if e_tg is not None else '-'):>7}  {row.prefill_tok_s or 0:7.0f} {pp:7.0f} "
            f"{(f'{e_pp:+.1f}%' if e_pp is not None else '-'):>7}"
        )
    print(
        f"\ndecode |error|: median {statistics.median(tg_err):.1f} %, max {max(tg_err):.1f} % over {len(tg_err)} rows; "
        f"prefill |error|: median {statistics.median(pp_err):.1f} %, max {max(pp_err):.1f} % over {len(pp_err)} rows"
    )
    print("* = held out (not used to fit the factors)")
    print("\ndecode error by device class (signed, %):")
    for group, errs in sorted(by_group.items()):
        within = sum(abs(e) <= 25 for e in errs)
        print(
            f"  {group:24} n={len(errs):2}  median {statistics.median(errs):+6.1f}  "
            f"range {min(errs):+6.1f} .. {max(errs):+6.1f}  within 25 %: {within}/{len(errs)}"
        )


if __name__ == "__main__":
    main()
    split_half()
    moe_prompt()
    vllm_host_cost()
