"""The tensors a model has, derived from its architecture alone: GGUF names and ggml shapes (ne0 first).

Mirrors what llama.cpp's converter (`convert_hf_to_gguf.py`) writes and what `src/llama-model.cpp`
`load_tensors` expects, per architecture family (names from `gguf-py/gguf/constants.py`
`TENSOR_NAMES` / `MODEL_TENSORS`). Shapes are in ggml order: a weight `W` of a `y = W x` projection from
`n_in` to `n_out` features is `(n_in, n_out)`; MoE expert stacks are `(n_in, n_out, n_expert)`.

Families modelled: llama (Llama 2/3, Mistral, Yi, DeepSeek-Coder, Mixtral), qwen2, qwen2moe, qwen3,
qwen3moe, gemma, gemma2, gemma3, phi3, bert (also XLM-RoBERTa such as bge-m3, which llama.cpp converts to
`bert`). Any other architecture gets the llama layout (`is_known_layout` says so) — an approximation.

Left out on purpose (each well under 0.01 % of a model): Llama 3.1's `rope_freqs.weight` (head_dim/2
floats), Phi-3 128k's `rope_factors_{long,short}`, BERT pooler/classifier heads.
"""

from __future__ import annotations

from planner.model.arch import ModelArch

Shape = tuple[int, ...]
Layout = list[tuple[str, Shape]]

# Hugging Face config.json model_type -> llama.cpp `general.architecture`, as convert_hf_to_gguf.py converts
# them (Mistral, Mixtral, Yi and DeepSeek-LLM v1 become `llama`; XLM-RoBERTa becomes `bert`).
ARCH_BY_MODEL_TYPE: dict[str, str] = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "yi": "llama",
    "deepseek": "llama",
    "qwen2": "qwen2",
    "qwen2_moe": "qwen2moe",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3moe",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "bert": "bert",
    "xlm-roberta": "bert",
}
# The llama.cpp architectures laid out here; an architecture named the Hugging Face way gets its
# llama.cpp name's layout.
_FAMILIES = frozenset({"llama", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "phi3", "bert"})
_ALIASES: dict[str, str] = {**{f: f for f in _FAMILIES}, **ARCH_BY_MODEL_TYPE}

KNOWN_ARCHITECTURES: tuple[str, ...] = tuple(sorted(set(_ALIASES.values())))


def layout_family(arch: ModelArch) -> str:
    """The layout family used for `arch` (llama for unknown architectures)."""
    return _ALIASES.get(arch.architecture.lower(), "llama")


# Architectures llama.cpp runs as encoders: no KV cache (src/llama-model.cpp create_memory returns none), attention
# not causal, no output head, and an input never split across micro-batches.
ENCODER_ARCHS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert",
     "t5encoder", "gemma-embedding"}
)  # fmt: skip


def is_encoder(arch: ModelArch) -> bool:
    """An encoder (BERT, XLM-RoBERTa such as BGE-M3, Nomic / Jina BERT, EmbeddingGemma...): no KV cache, no
    output head, each input in one micro-batch. A decoder turned into an embedding model (a pooling GGUF of a
    decoder) is not one."""
    return arch.architecture.lower() in ENCODER_ARCHS or layout_family(arch) == "bert"


def is_known_layout(arch: ModelArch) -> bool:
    return arch.architecture.lower() in _ALIASES


def tensor_shapes(arch: ModelArch) -> Layout:
    """Every tensor of `arch` as llama.cpp's converter writes it: `[(name, shape_ne0_first), ...]`.

    Order follows llama.cpp's model loader (`weights_map`: non-layer tensors first, then layer by layer,
    names sorted within a layer), which is also the order `llama-quantize` visits them in.
    """
    family = layout_family(arch)
    if family == "bert":
        return _sorted(_bert(arch))
    n_embd = arch.hidden_size
    out: Layout = [("token_embd.weight", (n_embd, arch.vocab_size)), ("output_norm.weight", (n_embd,))]
    if not arch.tied_embeddings:
        out.append(("output.weight", (n_embd, arch.vocab_size)))
    for i in range(arch.n_layers):
        out.extend(_attention(arch, i, family))
        out.extend(_ffn(arch, i, family))
    return _sorted(out)


def _sorted(tensors: Layout) -> Layout:
    """llama.cpp `llama_model_loader::weight_name_comparer`: by layer (-1 outside layers), then name."""

    def key(item: tuple[str, Shape]) -> tuple[int, str]:
        name = item[0]
        if name.startswith("blk."):
            return int(name.split(".", 2)[1]), name
        return -1, name

    return sorted(tensors, key=key)


