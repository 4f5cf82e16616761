"""GGUF header reader: the real Gemma file, tiny real GGUFs per architecture, split files, hostile input."""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gguf
import pytest
from conftest import write_tiny_gguf
from gguf_bytes import ARCH_KV, gguf_str, header, kv_u32, refused_with_peak, tensor_info
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import ModelSourceError
from planner.model.arch import Source
from planner.sources.gguf_file import (
    MAX_TENSORS,
    NeedMoreBytes,
    file_type_name,
    parse_gguf_header,
    parse_header_prefix,
    read_gguf,
    spec_from_header,
)

# --- the real Gemma 3 270M Q4_K_M --------------------------------------------------------------


def test_gemma_tensor_bytes_by_type(gemma_gguf_path: Path) -> None:
    spec = read_gguf(gemma_gguf_path)
    w = spec.weights
    assert w is not None
    # Totals by ggml type as the file's header says (cross-checked once with gguf.GGUFReader, 30 s).
    assert w.bytes_by_type() == {
        "Q8_0": 179_824_640,
        "Q5_0": 43_591_680,
        "Q4_K": 13_271_040,
        "Q6_K": 9_676_800,
        "F32": 223_744,
    }
    assert w.total_bytes == 246_587_904
    emb = next(t for t in w.tensors if t.name == "token_embd.weight")
    # Q8_0: 34 bytes per 32 weights -> 640 * 262144 / 32 * 34.
    assert (emb.shape, emb.ggml_type, emb.n_bytes) == ((640, 262144), "Q8_0", 640 * 262144 // 32 * 34)
    assert w.token_embedding_bytes == emb.n_bytes
    assert w.exact is True
    assert w.file_type == "Q4_K_M"  # general.file_type 15 = MOSTLY_Q4_K_M
    assert w.file_bytes == gemma_gguf_path.stat().st_size
    assert w.source == Source("file", str(gemma_gguf_path))
    assert len(w.tensors) == 236
    assert spec.format == "gguf"
    # Header bytes + tensor data: the file is the tensors plus < 7 MB of header (vocabulary) and padding.
    assert 0 < w.file_bytes - w.total_bytes < 7_000_000


def test_gemma_architecture(gemma_gguf_path: Path) -> None:
    a = read_gguf(gemma_gguf_path).arch
    # Values from the file's gemma3.* keys (Gemma 3 270M config: 18 layers, 640 hidden, 4 heads, 1 KV head).
    assert (a.architecture, a.n_layers, a.hidden_size, a.n_heads, a.n_kv_heads) == ("gemma3", 18, 640, 4, 1)
    assert (a.head_dim_k, a.head_dim_v, a.ffn_size) == (256, 256, 2048)
    assert (a.sliding_window, a.context_trained, a.vocab_size) == (512, 32768, 262144)
    # llama.cpp gemma3: set_swa_pattern(6) -> layers 5, 11, 17 are global, the rest local.
    assert a.swa_layers is not None
    assert [i for i, s in enumerate(a.swa_layers) if not s] == [5, 11, 17]
    assert a.tied_embeddings is True  # no output.weight tensor
    assert a.is_embedding is False and a.experts is None
    assert a.attention_kind == "MQA"
    assert a.params_total == 268_098_176  # sum of tensor elements
    assert a.name == "Gemma 3 270m"


def test_name_override_and_ref(gemma_gguf_path: Path) -> None:
    spec = read_gguf(str(gemma_gguf_path), name="gemma-small")
    assert spec.arch.name == "gemma-small"
    assert spec.ref == str(gemma_gguf_path)


def test_gemma_prefix_parse_grows_to_header(gemma_gguf_path: Path) -> None:
    """The Hub path: parse from growing prefixes; the header ends well before the 250 MB of data."""
    size = gemma_gguf_path.stat().st_size
    calls: list[tuple[int, int]] = []
    with open(gemma_gguf_path, "rb") as f:

        def fetch(start: int, stop: int) -> bytes:
            calls.append((start, stop))
            f.seek(start)
            return f.read(stop - start)

        header, raw = parse_header_prefix(fetch, file_size=size, label="gemma")
    assert len(header.tensors) == 236
    assert header.data_offset <= len(raw) < 16 << 20
    assert calls[0] == (0, 2 << 20)  # starts with 2 MiB, then only the missing bytes
    assert all(a == b for (_, b), (a, _) in itertools.pairwise(calls))
    with pytest.raises(NeedMoreBytes):
        parse_gguf_header(raw[: 1 << 20], file_size=size, label="gemma")


# --- tiny real GGUFs ---------------------------------------------------------------------------

# Each row: writer arguments, then what the reader must report. Shapes are chosen by the row itself.
TINY_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("llama GQA Q8_0", {}, {"architecture": "llama", "n_kv_heads": 2, "head_dim_k": 64, "tied_embeddings": False}),
    (
        "qwen2 Q4_K MHA",
        {"arch": "qwen2", "weight_type": "Q4_K", "kv_heads": 4},
        {"architecture": "qwen2", "n_kv_heads": 4, "attention_kind": "MHA"},
    ),
    (
        "gemma2 window alternates",
        {"arch": "gemma2", "layers": 4, "window": 128, "tied": True},
        {"sliding_window": 128, "swa_layers": (True, False, True, False), "tied_embeddings": True},
    ),
    (
        "gemma3 5 local : 1 global",
        {"arch": "gemma3", "layers": 7, "window": 512, "tied": True},
        {"swa_layers": (True,) * 5 + (False, True)},
    ),
    (
        "mistral-style window on all layers",
        {"arch": "llama", "window": 4096},
        {"sliding_window": 4096, "swa_layers": (True, True)},
    ),
    (
        "explicit per-layer window pattern",
        {"arch": "llama", "layers": 3, "window": 64, "swa_pattern": [True, False, False]},
        {"swa_layers": (True, False, False)},
    ),
    (
        "per-layer KV heads and FFN",
        {"kv_heads": [1, 4], "ffn": [256, 512]},
        {"n_kv_heads": 4, "kv_heads_per_layer": (1, 4), "ffn_size": 512},
    ),
    (
        "MoE experts",
        {"arch": "qwen3moe", "experts": 8, "experts_used": 2, "expert_ffn": 256, "ffn": 0},
        {"is_moe": True},
    ),
    (
        "bert embedding F16",
        {"arch": "bert", "weight_type": "F16", "pooling": True, "file_type": 1},
        {"is_embedding": True, "architecture": "bert"},
    ),
    ("Q6_K + file type Q6_K", {"weight_type": "Q6_K", "file_type": 18}, {}),
]


