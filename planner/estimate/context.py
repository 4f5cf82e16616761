"""A model's trained context and its documented extension (catalog `context_trained`, `context_extended`,
`context_extension`): a context past what the model was trained on still fits in memory, but the model's
output degrades (Llama 3: trained at 8,192 tokens), so `estimate` warns and `recommend` does not go there
unless the stack allows the documented extension (RoPE scaling / YaRN)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import Catalog


@dataclass(frozen=True)
class ContextLimit:
    trained_tokens: int
    extended_tokens: int | None = None  # with the documented extension
    extension: str | None = None  # how the extension is switched on

    def allows(self, ctx: int, *, extension_ok: bool) -> bool:
        """Is `ctx` within the trained context, or within the extension when the stack allows it?"""
        if ctx <= self.trained_tokens:
            return True
        return extension_ok and self.extended_tokens is not None and ctx <= self.extended_tokens

    def note(self, ctx: int) -> str | None:
        """A warning when `ctx` exceeds the trained context (None within it)."""
        if ctx <= self.trained_tokens:
            return None
        text = f"ctx {ctx} exceeds the {self.trained_tokens} tokens the model was trained on: output degrades"
        if self.extended_tokens is None:
            return text + " (no documented extension)"
        if ctx <= self.extended_tokens:
            return text + f" unless run with its documented extension to {self.extended_tokens}: {self.extension}"
        return text + f", and even its documented extension ({self.extension}) stops at {self.extended_tokens}"


def context_limit(cat: Catalog, model_ref: str, trained_tokens: int) -> ContextLimit:
    """The limit of a model: the catalog's extension for a catalog model (a fine-tune's from its base), else
    the trained context the weights report (`trained_tokens`: GGUF `context_length`, config.json)."""
    entry = cat.models.get(model_ref)
    if entry is None or trained_tokens <= 0:
        return ContextLimit(max(trained_tokens, 0) or 1 << 30)
    base = cat.base_model(model_ref)
    return ContextLimit(trained_tokens, base.context_extended, base.context_extension)
