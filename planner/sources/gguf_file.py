"""GGUF model files: a bounded, streaming header reader and the mapping from its keys to ModelSpec.

Why not `gguf.GGUFReader`: it materialises every array (a 262k-token vocabulary becomes a quarter
million numpy views) and takes ~30 s on the Gemma 3 270M file. This reader walks the header in one
pass over a prefix of the file (read with pread, or fetched from the Hub with ranges), keeps small
values, and only *skips* big arrays: fixed-size element arrays by `count x size`, string arrays by
hopping over their lengths.
Constants (magic, value types, tensor types, block sizes, key names) come from the gguf package so
there is one source of truth.

Format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md, llama.cpp `ggml/src/gguf.cpp`):
magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | KV pairs | tensor infos | pad to alignment |
tensor data. A KV pair is `string key | u32 value type | value`; strings are `u64 length | bytes`;
arrays are `u32 element type | u64 count | elements`. A tensor info is `string name | u32 n_dims |
u64 ne[n_dims] | u32 ggml type | u64 offset (relative to the data section)`.

Every malformed input (wrong magic, unsupported version, truncation, counts larger than the file,
unknown types, offsets past the end, overflowing shapes) raises ModelSourceError naming the file and
the problem; nothing allocates more than the header's real size.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import ModelSourceError, PlannerError, shown
from planner.io import open_regular_file
from planner.model.arch import ExpertSpec, ModelArch, ModelSpec, ModelWeights, Source, TensorInfo
from planner.model.layout import ENCODER_ARCHS

GGML_MAX_DIMS = 4  # ggml.h: GGML_MAX_DIMS
_INT64_MAX = 2**63 - 1  # gguf.cpp rejects shapes whose element count overflows int64
_DECODE_ARRAY_MAX = 4096  # arrays up to this many elements keep their values (per-layer arrays ≤ 512)
_DECODE_STRING_MAX = 1 << 20  # longer string values (a tokenizer.json blob) are skipped, not decoded
# What one header may decode in all: real headers decode a few per-layer arrays (≤ 512 values each) and a
# chat template (tens of KiB). Past these budgets values are skipped, so 65k KV arrays of 4096 values
# (a 270 MB file that took 2.4 GB) cost no more than one.
_DECODE_VALUES_TOTAL = 1 << 16
_DECODE_STRING_BYTES_TOTAL = 8 << 20
# Real headers have 30-70 keys (gguf-py's Keys names ~200 in all); 4096 is 20x that.
_MAX_KV = 4096
# Tensors: a merged-expert MoE is ~20 per layer (DeepSeek V3, 61 layers: ~1,100; Llama 4 Maverick fewer);
# unmerged experts, as old Mixtral files had, would give DeepSeek V3 61 x 256 x 3 = 46,848. 65,536 covers
# that; each info costs ~10 µs and ~450 B to read (1M of them took 9.3 s and 455 MB).
MAX_TENSORS = 1 << 16
# The header bytes read at most, local or from the Hub. The largest real header we know: Gemma 3's
# 262,144-token vocabulary (tokens + scores + types) gives 6,525,112 bytes (gemma-3-270m Q4_K_M, measured);
# 64 MiB is 10x that, room for a GGUF that embeds a whole tokenizer.json (tens of MB) besides.
MAX_HEADER_BYTES = 64 << 20

# Value types as gguf.GGUFValueType numbers, fixed by the spec. Sizes of the fixed-width ones:
_VT_UINT8, _VT_INT8, _VT_UINT16, _VT_INT16, _VT_UINT32, _VT_INT32 = 0, 1, 2, 3, 4, 5
_VT_FLOAT32, _VT_BOOL, _VT_STRING, _VT_ARRAY, _VT_UINT64, _VT_INT64, _VT_FLOAT64 = 6, 7, 8, 9, 10, 11, 12
_SCALAR_FMT = {
    _VT_UINT8: "B",
    _VT_INT8: "b",
    _VT_UINT16: "H",
    _VT_INT16: "h",
    _VT_UINT32: "I",
    _VT_INT32: "i",
    _VT_FLOAT32: "f",
    _VT_BOOL: "?",
    _VT_UINT64: "Q",
    _VT_INT64: "q",
    _VT_FLOAT64: "d",
}

_ARCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # llama, gemma3, qwen2moe, gpt-oss, jina-bert-v2
_SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

# llama.cpp `llama_hparams::set_swa_pattern(n)`: layer il uses SWA iff il % n < n - 1 (n = 0: all layers).
# Periods hard-coded per architecture in src/llama-model.cpp (load_hparams): gemma2 alternates (2),
# gemma3 / gemma-embedding are 5 local : 1 global (6), cohere2 3 : 1 (4).
_SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "gemma-embedding": 6, "cohere2": 4}


class _NeedMore(Exception):
    """Internal: the buffer is a prefix of the file and parsing needs bytes up to `needed`."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


