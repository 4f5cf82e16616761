"""Fuzzing the GGUF path (issue 6): thousands of generated hostile files, each must end in ModelSourceError
(a one-line message naming the file) or a valid spec — never another exception, a hang or a big allocation.

Complements tests/test_gguf_source.py (its HOSTILE table holds one hand-written file per reader check;
this file generates the bulk). Layers:
- bytes-level mutations of real tiny GGUFs (truncations, byte flips, 64-bit length/count fields replaced
  by absurd values such as 2^60, spliced and duplicated regions, wrong magic / version), read with
  `read_gguf` from a real file in process;
- headers built field by field with absurd counts (2^60 tensors, keys, array elements, string bytes,
  tensor elements) under tracemalloc, proving nothing proportional to the claim is allocated;
- structurally valid files with nonsense hyper-parameters (0 heads, 2^40 hidden size, ...) through the
  whole `resolve_model` → `estimate` path: a PlannerError or a finite estimate;
- a sample of all the above through the real console entry point (`python -m planner estimate FILE`)
  in a subprocess with a 1 GiB address-space limit: exit 2, one line `error: ...` on stderr, no traceback.

Case counts (max_examples) are explicit; hypothesis runs derandomized without a database so the suite
is reproducible. Per-case time is bounded (1 s) to catch runaway loops over claimed counts; that is a
hang detector, not a speed measurement.
"""

from __future__ import annotations

import math
import os
import random
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tiny_gguf
from gguf_bytes import ARCH_KV, gguf_str, header, refused_with_peak, tensor_info
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import ModelSourceError, PlannerError
from planner.sources.gguf_file import parse_gguf_header, read_gguf

REPO = Path(__file__).resolve().parent.parent
CASE_SECONDS = 1.0  # hang detector: the reader must never loop over a claimed count
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ABSURD_U64 = (2**60, 2**63 - 1, 2**64 - 1, 2**32, 2**31 + 1, 10**12, 0xFFFF_FFFF_0000_0000)

# ------------------------------------------------------------------------------------------ seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real tiny GGUFs of different shapes (written by gguf.GGUFWriter), as bytes."""
    d = tmp_path_factory.mktemp("seeds")
    small = dict(hidden=32, heads=2, head_dim=16, ffn=64, vocab=40)
    files = {
        "llama-q8": write_tiny_gguf(d, **small, filename="a.gguf"),  # type: ignore[arg-type]
        "gemma-swa-f16": write_tiny_gguf(
            d,
            "gemma3",
            **small,
            weight_type="F16",
            window=16,
            filename="b.gguf",  # type: ignore[arg-type]
        ),
        "moe-per-layer-kv": write_tiny_gguf(
            d,
            "qwen3moe",
            layers=2,
            hidden=32,
            heads=2,
            head_dim=16,
            kv_heads=[1, 2],
            ffn=64,
            vocab=40,
            experts=4,
            experts_used=2,
            expert_ffn=32,
            filename="c.gguf",
        ),
        # > 4096 tokens: the vocabulary is skipped (walked, not decoded), a different code path
        "big-vocab": write_tiny_gguf(d, hidden=32, heads=2, head_dim=16, ffn=64, vocab=5000, filename="d.gguf"),
    }
    return {k: p.read_bytes() for k, p in files.items()}