@pytest.mark.parametrize(("label", "kwargs", "expect"), TINY_CASES, ids=[c[0] for c in TINY_CASES])
def test_tiny_round_trip(tmp_path: Path, label: str, kwargs: dict[str, Any], expect: dict[str, Any]) -> None:
    path = write_tiny_gguf(tmp_path, **kwargs)
    spec = read_gguf(path)
    assert spec.weights is not None
    # Independent oracle: gguf-py's own reader (fine on tiny files).
    reader = gguf.GGUFReader(path)
    theirs = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors}
    ours = {t.name: (t.shape, t.ggml_type, t.n_bytes) for t in spec.weights.tensors}
    assert ours == theirs
    assert spec.weights.file_bytes == path.stat().st_size
    assert spec.arch.params_total == sum(t.n_elements for t in spec.weights.tensors)
    assert spec.arch.vocab_size == 512 and spec.arch.context_trained == 1024
    assert spec.arch.n_layers == kwargs.get("layers", 2)
    for attr, value in expect.items():
        assert getattr(spec.arch, attr) == value, attr
    if "experts" in kwargs:
        assert spec.arch.experts is not None
        assert (spec.arch.experts.count, spec.arch.experts.active, spec.arch.experts.ffn_size) == (8, 2, 256)
        assert spec.weights.expert_bytes > 0
        assert all(t.is_expert == ("_exps." in t.name) for t in spec.weights.tensors)
    ft = kwargs.get("file_type", 7)
    assert spec.weights.file_type == {7: "Q8_0", 1: "F16", 18: "Q6_K"}[ft]


