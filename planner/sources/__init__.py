"""Model sources: turn what the user names (a local .gguf, hf:owner/name) into a ModelSpec."""
