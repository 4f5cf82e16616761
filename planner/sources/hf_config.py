"""Hugging Face `config.json` -> ModelArch, with llama.cpp's architecture names.

Field names follow transformers' configuration classes (`configuration_<type>.py`); the llama.cpp
architecture each model_type converts to follows `convert_hf_to_gguf.py` (Mistral, Mixtral, Yi and
DeepSeek-LLM v1 become `llama`; XLM-RoBERTa becomes `bert`). Sliding-window layers follow the
transformers modelling code: Gemma 2 alternates (even layers local), Gemma 3 is 5 local : 1 global
(`sliding_window_pattern` 6 or an explicit `layer_types` list), Qwen 2/3 only when
`use_sliding_window` is true, Mistral when `sliding_window` is not null.
"""

from __future__ import annotations

from typing import Any

from planner.errors import ModelSourceError
from planner.model.arch import ExpertSpec, ModelArch, Source
from planner.model.layout import ARCH_BY_MODEL_TYPE

# Defaults of transformers' config classes for keys a config.json may omit (Gemma3TextConfig mainly:
# multimodal gemma3 configs carry a sparse `text_config`).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3": {
        "vocab_size": 262208,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "tie_word_embeddings": True,
    },
    "gemma2": {"head_dim": 256, "sliding_window": 4096, "tie_word_embeddings": True},
    "gemma3_text": {},  # filled below: same class defaults as gemma3
    "bert": {"tie_word_embeddings": True},
    "xlm-roberta": {"tie_word_embeddings": True},
}

_DEFAULTS["gemma3_text"] = _DEFAULTS["gemma3"]


def supported_model_types() -> list[str]:
    return sorted(ARCH_BY_MODEL_TYPE)


def _text_config(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    model_type = str(config.get("model_type", ""))
    text = config.get("text_config")
    if isinstance(text, dict) and "num_hidden_layers" not in config:
        merged = {**text}
        merged.setdefault("tie_word_embeddings", config.get("tie_word_embeddings"))
        inner = str(text.get("model_type") or model_type)
        if merged.get("tie_word_embeddings") is None:
            merged.pop("tie_word_embeddings")
        return (model_type if model_type in ARCH_BY_MODEL_TYPE else inner), merged
    return model_type, config


def _swa(model_type: str, cfg: dict[str, Any], n_layers: int) -> tuple[int | None, tuple[bool, ...] | None]:
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None, None
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == n_layers:
        layers = tuple(t == "sliding_attention" for t in layer_types)
    elif model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        if not cfg.get("use_sliding_window", False):
            return None, None
        # transformers Qwen2: layers with index >= max_window_layers use the window.
        start = int(cfg.get("max_window_layers", n_layers))
        layers = tuple(i >= start for i in range(n_layers))
    elif model_type == "gemma2":
        layers = tuple(i % 2 == 0 for i in range(n_layers))  # Gemma2: is_sliding = not layer_idx % 2
    elif model_type in ("gemma3", "gemma3_text"):
        period = int(cfg.get("sliding_window_pattern") or 6)
        layers = tuple((i + 1) % period != 0 for i in range(n_layers))
    else:  # mistral, phi3 ...: one window on every layer
        layers = tuple(True for _ in range(n_layers))
    if not any(layers):
        return None, None
    return window, layers


def arch_from_hf_config(config: dict[str, Any], source: Source, *, name: str | None = None) -> ModelArch:
    """Map a transformers config.json to ModelArch (llama.cpp architecture names)."""
    if not isinstance(config, dict):
        raise ModelSourceError(f"{source.detail}: config.json is not a JSON object")
    model_type, cfg = _text_config(config)
    if model_type not in ARCH_BY_MODEL_TYPE:
        raise ModelSourceError(
            f"{source.detail}: unsupported model_type '{model_type or '?'}' in config.json; "
            f"supported: {', '.join(supported_model_types())}. Use a GGUF file of this model instead."
        )
    cfg = {**_DEFAULTS.get(model_type, {}), **{k: v for k, v in cfg.items() if v is not None}}

    def need(key: str) -> int:
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ModelSourceError(f"{source.detail}: config.json lacks a positive integer '{key}'")
        return v

    n_layers = need("num_hidden_layers")
    hidden = need("hidden_size")
    n_heads = need("num_attention_heads")
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or hidden // n_heads
    window, swa_layers = _swa(model_type, cfg, n_layers)

    experts: ExpertSpec | None = None
    if model_type == "mixtral":
        experts = ExpertSpec(
            count=need("num_local_experts"),
            active=need("num_experts_per_tok"),
            ffn_size=need("intermediate_size"),
        )
    elif model_type in ("qwen2_moe", "qwen3_moe"):
        shared_ffn = int(cfg.get("shared_expert_intermediate_size") or 0)
        experts = ExpertSpec(
            count=need("num_experts"),
            active=need("num_experts_per_tok"),
            ffn_size=need("moe_intermediate_size"),
            shared=1 if shared_ffn else 0,
            shared_ffn_size=shared_ffn,
        )

    context = cfg.get("max_position_embeddings") or 0
    if model_type in ("bert", "xlm-roberta"):
        # XLM-RoBERTa reserves padding_idx + 1 positions (bge-m3: 8194 positions, 8192 usable).
        pad = int(cfg.get("pad_token_id") or 0) + 1 if model_type == "xlm-roberta" else 0
        context = max(int(context) - pad, 0)

    return ModelArch(
        name=name or str(config.get("_name_or_path") or model_type),
        architecture=ARCH_BY_MODEL_TYPE[model_type],
        n_layers=n_layers,
        hidden_size=hidden,
        n_heads=n_heads,
        n_kv_heads=int(n_kv),
        head_dim_k=int(head_dim),
        head_dim_v=int(head_dim),
        ffn_size=int(cfg.get("intermediate_size") or 0),
        vocab_size=need("vocab_size"),
        context_trained=int(context),
        source=source,
        sliding_window=window,
        swa_layers=swa_layers,
        experts=experts,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        is_embedding=model_type in ("bert", "xlm-roberta"),
    )
