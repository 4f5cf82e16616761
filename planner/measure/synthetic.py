"""Synthetic GGUFs: a model's exact architecture and quantization with random weights, so a plan can be
benched before the real weights are downloaded (memory and speed do not depend on the values).

Tensors, shapes and per-tensor types come from the same code the estimator uses
(`planner.model.quant_scheme.weights_for` over `planner.model.layout.tensor_shapes`), so the file has
the tensor types llama-quantize would give that model. Metadata are the keys llama.cpp's loader reads
for the architecture (src/models/<arch>.cpp `load_arch_hparams`; `src/llama-model.cpp`), and a minimal
SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then filler
pieces) of the model's vocabulary size, so llama.cpp loads it like a real file.

Quantized blocks are random bytes whose f16 scale fields (ggml-common.h `block_q4_K` etc.: `d`, `dmin`)
are set to small finite values, so every weight is finite; float tensors are N(0, 0.02). A random
pool of blocks is tiled over each tensor (writing a 40 GB file costs disk time, not random numbers).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.model.arch import ModelArch, ModelWeights

# Byte offsets of the f16 scale fields in one block of each ggml type (ggml/src/ggml-common.h).
_F16_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,),  # {d, qs[16]}
    "Q4_1": (0, 2),  # {d, m, qs[16]}
    "Q5_0": (0,),  # {d, qh[4], qs[16]}
    "Q5_1": (0, 2),  # {d, m, qh[4], qs[16]}
    "Q8_0": (0,),  # {d, qs[32]}
    "Q8_1": (0, 2),  # {d, s, qs[32]}
    "Q2_K": (80, 82),  # {scales[16], qs[64], d, dmin}
    "Q3_K": (108,),  # {hmask[32], qs[64], scales[12], d}
    "Q4_K": (0, 2),  # {d, dmin, scales[12], qs[128]}
    "Q5_K": (0, 2),  # {d, dmin, scales[12], qh[32], qs[128]}
    "Q6_K": (208,),  # {ql[128], qh[64], scales[16], d}
    "IQ4_NL": (0,),  # {d, qs[16]}
    "IQ4_XS": (0,),  # {d, scales_h, scales_l[4], qs[128]}
    "IQ2_XXS": (0,),
    "IQ2_XS": (0,),
    "IQ2_S": (0,),
    "IQ3_XXS": (0,),
    "IQ3_S": (0,),
    "IQ1_S": (0,),
}
_POOL_BLOCKS = 4096
_POOL_VALUES = 1 << 20
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
ProgressFn = Callable[[int, int], None]  # (bytes written, total bytes)


def supports(arch: ModelArch, *, encoders: bool = False) -> bool:
    """Decoders with a known layout (what `bench --synthetic` can run); with `encoders`, BERT-style embedding
    models too (llama.cpp loads them and sizes their buffers; they do not decode)."""
    from planner.model.layout import is_known_layout, layout_family

    if layout_family(arch) == "bert" or arch.is_embedding:
        return encoders and layout_family(arch) == "bert"
    return is_known_layout(arch)


def vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) of a minimal SentencePiece vocabulary of exactly `n_vocab` entries."""
    from gguf import TokenType

    if n_vocab < len(SPECIAL_TOKENS) + 1:
        raise PlannerError(f"a vocabulary needs at least {len(SPECIAL_TOKENS) + 1} tokens, got {n_vocab}.")
    tokens = list(SPECIAL_TOKENS)
    types = [int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.CONTROL)]
    if n_vocab >= len(tokens) + 256:
        tokens += [f"<0x{b:02X}>" for b in range(256)]
        types += [int(TokenType.BYTE)] * 256
    filler = n_vocab - len(tokens)
    tokens += [f"▁t{i}" for i in range(filler)]
    types += [int(TokenType.NORMAL)] * filler
    scores = [0.0] * len(SPECIAL_TOKENS) + [-float(i) for i in range(n_vocab - len(SPECIAL_TOKENS))]
    return tokens, scores, types