@pytest.mark.parametrize(
    ("value", "name"),
    [  # gguf.LlamaFileType numbers (llama.h llama_ftype)
        (0, "F32"),
        (1, "F16"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (17, "Q5_K_M"),
        (18, "Q6_K"),
        (30, "IQ4_XS"),
        (32, "BF16"),
        (1024, None),
        (999, None),
        ("15", None),
        (True, None),
    ],
)
def test_file_type_names(value: Any, name: str | None) -> None:
    assert file_type_name(value) == name


def _write_split(tmp_path: Path) -> list[Path]:
    """Two parts as llama.cpp's gguf-split writes them: KV in part 1, tensors spread over both."""
    import numpy as np

    paths = [tmp_path / f"m-0000{i}-of-00002.gguf" for i in (1, 2)]
    for i, p in enumerate(paths):
        w = gguf.GGUFWriter(str(p), "llama")
        w.add_uint16("split.no", i)
        w.add_uint16("split.count", 2)
        w.add_int32("split.tensors.count", 3)
        if i == 0:
            w.add_block_count(1)
            w.add_embedding_length(64)
            w.add_head_count(2)
            w.add_feed_forward_length(128)
            w.add_context_length(256)
            w.add_token_list([f"t{j}" for j in range(100)])
            w.add_tensor("token_embd.weight", np.zeros((100, 64), np.float32))
            w.add_tensor("output_norm.weight", np.zeros((64,), np.float32))
        else:
            w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return paths


def test_split_gguf_reads_all_parts(tmp_path: Path) -> None:
    p1, p2 = _write_split(tmp_path)
    for part in (p1, p2):
        spec = read_gguf(part)
        assert spec.weights is not None
        names = {t.name for t in spec.weights.tensors}
        assert names == {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"}
        # 100*64*4 + 64*4 + 64*64*2 bytes
        assert spec.weights.total_bytes == 25600 + 256 + 8192
        assert spec.weights.file_bytes == p1.stat().st_size + p2.stat().st_size
        assert spec.arch.vocab_size == 100
        assert spec.weights.source.detail == str(p1)


def test_split_gguf_missing_part_is_named(tmp_path: Path) -> None:
    p1, p2 = _write_split(tmp_path)
    p2.unlink()
    with pytest.raises(ModelSourceError, match=r"split GGUF with 2 parts, missing m-00002-of-00002\.gguf"):
        read_gguf(p1)


# --- hostile input --------------------------------------------------------------------------------


def _pad(b: bytes, extra: int = 0) -> bytes:
    return b + b"\0" * ((-len(b)) % 32 + extra)


HOSTILE: list[tuple[str, bytes, str]] = [
    ("empty", b"", "too short"),
    ("wrong magic", b"GGML" + b"\0" * 60, "not a GGUF file"),
    ("version 1", header(0, 0, version=1), "unsupported GGUF version 1"),
    ("version 99", header(0, 0, version=99), "unsupported GGUF version 99"),
    ("truncated counts", header(0, 0)[:14], "truncated"),
    ("2^60 key/values", header(0, 2**60), "key/value count"),
    ("2^60 tensors", header(2**60, 0), "tensor count"),
    ("2^40-byte key", header(0, 1) + struct.pack("<Q", 2**40) + b"\0" * 64, "string length"),
    (
        "2^40-byte string value",
        header(0, 1) + gguf_str("k") + struct.pack("<IQ", 8, 2**40) + b"\0" * 64,
        "string length",
    ),
    (
        "2^60-element u32 array",
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 4, 2**60) + b"\0" * 64,
        "array length",
    ),
    (
        "2^60-element string array",
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 8, 2**60) + b"\0" * 64,
        "array length",
    ),
    (
        "string in a small array longer than the file",
        header(0, 1)
        + gguf_str("k")
        + struct.pack("<IIQ", 9, 8, 3)
        + gguf_str("a")
        + struct.pack("<Q", 10**6)
        + b"x" * 20,
        "string length 1000000 cannot fit",
    ),
    (
        "string in a skipped big array longer than the file",  # > 4096 elements: walked, not decoded
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 8, 5000) + struct.pack("<Q", 10**9) + b"\0" * 40_000,
        "string of 1000000000 bytes runs past the end",
    ),
    ("unknown value type", header(0, 1) + gguf_str("k") + struct.pack("<I", 77) + b"\0" * 16, "unknown value type 77"),
    (
        "unknown array type",
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 55, 1) + b"\0" * 8,
        "unknown array element type 55",
    ),
    ("nested array", header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 9, 1) + b"\0" * 16, "nested arrays"),
    ("duplicate key", header(0, 2) + kv_u32("a", 1) + kv_u32("a", 2), "duplicate key"),
    ("alignment not a power of two", header(0, 1) + kv_u32("general.alignment", 24), "power of two"),
    ("5 dimensions", header(1, 1) + ARCH_KV + tensor_info("t", [1, 1, 1, 1, 1]) + b"\0" * 64, "5 dimensions"),
    ("0 dimensions", header(1, 1) + ARCH_KV + tensor_info("t", []) + b"\0" * 64, "0 dimensions"),
    ("overflowing dims", header(1, 1) + ARCH_KV + tensor_info("t", [2**40, 2**40]) + b"\0" * 64, "overflows"),
    (
        "unknown tensor type",
        header(1, 1) + ARCH_KV + tensor_info("t", [4], ttype=99) + b"\0" * 64,
        "unknown or unsupported tensor type 99",
    ),
    (
        "row not a multiple of block",
        header(1, 1) + ARCH_KV + tensor_info("t", [33], ttype=8) + b"\0" * 64,
        "not a multiple of the Q8_0 block size 32",
    ),
    ("unaligned offset", header(1, 1) + ARCH_KV + tensor_info("t", [4], offset=3) + b"\0" * 64, "not aligned"),
    ("tensor past end of file", _pad(header(1, 1) + ARCH_KV + tensor_info("t", [1024])), "runs past the end"),
    (
        "offset past end of file",
        _pad(header(1, 1) + ARCH_KV + tensor_info("t", [4], offset=2**50), 16),
        "runs past the end",
    ),
    (
        "duplicate tensor",
        _pad(header(2, 1) + ARCH_KV + tensor_info("t", [4]) + tensor_info("t", [4], offset=32), 64),
        "duplicate tensor name",
    ),
    ("no architecture", _pad(header(0, 1) + kv_u32("x", 1)), "general.architecture"),
    ("no block_count", _pad(header(0, 1) + ARCH_KV), "llama.block_count"),
]


