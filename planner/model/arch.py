"""What a model *is* for planning: its shapes (ModelArch), its tensors (ModelWeights) and where each came from.

Every source (GGUF header, Hugging Face config + safetensors metadata, catalog entry) produces these
types; the estimator only ever reads them. Tensor names and shapes follow llama.cpp's GGUF naming
(`token_embd.weight`, `blk.{i}.attn_q.weight`, shapes in ggml order: ne0 = row length first).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

Provenance = Literal["file", "hub", "catalog", "formula", "calibrated", "measured"]


@dataclass(frozen=True)
class Source:
    """Where a figure came from: `kind` says how (read from a file, the catalog, a formula...),
    `detail` says exactly which (a path, a URL, 'catalog/models.yaml: llama-3-70b', a formula)."""

    kind: Provenance
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class ExpertSpec:
    """Mixture-of-experts shape: `count` routed experts of FFN width `ffn_size`, `active` used per token,
    plus `shared` always-on experts (width `shared_ffn_size`, 0 when none)."""

    count: int
    active: int
    ffn_size: int
    shared: int = 0
    shared_ffn_size: int = 0


@dataclass(frozen=True)
class ModelArch:
    """Shapes that memory and speed depend on.

    `swa_layers[i]` is True where layer i uses sliding-window attention of `sliding_window` tokens.
    `kv_heads_per_layer`, when given, overrides `n_kv_heads` layer by layer (GGUF allows an array).
    `n_dense_leading` MoE models may start with dense FFN layers (DeepSeek style); 0 otherwise.
    """

    name: str
    architecture: str  # llama.cpp's general.architecture: llama, qwen2, gemma3, bert, qwen3moe ...
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim_k: int
    head_dim_v: int
    ffn_size: int
    vocab_size: int
    context_trained: int
    source: Source
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] | None = None
    kv_heads_per_layer: tuple[int, ...] | None = None
    experts: ExpertSpec | None = None
    n_dense_leading: int = 0
    tied_embeddings: bool = False
    is_embedding: bool = False  # encoder-only / pooled embedding model: no KV cache across requests
    params_total: int | None = None  # as published or counted; None when unknown

    def kv_heads(self, layer: int) -> int:
        if self.kv_heads_per_layer is not None:
            return self.kv_heads_per_layer[layer]
        return self.n_kv_heads

    def is_swa(self, layer: int) -> bool:
        return bool(self.swa_layers is not None and self.sliding_window and self.swa_layers[layer])

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    @property
    def attention_kind(self) -> str:
        """'MHA', 'GQA' or 'MQA' (by the first layer's KV heads)."""
        kv = self.kv_heads(0)
        if kv == self.n_heads:
            return "MHA"
        return "MQA" if kv == 1 else "GQA"


_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as llama.cpp stores it: name, shape (ggml order), ggml type name and exact byte size."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str  # a gguf.GGMLQuantizationType name: F32, F16, Q4_K, Q8_0 ...
    n_bytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def layer(self) -> int | None:
        m = _LAYER_RE.match(self.name)
        return int(m.group(1)) if m else None

    @property
    def is_expert(self) -> bool:
        """Routed-expert tensors (llama.cpp `*_exps`), the ones MoE offload moves to the CPU first."""
        return "_exps." in self.name

    @property
    def is_token_embedding(self) -> bool:
        return self.name.startswith("token_embd.")


@dataclass(frozen=True)
class ModelWeights:
    """The tensors of a model at one quantization. `exact` is True when read from a real file header."""

    tensors: tuple[TensorInfo, ...]
    source: Source
    exact: bool
    file_type: str | None = None  # llama.cpp file type (Q4_K_M ...) or a checkpoint dtype (BF16, AWQ-INT4 ...)
    file_bytes: int | None = None  # whole-file size when known (header + tensors + padding)

    def __hash__(self) -> int:
        """Hashed once per object: the estimator's caches key on weights of hundreds of tensors, thousands of
        times per recommendation (1.7 M tensor hashes for the 12-role bench). String hashes are salted per
        process, so the memo is not pickled (`__getstate__`)."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.tensors, self.source, self.exact, self.file_type, self.file_bytes))
            object.__setattr__(self, "_hash", h)
        return int(h)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    @property
    def total_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for t in self.tensors:
            out[t.ggml_type] += t.n_bytes
        return dict(out)

    @property
    def token_embedding_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors if t.is_token_embedding)

    @property
    def expert_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors if t.is_expert)

    @property
    def bits_per_weight(self) -> float:
        n = self.n_params
        return 8.0 * self.total_bytes / n if n else 0.0


@dataclass(frozen=True)
class ModelSpec:
    """A model ready for estimation: its architecture and, when the quantization is fixed, its weights.

    `ref` is what the user typed (catalog id, path, hf:owner/name); `catalog_id` links back to the
    catalog when known (for quality ranks and published sizes).
    """

    ref: str
    arch: ModelArch
    weights: ModelWeights | None = None
    format: Literal["gguf", "safetensors"] = "gguf"
    catalog_id: str | None = None