def _file_type_id(quant: str) -> int | None:
    from gguf import LlamaFileType

    key = "MOSTLY_" + quant.upper()
    if quant.upper() in ("F32", "ALL_F32"):
        return int(LlamaFileType.ALL_F32)
    return int(LlamaFileType[key]) if key in LlamaFileType.__members__ else None


def _add_bert_metadata(w: Any, arch: ModelArch) -> None:
    """The keys llama.cpp reads for `bert` (src/llama-model.cpp: layer_norm_epsilon, causal, pooling type) and a
    WordPiece vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK], then word pieces) of the model's size."""
    from gguf import PoolingType, TokenType

    w.add_layer_norm_eps(1e-5)
    w.add_causal_attention(False)
    w.add_pooling_type(PoolingType.CLS)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if arch.vocab_size <= len(specials):
        raise PlannerError(f"a vocabulary needs more than {len(specials)} tokens, got {arch.vocab_size}.")
    w.add_tokenizer_model("bert")
    w.add_token_list(specials + [f"▁t{i}" for i in range(arch.vocab_size - len(specials))])
    n_pieces = arch.vocab_size - len(specials)
    w.add_token_types([int(TokenType.CONTROL)] * len(specials) + [int(TokenType.NORMAL)] * n_pieces)
    w.add_token_type_count(2)
    w.add_pad_token_id(0)
    w.add_unk_token_id(1)
    w.add_bos_token_id(2)
    w.add_eos_token_id(3)
    w.add_sep_token_id(3)
    w.add_mask_token_id(4)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)


def _add_metadata(w: Any, arch: ModelArch, weights: ModelWeights, name: str) -> None:
    from planner.model.layout import layout_family

    w.add_name(name)
    w.add_string("general.type", "model")
    w.add_context_length(arch.context_trained)
    w.add_embedding_length(arch.hidden_size)
    w.add_block_count(arch.n_layers)
    w.add_feed_forward_length(arch.ffn_size)
    w.add_head_count(arch.n_heads)
    ft = _file_type_id(weights.file_type or "")
    if ft is not None:
        w.add_file_type(ft)
    w.add_quantization_version(2)
    if layout_family(arch) == "bert":
        _add_bert_metadata(w, arch)
    else:
        _add_decoder_metadata(w, arch)