@pytest.mark.parametrize(("label", "data", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_headers(tmp_path: Path, label: str, data: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    msg, peak = refused_with_peak(path)
    assert message in msg
    assert str(path) in msg and "\n" not in msg
    assert peak < 8 << 20  # absurd counts never turn into allocations


@pytest.mark.parametrize(
    ("setup", "message"),
    [("missing", "no such file"), ("directory", "is a directory")],
)
def test_missing_and_directory(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "x.gguf"
    if setup == "directory":
        path.mkdir()
    with pytest.raises(ModelSourceError, match=message):
        read_gguf(path)


def test_truncated_real_file_names_the_tensor(tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(ModelSourceError, match=r"tensor '.*' .* runs past the end of the file"):
        read_gguf(cut)


@pytest.fixture(scope="module")
def fuzz_seed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("fuzz")
    p = write_tiny_gguf(d, hidden=32, heads=2, head_dim=16, ffn=64, vocab=40, weight_type="F16", window=16)
    return p.read_bytes()


def _parse_bytes(data: bytes) -> None:
    header = parse_gguf_header(data, label="fuzz.gguf")
    spec_from_header(
        header, ref="fuzz.gguf", source=Source("file", "fuzz.gguf"), file_bytes=len(data), label="fuzz.gguf"
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_truncations_and_flips(fuzz_seed: bytes, data: st.DataObject) -> None:
    """Random truncations and byte flips (within the header) either parse or raise ModelSourceError."""
    header_end = parse_gguf_header(fuzz_seed).data_offset
    buf = bytearray(fuzz_seed)
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        i = data.draw(st.integers(0, header_end - 1), label="at")
        buf[i] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.one_of(st.just(len(buf)), st.integers(0, len(buf))), label="cut")
    try:
        _parse_bytes(bytes(buf[:cut]))
    except ModelSourceError as e:
        assert "\n" not in str(e)


# --- issue 15: bounded reads and hyper-parameters in range ---------------------------------------------


def _with_kv(src: bytes, key: str, vtype: int, value: bytes) -> bytes:
    """`src` (a tiny GGUF whose `key` is a u32) with that value re-typed as `vtype` holding `value`. The
    header grows by len(value) - 4 bytes; 64 zero bytes at the end keep the last tensor inside the file
    when the data section moves to the next alignment boundary."""
    needle = gguf_str(key) + struct.pack("<I", 4)
    at = src.index(needle) + len(needle)
    return src[: at - 4] + struct.pack("<I", vtype) + value + src[at + 4 :] + b"\0" * 64


# (key, GGUF value type, packed value, message): each row a header value the estimator used to multiply
OUT_OF_RANGE = [
    # a MemoryError in the memory bar before (issue 15)
    (
        "llama.attention.key_length",
        11,
        struct.pack("<q", -(2**63)),
        "'llama.attention.key_length' is -9223372036854775808",
    ),
    ("llama.attention.head_count", 5, struct.pack("<i", -4), "'llama.attention.head_count' is -4; a model has 1 to"),
    (
        "llama.attention.head_count_kv",
        5,
        struct.pack("<i", -2),
        "'llama.attention.head_count_kv' is -2",
    ),  # KV -0.00 GiB
    ("llama.attention.head_count_kv", 4, struct.pack("<I", 0), "'llama.attention.head_count_kv' is 0"),
    ("llama.block_count", 10, struct.pack("<Q", 2**40), "'llama.block_count' is 1099511627776"),
    ("llama.embedding_length", 4, struct.pack("<I", 0), "'llama.embedding_length' is 0"),
]


@pytest.mark.parametrize(
    ("key", "vtype", "value", "message"), OUT_OF_RANGE, ids=[f"{r[0]}={r[2].hex()}" for r in OUT_OF_RANGE]
)
def test_hyperparameters_out_of_range_are_refused(
    tmp_path: Path, key: str, vtype: int, value: bytes, message: str
) -> None:
    src = write_tiny_gguf(tmp_path, hidden=32, heads=2, head_dim=16, ffn=64, vocab=40)
    path = tmp_path / "bad.gguf"
    path.write_bytes(_with_kv(src.read_bytes(), key, vtype, value))
    with pytest.raises(ModelSourceError) as err:
        read_gguf(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_zero_kv_heads_in_a_per_layer_array_is_a_model_layer_without_attention(tmp_path: Path) -> None:
    """Per-layer arrays may hold 0 (a layer without KV); only negatives or all zeros are refused."""
    spec = read_gguf(write_tiny_gguf(tmp_path, hidden=32, heads=2, head_dim=16, kv_heads=[0, 2], ffn=64, vocab=40))
    assert spec.arch.kv_heads_per_layer == (0, 2)


def test_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """`estimate ./fifo.gguf` hung forever in open() (a FIFO without a writer); now it is named and refused."""
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(
        ModelSourceError, match=r"fifo\.gguf: is a FIFO \(named pipe\); a GGUF model file must be a regular"
    ):
        read_gguf(fifo)
    assert time.perf_counter() - t0 < 1.0


def test_tensor_count_over_the_limit_is_refused_before_reading_them(tmp_path: Path) -> None:
    """65,537 minimal tensor infos (2.2 MB): refused from the count, before one is read (1M took 9.3 s)."""
    n = MAX_TENSORS + 1
    data = header(n, 1) + ARCH_KV + tensor_info("t", [32]) * n + b"\0" * 64
    path = tmp_path / "many.gguf"
    path.write_bytes(data)
    t0 = time.perf_counter()
    msg, peak = refused_with_peak(path)
    assert f"{n} tensors (more than {MAX_TENSORS}, the limit for a real model header)" in msg
    assert time.perf_counter() - t0 < 1.0 and peak < 8 << 20


def test_many_kv_arrays_decode_within_a_budget(tmp_path: Path) -> None:
    """4,000 KV arrays of 4,096 u8 values (16 MB): before, every one became a Python list (the issue's 270 MB
    file with 65k such arrays took 2.4 GB); now past 65,536 decoded values they are skipped."""
    n_kv = 4000
    kvs = b"".join(gguf_str(f"k{i}") + struct.pack("<IIQ", 9, 0, 4096) + bytes(4096) for i in range(n_kv))
    path = tmp_path / "arrays.gguf"
    path.write_bytes(header(0, n_kv) + kvs + b"\0" * 64)
    msg, peak = refused_with_peak(path)  # no general.architecture: parsed whole, then refused
    assert "no 'general.architecture' key" in msg
    assert peak < 24 << 20, peak  # the 16 MB header bytes once, plus a budget of decoded values (131 MB before)


def test_kv_count_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.gguf"
    path.write_bytes(header(0, 4097) + kv_u32("k", 1) * 4097)
    msg, _ = refused_with_peak(path)
    assert "4097 key/value pairs (more than 4096, the limit for a real model header)" in msg


def test_header_larger_than_the_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A 100 MB string value: the header would pass MAX_HEADER_BYTES (64 MiB), so the reader stops with a
    message naming the limit after reading the first 2 MiB (the file is sparse: no disk is spent)."""
    path = tmp_path / "big.gguf"
    with open(path, "wb") as f:
        f.write(header(0, 1) + gguf_str("k") + struct.pack("<IQ", 8, 100 << 20))
        f.truncate(110 << 20)
    msg, peak = refused_with_peak(path)
    assert "GGUF header is larger than 64 MiB (the limit for a real model header)" in msg
    assert peak < 8 << 20


_SHRINK_CHILD = r"""
import os, sys
import planner.sources.gguf_file as g
path = sys.argv[1]
real = g.parse_gguf_header
def parse_then_shrink(*a, **k):
    # the file loses its tail between the first read and the next: what a copy or download being
    # replaced does to a reader
    os.truncate(path, 1 << 20)
    return real(*a, **k)
g.parse_gguf_header = parse_then_shrink
try:
    g.read_gguf(path)
except g.ModelSourceError as e:
    print("refused:", e)
"""


def test_file_that_shrinks_while_read_gives_an_error_not_sigbus(tmp_path: Path) -> None:
    """A real truncation in the middle of reading (5 of 5 runs died with SIGBUS from the mmap before).
    The header holds a 3 MB string so it needs a second read past the first 2 MiB; a child process runs it
    so a SIGBUS would show as its exit status instead of killing the test run."""
    path = tmp_path / "shrinking.gguf"
    path.write_bytes(header(0, 1) + gguf_str("k") + struct.pack("<I", 8) + gguf_str("x" * (3 << 20)) + b"\0" * 64)
    proc = subprocess.run(
        [sys.executable, "-c", _SHRINK_CHILD, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert "refused:" in proc.stdout and "shrank while being read" in proc.stdout, proc.stdout


def test_tensor_limit_counts_every_split_part(tmp_path: Path) -> None:
    """Each of two parts holds 40,000 tensor infos, under the limit alone; the model's 80,000 are refused as
    soon as the second part is read (9,999 parts of 65,536 each were accepted before)."""
    n = 40_000
    for i in (1, 2):
        data = header(n, 1) + ARCH_KV + b"".join(tensor_info(f"p{i}.{j:05d}", [32]) for j in range(n))
        (tmp_path / f"m-0000{i}-of-00002.gguf").write_bytes(data + b"\0" * 256)
    with pytest.raises(ModelSourceError, match=r"more than 65536 tensors in the first 2 of 2 parts"):
        read_gguf(tmp_path / "m-00001-of-00002.gguf")
