"""MODEL as the user writes it → ModelSpec: a catalog id, a path to a .gguf, or hf:owner/name."""

from __future__ import annotations

from pathlib import Path

from planner.errors import ModelSourceError, UnknownIdError
from planner.model.arch import ModelSpec


def looks_like_path(ref: str) -> bool:
    return ref.lower().endswith(".gguf") or "/" in ref or ref.startswith((".", "~"))


def resolve_model(ref: str, *, quant: str | None = None) -> ModelSpec:
    """Resolve `ref`: `hf:` → Hugging Face; something path-like → a local GGUF; else a catalog id."""
    ref = ref.strip()
    if not ref:
        raise ModelSourceError(
            "No model given: pass a catalog id (agiplan catalog models), a .gguf path or hf:owner/name."
        )
    if ref.startswith("hf:"):
        from planner.sources.huggingface import load_hf

        return load_hf(ref, quant=quant)
    if looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelSourceError(f"{ref}: no such file. Pass a catalog id, an existing .gguf path or hf:owner/name.")
        if path.is_dir():
            raise ModelSourceError(f"{ref} is a directory; pass the .gguf file inside it.")
        from planner.sources.gguf_file import read_gguf

        return read_gguf(path)
    from planner.catalog import load_catalog

    cat = load_catalog()
    try:
        entry = cat.model(ref)
    except UnknownIdError as e:
        raise UnknownIdError(
            "model", ref, cat.models, "See 'agiplan catalog models', or pass a .gguf path or hf:owner/name."
        ) from e
    return ModelSpec(ref=entry.id, arch=cat.arch(entry.id), weights=None, format="gguf", catalog_id=entry.id)