def _add_decoder_metadata(w: Any, arch: ModelArch) -> None:
    """Attention, RoPE, window and expert keys, and a SentencePiece-style vocabulary (`vocabulary`)."""
    if arch.kv_heads_per_layer is not None:
        w.add_head_count_kv(list(arch.kv_heads_per_layer))
    else:
        w.add_head_count_kv(arch.n_kv_heads)
    w.add_key_length(arch.head_dim_k)
    w.add_value_length(arch.head_dim_v)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    if arch.sliding_window:
        w.add_sliding_window(arch.sliding_window)
        if arch.swa_layers is not None:
            w.add_sliding_window_pattern(list(arch.swa_layers))
    if arch.experts is not None:
        e = arch.experts
        w.add_expert_count(e.count)
        w.add_expert_used_count(e.active)
        w.add_expert_feed_forward_length(e.ffn_size)
        if e.shared:
            w.add_expert_shared_count(e.shared)
            w.add_expert_shared_feed_forward_length(e.shared_ffn_size or e.ffn_size)
        if arch.n_dense_leading:
            w.add_leading_dense_block_count(arch.n_dense_leading)
    tokens, scores, types = vocabulary(arch.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def _pool(ggml_type: str, rng: Any) -> Any:
    """Random valid bytes of up to _POOL_BLOCKS blocks (quantized) or _POOL_VALUES values (float types)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    qt = GGMLQuantizationType[ggml_type]
    if ggml_type == "F32":
        return (rng.standard_normal(_POOL_VALUES, dtype=np.float32) * 0.02).view(np.uint8)
    if ggml_type == "F16":
        return (rng.standard_normal(_POOL_VALUES, dtype=np.float32) * 0.02).astype(np.float16).view(np.uint8)
    if ggml_type == "BF16":
        f = rng.standard_normal(_POOL_VALUES, dtype=np.float32) * 0.02
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    _block, type_size = GGML_QUANT_SIZES[qt]
    offsets = _F16_FIELDS.get(ggml_type)
    if offsets is None:  # a layout we do not know field by field: all-zero blocks are valid (weights 0)
        return np.zeros(_POOL_BLOCKS * type_size, dtype=np.uint8)
    blocks = rng.integers(0, 256, size=(_POOL_BLOCKS, type_size), dtype=np.uint8)
    for off in offsets:
        scale = rng.uniform(6.2e-5, 2e-4, size=_POOL_BLOCKS).astype(np.float16)  # normal f16; |w| well under 1
        blocks[:, off : off + 2] = scale.view(np.uint8).reshape(_POOL_BLOCKS, 2)
    return blocks.reshape(-1)


def write_synthetic_gguf(
    arch: ModelArch,
    quant: str,
    path: Path,
    *,
    name: str | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    encoders: bool = False,
) -> Path:
    """Write `arch` at `quant` with random weights to `path` (atomically: temp file, then rename). With
    `encoders`, BERT-style embedding models too (for memory measurements: they load, but do not decode)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    from planner.model.quant_scheme import weights_for

    if not supports(arch, encoders=encoders):
        raise PlannerError(
            f"synthetic GGUFs are written for decoder models with a known layout; '{arch.name}' "
            f"({arch.architecture}) is not one. Bench the real file with --model PATH."
        )
    weights = weights_for(arch, quant)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = weights.total_bytes
    free = _free_bytes(path.parent)
    if free is not None and free < total + 64 * 2**20:
        raise PlannerError(
            f"{path.parent} has {free / 2**30:.1f} GiB free; the synthetic {arch.name} {quant} needs "
            f"{total / 2**30:.1f} GiB. Free space or set AGIPLAN_CACHE_DIR to a larger disk."
        )
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    w = GGUFWriter(str(tmp), arch.architecture)
    try:
        _add_metadata(w, arch, weights, name or f"{arch.name} (synthetic {quant})")
        pools: dict[str, Any] = {}
        for t in weights.tensors:
            qt = GGMLQuantizationType[t.ggml_type]
            np_shape = tuple(reversed(t.shape))
            if t.ggml_type == "F32":
                w.add_tensor_info(t.name, np_shape, np.dtype(np.float32), t.n_bytes)
            elif t.ggml_type == "F16":
                w.add_tensor_info(t.name, np_shape, np.dtype(np.float16), t.n_bytes)
            else:
                from gguf import GGML_QUANT_SIZES

                block, type_size = GGML_QUANT_SIZES[qt]
                byte_shape = (*np_shape[:-1], np_shape[-1] // block * type_size)
                w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.n_bytes, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        done = 0
        for t in weights.tensors:
            pool = pools.get(t.ggml_type)
            if pool is None:
                pool = pools[t.ggml_type] = _pool(t.ggml_type, rng)
            data = np.resize(pool, t.n_bytes)
            if t.ggml_type == "F32":
                data = data.view(np.float32)
            elif t.ggml_type == "F16":
                data = data.view(np.float16)
            w.write_tensor_data(data)
            done += t.n_bytes
            if progress is not None:
                progress(done, total)
        w.close()
        os.replace(tmp, path)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


def _free_bytes(folder: Path) -> int | None:
    import shutil

    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def cache_dir() -> Path:
    """Where synthetic GGUFs are kept: $AGIPLAN_CACHE_DIR/synthetic, else $XDG_CACHE_HOME/agiplan/synthetic."""
    from planner.io import agiplan_cache_dir

    return agiplan_cache_dir("synthetic")


def synthetic_for_catalog(
    model_id: str,
    quant: str,
    *,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """The synthetic GGUF of catalog model `model_id` at `quant`, written once into the cache (reused after)."""
    from planner.catalog import load_catalog

    cat = load_catalog()
    arch = cat.arch(model_id)
    from planner.io import safe_file_name

    path = (out_dir or cache_dir()) / f"{safe_file_name(f'{model_id}-{quant.upper()}')}.synthetic.gguf"
    if path.exists():
        return path
    return write_synthetic_gguf(arch, quant, path, name=f"{arch.name} (synthetic {quant.upper()})", progress=progress)