@pytest.fixture(scope="module")
def case_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One path reused by every generated case (hypothesis and function-scoped tmp_path do not mix)."""
    return tmp_path_factory.mktemp("fuzz") / "case.gguf"


def _header_end(data: bytes) -> int:
    return parse_gguf_header(data).data_offset


# GGUF value type -> bytes (gguf.md: UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, -, -, UINT64 ...)
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _u64_fields(data: bytes) -> list[int]:
    """Offsets of the header's 64-bit length / count fields (string lengths, array counts, tensor dims,
    offsets), found by walking the real header: where absurd values do the most damage."""
    offsets = [8, 16]  # n_tensors, n_kv
    off = 24
    hdr = parse_gguf_header(data)
    u32 = struct.Struct("<I").unpack_from
    u64 = struct.Struct("<Q").unpack_from

    def string() -> None:
        nonlocal off
        offsets.append(off)
        (n,) = u64(data, off)
        off += 8 + n

    for _ in range(len(hdr.kv)):
        string()
        (vt,) = u32(data, off)
        off += 4
        if vt == 8:
            string()
        elif vt == 9:
            (et,) = u32(data, off)
            offsets.append(off + 4)
            (count,) = u64(data, off + 4)
            off += 12
            if et == 8:
                for _ in range(count):
                    string()
            else:
                off += count * _SCALAR_BYTES[et]
        else:
            off += _SCALAR_BYTES[vt]
    for _ in range(len(hdr.tensors)):
        string()
        (nd,) = u32(data, off)
        off += 4
        offsets.extend(off + 8 * i for i in range(nd))
        off += 8 * nd + 4
        offsets.append(off)  # data offset
        off += 8
    assert off == hdr.header_bytes  # the walk agrees with the reader
    return offsets


def _check_one(path: Path, data: bytes) -> str:
    """Write `data`, read it; 'ok' or 'error'. Anything but ModelSourceError fails the test."""
    path.write_bytes(data)
    t0 = time.perf_counter()
    try:
        spec = read_gguf(path)
    except ModelSourceError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        assert str(path) in msg or path.name in msg, msg  # names the file
        outcome = "error"
    else:
        assert spec.weights is not None and spec.weights.exact
        assert spec.arch.n_layers > 0
        outcome = "ok"
    elapsed = time.perf_counter() - t0
    assert elapsed < CASE_SECONDS, f"{elapsed:.2f} s for one {len(data)}-byte file"
    return outcome


# ------------------------------------------------------------------------------------------ bulk


def mutate(rng: random.Random, seed: bytes, fields: list[int]) -> tuple[bytes, list[str]]:
    """`seed` with 1-4 mutations, mostly inside the header where the reader's checks are; and a log of them."""
    buf = bytearray(seed)
    end = _header_end(seed)
    log: list[str] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "absurd_u64", "absurd_u64", "u32_field", "truncate", "splice", "zero_run"])
        lim = min(end, len(buf))  # mutate the header part that is still there
        if lim < 16:
            break
        if kind == "flip":
            at, bit = rng.randrange(lim), rng.randrange(8)
            buf[at] ^= 1 << bit
            log.append(f"flip byte {at} bit {bit}")
        elif kind == "absurd_u64":
            at = rng.choice(fields)
            value = rng.choice(ABSURD_U64) if rng.random() < 0.7 else rng.getrandbits(64)
            if at + 8 <= len(buf):
                buf[at : at + 8] = struct.pack("<Q", value)
                log.append(f"u64 at {at} = {value}")
        elif kind == "u32_field":  # version, value types, n_dims, tensor types
            at, value = rng.randrange(4, lim - 4), rng.choice([0, 1, 4, 9, 13, 99, 2**31, 2**32 - 1])
            buf[at : at + 4] = struct.pack("<I", value)
            log.append(f"u32 at {at} = {value}")
        elif kind == "truncate":
            cut = rng.randrange(len(buf) + 1)
            del buf[cut:]
            log.append(f"truncate at {cut}")
        elif kind == "splice":  # a copy of one header region over another
            src, dst, n = rng.randrange(lim - 8), rng.randrange(lim - 8), rng.randint(1, 64)
            buf[dst : dst + n] = buf[src : src + n]
            log.append(f"copy {n} bytes {src} -> {dst}")
        else:
            at, n = rng.randrange(lim), rng.randint(1, 32)
            buf[at : at + n] = b"\0" * len(buf[at : at + n])
            log.append(f"zero {n} bytes at {at}")
    return bytes(buf), log


N_MUTATED = 3000