@dataclass(frozen=True)
class SkippedValue:
    """A header value too big to keep (a vocabulary, a tokenizer blob): its kind and element count."""

    kind: str  # "array[STRING]", "array[FLOAT32]", "string" ...
    count: int


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data: KV pairs (small values decoded) and tensor infos."""

    version: int
    kv: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    tensor_offsets: tuple[int, ...]  # relative to data_offset, in tensor order
    alignment: int
    header_bytes: int  # end of the tensor infos
    data_offset: int  # header_bytes padded to alignment

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)


@functools.lru_cache(maxsize=1)
def _type_tables() -> tuple[dict[int, str], dict[int, tuple[int, int]], dict[int, str]]:
    from planner.gguf_constants import gguf_constants  # the tables only: no numpy

    gguf = gguf_constants()

    value_names = {int(v): v.name for v in gguf.GGUFValueType}
    quant_sizes = {int(t): (int(b), int(s)) for t, (b, s) in gguf.GGML_QUANT_SIZES.items()}
    type_names = {int(t): t.name for t in gguf.GGMLQuantizationType}
    return value_names, quant_sizes, type_names


class _Parser:
    def __init__(self, buf: Any, *, file_size: int, label: str, endian: str) -> None:
        self.buf = buf
        self.end = len(buf)
        self.file_size = file_size
        self.label = label
        self.e = endian
        self.off = 0
        self.where = "header"
        self.values_left = _DECODE_VALUES_TOTAL
        self.string_bytes_left = _DECODE_STRING_BYTES_TOTAL
        self._u32 = struct.Struct(endian + "I").unpack_from
        self._u64 = struct.Struct(endian + "Q").unpack_from
        self.value_names, self.quant_sizes, self.type_names = _type_tables()

    # --- errors ---------------------------------------------------------------------------------
    def fail(self, problem: str) -> ModelSourceError:
        return ModelSourceError(f"{self.label}: {problem} (in {self.where}, byte {self.off})")

    def need(self, n: int) -> None:
        """Make sure n bytes from self.off are readable."""
        stop = self.off + n
        if stop <= self.end:
            return
        if self.end < self.file_size and stop <= self.file_size:
            raise _NeedMore(stop)
        raise self.fail(f"truncated GGUF: needs {stop - self.file_size} byte(s) past the end of the file")

    def plausible(self, count: int, min_size: int, what: str) -> None:
        """Reject counts the rest of the file cannot hold (before looping or allocating)."""
        left = self.file_size - self.off
        if count * min_size > left:
            raise self.fail(f"{what} {count} cannot fit in the {max(left, 0)} byte(s) left in the file")

    # --- primitives -----------------------------------------------------------------------------
    def u32(self) -> int:
        self.need(4)
        (v,) = self._u32(self.buf, self.off)
        self.off += 4
        return int(v)

    def u64(self) -> int:
        self.need(8)
        (v,) = self._u64(self.buf, self.off)
        self.off += 8
        return int(v)

    def string(self, limit: int | None = None) -> str | SkippedValue:
        n = self.u64()
        self.plausible(n, 1, "string length")
        self.need(n)
        start = self.off
        self.off += n
        if limit is not None and (n > limit or n > self.string_bytes_left):
            return SkippedValue("string", n)
        if limit is not None:
            self.string_bytes_left -= n
        return bytes(self.buf[start : start + n]).decode("utf-8", errors="replace")

    def key(self) -> str:
        s = self.string(limit=65536)
        if isinstance(s, SkippedValue):
            raise self.fail(f"key of {s.count} bytes")
        return s

    def scalar(self, vtype: int) -> Any:
        fmt = _SCALAR_FMT[vtype]
        size = struct.calcsize(fmt)
        self.need(size)
        (v,) = struct.unpack_from(self.e + fmt, self.buf, self.off)
        self.off += size
        return v

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR_FMT:
            return self.scalar(vtype)
        if vtype == _VT_STRING:
            return self.string(limit=_DECODE_STRING_MAX)
        if vtype == _VT_ARRAY:
            return self.array()
        raise self.fail(f"unknown value type {vtype}")

    def array(self) -> Any:
        etype = self.u32()
        count = self.u64()
        ename = self.value_names.get(etype, str(etype))
        if etype in _SCALAR_FMT:
            size = struct.calcsize(_SCALAR_FMT[etype])
            self.plausible(count, size, "array length")
            self.need(count * size)
            if count <= min(_DECODE_ARRAY_MAX, self.values_left):
                self.values_left -= count
                vals = list(struct.unpack_from(f"{self.e}{count}{_SCALAR_FMT[etype]}", self.buf, self.off))
                self.off += count * size
                return vals
            self.off += count * size
            return SkippedValue(f"array[{ename}]", count)
        if etype == _VT_STRING:
            self.plausible(count, 8, "array length")
            if count <= min(_DECODE_ARRAY_MAX, self.values_left):
                self.values_left -= count
                out: list[str] = []
                for _ in range(count):
                    s = self.string(limit=_DECODE_STRING_MAX)
                    out.append(s if isinstance(s, str) else "")
                return out
            self._skip_strings(count)
            return SkippedValue("array[STRING]", count)
        if etype == _VT_ARRAY:
            # llama.cpp's gguf.cpp does not read nested arrays either (gguf_get_arr_* has no such case).
            raise self.fail("nested arrays are not supported")
        raise self.fail(f"unknown array element type {etype}")

    def _skip_strings(self, count: int) -> None:
        """Hop over `count` length-prefixed strings without decoding them."""
        buf, end, u64 = self.buf, self.end, self._u64
        off = self.off
        for _ in range(count):
            if off + 8 > end:
                self.off = off
                self.need(8)
            (n,) = u64(buf, off)
            off += 8 + n
            if off > self.file_size:
                self.off = off - n
                raise self.fail(f"string of {n} bytes runs past the end of the file")
        self.off = off
        if off > end:  # the last string's body is past the buffer (only possible for a prefix buffer)
            raise _NeedMore(off)

    # --- the header -----------------------------------------------------------------------------
    def parse(self) -> GGUFHeader:
        self.off = 4  # magic checked by the caller
        version = self.u32()
        if version not in (2, 3):
            raise self.fail(
                f"unsupported GGUF version {version} (this reader handles 2 and 3; version 1 files are "
                "obsolete, convert them with a current llama.cpp)"
            )
        n_tensors = self.u64()
        n_kv = self.u64()
        # Smallest KV: 8-byte key length + 4-byte type + 1-byte value.
        self.plausible(n_kv, 13, "key/value count")
        # Smallest tensor info: 8-byte name length, 4 n_dims, 8 one dim, 4 type, 8 offset.
        self.plausible(n_tensors, 32, "tensor count")
        # Caps sized to real files (see _MAX_KV, MAX_TENSORS) keep hostile headers from filling memory.
        if n_kv > _MAX_KV:
            raise self.fail(f"{n_kv} key/value pairs (more than {_MAX_KV}, the limit for a real model header)")
        if n_tensors > MAX_TENSORS:
            raise self.fail(f"{n_tensors} tensors (more than {MAX_TENSORS}, the limit for a real model header)")

        kv: dict[str, Any] = {}
        for i in range(n_kv):
            self.where = f"key/value #{i}"
            k = self.key()
            self.where = f"key '{shown(k)}'"
            if k in kv:
                raise self.fail("duplicate key")
            kv[k] = self.value(self.u32())

        alignment = kv.get("general.alignment", 32)
        if (
            not isinstance(alignment, int)
            or isinstance(alignment, bool)
            or alignment <= 0
            or (alignment & (alignment - 1))
        ):
            self.where = "key 'general.alignment'"
            raise self.fail(f"alignment {alignment!r} is not a power of two")

        tensors: list[TensorInfo] = []
        offsets: list[int] = []
        names: set[str] = set()
        for i in range(n_tensors):
            self.where = f"tensor info #{i}"
            name = self.key()
            self.where = f"tensor '{shown(name)}'"
            if name in names:
                raise self.fail("duplicate tensor name")
            names.add(name)
            n_dims = self.u32()
            if n_dims == 0 or n_dims > GGML_MAX_DIMS:
                raise self.fail(f"{n_dims} dimensions (ggml allows 1 to {GGML_MAX_DIMS})")
            dims = [self.u64() for _ in range(n_dims)]
            n_el = 1
            for d in dims:
                if d > _INT64_MAX:
                    raise self.fail(f"dimension {d} overflows int64")
                n_el *= d
                if n_el > _INT64_MAX:
                    raise self.fail(f"shape {dims} overflows int64 elements")
            ttype = self.u32()
            if ttype not in self.quant_sizes or ttype not in self.type_names:
                raise self.fail(f"unknown or unsupported tensor type {ttype}")
            block, type_size = self.quant_sizes[ttype]
            if dims[0] % block:
                raise self.fail(
                    f"row length {dims[0]} is not a multiple of the {self.type_names[ttype]} block size {block}"
                )
            n_bytes = n_el // block * type_size
            offset = self.u64()
            if offset % alignment:
                raise self.fail(f"data offset {offset} is not aligned to {alignment}")
            tensors.append(TensorInfo(name=name, shape=tuple(dims), ggml_type=self.type_names[ttype], n_bytes=n_bytes))
            offsets.append(offset)

        self.where = "tensor data"
        header_bytes = self.off
        data_offset = (header_bytes + alignment - 1) // alignment * alignment
        for t, off in zip(tensors, offsets, strict=True):
            if data_offset + off + t.n_bytes > self.file_size:
                raise ModelSourceError(
                    f"{self.label}: tensor '{shown(t.name)}' ({t.n_bytes} bytes at data offset {off}) runs past "
                    f"the end of the file ({self.file_size} bytes): truncated or corrupt GGUF"
                )
        return GGUFHeader(
            version=version,
            kv=kv,
            tensors=tuple(tensors),
            tensor_offsets=tuple(offsets),
            alignment=alignment,
            header_bytes=header_bytes,
            data_offset=data_offset,
        )


def _endianness(buf: Any, label: str, file_size: int) -> str:
    from planner.gguf_constants import gguf_constants

    gguf = gguf_constants()

    if len(buf) < 8:
        if file_size < 8:
            raise ModelSourceError(f"{label}: not a GGUF file ({file_size} bytes, too short for a header)")
        raise _NeedMore(8)
    magic = struct.unpack_from("<I", buf, 0)[0]
    if magic != gguf.GGUF_MAGIC:
        raise ModelSourceError(f"{label}: not a GGUF file (magic {bytes(buf[0:4])!r}, expected b'GGUF')")
    version_le = struct.unpack_from("<I", buf, 4)[0]
    # A big-endian GGUF (s390x conversions) stores the version byte-swapped; the magic is bytes.
    if version_le & 0xFFFF == 0 and version_le != 0:
        return ">"
    return "<"


def parse_gguf_header(buf: Any, *, file_size: int | None = None, label: str = "GGUF") -> GGUFHeader:
    """Parse a GGUF header from `buf` (bytes, memoryview or mmap) holding the whole file or a prefix of it.

    `file_size` is the size of the whole file (defaults to len(buf)). When `buf` is a prefix and more
    bytes are needed, raises `NeedMoreBytes` with the byte count required; otherwise ModelSourceError.
    """
    size = len(buf) if file_size is None else file_size
    try:
        endian = _endianness(buf, label, size)
        return _Parser(buf, file_size=size, label=label, endian=endian).parse()
    except _NeedMore as e:
        raise NeedMoreBytes(e.needed) from None
    except (struct.error, OverflowError, MemoryError) as e:  # defensive: should be unreachable
        raise ModelSourceError(f"{label}: corrupt GGUF header ({e})") from None


class NeedMoreBytes(Exception):
    """The prefix given to parse_gguf_header ends inside the header; `needed` bytes are required."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"need {needed} bytes")
        self.needed = needed