def _attention(arch: ModelArch, i: int, family: str) -> Layout:
    n_embd = arch.hidden_size
    q_dim = arch.n_heads * arch.head_dim_k
    k_dim = arch.kv_heads(i) * arch.head_dim_k
    v_dim = arch.kv_heads(i) * arch.head_dim_v
    o_in = arch.n_heads * arch.head_dim_v
    p = f"blk.{i}."
    out: Layout = [(p + "attn_norm.weight", (n_embd,))]
    if family == "phi3":
        # Phi-3 keeps q, k, v fused (HF `qkv_proj`): one (n_embd, q + k + v) matrix.
        out.append((p + "attn_qkv.weight", (n_embd, q_dim + k_dim + v_dim)))
    else:
        out += [
            (p + "attn_q.weight", (n_embd, q_dim)),
            (p + "attn_k.weight", (n_embd, k_dim)),
            (p + "attn_v.weight", (n_embd, v_dim)),
        ]
    out.append((p + "attn_output.weight", (o_in, n_embd)))
    if family in ("qwen2", "qwen2moe"):
        out += [
            (p + "attn_q.bias", (q_dim,)),
            (p + "attn_k.bias", (k_dim,)),
            (p + "attn_v.bias", (v_dim,)),
        ]
    if family in ("qwen3", "qwen3moe", "gemma3"):
        # per-head RMS norms on q and k (one vector of head_dim shared by all heads)
        out += [
            (p + "attn_q_norm.weight", (arch.head_dim_k,)),
            (p + "attn_k_norm.weight", (arch.head_dim_k,)),
        ]
    if family in ("gemma2", "gemma3"):
        out.append((p + "post_attention_norm.weight", (n_embd,)))
    return out


def _ffn(arch: ModelArch, i: int, family: str) -> Layout:
    n_embd = arch.hidden_size
    p = f"blk.{i}."
    out: Layout = [(p + "ffn_norm.weight", (n_embd,))]
    if family in ("gemma2", "gemma3"):
        out.append((p + "post_ffw_norm.weight", (n_embd,)))
    experts = arch.experts
    if experts is not None and i >= arch.n_dense_leading:
        n_exp, n_ff = experts.count, experts.ffn_size
        out += [
            (p + "ffn_gate_inp.weight", (n_embd, n_exp)),
            (p + "ffn_gate_exps.weight", (n_embd, n_ff, n_exp)),
            (p + "ffn_up_exps.weight", (n_embd, n_ff, n_exp)),
            (p + "ffn_down_exps.weight", (n_ff, n_embd, n_exp)),
        ]
        if experts.shared > 0:
            # llama.cpp fuses the shared experts into one FFN of width shared × shared_ffn_size
            n_sh = experts.shared * (experts.shared_ffn_size or experts.ffn_size)
            out += [
                (p + "ffn_gate_shexp.weight", (n_embd, n_sh)),
                (p + "ffn_up_shexp.weight", (n_embd, n_sh)),
                (p + "ffn_down_shexp.weight", (n_sh, n_embd)),
            ]
            if family == "qwen2moe":
                out.append((p + "ffn_gate_inp_shexp.weight", (n_embd,)))
        return out
    n_ff = arch.ffn_size
    if family == "phi3":
        # Phi-3 fuses gate and up (HF `gate_up_proj`): ffn_up is (n_embd, 2 × n_ff), no ffn_gate.
        out += [(p + "ffn_up.weight", (n_embd, 2 * n_ff)), (p + "ffn_down.weight", (n_ff, n_embd))]
        return out
    out += [
        (p + "ffn_gate.weight", (n_embd, n_ff)),
        (p + "ffn_up.weight", (n_embd, n_ff)),
        (p + "ffn_down.weight", (n_ff, n_embd)),
    ]
    return out


def _bert(arch: ModelArch) -> Layout:
    """BERT / XLM-RoBERTa encoders (llama.cpp arch `bert`): post-norm layers, biases everywhere, GELU FFN.

    `position_embd` has `context_trained` rows (for XLM-RoBERTa the converter drops the 2 padding-offset rows
    of HF's `max_position_embeddings`). `token_types` is taken as 2 rows (BERT's type_vocab_size; XLM-R has 1:
    at most `hidden_size` × 4 bytes off).
    """
    n_embd, n_ff = arch.hidden_size, arch.ffn_size
    out: Layout = [
        ("token_embd.weight", (n_embd, arch.vocab_size)),
        ("token_types.weight", (n_embd, 2)),
        ("position_embd.weight", (n_embd, arch.context_trained)),
        ("token_embd_norm.weight", (n_embd,)),
        ("token_embd_norm.bias", (n_embd,)),
    ]
    for i in range(arch.n_layers):
        p = f"blk.{i}."
        q_dim = arch.n_heads * arch.head_dim_k
        kv_k = arch.kv_heads(i) * arch.head_dim_k
        kv_v = arch.kv_heads(i) * arch.head_dim_v
        out += [
            (p + "attn_q.weight", (n_embd, q_dim)),
            (p + "attn_q.bias", (q_dim,)),
            (p + "attn_k.weight", (n_embd, kv_k)),
            (p + "attn_k.bias", (kv_k,)),
            (p + "attn_v.weight", (n_embd, kv_v)),
            (p + "attn_v.bias", (kv_v,)),
            (p + "attn_output.weight", (arch.n_heads * arch.head_dim_v, n_embd)),
            (p + "attn_output.bias", (n_embd,)),
            (p + "attn_output_norm.weight", (n_embd,)),
            (p + "attn_output_norm.bias", (n_embd,)),
            (p + "ffn_up.weight", (n_embd, n_ff)),
            (p + "ffn_up.bias", (n_ff,)),
            (p + "ffn_down.weight", (n_ff, n_embd)),
            (p + "ffn_down.bias", (n_embd,)),
            (p + "layer_output_norm.weight", (n_embd,)),
            (p + "layer_output_norm.bias", (n_embd,)),
        ]
    return out