@pytest.mark.slow
def test_fuzz_mutated_files(seeds: dict[str, bytes], case_file: Path) -> None:
    """3,000 mutated real files through read_gguf: ModelSourceError (one line, names the file) or a spec.
    A seeded generator (reproducible: the failing case's index and mutations are in the message)."""
    outcomes = {"ok": 0, "error": 0}
    names = sorted(seeds)
    fields = {n: _u64_fields(seeds[n]) for n in names}
    for i in range(N_MUTATED):
        rng = random.Random(i)
        name = names[i % len(names)]
        data, log = mutate(rng, seeds[name], fields[name])
        try:
            outcomes[_check_one(case_file, data)] += 1
        except BaseException as e:
            raise AssertionError(f"case {i} (seed {name}, {'; '.join(log)}): {type(e).__name__}: {e}") from e
    assert outcomes["error"] > N_MUTATED // 2  # most mutations are caught by a reader check
    assert outcomes["ok"] > 10  # some (a flipped byte inside a key name) still parse


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_fuzz_every_prefix_length_and_magic(seeds: dict[str, bytes], case_file: Path, data: st.DataObject) -> None:
    """Truncated at any byte, or with a foreign magic / unsupported version: always ModelSourceError."""
    seed = seeds[data.draw(st.sampled_from(sorted(seeds)))]
    how = data.draw(st.sampled_from(["cut", "magic", "version"]))
    if how == "cut":
        buf = seed[: data.draw(st.integers(0, _header_end(seed) + 64))]
        outcome = _check_one(case_file, buf)
        assert outcome == "error" or len(buf) == len(seed)
    elif how == "magic":
        magic = data.draw(st.binary(min_size=4, max_size=4).filter(lambda b: b != b"GGUF"))
        case_file.write_bytes(magic + seed[4:])
        with pytest.raises(ModelSourceError, match=r"not a GGUF file \(magic"):
            read_gguf(case_file)
    else:
        version = data.draw(st.integers(0, 2**32 - 1).filter(lambda v: v not in (2, 3) and v & 0xFFFF))
        case_file.write_bytes(seed[:4] + struct.pack("<I", version) + seed[8:])
        with pytest.raises(ModelSourceError, match=rf"unsupported GGUF version {version} "):
            read_gguf(case_file)


# ------------------------------------------------------------------------------------------ absurd claims


def _big(n: int) -> bytes:
    return b"\0" * n


# Each claims 2^60 of something in a file of a few KiB. Expected: the reader's message (what it checks).
ABSURD_CLAIMS = [
    ("2^60 tensors", header(2**60, 0) + _big(4096), "tensor count 1152921504606846976 cannot fit"),
    ("2^60 keys", header(0, 2**60) + _big(4096), "key/value count 1152921504606846976 cannot fit"),
    ("key of 2^60 bytes", header(0, 1) + struct.pack("<Q", 2**60) + _big(4096), "string length"),
    (
        "u8 array of 2^60 elements",
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 0, 2**60) + _big(4096),
        "array length 1152921504606846976 cannot fit",
    ),
    (
        "f64 array of 2^61 elements (2^64 bytes: overflow in C)",
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 12, 2**61) + _big(4096),
        "array length",
    ),
    (
        "string array of 2^60 strings",
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 8, 2**60) + _big(4096),
        "array length",
    ),
    (
        "string value of 2^60 bytes",
        header(0, 1) + gguf_str("k") + struct.pack("<IQ", 8, 2**60) + _big(4096),
        "string length",
    ),
    (
        "6000 strings of 2^60 bytes each (skipped path)",
        header(0, 1) + gguf_str("k") + struct.pack("<IIQ", 9, 8, 6000) + struct.pack("<Q", 2**60) + _big(60_000),
        "runs past the end",
    ),
    (
        "tensor of 2^60 elements",
        header(1, 1) + ARCH_KV + tensor_info("t", [2**30, 2**30]) + _big(4096),
        "runs past the end",
    ),
    ("tensor of 2^62 x 4 elements", header(1, 1) + ARCH_KV + tensor_info("t", [2**62, 4]) + _big(4096), "overflows"),
    ("tensor dim 2^64-1", header(1, 1) + ARCH_KV + tensor_info("t", [2**64 - 1]) + _big(4096), "overflows int64"),
    ("offset 2^60", header(1, 1) + ARCH_KV + tensor_info("t", [32], offset=2**60) + _big(4096), "runs past the end"),
    ("n_dims 2^32-1", header(1, 1) + ARCH_KV + gguf_str("t") + struct.pack("<I", 2**32 - 1) + _big(4096), "dimensions"),
]