def read_header_file(path: Path) -> tuple[GGUFHeader, int]:
    """Parse the header of a local GGUF file; returns the header and the file size.

    Only a regular file is opened (a FIFO would block forever). The header is read with pread into a
    growing buffer (at most MAX_HEADER_BYTES), not mapped: a mapped file that shrinks while it is parsed
    kills the process with SIGBUS, a short read is an error like any other."""
    label = str(path)
    try:
        fd = open_regular_file(Path(path), "GGUF model file")
    except PlannerError as e:
        raise ModelSourceError(str(e).rstrip(".")) from None
    try:
        size = os.fstat(fd).st_size
        if size < 8:
            raise ModelSourceError(f"{label}: not a GGUF file ({size} bytes, too short for a header)")

        def fetch(start: int, stop: int) -> bytes:
            parts: list[bytes] = []
            at = start
            while at < stop:
                chunk = os.pread(fd, stop - at, at)
                if not chunk:
                    raise ModelSourceError(
                        f"{label}: the file ended at byte {at} while its header was read ({size} bytes when "
                        "opened): it shrank while being read"
                    )
                parts.append(chunk)
                at += len(chunk)
            return b"".join(parts)

        header, _ = parse_header_prefix(fetch, file_size=size, label=label, max_bytes=MAX_HEADER_BYTES)
        return header, size
    except OSError as e:
        raise ModelSourceError(f"{label}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)


# --- header -> ModelSpec ------------------------------------------------------------------------


def file_type_name(value: Any) -> str | None:
    """llama.cpp spelling of `general.file_type`: MOSTLY_Q4_K_M -> Q4_K_M, ALL_F32 -> F32."""
    from planner.gguf_constants import gguf_constants

    gguf = gguf_constants()

    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        ft = gguf.LlamaFileType(value)
    except ValueError:
        return None
    if ft.name == "GUESSED":
        return None
    return str(ft.name).removeprefix("MOSTLY_").removeprefix("ALL_")


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    return None


def _int_or_list(v: Any) -> tuple[int | None, list[int] | None]:
    """A key that may be one integer or an integer per layer."""
    if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return max(v), list(v)
    return _int(v), None


def swa_layers_for(arch: str, n_layers: int, pattern: Any) -> tuple[bool, ...]:
    """Which layers use the sliding window, following llama.cpp (see _SWA_PERIOD)."""
    if isinstance(pattern, list) and len(pattern) == n_layers:
        return tuple(bool(x) for x in pattern)
    period = _int(pattern)
    if period is None:
        period = _SWA_PERIOD.get(arch, 0)
    return tuple(period == 0 or (i % period) < (period - 1) for i in range(n_layers))


def spec_from_header(
    header: GGUFHeader,
    *,
    ref: str,
    source: Source,
    file_bytes: int,
    name: str | None = None,
    extra_tensors: Sequence[TensorInfo] = (),
    label: str = "GGUF",
) -> ModelSpec:
    """Build a ModelSpec from a parsed header (plus tensors of further split parts)."""
    kv = header.kv

    def need_key(key: str) -> int:
        v, _ = _int_or_list(kv.get(key))
        if v is None:
            raise ModelSourceError(f"{label}: missing or non-integer key '{key}' (not a model GGUF?)")
        return v

    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelSourceError(f"{label}: no 'general.architecture' key (not a model GGUF?)")
    if not _ARCH_RE.fullmatch(arch):  # it becomes part of every key name and of messages
        raise ModelSourceError(f"{label}: 'general.architecture' is '{shown(arch)}', not an architecture name")
    p = arch + "."
    _check_bounds(kv, p, label)
    n_layers = need_key(p + "block_count")
    hidden = need_key(p + "embedding_length")
    n_heads, _ = _int_or_list(kv.get(p + "attention.head_count"))
    if not n_heads:
        raise ModelSourceError(f"{label}: missing key '{p}attention.head_count'")
    if n_layers <= 0 or n_layers > 100_000:
        raise ModelSourceError(f"{label}: implausible block_count {n_layers}")
    n_kv, kv_list = _int_or_list(kv.get(p + "attention.head_count_kv"))
    if n_kv is None:
        n_kv = n_heads
    if kv_list is not None and len(kv_list) != n_layers:
        raise ModelSourceError(
            f"{label}: '{p}attention.head_count_kv' has {len(kv_list)} entries for {n_layers} layers"
        )
    head_k = _int(kv.get(p + "attention.key_length")) or hidden // n_heads
    head_v = _int(kv.get(p + "attention.value_length")) or head_k
    if head_k < 1:
        raise ModelSourceError(
            f"{label}: no '{p}attention.key_length' and embedding_length {hidden} / head_count {n_heads} "
            "gives heads of 0 dimensions"
        )
    ffn, _ = _int_or_list(kv.get(p + "feed_forward_length"))

    tensors = header.tensors + tuple(extra_tensors)
    by_name = {t.name: t for t in tensors}

    vocab = _array_len(kv.get("tokenizer.ggml.tokens")) or _int(kv.get(p + "vocab_size"))
    if not vocab and "token_embd.weight" in by_name:
        vocab = by_name["token_embd.weight"].shape[-1]

    window = _int(kv.get(p + "attention.sliding_window")) or None
    swa: tuple[bool, ...] | None = None
    if window:
        swa = swa_layers_for(arch, n_layers, kv.get(p + "attention.sliding_window_pattern"))
        if not any(swa):
            window, swa = None, None

    experts: ExpertSpec | None = None
    n_exp = _int(kv.get(p + "expert_count")) or 0
    if n_exp > 0:
        exp_ffn = _int(kv.get(p + "expert_feed_forward_length")) or ffn or 0
        shared_ffn = _int(kv.get(p + "expert_shared_feed_forward_length")) or 0
        shared = _int(kv.get(p + "expert_shared_count")) or (1 if shared_ffn else 0)
        experts = ExpertSpec(
            count=n_exp,
            active=_int(kv.get(p + "expert_used_count")) or 1,
            ffn_size=exp_ffn,
            shared=shared,
            shared_ffn_size=shared_ffn or (exp_ffn if shared else 0),
        )

    general_name = kv.get("general.name")
    arch_obj = ModelArch(
        # shown(): the name is printed in tables and reports; a file's control characters must not reach a terminal
        name=name or shown(general_name if isinstance(general_name, str) and general_name else Path(ref).stem, 200),
        architecture=arch,
        n_layers=n_layers,
        hidden_size=hidden,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        ffn_size=ffn or 0,
        vocab_size=vocab or 0,
        context_trained=_int(kv.get(p + "context_length")) or 0,
        source=source,
        sliding_window=window,
        swa_layers=swa,
        kv_heads_per_layer=tuple(kv_list) if kv_list is not None else None,
        experts=experts,
        n_dense_leading=_int(kv.get(p + "leading_dense_block_count")) or 0,
        tied_embeddings="output.weight" not in by_name,
        is_embedding=(p + "pooling_type") in kv or arch in ENCODER_ARCHS,
        params_total=sum(t.n_elements for t in tensors),
    )
    weights = ModelWeights(
        tensors=tensors,
        source=source,
        exact=True,
        file_type=file_type_name(kv.get("general.file_type")),
        file_bytes=file_bytes,
    )
    return ModelSpec(ref=ref, arch=arch_obj, weights=weights, format="gguf")


# Ranges of the hyper-parameters the estimator multiplies, per key (after the "<arch>." prefix): a value
# outside them is a corrupt or hostile file, not a model (an attention.key_length of -2^63 became a
# MemoryError in the memory bar; zero or negative head counts gave "KV -0.00 GiB ... FITS"). Upper bounds
# are ~10-100x the largest real models: hidden 16,384 (Llama 3.1 405B), head dims ≤ 576 (DeepSeek MLA),
# 262,144-token vocabularies (Gemma 3), 10M-token contexts (Llama 4 Scout), 256 experts (DeepSeek V3).
# (minimum, maximum); per-layer arrays may hold 0 (a layer without attention) but no negatives.
_KEY_BOUNDS: dict[str, tuple[int, int]] = {
    "block_count": (1, 1 << 16),
    "embedding_length": (1, 1 << 20),
    "attention.head_count": (1, 1 << 16),
    "attention.head_count_kv": (1, 1 << 16),
    "attention.key_length": (1, 1 << 16),
    "attention.value_length": (1, 1 << 16),
    "feed_forward_length": (0, 1 << 24),
    "vocab_size": (0, 1 << 24),
    "context_length": (0, 1 << 32),
    "attention.sliding_window": (0, 1 << 32),
    "expert_count": (0, 1 << 16),
    "expert_used_count": (0, 1 << 16),
    "expert_feed_forward_length": (0, 1 << 24),
    "expert_shared_feed_forward_length": (0, 1 << 24),
    "expert_shared_count": (0, 1 << 16),
    "leading_dense_block_count": (0, 1 << 16),
}


def _check_bounds(kv: dict[str, Any], prefix: str, label: str) -> None:
    """Refuse hyper-parameters outside _KEY_BOUNDS with a one-line error naming the key and the range."""
    for suffix, (lo, hi) in _KEY_BOUNDS.items():
        key = prefix + suffix
        v = kv.get(key)
        if isinstance(v, list):
            ints = [x for x in v if isinstance(x, int)]
            bad = next((x for x in ints if not 0 <= x <= hi), None)
            if bad is None and ints and max(ints) < lo:
                bad = max(ints)
        else:
            bad = v if isinstance(v, int) and not isinstance(v, bool) and not lo <= v <= hi else None
        if bad is not None:
            raise ModelSourceError(f"{label}: '{key}' is {bad}; a model has {lo} to {hi}: corrupt or not a model GGUF")


def _array_len(v: Any) -> int | None:
    if isinstance(v, SkippedValue):
        return v.count
    if isinstance(v, list):
        return len(v)
    return None


# --- split files ----------------------------------------------------------------------------------


def split_parts(filename: str) -> tuple[str, int, int] | None:
    """('prefix', part_no, part_count) for llama.cpp gguf-split names like x-00001-of-00003.gguf."""
    m = _SPLIT_RE.match(filename)
    if not m:
        return None
    return m.group("prefix"), int(m.group("no")), int(m.group("count"))


def split_name(prefix: str, no: int, count: int) -> str:
    return f"{prefix}-{no:05d}-of-{count:05d}.gguf"


def merge_split_headers(
    headers: Sequence[tuple[GGUFHeader, int]], label: str
) -> tuple[GGUFHeader, tuple[TensorInfo, ...], int]:
    """First part's header, the tensors of the other parts, the summed file sizes."""
    first = headers[0][0]
    extra: list[TensorInfo] = []
    seen = {t.name for t in first.tensors}
    for h, _ in headers[1:]:
        for t in h.tensors:
            if t.name in seen:
                raise ModelSourceError(f"{label}: tensor '{shown(t.name)}' appears in more than one split part")
            seen.add(t.name)
            extra.append(t)
    return first, tuple(extra), sum(size for _, size in headers)


def read_gguf(path: str | Path, *, name: str | None = None) -> ModelSpec:
    """Read a local GGUF (or all parts of a split GGUF) header into a ModelSpec with exact tensor bytes."""
    p = Path(path).expanduser()
    parts = split_parts(p.name)
    if parts is None:
        header, size = read_header_file(p)
        headers = [(header, size)]
    else:
        prefix, _, count = parts
        if count < 1 or count > 9999:
            raise ModelSourceError(f"{p}: implausible split count {count}")
        paths = [p.with_name(split_name(prefix, i, count)) for i in range(1, count + 1)]
        missing = [q.name for q in paths if not q.exists()]
        if missing:
            raise ModelSourceError(
                f"{p}: split GGUF with {count} parts, missing {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}; put all parts in {p.parent}"
            )
        headers = []
        n_tensors = 0
        for q in paths:  # the tensor bound holds for the model, not per part: checked as each part is read
            headers.append(read_header_file(q))
            n_tensors += len(headers[-1][0].tensors)
            if n_tensors > MAX_TENSORS:
                raise ModelSourceError(
                    f"{p}: more than {MAX_TENSORS} tensors in the first {len(headers)} of {count} parts "
                    "(the limit for a real model)"
                )
        p = paths[0]
    first, extra, total = merge_split_headers(headers, str(p))
    source = Source("file", str(p))
    return spec_from_header(
        first, ref=str(path), source=source, file_bytes=total, name=name, extra_tensors=extra, label=str(p)
    )


Fetch = Callable[[int, int], bytes]  # (start, stop) -> bytes of that range


def parse_header_prefix(
    fetch: Fetch,
    *,
    file_size: int,
    label: str,
    first_bytes: int = 2 << 20,
    max_bytes: int = MAX_HEADER_BYTES,
) -> tuple[GGUFHeader, bytearray]:
    """Parse a header by fetching growing prefixes of a file: start at `first_bytes`, double (or jump to
    what the parser says it needs) up to `max_bytes`. Returns the header and the bytes used (not copied)."""
    have = bytearray()
    want = min(first_bytes, file_size)
    while True:
        if want > len(have):
            chunk = fetch(len(have), want)
            if len(chunk) != want - len(have):
                raise ModelSourceError(f"{label}: got {len(chunk)} bytes for a range of {want - len(have)}")
            have += chunk
            del chunk
        try:
            return parse_gguf_header(have, file_size=file_size, label=label), have
        except NeedMoreBytes as e:
            if len(have) >= max_bytes or e.needed > max_bytes:
                raise ModelSourceError(
                    f"{label}: GGUF header is larger than {max_bytes >> 20} MiB (the limit for a real model "
                    "header); refusing to read further"
                ) from None
            want = min(max(2 * len(have), e.needed + (1 << 20)), max_bytes, file_size)
