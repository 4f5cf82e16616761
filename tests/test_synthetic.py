"""Synthetic GGUFs: the file holds exactly the tensors the estimator plans with, finite random weights, a
tokenizer llama.cpp accepts; llama.cpp loads it and allocates what it allocates for the real model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bench_fixtures import require_tools, tiny_llama_arch

from planner.errors import PlannerError
from planner.measure.synthetic import SPECIAL_TOKENS, vocabulary, write_synthetic_gguf
from planner.model.quant_scheme import weights_for
from planner.sources.gguf_file import read_gguf


@pytest.mark.parametrize(
    ("n_vocab", "n_byte_tokens"),
    [
        (512, 256),  # room for the 256 byte tokens <0x00>..<0xFF> after <unk> <s> </s>
        (262144, 256),  # Gemma 3's vocabulary size (catalog/models.yaml gemma-3-270m)
        (100, 0),  # too small for byte tokens: specials + filler only
    ],
)
def test_vocabulary_has_exactly_n_entries(n_vocab: int, n_byte_tokens: int) -> None:
    from gguf import TokenType

    tokens, scores, types = vocabulary(n_vocab)
    assert len(tokens) == len(scores) == len(types) == n_vocab
    assert len(set(tokens)) == n_vocab  # llama.cpp maps text -> id: duplicates would collide
    assert tokens[:3] == list(SPECIAL_TOKENS)
    assert types.count(int(TokenType.BYTE)) == n_byte_tokens
    if n_byte_tokens:
        assert tokens[3 + 0x0A] == "<0x0A>"  # llama.cpp finds the newline token of an SPM vocab by this name


def test_vocabulary_too_small_is_an_error() -> None:
    with pytest.raises(PlannerError, match="at least 4 tokens"):
        vocabulary(3)


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q8_0", "Q6_K", "F16", "Q2_K", "IQ4_XS"])
def test_file_holds_the_planned_tensors_exactly(tmp_path: Path, quant: str) -> None:
    arch = tiny_llama_arch()
    path = write_synthetic_gguf(arch, quant, tmp_path / f"tiny-{quant}.gguf")
    planned = weights_for(arch, quant)
    spec = read_gguf(path)
    assert spec.weights is not None
    got = {t.name: (t.shape, t.ggml_type, t.n_bytes) for t in spec.weights.tensors}
    want = {t.name: (t.shape, t.ggml_type, t.n_bytes) for t in planned.tensors}
    assert got == want
    assert spec.arch.vocab_size == 512
    assert spec.arch.n_kv_heads == 2 and spec.arch.head_dim_k == 64
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temp file left


@pytest.mark.parametrize("ggml_type", ["Q4_K", "Q6_K", "Q8_0", "Q2_K", "Q3_K", "Q5_K", "Q4_0", "F16"])
def test_random_weights_are_finite(ggml_type: str) -> None:
    """Scale fields are set to small finite f16 values, so dequantized weights are finite and non-trivial."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    from planner.measure.synthetic import _pool

    qt = GGMLQuantizationType[ggml_type]
    raw = _pool(ggml_type, np.random.default_rng(0))
    _block, type_size = GGML_QUANT_SIZES[qt]
    rows = raw[: 64 * type_size].reshape(1, 64 * type_size) if ggml_type != "F16" else raw[:512].view(np.float16)
    values = dequantize(rows, qt) if ggml_type != "F16" else rows.astype(np.float32)
    assert np.isfinite(values).all()
    assert 0 < float(np.abs(values).max()) < 1.0  # random, small (like trained weights), not all zero


def test_encoder_models_are_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    bert = replace(tiny_llama_arch(), architecture="bert", is_embedding=True)
    with pytest.raises(PlannerError, match="decoder models"):
        write_synthetic_gguf(bert, "Q8_0", tmp_path / "x.gguf")


@pytest.mark.engines
def test_tiny_synthetic_runs_in_llama_server(tmp_path: Path) -> None:
    require_tools()
    from planner.measure.bench_llama import LlamaBenchConfig, run_llama_bench

    arch = tiny_llama_arch()
    # Q8_0: no CPU_REPACK copy on this CPU, so the model buffer is the file's tensors (see the report for Q4_K)
    path = write_synthetic_gguf(arch, "Q8_0", tmp_path / "tiny.gguf")
    from planner.catalog import load_catalog
    from planner.estimate.devices import host_device
    from planner.estimate.estimate import estimate
    from planner.estimate.types import RunConfig

    res = run_llama_bench(path, LlamaBenchConfig(ctx=256, n_prompt=16, n_gen=4, repetitions=1, warmup=False))
    # llama.cpp's model buffer is what the estimator predicts for this file and what weights_for planned,
    # to the 2-decimal MiB rounding of the log line (5243 B)
    est = estimate(read_gguf(path), RunConfig(ctx=256), [], host_device(load_catalog(), None, None))
    assert abs(res.weights_bytes - est.memory.weights_bytes) <= 5243
    assert abs(res.weights_bytes - weights_for(arch, "Q8_0").total_bytes) <= 5243
    # KV: 2 layers × 256 cells × 2 KV heads × (64 + 64) × 2 B (f16) = 256 KiB
    assert res.kv_cache_bytes == 2 * 256 * 2 * 128 * 2
    assert len(res.decode_tok_s) == 1 and res.llama_decode_tok_s  # decoded and llama-server timed it


