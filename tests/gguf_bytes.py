"""Raw GGUF bytes for hostile-header tests: strings, headers, tensor infos, written by hand (the gguf writer
would refuse the nonsense these tests need). Shared by test_gguf_source.py and test_fuzz_gguf.py."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

from planner.errors import ModelSourceError
from planner.sources.gguf_file import read_gguf


def gguf_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def kv_u32(key: str, v: int) -> bytes:
    return gguf_str(key) + struct.pack("<II", 4, v)


ARCH_KV = gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str("llama")


def tensor_info(name: str, dims: list[int], ttype: int = 0, offset: int = 0, n_dims: int | None = None) -> bytes:
    n = len(dims) if n_dims is None else n_dims
    return (
        gguf_str(name)
        + struct.pack("<I", n)
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ttype, offset)
    )


def refused_with_peak(path: Path) -> tuple[str, int]:
    """read_gguf(path) must refuse the file: (its one-line message, peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    try:
        with pytest.raises(ModelSourceError) as err:
            read_gguf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return str(err.value), peak
