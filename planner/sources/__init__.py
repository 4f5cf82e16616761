"""Model sources: turn what the user names (a local .gguf, hf:owner/name) into a ModelSpec.

- `planner.sources.gguf_file.read_gguf(path)`: local GGUF (split files included), exact tensor bytes.
- `planner.sources.huggingface.load_hf(ref, quant=..., token=...)`: `hf:` refs, cached for offline use.
- `planner.sources.hf_config.arch_from_hf_config(config, source)`: transformers config.json -> ModelArch.

Heavy modules (gguf, huggingface_hub) are imported inside these functions, so importing this package
is cheap.
"""
