"""Synthetic GGUFs: a model's exact architecture and quantization with random weights, so a plan can be
benched before the real weights are downloaded (memory and speed do not depend on the values).

Tensors, shapes and per-tensor types come from the same code the estimator uses
(`planner.model.quant_scheme.weights_for` over `planner.model.layout.tensor_shapes`), so the file has
the tensor types llama-quantize would give that model. Metadata are the keys llama.cpp's loader reads
for the architecture (src/models/<arch>.cpp `load_arch_hparams`; `src/llama-model.cpp`), and a minimal
SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then filler
pieces) of the model's vocabulary size, so llama.cpp loads it like a real file.

The tensor data are written sparse by default: holes up to the file's size, read as zeros (a zero scale
makes every quantized weight 0), so a 40 GB model takes the disk room and the write time of its header
where the filesystem keeps holes (ext4, xfs, btrfs, tmpfs; elsewhere the zeros are written). Dense files
(`sparse=False`) hold random blocks whose f16 scale fields (ggml-common.h `block_q4_K` etc.: `d`, `dmin`)
are set to small finite values, so every weight is finite; float tensors are N(0, 0.02); a random pool of
blocks is tiled over each tensor. llama.cpp allocates the same buffers for both and decodes both at the
same speed (tests/test_synthetic.py measures it).

Before writing, `check_room` refuses what would leave less than 1 GiB free on the disk or take the cache
over its cap ($AGIPLAN_SYNTHETIC_CACHE_GIB, 64 GiB), and temp files of writers that died are removed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
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
    sparse: bool = True,
) -> Path:
    """Write `arch` at `quant` to `path` (atomically: temp file, then rename). Sparse (the default): the tensor
    data are holes (every weight 0; the file takes the room of its header where the filesystem keeps holes);
    dense: random weights (`_pool`). With `encoders`, BERT-style embedding models too (for memory
    measurements: they load, but do not decode)."""
    weights = _planned_weights(arch, quant, encoders)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    check_room(path.parent, [_disk_bytes(arch, weights, sparse=sparse and holes_supported(path.parent))])
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        _write(arch, weights, tmp, name or f"{arch.name} (synthetic {quant})", seed, progress, sparse)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _planned_weights(arch: ModelArch, quant: str, encoders: bool) -> ModelWeights:
    from planner.model.quant_scheme import weights_for

    if not supports(arch, encoders=encoders):
        raise PlannerError(
            f"synthetic GGUFs are written for decoder models with a known layout; '{arch.name}' "
            f"({arch.architecture}) is not one. Bench the real file with --model PATH."
        )
    return weights_for(arch, quant)


def _write(
    arch: ModelArch, weights: ModelWeights, tmp: Path, name: str, seed: int, progress: ProgressFn | None, sparse: bool
) -> None:
    """Header, metadata and tensor infos through GGUFWriter; then the data: holes up to the final size
    (`sparse`) or the random pool tiled over each tensor."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

    w = GGUFWriter(str(tmp), arch.architecture)
    try:
        _add_metadata(w, arch, weights, name)
        for t in weights.tensors:
            qt = GGMLQuantizationType[t.ggml_type]
            np_shape = tuple(reversed(t.shape))
            if t.ggml_type == "F32":
                w.add_tensor_info(t.name, np_shape, np.dtype(np.float32), t.n_bytes)
            elif t.ggml_type == "F16":
                w.add_tensor_info(t.name, np_shape, np.dtype(np.float16), t.n_bytes)
            else:
                block, type_size = GGML_QUANT_SIZES[qt]
                byte_shape = (*np_shape[:-1], np_shape[-1] // block * type_size)
                w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.n_bytes, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        total = weights.total_bytes
        if sparse:
            # GGUFWriter lays tensor data out from the aligned end of the tensor infos, each padded to the
            # alignment (gguf-py gguf_writer.py write_ti_data_to_file / write_tensor_data); truncate extends
            # the file with holes, which read as zeros (a zero scale `d` makes every quantized weight 0)
            assert w.fout is not None
            fout = w.fout[0]
            fout.flush()
            align = w.data_alignment
            data_bytes = sum(GGUFWriter.ggml_pad(t.n_bytes, align) for t in weights.tensors)
            fout.truncate(GGUFWriter.ggml_pad(fout.tell(), align) + data_bytes)
            if progress is not None:
                progress(total, total)
            return
        rng = np.random.default_rng(seed)
        pools: dict[str, Any] = {}
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
    finally:
        w.close()


# ------------------------------------------------------------------------------- disk: room, holes, cap


TEMP_SUFFIX = ".tmp"
DISK_MARGIN_BYTES = 2**30  # left free on the cache's disk after writing: a full disk breaks more than agiplan
CACHE_CAP_ENV = "AGIPLAN_SYNTHETIC_CACHE_GIB"
DEFAULT_CACHE_CAP_GIB = 64.0  # a dense 70B Q4_K_M is 40 GiB; sparse files take megabytes


def _disk_bytes(arch: ModelArch, weights: ModelWeights, *, sparse: bool) -> int:
    """Bytes the file takes on disk: all of it (dense), or at most its metadata (sparse): the vocabulary
    (8-byte length, the piece, score and type: under 64 B a token here) and the tensor infos (name, dims,
    type, offset: under 256 B each), plus 1 MiB."""
    if not sparse:
        return weights.total_bytes + 1024 * 1024
    return arch.vocab_size * 64 + len(weights.tensors) * 256 + 1024 * 1024


def holes_supported(folder: Path) -> bool:
    """Whether files in `folder` keep holes: a 16 MiB file extended by truncate allocates (almost) nothing."""
    probe = folder / f".agiplan-holes.{os.getpid()}{TEMP_SUFFIX}"
    size = 16 * 2**20
    try:
        with open(probe, "wb") as f:
            f.truncate(size)
            f.flush()
            allocated = os.fstat(f.fileno()).st_blocks * 512
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return allocated < size // 2


def allocated_bytes(path: Path) -> int:
    """Bytes `path` takes on disk (holes not counted)."""
    return int(path.stat().st_blocks) * 512


def cache_cap_bytes() -> int:
    """The synthetic cache's cap: $AGIPLAN_SYNTHETIC_CACHE_GIB (a positive number of GiB), else 64 GiB."""
    raw = os.environ.get(CACHE_CAP_ENV, "").strip()
    if not raw:
        return int(DEFAULT_CACHE_CAP_GIB * 2**30)
    try:
        gib = float(raw)
    except ValueError:
        gib = -1.0
    if not 0 < gib < 1e9:
        raise PlannerError(f"{CACHE_CAP_ENV} takes a positive number of GiB, got {raw[:40]!r}.")
    return int(gib * 2**30)


def check_room(folder: Path, new_disk_bytes: list[int]) -> None:
    """Refuse, before anything is written, files of `new_disk_bytes` that would leave less than
    DISK_MARGIN_BYTES free on `folder`'s disk or take the synthetic files there over the cache cap."""
    need = sum(new_disk_bytes)
    if not need:
        return
    free = _free_bytes(folder)
    if free is not None and free < need + DISK_MARGIN_BYTES:
        raise PlannerError(
            f"{folder} has {free / 2**30:.1f} GiB free; the synthetic GGUF(s) need {need / 2**30:.1f} GiB plus "
            f"{DISK_MARGIN_BYTES / 2**30:.0f} GiB left free. Free space or set AGIPLAN_CACHE_DIR to a larger disk."
        )
    held = [p for p in folder.glob("*.synthetic.gguf") if p.is_file()]
    held_bytes = sum(allocated_bytes(p) for p in held)
    cap = cache_cap_bytes()
    if held_bytes + need > cap:
        raise PlannerError(
            f"the synthetic cache {folder} holds {held_bytes / 2**30:.1f} GiB in {len(held)} file(s) and needs "
            f"{need / 2**30:.1f} GiB more, over its cap of {cap / 2**30:.1f} GiB: delete files there or raise "
            f"{CACHE_CAP_ENV}."
        )


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files (`.<name>.<pid>.tmp`) of writers that are gone (killed with SIGKILL, power cut)."""
    import psutil

    removed = []
    for p in folder.glob(f".*.synthetic.gguf.*{TEMP_SUFFIX}"):
        pid_text = p.name[: -len(TEMP_SUFFIX)].rsplit(".", 1)[-1]
        if pid_text.isdigit() and not psutil.pid_exists(int(pid_text)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


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


@dataclass(frozen=True)
class SyntheticFile:
    """The synthetic GGUF of a catalog model at a quant in the cache: where it goes, what it holds, and
    whether it is there already (written once, reused after)."""

    model_id: str
    quant: str
    path: Path
    arch: ModelArch
    weights: ModelWeights

    @property
    def cached(self) -> bool:
        return self.path.is_file()


def synthetic_file(model_id: str, quant: str, *, out_dir: Path | None = None) -> SyntheticFile:
    """The cache entry of `model_id` at `quant` (the model and quant checked: unknown ids and layouts
    without a synthetic form fail here, before anything is written)."""
    from planner.catalog import load_catalog
    from planner.io import safe_file_name

    arch = load_catalog().arch(model_id)
    weights = _planned_weights(arch, quant, encoders=False)
    path = (out_dir or cache_dir()) / f"{safe_file_name(f'{model_id}-{quant.upper()}')}.synthetic.gguf"
    return SyntheticFile(model_id, quant.upper(), path, arch, weights)


def check_room_for(files: list[SyntheticFile]) -> None:
    """Disk room and cache cap for every file of `files` not yet cached, all at once: a plan's roles are
    refused together before the first file is written."""
    by_folder: dict[Path, list[SyntheticFile]] = {}
    for f in files:
        if not f.cached and f.path not in {g.path for g in by_folder.get(f.path.parent, [])}:
            by_folder.setdefault(f.path.parent, []).append(f)
    for folder, todo in by_folder.items():
        folder.mkdir(parents=True, exist_ok=True)
        sparse = holes_supported(folder)
        check_room(folder, [_disk_bytes(f.arch, f.weights, sparse=sparse) for f in todo])


def synthetic_for_catalog(
    model_id: str,
    quant: str,
    *,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """The synthetic GGUF of catalog model `model_id` at `quant`, written once into the cache (reused after)."""
    f = synthetic_file(model_id, quant, out_dir=out_dir)
    if f.cached:
        return f.path
    return write_synthetic_gguf(f.arch, f.quant, f.path, name=f"{f.arch.name} (synthetic {f.quant})", progress=progress)
