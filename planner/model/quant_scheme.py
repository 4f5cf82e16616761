"""A model's weights at a quantization without the file: per-tensor types as llama.cpp's quantizer picks them.

GGUF file types (Q4_K_M ...) are mixes: `llama-quantize` starts from the file type's default tensor type
and moves single tensors up or down (src/llama-quant.cpp, `llama_tensor_get_type`): output / tied
embeddings to Q6_K, `attn_v` and `ffn_down` of some layers to Q6_K in Q4_K_M (`use_more_bits`), Q8_0 for
attention of 8-expert models, ... and falls back to another type when a row (ne0) is not a multiple of
the type's block (`tensor_type_fallback`: Q4_K → Q5_0, Q6_K → Q8_0 ...). Norms, biases, the MoE router and
BERT's position / token-type tables are never quantized (F32, as the converter writes them).
`_QuantState` below mirrors those rules line by line; its comments name the C++ they follow.

Bits per GGML type are *derived* from `gguf.GGML_QUANT_SIZES` (block bytes × 8 / block elements).

Non-GGUF checkpoint formats are sized from their packing: safetensors F16/BF16/F32, AWQ and GPTQ int4
(group 128), FP8 (e4m3 with per-channel scales) and EXL2-<bits>.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from planner.errors import EstimateError, UnknownIdError
from planner.gguf_constants import ggml_block_sizes  # the tables are loaded on first use, not on import
from planner.model.arch import ModelArch, ModelWeights, Source, TensorInfo
from planner.model.layout import Shape, is_known_layout, layout_family, tensor_shapes

# --------------------------------------------------------------------------------------------------
# GGML tensor types: sizes derived from gguf-py
# --------------------------------------------------------------------------------------------------


def ggml_types() -> tuple[str, ...]:
    """Every GGML tensor type name gguf-py knows (F32, F16, Q4_K, IQ4_XS ...)."""
    return tuple(ggml_block_sizes())


def block_size(ggml_type: str) -> int:
    """Elements per block of `ggml_type` (1 for F32/F16/BF16, 32 for Q8_0, 256 for K-quants)."""
    return _sizes_of(ggml_type)[0]


def _sizes_of(ggml_type: str) -> tuple[int, int]:
    sizes = ggml_block_sizes()
    key = ggml_type.upper()
    if key not in sizes:
        hint = "See gguf.GGMLQuantizationType for the names."
        raise UnknownIdError("GGML tensor type", ggml_type, sizes, hint)
    return sizes[key]


def bits_per_weight(ggml_type: str) -> float:
    """Storage bits per element of a GGML type: block bytes × 8 / block elements (Q4_K: 144×8/256 = 4.5)."""
    block, type_size = _sizes_of(ggml_type)
    return type_size * 8 / block


def tensor_bytes(shape: Shape, ggml_type: str) -> int:
    """Bytes of one tensor: n_elements / block × type_size (ggml_nbytes); ne0 must be a multiple of block."""
    block, type_size = _sizes_of(ggml_type)
    if not shape or shape[0] % block:
        raise EstimateError(
            f"A {ggml_type} tensor needs rows (ne0) that are a multiple of {block}; shape {shape} is not."
        )
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size


# --------------------------------------------------------------------------------------------------
# GGUF file types (llama_ftype) and their default tensor type (llama_ftype_get_default_type)
# --------------------------------------------------------------------------------------------------

_FTYPE_DEFAULT: dict[str, str] = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q8_0": "Q8_0",
    "Q2_K": "Q2_K",
    "Q2_K_S": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "IQ1_S": "IQ1_S",
    "IQ1_M": "IQ1_M",
    "IQ2_XXS": "IQ2_XXS",
    "IQ2_XS": "IQ2_XS",
    "IQ2_S": "IQ2_XS",
    "IQ2_M": "IQ2_S",
    "IQ3_XXS": "IQ3_XXS",
    "IQ3_XS": "IQ3_S",
    "IQ3_S": "IQ3_S",
    "IQ3_M": "IQ3_S",
    "IQ4_NL": "IQ4_NL",
    "IQ4_XS": "IQ4_XS",
}

GGUF_FILE_TYPES: tuple[str, ...] = tuple(_FTYPE_DEFAULT)

# File types whose tensors llama-quantize refuses to make without an importance matrix
# (tensor_requires_imatrix: IQ1/IQ2/IQ3_XXS targets, Q2_K inside Q2_K_S).
_NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"})

# Non-GGUF checkpoint formats.
CHECKPOINT_FORMATS: tuple[str, ...] = ("AWQ-INT4", "GPTQ-INT4", "FP8", "EXL2-<bits>")
_EXL2_RE = re.compile(r"^EXL2-(\d+(?:\.\d+)?)$")

_FALLBACK: dict[str, str] = {  # tensor_type_fallback (src/llama-quant.cpp)
    "IQ1_S": "IQ4_NL",
    "IQ1_M": "IQ4_NL",
    "IQ2_XXS": "IQ4_NL",
    "IQ2_XS": "IQ4_NL",
    "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL",
    "IQ3_S": "IQ4_NL",
    "IQ4_XS": "IQ4_NL",
    "Q2_K": "Q4_0",  # older llama.cpp used IQ4_NL here: same 18 bytes per 32
    "Q3_K": "Q4_0",
    "TQ1_0": "Q4_0",
    "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}

_UNQUANTIZED = ("F32", "F16", "BF16")


def known_file_types() -> tuple[str, ...]:
    """Every file type `weights_for` accepts (GGUF llama_ftype names and checkpoint formats)."""
    return GGUF_FILE_TYPES + CHECKPOINT_FORMATS


def _normalize(file_type: str) -> str:
    ft = file_type.strip().upper().replace("MOSTLY_", "")
    return {"FP16": "F16", "FP32": "F32", "AWQ": "AWQ-INT4", "GPTQ": "GPTQ-INT4"}.get(ft, ft)


# --------------------------------------------------------------------------------------------------
# llama_tensor_get_type, mirrored
# --------------------------------------------------------------------------------------------------


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp `use_more_bits`: first and last eighth of the layers, and every third in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _allows_quantization(name: str, shape: Shape) -> bool:
    """tensor_allows_quantization: 2-D/3-D `*weight` tensors but norms, routers, BERT position/type tables."""
    n_dims = len(shape)
    while n_dims > 1 and shape[n_dims - 1] == 1:
        n_dims -= 1
    if n_dims < 2:  # ggml_n_dims: trailing 1-sized dimensions do not count
        return False
    if not name.endswith("weight") or "_norm.weight" in name:
        return False
    if "ffn_gate_inp.weight" in name:
        return False
    return name not in ("position_embd.weight", "token_types.weight")


def _source_type(name: str, shape: Shape, file_type: str) -> str:
    """Type the converter writes a tensor in (convert_hf_to_gguf.py `prepare_tensors`): 1-D tensors, norms,
    biases, the MoE router, position and token-type embeddings are F32; other weights in the output type."""
    if (
        len(shape) < 2
        or not name.endswith(".weight")
        or name.endswith("_norm.weight")
        or "ffn_gate_inp" in name
        or name in ("position_embd.weight", "token_types.weight")
    ):
        return "F32"
    return {"F32": "F32", "BF16": "BF16"}.get(file_type, "F16")


@dataclass
class _QuantState:
    """quantize_state_impl: the counters llama_tensor_get_type reads and advances, tensor by tensor."""

    arch: ModelArch
    ftype: str
    has_imatrix: bool
    has_output: bool
    n_attention_wv: int
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0

    @property
    def n_layer(self) -> int:
        return self.arch.n_layers

    @property
    def n_expert(self) -> int:
        return self.arch.experts.count if self.arch.experts else 0

    @property
    def n_gqa(self) -> int:
        kv = self.arch.kv_heads(0)
        return self.arch.n_heads // kv if kv else 0

    @property
    def is_falcon(self) -> bool:
        return self.arch.architecture.lower() == "falcon"

    @property
    def is_70b(self) -> bool:
        """llama.cpp `model.type == LLM_TYPE_70B` (load_hparams): 80-layer llama with GQA, 80-layer qwen2."""
        if self.arch.n_layers != 80:
            return False
        family = layout_family(self.arch)
        if family == "llama" and is_known_layout(self.arch):
            return self.arch.n_heads != self.arch.kv_heads(0)
        return family == "qwen2"

    def _layer(self, counter: int, name: str) -> int:
        """layer_info: with several experts the layer comes from the name, otherwise from the counter."""
        if self.n_expert > 1:
            m = re.match(r"blk\.(\d+)\.", name)
            if m:
                return int(m.group(1))
        return counter

    def tensor_type(self, name: str, shape: Shape) -> str:
        """llama_tensor_get_type: the type `name` ends up with in a `self.ftype` file."""
        default = _FTYPE_DEFAULT[self.ftype]
        src = _source_type(name, shape, self.ftype)
        if not _allows_quantization(name, shape):
            return src
        if default in _UNQUANTIZED:
            return default  # F32/F16/BF16 files: ggml_is_quantized(default) is false, no mixing
        new = self._impl(name, shape, default)
        return self._fallback(shape, new)

    @staticmethod
    def _fallback(shape: Shape, new: str) -> str:
        """tensor_type_fallback: rows not a multiple of the block → a 32-block type, or F16 as last resort."""
        if shape[0] % block_size(new) == 0:
            return new
        fb = _FALLBACK.get(new)
        if fb is None:
            raise EstimateError(f"llama.cpp has no fallback for {new} with rows of {shape[0]}.")
        return fb if shape[0] % block_size(fb) == 0 else "F16"

    def _impl(self, name: str, shape: Shape, new: str) -> str:  # mirrors one C++ function, branch by branch
        ft = self.ftype
        n_expert = self.n_expert
        is_output = name == "output.weight"
        is_tok = name in ("token_embd.weight", "per_layer_token_embd.weight")
        is_qkv = "attn_qkv.weight" in name
        iq_low = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M")

        if is_output or (not self.has_output and is_tok):
            nx = shape[0]
            if self.is_falcon or nx % block_size(new) != 0:
                return "Q8_0"
            if ft in (*iq_low, "IQ3_XXS"):
                return "Q5_K"
            return "Q6_K" if new != "Q8_0" else new
        if is_tok:
            if ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
                return "Q2_K"
            if ft in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
                return "IQ3_S"
            return new
        if ft in iq_low:
            if "attn_v.weight" in name:
                self.i_attention_wv += 1
                if self.n_gqa >= 4 or n_expert >= 4:
                    return "Q4_K"
                return "IQ3_S" if ft in ("IQ2_S", "IQ2_M") else "Q2_K"
            if n_expert == 8 and "attn_k.weight" in name:
                return "Q4_K"
            if "ffn_down" in name:
                out = new
                if self.i_ffn_down < self.n_layer // 8:
                    out = "IQ3_S" if ft in ("IQ2_S", "IQ2_M") else "Q2_K"
                self.i_ffn_down += 1
                return out
            if "attn_output.weight" in name:
                if n_expert == 8:
                    return "Q5_K"
                if ft in ("IQ1_S", "IQ1_M"):
                    return "IQ2_XXS"
                if ft in ("IQ2_S", "IQ2_M"):
                    return "IQ3_S"
            return new
        if "attn_v.weight" in name:
            gqa4 = self.n_gqa >= 4
            i, n = self.i_attention_wv, self.n_attention_wv
            if ft == "Q2_K":
                new = "Q4_K" if gqa4 else "Q3_K"
            elif ft == "Q2_K_S" and gqa4:
                new = "Q4_K"
            elif ft == "IQ3_XXS":
                new = "Q4_K" if gqa4 else ("IQ3_S" if not self.has_imatrix else "IQ3_XXS")
            elif ft in ("IQ3_XS", "IQ3_S") and gqa4:  # noqa: SIM114 - kept as in the C++
                new = "Q4_K"
            elif ft == "IQ3_M":
                new = "Q4_K"
            elif ft == "Q3_K_M":
                new = "Q5_K" if i < 2 else "Q4_K"
            elif ft == "Q3_K_L":  # noqa: SIM114 - kept as in the C++
                new = "Q5_K"
            elif ft in ("IQ4_NL", "IQ4_XS") and gqa4:
                new = "Q5_K"
            elif ft in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
                new = "Q6_K"
            elif ft == "Q4_K_S" and i < 4:
                new = "Q5_K"
            if self.is_70b and new in ("Q3_K", "Q4_K"):
                new = "Q5_K"  # 70B: attn_v is 8× smaller than attn_q, more bits cost little
            if n_expert == 8:
                new = "Q8_0"
            self.i_attention_wv += 1
            return new
        if "attn_k.weight" in name:
            if n_expert == 8:
                return "Q8_0"
            if ft == "IQ3_XS":
                return "IQ3_XXS"
            if ft == "IQ3_XXS":
                return "IQ2_S"
            return new
        if "attn_q.weight" in name:
            if ft == "IQ3_XS":
                return "IQ3_XXS"
            if ft == "IQ3_XXS":
                return "IQ2_S"
            return new
        if "ffn_down" in name:
            i, n = self._layer(self.i_ffn_down, name), self.n_layer
            falcon = self.is_falcon
            if ft == "Q2_K":
                new = "Q3_K"
            elif ft == "Q2_K_S":
                if i < n // 8:
                    new = "Q4_K"
            elif ft == "IQ3_XXS" and not self.has_imatrix:
                new = "Q4_K" if i < n // 8 else "Q3_K"
            elif ft == "Q3_K_M":
                new = "Q5_K" if i < n // 16 else ("Q4_K" if not falcon or _use_more_bits(i, n) else "Q3_K")
            elif ft == "IQ3_M" and (i < n // 8 or (n_expert == 8 and _use_more_bits(i, n))):
                new = "Q4_K"
            elif ft == "Q3_K_L":
                new = "Q4_K" if falcon else "Q5_K"
            elif ft == "Q4_K_M":
                if falcon:
                    new = "Q6_K" if i < n // 16 else ("Q5_K" if _use_more_bits(i, n) else "Q4_K")
                elif _use_more_bits(i, n):
                    new = "Q6_K"
            elif i < n // 8 and ft in ("IQ4_NL", "IQ4_XS") and not self.has_imatrix:
                new = "Q5_K"
            elif ft == "Q5_K_M" and _use_more_bits(i, n):
                new = "Q6_K"
            elif ft == "Q4_K_S" and not falcon and i < n // 8:
                new = "Q5_K"
            elif ft in ("Q4_0", "Q5_0") and self.has_imatrix and i < n // 8:
                new = "Q4_1" if ft == "Q4_0" else "Q5_1"
            self.i_ffn_down += 1
            return new
        if "attn_output.weight" in name:
            if not self.is_falcon:
                if n_expert == 8:
                    if ft in (
                        "Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL",
                        "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS",
                    ):  # fmt: skip
                        return "Q5_K"
                    return new
                bumps = {
                    "Q2_K": "Q3_K",
                    "IQ3_XXS": "IQ3_S",
                    "Q3_K_M": "Q4_K",
                    "Q3_K_L": "Q5_K",
                    "IQ3_M": "Q4_K",
                }
                return bumps.get(ft, new)
            return "Q4_K" if ft == "Q3_K_L" else new
        if is_qkv:
            # The long-standing rule (llama.cpp up to its 2026 tensor_category refactor, which routes attn_qkv
            # through the attn_v branch instead): every published Phi-3 GGUF was made with this one.
            if ft in ("Q3_K_M", "Q3_K_L", "IQ3_M"):
                return "Q4_K"
            if ft == "Q4_K_M":
                return "Q5_K"
            if ft == "Q5_K_M":
                return "Q6_K"
            return new
        if "ffn_gate" in name:
            i = self._layer(self.i_ffn_gate, name)
            self.i_ffn_gate += 1
            if ft == "IQ3_XS" and self.n_layer // 8 <= i < 7 * self.n_layer // 8:
                return "IQ3_XXS"
            return new
        if "ffn_up" in name:
            i = self._layer(self.i_ffn_up, name)
            self.i_ffn_up += 1
            if ft == "IQ3_XS" and self.n_layer // 8 <= i < 7 * self.n_layer // 8:
                return "IQ3_XXS"
            return new
        return new


def _gguf_ftype(file_type: str) -> str:
    ft = _normalize(file_type)
    if ft not in _FTYPE_DEFAULT:
        raise UnknownIdError("quant", file_type, known_file_types(), "See 'agiplan catalog quants'.")
    return ft


def _default_imatrix(ftype: str) -> bool:
    return ftype in _NEEDS_IMATRIX


def tensor_type_for(
    name: str,
    shape: Shape,
    arch: ModelArch,
    file_type: str,
    *,
    i_attention_wv: int | None = None,
    i_ffn_down: int | None = None,
    i_ffn_gate: int | None = None,
    i_ffn_up: int | None = None,
    n_attention_wv: int | None = None,
    has_output: bool | None = None,
    imatrix: bool | None = None,
) -> str:
    """The GGML type llama-quantize gives tensor `name` (ggml `shape`) of `arch` in a `file_type` GGUF.

    The `i_*` counters are llama.cpp's running counts of attn_v / ffn_down / ffn_gate / ffn_up tensors seen
    before this one; by default they are this tensor's layer index (what they are for a dense model, one
    such tensor per layer). `n_attention_wv` defaults to the layer count, `has_output` to "not tied".
    `imatrix` defaults to True only for file types llama-quantize refuses to make without one.
    """
    ftype = _gguf_ftype(file_type)
    m = re.match(r"blk\.(\d+)\.", name)
    layer = int(m.group(1)) if m else 0
    state = _QuantState(
        arch=arch,
        ftype=ftype,
        has_imatrix=_default_imatrix(ftype) if imatrix is None else imatrix,
        has_output=(not arch.tied_embeddings and not arch.is_embedding) if has_output is None else has_output,
        n_attention_wv=arch.n_layers if n_attention_wv is None else n_attention_wv,
        i_attention_wv=layer if i_attention_wv is None else i_attention_wv,
        i_ffn_down=layer if i_ffn_down is None else i_ffn_down,
        i_ffn_gate=layer if i_ffn_gate is None else i_ffn_gate,
        i_ffn_up=layer if i_ffn_up is None else i_ffn_up,
    )
    return state.tensor_type(name, shape)


# --------------------------------------------------------------------------------------------------
# weights_for: every tensor with its type and bytes
# --------------------------------------------------------------------------------------------------

Format = Literal["gguf", "safetensors"]


def weights_for(
    arch: ModelArch, file_type: str, *, imatrix: bool | None = None, format: Format = "gguf"
) -> ModelWeights:
    """`arch`'s tensors at `file_type`, each with its type and exact byte size (exact=False: no file read).

    GGUF file types follow llama.cpp's quantizer (see module docstring); `imatrix` as in `tensor_type_for`.
    `format="safetensors"` with F16 / BF16 / F32 sizes a Hugging Face checkpoint (every tensor in that
    dtype). AWQ-INT4, GPTQ-INT4, FP8 and EXL2-<bits> are always checkpoint formats.
    """
    ft = _normalize(file_type)
    layout = tensor_shapes(arch)
    generic = "" if is_known_layout(arch) else f" (architecture '{arch.architecture}' laid out as llama)"
    if ft in _FTYPE_DEFAULT and not (format == "safetensors" and ft in ("F16", "BF16", "F32")):
        return _gguf_weights(arch, ft, layout, imatrix, generic)
    if ft in ("F16", "BF16", "F32"):
        return _checkpoint(arch, ft, layout, _plain(ft), f"safetensors {ft}: every tensor {ft}" + generic)
    if ft == "AWQ-INT4":
        detail = "AutoAWQ GEMM packing, group 128: int4 weights + f16 scales + 4-bit zeros per group"
        return _checkpoint(arch, ft, layout, _int4(gptq=False), detail + generic)
    if ft == "GPTQ-INT4":
        detail = "GPTQ packing, group 128: int4 weights + f16 scales + 4-bit zeros per group + int32 g_idx"
        return _checkpoint(arch, ft, layout, _int4(gptq=True), detail + generic)
    if ft == "FP8":
        detail = "FP8 e4m3 weights + one f32 scale per output channel; embeddings, head, norms bf16"
        return _checkpoint(arch, ft, layout, _fp8, detail + generic)
    m = _EXL2_RE.match(ft)
    if m:
        bits = float(m.group(1))
        detail = f"EXL2 {bits:g} bits average over decoder matrices, head 6 bits, embeddings and norms f16"
        return _checkpoint(arch, ft, layout, _exl2(bits), detail + generic)
    raise UnknownIdError("quant", file_type, known_file_types(), "See 'agiplan catalog quants'.")


def effective_bpw(arch: ModelArch, file_type: str, *, imatrix: bool | None = None) -> float:
    """Average storage bits per parameter of `arch` at `file_type` (all tensors, embeddings included)."""
    return weights_for(arch, file_type, imatrix=imatrix).bits_per_weight


def _gguf_weights(
    arch: ModelArch, ftype: str, layout: list[tuple[str, Shape]], imatrix: bool | None, generic: str
) -> ModelWeights:
    names = [n for n, _ in layout]
    state = _QuantState(
        arch=arch,
        ftype=ftype,
        has_imatrix=_default_imatrix(ftype) if imatrix is None else imatrix,
        has_output="output.weight" in names,  # init_quantize_state_counters
        n_attention_wv=sum(1 for n in names if "attn_v.weight" in n or "attn_qkv.weight" in n),
    )
    tensors = []
    for name, shape in layout:
        t = state.tensor_type(name, shape)
        tensors.append(TensorInfo(name, shape, t, tensor_bytes(shape, t)))
    detail = f"llama.cpp llama_tensor_get_type rules (src/llama-quant.cpp) applied to {arch.name} tensors"
    if state.has_imatrix:
        detail += " (with imatrix)"
    return ModelWeights(
        tensors=tuple(tensors),
        source=Source("formula", detail + generic),
        exact=False,
        file_type=ftype,
    )


# Checkpoint formats: a sizer maps one tensor to (type label, bytes).
_SizerFn = Callable[[str, Shape], tuple[str, int]]


def _n(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _is_matrix(name: str, shape: Shape) -> bool:
    """Decoder projection matrices that weight-only quantizers pack (not embeddings, head, norms, routers)."""
    return (
        len(shape) >= 2
        and name.endswith(".weight")
        and name.startswith("blk.")
        and not name.endswith("_norm.weight")
        and "ffn_gate_inp" not in name
    )


def _plain(dtype: str) -> _SizerFn:
    width = 4 if dtype == "F32" else 2

    def size(name: str, shape: Shape) -> tuple[str, int]:
        return dtype, _n(shape) * width

    return size


def _int4(*, gptq: bool) -> _SizerFn:
    group = 128

    def size(name: str, shape: Shape) -> tuple[str, int]:
        if not _is_matrix(name, shape):
            return "F16", _n(shape) * 2
        k, n_out = shape[0], shape[1]  # ggml ne0 = in_features
        stack = _n(shape[2:])
        groups = -(-k // group)
        qweight = k * n_out // 2  # int32 words holding 8 nibbles
        scales = groups * n_out * 2  # f16 [groups, out]
        qzeros = groups * (-(-n_out // 8)) * 4  # int32 [groups, out / 8]
        g_idx = k * 4 if gptq else 0  # int32 [in]
        return ("GPTQ_INT4" if gptq else "AWQ_INT4"), (qweight + scales + qzeros + g_idx) * stack

    return size


def _fp8(name: str, shape: Shape) -> tuple[str, int]:
    if not _is_matrix(name, shape):
        return "BF16", _n(shape) * 2
    n_out = shape[1]
    stack = _n(shape[2:])
    return "F8_E4M3", (_n(shape[:2]) + n_out * 4) * stack


def _exl2(bits: float) -> _SizerFn:
    def size(name: str, shape: Shape) -> tuple[str, int]:
        if _is_matrix(name, shape):
            return "EXL2", round(_n(shape) * bits / 8)
        if name == "output.weight":
            return "EXL2", round(_n(shape) * 6 / 8)
        return "F16", _n(shape) * 2

    return size


def _checkpoint(
    arch: ModelArch, ft: str, layout: Iterable[tuple[str, Shape]], sizer: _SizerFn, detail: str
) -> ModelWeights:
    tensors = []
    for name, shape in layout:
        label, n_bytes = sizer(name, shape)
        tensors.append(TensorInfo(name, shape, label, n_bytes))
    return ModelWeights(
        tensors=tuple(tensors),
        source=Source("formula", f"{detail}; applied to {arch.name} tensors"),
        exact=False,
        file_type=ft,
    )