@pytest.mark.engines
@pytest.mark.slow
def test_synthetic_gemma_allocates_like_the_real_file(tmp_path: Path, gemma_gguf_path: Path) -> None:
    """The synthetic gemma-3-270m Q4_K_M (catalog architecture, sparse) and the real PyPI GGUF get the same
    model, KV and compute buffers from llama-server: a plan can be checked before the download."""
    tools = require_tools()
    from planner.measure.server_memory import ServerLoad, measure_server_buffers
    from planner.measure.synthetic import synthetic_for_catalog

    path = synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp_path)
    load = ServerLoad(n_ctx=1024)
    synth, _ = measure_server_buffers(tools, path, load)
    real, _ = measure_server_buffers(tools, gemma_gguf_path, load)
    for kind in ("model", "KV", "compute", "output"):
        assert synth.total(kind) == real.total(kind), kind
    assert synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp_path) == path  # cached, not rewritten


# ------------------------------------------------------------------------ sparse files, disk room, cache cap


@pytest.mark.slow  # 5.4 s on a loaded 2-core machine: writing the 262k-token vocabulary
def test_catalog_synthetic_is_sparse(tmp_path: Path) -> None:
    """Issue 15: `bench --synthetic llama-3-8b` wrote 4.9 GB. The synthetic gemma-3-270m Q4_K_M is 253 MB of
    tensors; sparse, it takes the room of its header (measured 6.7 MB: the 262k-token vocabulary) and reads
    back with exactly the planned tensors."""
    from planner.measure.synthetic import allocated_bytes, holes_supported, synthetic_for_catalog

    if not holes_supported(tmp_path):
        pytest.skip(f"{tmp_path} does not keep holes")
    path = synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp_path)
    planned = weights_for(read_gguf(path).arch, "Q4_K_M")
    assert path.stat().st_size > planned.total_bytes  # the whole file is there for a reader ...
    assert allocated_bytes(path) < 16 * 2**20  # ... but the disk holds its header only
    spec = read_gguf(path)
    assert spec.weights is not None and spec.weights.total_bytes == planned.total_bytes


def _decode_cpu_s_per_token(path: Path, n_gen: int) -> tuple[dict[str, dict[str, int]], float]:
    """(llama.cpp's buffers, CPU seconds per decoded token) of one llama-server start on `path`: one thread, a
    warm-up request, then `n_gen` greedy tokens after a 16-token prompt, less the same request with 4 (so the
    prompt and the request's own cost cancel). CPU time of the server process, not wall time: the machine is
    shared, and other processes change the wall clock several-fold but a process's own CPU time much less. The
    kernel counts it in 10 ms ticks, so `n_gen` must make it many ticks (1024 tokens of the tiny model below:
    about 0.3-0.5 s; 64 were 2 or 3 ticks)."""
    import random

    import psutil

    from planner.measure.bench_llama import completion, n_vocab
    from planner.measure.server_memory import ServerLoad, started_server

    def cpu_s(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)

    load = ServerLoad(n_ctx=2048, n_threads=1, n_batch=256, n_ubatch=256)
    with started_server(require_tools(), path, load) as server:
        proc = psutil.Process(server.proc.pid)
        vocab = n_vocab(server.url)
        rng = random.Random(1)
        prompt = [rng.randrange(vocab) for _ in range(16)]
        completion(server.url, prompt, 4, cache_prompt=False, timeout_s=120)  # warm-up: every weight page touched
        spent = {}
        for n in (4, 4 + n_gen):
            t0 = cpu_s(proc)
            completion(server.url, prompt, n, cache_prompt=False, timeout_s=120)
            spent[n] = cpu_s(proc) - t0
        buffers = dict(server.buffers.by_device)
    return buffers, (spent[4 + n_gen] - spent[4]) / n_gen