@pytest.mark.parametrize(("label", "data", "message"), ABSURD_CLAIMS, ids=[c[0] for c in ABSURD_CLAIMS])
def test_absurd_claims_do_not_allocate(tmp_path: Path, label: str, data: bytes, message: str) -> None:
    path = tmp_path / "absurd.gguf"
    path.write_bytes(data)
    msg, peak = refused_with_peak(path)
    assert message in msg
    assert "\n" not in msg and str(path) in msg
    # The file is at most ~100 KB; a claim of 2^60 elements must not turn into anything near that.
    assert peak < 4 * max(len(data), 1 << 20), f"{label}: peak {peak} bytes"


# ------------------------------------------------------------------------------------------ whole pipeline


@st.composite
def nonsense_model(draw: st.DrawFn) -> dict[str, object]:
    """Hyper-parameters for a structurally valid GGUF whose values make no sense."""
    odd = st.sampled_from([0, 1, 3, 7, 2**20, 2**31 - 1, 2**32 - 1])
    return {
        "extra_kv": draw(
            st.dictionaries(
                st.sampled_from(
                    [
                        "llama.block_count",
                        "llama.embedding_length",
                        "llama.attention.head_count",
                        "llama.attention.head_count_kv",
                        "llama.attention.key_length",
                        "llama.attention.value_length",
                        "llama.context_length",
                        "llama.feed_forward_length",
                        "llama.vocab_size",
                        "llama.expert_count",
                        "llama.expert_used_count",
                        "llama.attention.sliding_window",
                        "general.alignment",
                    ]
                ),
                odd,
                min_size=1,
                max_size=4,
            )
        ),
    }


def _nonsense_gguf(tmp: Path, extra_kv: dict[str, int]) -> Path:
    """A tiny real GGUF whose keys in `extra_kv` are replaced (the writer's own keys are dropped first)."""
    import gguf

    path = tmp / "nonsense.gguf"
    base = write_tiny_gguf(
        tmp, hidden=32, heads=2, head_dim=16, ffn=64, vocab=40, weight_type="F16", filename="base.gguf"
    )  # F16/F32 tensors copy over as plain numpy arrays
    reader = gguf.GGUFReader(str(base))
    w = gguf.GGUFWriter(str(path), "llama")
    for field in reader.fields.values():
        if field.name in extra_kv or field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(field.name, field.contents())
        else:
            w.add_key_value(field.name, field.contents(), vtype)
    for k, v in extra_kv.items():
        w.add_uint32(k, v)
    for t in reader.tensors:
        w.add_tensor(t.name, t.data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@settings(FUZZ, max_examples=150)
@given(params=nonsense_model())
def test_fuzz_nonsense_hyperparameters_through_estimate(
    tmp_path_factory: pytest.TempPathFactory, params: dict[str, dict[str, int]]
) -> None:
    """Valid structure, absurd values: resolve_model + estimate end in a PlannerError or a finite estimate."""
    from planner.catalog import load_catalog
    from planner.estimate.devices import gpu_devices, host_device
    from planner.estimate.estimate import estimate
    from planner.estimate.types import RunConfig
    from planner.sources.resolve import resolve_model

    path = _nonsense_gguf(tmp_path_factory.mktemp("nonsense"), params["extra_kv"])
    cat = load_catalog()
    t0 = time.perf_counter()
    try:
        spec = resolve_model(str(path))
        est = estimate(
            spec,
            RunConfig(engine="llama.cpp", ctx=4096, parallel=1),
            gpu_devices(cat, ["rtx-4090"]),
            host_device(cat, None, 64),
        )
    except PlannerError as e:
        assert str(e) and "Traceback" not in str(e)
    else:
        assert est.memory.total_bytes >= 0
        assert math.isfinite(est.speed.decode_tok_s) and est.speed.decode_tok_s >= 0
    assert time.perf_counter() - t0 < CASE_SECONDS * 5  # includes the first catalog load


# ------------------------------------------------------------------------------------------ the real CLI


def _limit_memory() -> None:  # runs in the child before exec
    one_gib = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (one_gib * 2, one_gib * 2))


