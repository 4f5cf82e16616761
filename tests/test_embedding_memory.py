"""Embedding models (BGE-M3 and other BERT-style encoders) in llama.cpp: the estimator's compute buffer against
llama.cpp's own, on a synthetic encoder with BGE-M3's widths (1024 hidden, 4096 FFN, 16 heads) and a shorter
vocabulary and depth, loaded by the pinned llama-server with --embeddings; and the micro-batch the planner deploys
them with."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from planner.catalog import load_catalog
from planner.estimate.estimate import embedding_batch, estimate
from planner.estimate.types import RunConfig
from planner.model.arch import ModelSpec
from planner.plan.servers import parse_server_spec
from planner.sources.resolve import resolve_model

sys.path.insert(0, str(Path(__file__).parent))

from bench_fixtures import require_tools

MIB = 2**20
COMPUTE_TOLERANCE = 0.02  # issue #13's acceptance for compute buffers


@pytest.fixture(scope="module")
def small_bge() -> ModelSpec:
    spec = resolve_model("bge-m3")
    arch = dataclasses.replace(spec.arch, n_layers=2, vocab_size=30000)
    return dataclasses.replace(spec, arch=arch, weights=None)


@pytest.fixture(scope="module")
def small_bge_gguf(small_bge: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from planner.measure.synthetic import write_synthetic_gguf

    return write_synthetic_gguf(small_bge.arch, "F16", tmp_path_factory.mktemp("bert") / "bge.gguf", encoders=True)


@pytest.mark.engines
@pytest.mark.parametrize(
    ("ctx", "parallel", "ubatch", "flash_attn"),
    [
        (512, 1, 512, True),
        (512, 1, 512, False),
        (2048, 1, 2048, True),
        (2048, 1, 2048, False),
        (4096, 1, 512, True),  # a context longer than the micro-batch: attention stays within the micro-batch
        (4096, 1, 512, False),
        (2048, 4, 1024, False),
    ],
)
def test_encoder_compute_buffer_matches_llama_server(
    small_bge: ModelSpec, small_bge_gguf: Path, ctx: int, parallel: int, ubatch: int, flash_attn: bool
) -> None:
    """llama-server's CPU compute buffer for one micro-batch of `ubatch` tokens (an encoder has no cache: its KQ
    and mask are ubatch × ubatch, so ctx 4096 at ubatch 512 needs what ctx 512 does); the estimate within
    COMPUTE_TOLERANCE of it. Measured here with b11434: 18.51 / 31.01 MiB at 512, 80.05 / 328.05 MiB at 2048,
    with / without flash attention, 96.02 MiB for 4 slots at ubatch 1024; the estimate is 0.02-0.06 % below.
    Before the encoder rules the estimate counted logits an encoder does not have (62.59 MiB at 512) and sized KQ
    by the context (150 MiB at ctx 4096, ubatch 512)."""
    from planner.measure.server_memory import ServerLoad, measure_server_buffers

    load = ServerLoad(
        n_ctx=ctx * parallel, n_parallel=parallel, flash_attn=flash_attn, n_ubatch=ubatch, n_batch=ubatch,
        embeddings=True,
    )  # fmt: skip
    measured, _log = measure_server_buffers(require_tools(), small_bge_gguf, load)
    measured_compute = measured.total("compute")
    assert measured_compute > 0
    cat = load_catalog()
    host = parse_server_spec("box: ryzen-9-7950x, 64GiB", cat).host(cat)
    cfg = RunConfig(ctx=ctx, parallel=parallel, n_ubatch=ubatch, n_batch=ubatch, flash_attn=flash_attn)
    est = estimate(small_bge, cfg, [], host, quant="F16", suggest=False)
    assert abs(est.memory.compute_bytes / measured_compute - 1) <= COMPUTE_TOLERANCE, (
        est.memory.compute_bytes / MIB,
        measured_compute / MIB,
    )
    # the file's tensors; the log prints MiB with two decimals
    assert abs(est.memory.weights_bytes - measured.total("model")) <= 0.01 * MIB


def test_embedding_models_are_planned_with_one_input_per_micro_batch() -> None:
    """llama-server rejects an embedding input longer than its micro-batch, so an embedding model at the default
    batch sizes is estimated with -ub = -b = ctx (what deploy starts it with); explicit sizes and decoders keep
    theirs."""
    bge = resolve_model("bge-m3").arch
    llama = resolve_model("llama-3-8b").arch
    cfg = RunConfig(ctx=8192)
    assert (embedding_batch(bge, cfg).n_ubatch, embedding_batch(bge, cfg).n_batch) == (8192, 8192)
    assert embedding_batch(llama, cfg) == cfg
    # set sizes are kept, llama.cpp's defaults included (a bench run at -b 2048 -ub 512 replayed)
    for explicit in (RunConfig(ctx=8192, n_ubatch=1024), RunConfig(ctx=8192, n_ubatch=512, n_batch=2048)):
        assert embedding_batch(bge, explicit) == explicit
    # a decoder turned into an embedding model (a pooling GGUF of a decoder) is no encoder: causal, with a cache
    assert embedding_batch(dataclasses.replace(llama, is_embedding=True), cfg) == cfg
    cat = load_catalog()
    host = parse_server_spec("box: ryzen-9-7950x, 64GiB", cat).host(cat)
    est = estimate(resolve_model("bge-m3"), cfg, [], host, quant="Q8_0", suggest=False)
    assert est.config.n_ubatch == 8192
    # flash attention at 8192 tokens: f16 mask 8192² × 2 B + FFN 4096 × 8192 × 4 B + 3 × 1024 × 8192 × 4 B, and
    # the pinned llama.cpp's input branch: 2 × 1024 × 8192 × 4 B (416.19 MiB measured on a 2-layer synthetic BGE-M3)
    assert est.memory.compute_bytes == 8192 * 8192 * 2 + 4096 * 8192 * 4 + (3 + 2) * 1024 * 8192 * 4


def test_decoder_embedding_models_keep_logits_and_kv() -> None:
    """Only encoders drop the logits and the KV cache: llama.cpp computes logits for a decoder-based embedding
    model with embeddings on (a synthetic 2-layer Llama 3.2 3B at ubatch 2048 measured 1,050 MiB of compute),
    and keeps its KV cache."""
    cat = load_catalog()
    host = parse_server_spec("box: ryzen-9-7950x, 64GiB", cat).host(cat)
    spec = resolve_model("llama-3-8b")
    as_embedder = dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, is_embedding=True))
    cfg = RunConfig(ctx=4096)
    plain = estimate(spec, cfg, [], host, quant="Q4_K_M", suggest=False).memory
    emb = estimate(as_embedder, cfg, [], host, quant="Q4_K_M", suggest=False).memory
    assert emb.kv_cache_bytes == plain.kv_cache_bytes > 0
    assert emb.compute_bytes >= spec.arch.vocab_size * 512 * 4  # logits of a micro-batch
    # a chat model's llama-server reserves logits for one output per slot (server_output_limits), an --embeddings
    # one for every row of the micro-batch
    assert plain.compute_bytes < emb.compute_bytes


def test_context_suggestion_for_an_encoder_fits_when_estimated_afresh() -> None:
    """The largest context suggested for an encoder that does not fit is searched with each context's own
    micro-batch (-ub = ctx), so estimating the suggestion afresh fits (it was searched at the first context's
    micro-batch: 1,792 suggested where 4,096 fits, with 4 slots, no flash attention, 4 GiB of RAM)."""
    from planner.estimate.types import Device

    cat = load_catalog()
    host = parse_server_spec("box: ryzen-9-7950x, 64GiB", cat).host(cat)
    small = Device(**{**host.__dict__, "capacity_bytes": 4 * 2**30})
    spec = resolve_model("bge-m3")
    cfg = RunConfig(ctx=8192, parallel=4, flash_attn=False)
    est = estimate(spec, cfg, [], small, quant="Q8_0")
    assert not est.fits
    ctx = int(next(s.value for s in est.suggestions if s.kind == "ctx"))
    assert estimate(spec, dataclasses.replace(cfg, ctx=ctx), [], small, quant="Q8_0", suggest=False).fits
    bigger = dataclasses.replace(cfg, ctx=ctx + 256)
    assert not estimate(spec, bigger, [], small, quant="Q8_0", suggest=False).fits
    assert all(s.kind != "kv_type" for s in est.suggestions)  # an encoder has no KV cache to quantize


@pytest.mark.parametrize("architecture", ["nomic-bert", "jina-bert-v2", "modern-bert", "gemma-embedding"])
def test_every_cacheless_llama_cpp_architecture_is_an_encoder(architecture: str) -> None:
    """llama.cpp runs these without a KV cache and never splits an input (src/llama-model.cpp create_memory): like
    BERT they are planned with no KV cache and -ub = ctx, whatever their layout."""
    from planner.model.layout import is_encoder

    cat = load_catalog()
    host = parse_server_spec("box: ryzen-9-7950x, 64GiB", cat).host(cat)
    spec = resolve_model("bge-m3")
    relabelled = dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, architecture=architecture))
    assert is_encoder(relabelled.arch)
    est = estimate(relabelled, RunConfig(ctx=8192), [], host, quant="Q8_0", suggest=False)
    assert est.memory.kv_cache_bytes == 0
    assert est.config.batch_sizes() == (8192, 8192)