@pytest.mark.engines
@pytest.mark.slow  # 17 s here: six llama-server starts, 1,028 tokens each
def test_sparse_and_dense_files_measure_the_same(tmp_path: Path) -> None:
    """Sparse (zero weights, holes) and dense (random weights) synthetic files of the same model: llama.cpp
    allocates the same model / KV / compute / output buffers, to the byte, and spends about the same CPU time
    per decoded token (on gemma-3-270m, measured by hand: 15.4 vs 17.6 ms, see the README; here a tiny model
    in a loose band, since CPU time too varies on a shared machine)."""
    require_tools()
    arch = tiny_llama_arch(vocab=4096, layers=8)
    files = {
        m: write_synthetic_gguf(arch, "Q4_K_M", tmp_path / f"{m}.gguf", sparse=m == "sparse")
        for m in ("sparse", "dense")
    }
    cpu_s: dict[str, list[float]] = {"sparse": [], "dense": []}
    buffers = {}
    for order in (("sparse", "dense"), ("dense", "sparse"), ("sparse", "dense")):  # interleaved
        for m in order:
            buffers[m], per_token = _decode_cpu_s_per_token(files[m], 1024)
            cpu_s[m].append(per_token)
    assert buffers["sparse"] == buffers["dense"] and buffers["sparse"]
    ratio = sorted(cpu_s["sparse"])[1] / sorted(cpu_s["dense"])[1]  # medians
    assert 0.5 < ratio < 2.0, cpu_s


def test_cache_cap_refuses_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The synthetic cache has a cap ($AGIPLAN_SYNTHETIC_CACHE_GIB): files there plus the new one must fit
    under it, or nothing is written and the message says what is held, the cap and how to raise it."""
    from planner.measure.synthetic import synthetic_for_catalog

    monkeypatch.setenv("AGIPLAN_SYNTHETIC_CACHE_GIB", "0.001")  # 1 MiB: under one header
    with pytest.raises(PlannerError) as err:
        synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp_path)
    assert str(err.value).startswith(f"the synthetic cache {tmp_path} holds 0.0 GiB in 0 file(s) and needs ")
    assert "over its cap of 0.0 GiB: delete files there or raise AGIPLAN_SYNTHETIC_CACHE_GIB." in str(err.value)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("AGIPLAN_SYNTHETIC_CACHE_GIB", "lots")
    with pytest.raises(PlannerError, match="AGIPLAN_SYNTHETIC_CACHE_GIB takes a positive number of GiB, got 'lots'"):
        synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp_path)


@pytest.mark.parametrize(("sparse", "free_gib"), [(True, 1.0), (False, 1.2)])
def test_too_little_free_disk_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sparse: bool, free_gib: float
) -> None:
    """The disk must keep 1 GiB free after the file: a sparse file needs its header's room, a dense one all of
    it (gemma-3-270m Q4_K_M: 0.24 GiB). A full disk cannot be made here without root, so the free-space
    figure is the one fake (shutil.disk_usage stands in for the filesystem)."""
    import shutil
    from collections import namedtuple

    from planner.measure import synthetic

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(2**40, 0, int(free_gib * 2**30)))
    monkeypatch.setattr(synthetic, "holes_supported", lambda _folder: sparse)
    arch = synthetic.synthetic_file("gemma-3-270m", "Q4_K_M").arch
    with pytest.raises(PlannerError, match=rf"^{tmp_path} has {free_gib:.1f} GiB free; the synthetic GGUF\(s\) need"):
        write_synthetic_gguf(arch, "Q4_K_M", tmp_path / "g.gguf", sparse=sparse)
    assert list(tmp_path.iterdir()) == []


def test_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    """A writer killed with SIGKILL leaves `.NAME.PID.tmp`; the next write removes it when PID is gone, and
    leaves a live writer's temp file alone."""
    import os
    import subprocess

    from planner.measure.synthetic import remove_stale_temp_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".m-Q4_K_M.synthetic.gguf.{int(dead.stdout)}.tmp"
    live = tmp_path / f".m-Q8_0.synthetic.gguf.{os.getpid()}.tmp"
    other = tmp_path / ".notes.123.tmp"  # not ours: never touched
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


@pytest.mark.slow
def test_sigterm_while_writing_leaves_no_temp_file(tmp_path: Path) -> None:
    """Issue 15: SIGTERM during the write left `.…synthetic.gguf.<pid>.tmp` (14.5 GB). The CLI's runner
    (planner/cli/_errors.run) turns SIGTERM into the Ctrl-C path: the temp file goes, exit 143. A dense
    file of a 4000-layer tiny model (4.7 GB of 1 MB tensors) is being written when the signal comes."""
    import signal
    import subprocess
    import time

    script = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from pathlib import Path\n"
        "from bench_fixtures import tiny_llama_arch\n"
        "from planner.cli._errors import run\n"
        "from planner.measure.synthetic import write_synthetic_gguf\n"
        f"run(lambda: write_synthetic_gguf(tiny_llama_arch(layers=4000), 'F16', Path({str(tmp_path)!r}) / 'big.gguf',"
        " sparse=False))\n"
    )
    root = Path(__file__).parent.parent
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            temps = list(tmp_path.glob(".big.gguf.*.tmp"))
            if temps and temps[0].stat().st_size > 50 * 2**20:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the write never got going")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert err == "interrupted\n"
    assert list(tmp_path.iterdir()) == []