def _cli(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGIPLAN_DEBUG": "0", **(env_extra or {})}
    env.pop("AGIPLAN_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "planner", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        preexec_fn=_limit_memory,
        check=False,
    )


def _cli_sample(seeds: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
    seed = seeds["llama-q8"]
    fields = _u64_fields(seed)
    yield "truncated in the header", seed[:100]
    yield "truncated in the data", seed[:-10]
    yield "wrong magic", b"GGML" + seed[4:]
    yield "version 1", seed[:4] + struct.pack("<I", 1) + seed[8:]
    yield "empty file", b""
    for at in (fields[1], fields[-1]):  # n_kv; the last tensor's data offset
        yield f"2^60 in the u64 at byte {at}", seed[:at] + struct.pack("<Q", 2**60) + seed[at + 8 :]
    # key 0 is general.architecture (name at bytes 32-51, value type at 52): a terminal escape and a
    # newline in its name, then an unknown value type, so the message quotes the name
    yield "non-printable key name", seed[:32] + b"\x1b[2J\n" + seed[37:52] + struct.pack("<I", 77) + seed[56:]
    for label, data, _ in (ABSURD_CLAIMS[0], ABSURD_CLAIMS[8]):
        yield label, data


@pytest.mark.slow
def test_cli_sample_exits_2_with_one_line(seeds: dict[str, bytes], tmp_path: Path) -> None:
    """A sample through `python -m planner estimate FILE` (2 GiB address-space limit): exit 2,
    exactly one line `error: <file>: ...` on stderr, nothing on stdout, no traceback."""
    n = 0
    for label, data in _cli_sample(seeds):
        path = tmp_path / f"case{n}.gguf"
        path.write_bytes(data)
        proc = _cli("estimate", str(path), env_extra={"AGIPLAN_CACHE_DIR": str(tmp_path / "cache")})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (label, proc.returncode, proc.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), (label, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == "", label
        assert "\x1b" not in proc.stderr, label  # escaped as the four characters \x1b
        n += 1
    assert n == 10


def test_cli_missing_and_directory(tmp_path: Path) -> None:
    for arg, message in ((str(tmp_path / "none.gguf"), "no such file"), (str(tmp_path), "is a directory")):
        proc = _cli("estimate", arg)
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: ") and message in proc.stderr
        assert proc.stderr.count("\n") == 1


def test_model_name_with_terminal_escapes_is_printed_escaped(tmp_path: Path) -> None:
    """general.name is shown in every table and report: control characters from the file arrive escaped."""
    path = write_tiny_gguf(tmp_path, name="evil\x1b[31m\nname\x07", filename="evil.gguf")
    assert read_gguf(path).arch.name == "evil\\x1b[31m\\nname\\x07"
    for fmt in ("table", "markdown", "json"):
        proc = _cli("estimate", str(path), "--format", fmt, env_extra={"AGIPLAN_CACHE_DIR": str(tmp_path / "c")})
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
        assert "evil\\x1b[31m" in proc.stdout or "evil\\\\x1b[31m" in proc.stdout  # JSON escapes the backslash
