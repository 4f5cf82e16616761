"""The estimator against the llama.cpp vendored in llama-cpp-python 0.3.36: load the real Gemma 3 270M GGUF in
process with each configuration and compare agiplan's prediction with llama.cpp's own 'buffer size' log lines.

The estimate's compute buffer follows llama-server of the pinned current llama.cpp (b11434), checked per buffer in
tests/test_estimate_vs_llama_tools.py: llama-server reserves logits for one output per slot where the library
reserves all n_ubatch rows, and b11434 adds an input branch. Weights, KV and the output buffer are the same in
both builds and are checked here against the vendored one.

llama.cpp prints sizes in MiB with two decimals, so "exact" means within 0.005 MiB (5.2 KiB).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.catalog import load_catalog
from planner.estimate.devices import host_device
from planner.estimate.estimate import estimate
from planner.estimate.types import RunConfig
from planner.sources.gguf_file import read_gguf

llama_runner = pytest.importorskip("planner.measure.llama_runner")
pytest.importorskip("llama_cpp")

ROUNDING = int(0.005 * 2**20) + 1

CONFIGS = [
    # (ctx per slot, slots, kv type, flash attention, swa_full, n_ubatch)
    (4096, 1, "f16", True, False, 512),
    (32768, 1, "f16", False, False, 512),  # global layers' KV grows, SWA layers stay at 1024 cells
    (2048, 4, "f16", True, False, 512),  # 4 streams of 2048 cells; SWA cache per stream
    (8192, 1, "q8_0", True, False, 512),  # 34 B per 32 values
    (4096, 1, "q4_0", True, False, 512),  # 18 B per 32 values
    (4096, 1, "f16", True, True, 512),  # swa_full: every layer keeps the whole context
    (1000, 1, "f16", True, False, 128),  # ctx padded to 1024; a smaller ubatch shrinks logits and SWA cells
]


@pytest.mark.llama
@pytest.mark.parametrize(("ctx", "parallel", "kv", "fa", "swa_full", "ubatch"), CONFIGS)
def test_gemma_memory_matches_llama_cpp_log(
    gemma_gguf_path: Path, ctx: int, parallel: int, kv: str, fa: bool, swa_full: bool, ubatch: int
) -> None:
    params = llama_runner.LlamaParams(
        n_ctx=ctx * parallel,
        n_seq_max=parallel,
        type_k=kv,
        type_v=kv,
        flash_attn=fa,
        swa_full=swa_full,
        n_ubatch=ubatch,
    )
    measured, log = llama_runner.measure_buffers(gemma_gguf_path, params)
    spec = read_gguf(gemma_gguf_path)
    cfg = RunConfig(
        ctx=ctx, parallel=parallel, kv_type_k=kv, kv_type_v=kv, flash_attn=fa, swa_full=swa_full, n_ubatch=ubatch
    )
    est = estimate(spec, cfg, [], host_device(load_catalog(), None, None))
    host = est.devices[-1].memory
    assert abs(host.kv_cache_bytes - measured.total("KV")) <= 2 * ROUNDING, log[-2000:]  # two caches: global + SWA
    assert abs(host.weights_bytes - measured.total("model")) <= 2 * ROUNDING  # CPU_Mapped + CPU_REPACK lines
    assert measured.total("compute") > 0
    assert measured.total("output") == 262144 * parallel * 4  # logits of one output per slot
