"""vLLM memory by version (planner/estimate/engines.py vllm_profile, compute.vllm_activation_bytes): the profile
run's activations follow max_num_batched_tokens, whose default depends on the version and chunked prefill."""

from __future__ import annotations

import pytest

from planner.catalog import Catalog, load_catalog
from planner.errors import EstimateError
from planner.estimate.devices import gpu_device, host_device
from planner.estimate.engines import VLLM_DEFAULT_VERSION, rules_for, vllm_profile
from planner.estimate.estimate import estimate
from planner.estimate.types import Estimate, RunConfig
from planner.sources.resolve import resolve_model
from planner.units import GIB

# vLLM issue #10517 (comment of 2024-12-02): meta-llama/Llama-3.1-8B-Instruct BF16 on one RTX 3090 at
# gpu_memory_utilization 0.9, vLLM 0.6.4 (V0). "Memory profiling results" lines: peak_torch_memory 17.06 / 17.98 GiB
# with weights 14.99 GiB -> activations 2.07 GiB at max_model_len 20,000 (started, 1952 blocks) and 2.99 GiB at
# 29,000 (refused: KV holds 23,648 tokens); 35,000 started again (chunked prefill above 32k).
LOGGED_V0 = "0.6.4"


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


def _on(cat: Catalog, gpu: str, ctx: int, version: str, parallel: int = 1) -> Estimate:
    cfg = RunConfig(engine="vllm", ctx=ctx, parallel=parallel, gpu_memory_utilization=0.9, vllm_version=version)
    spec = resolve_model("llama-3.1-8b")
    return estimate(spec, cfg, [gpu_device(cat, gpu)], host_device(cat, None, 64), quant="BF16", suggest=False)


@pytest.mark.parametrize(("ctx", "logged_activation_gib", "fits"), [(20000, 2.07, True), (29000, 2.99, False)])
def test_llama_31_8b_on_a_3090_fits_at_20k_and_not_at_29k(
    cat: Catalog, ctx: int, logged_activation_gib: float, fits: bool
) -> None:
    """The V0 profile runs max_model_len tokens, so the activations grow with the context (they did not: 0.69
    GiB at both before) and 29,000 no longer fits where the logged run refused to start."""
    est = _on(cat, "rtx-3090", ctx, LOGGED_V0)
    activation_gib = est.devices[0].memory.compute_bytes / GIB
    assert activation_gib == pytest.approx(logged_activation_gib, rel=0.01)
    assert est.fits is fits
    assert (est.kv_capacity_tokens >= ctx) is fits


def test_v0_turns_chunked_prefill_on_above_32k(cat: Catalog) -> None:
    """35,000 started in the same thread: above 32,768 tokens V0 chunked the prefill (512 batched tokens)."""
    p = vllm_profile(LOGGED_V0, 35000, 24 * GIB, "GeForce RTX 3090")
    assert (p.chunked_prefill, p.max_num_batched_tokens) == (True, 512)
    assert _on(cat, "rtx-3090", 35000, LOGGED_V0).fits


def test_v1_activations_do_not_grow_with_the_context(cat: Catalog) -> None:
    """V1 (the default version) always chunks the prefill: the API server's 2048 batched tokens on a 24 GB card,
    so the profile is the same at any max_model_len and 29,000 fits on the 3090."""
    a, b = (_on(cat, "rtx-3090", ctx, VLLM_DEFAULT_VERSION) for ctx in (20000, 29000))
    assert a.devices[0].memory.compute_bytes == b.devices[0].memory.compute_bytes
    # 2048 tokens x 2 B x (3 x 4096 + 3 x 14336)
    assert a.devices[0].memory.compute_bytes == 2048 * 2 * (3 * 4096 + 3 * 14336)
    assert b.fits
    assert any(VLLM_DEFAULT_VERSION in n and "V1 engine" in n for n in a.notes)
    assert VLLM_DEFAULT_VERSION in a.sources["compute"].detail


@pytest.mark.parametrize(
    ("gpu", "tokens"),
    [("rtx-3090", 2048), ("a100-80gb", 2048), ("h100", 8192)],  # >= 70 GiB and not an A100: 8192
)
def test_v1_batched_tokens_by_card(cat: Catalog, gpu: str, tokens: int) -> None:
    g = gpu_device(cat, gpu)
    assert vllm_profile(VLLM_DEFAULT_VERSION, 8192, g.capacity_bytes, g.name).max_num_batched_tokens == tokens


def test_v0_graphs_come_out_of_the_margin_not_the_kv(cat: Catalog) -> None:
    """V0 sized the KV cache before capturing CUDA graphs: its KV is larger by the graphs' bytes (minus rounding
    to 16-token blocks) at the same activations, and the graphs sit in the (1 - utilization) rest."""
    rules = rules_for("vllm")
    v0 = _on(cat, "rtx-3090", 2048, LOGGED_V0)  # 2048 batched tokens in both versions
    v1 = _on(cat, "rtx-3090", 2048, VLLM_DEFAULT_VERSION)
    assert v0.devices[0].memory.compute_bytes == v1.devices[0].memory.compute_bytes
    assert v0.devices[0].memory.kv_cache_bytes - v1.devices[0].memory.kv_cache_bytes == rules.cuda_graph_bytes
    gpu = v0.devices[0]
    assert gpu.margin_bytes == gpu.device.capacity_bytes - int(gpu.device.capacity_bytes * 0.9) - rules.cuda_graph_bytes


@pytest.mark.parametrize("bad", ["latest", "", "v."])
def test_a_version_that_is_not_a_number_is_one_line(bad: str) -> None:
    with pytest.raises(EstimateError, match="is not a version number"):
        vllm_profile(bad, 8192, 24 * GIB, "x")


@pytest.mark.parametrize("tp", [2, 4])
def test_tensor_parallel_memory_per_gpu(cat: Catalog, tp: int) -> None:
    """vLLM tensor parallel (--tensor-parallel-size = the GPUs; vLLM docs "Distributed inference and serving"):
    each rank loads 1 / TP of the weights and of the KV heads, its profile run's FFN activations shrink by TP
    (8192 batched tokens on an H100 × bf16 × (3 × hidden + 3 × ffn / TP)), and every rank keeps its own CUDA
    graphs (512 MiB) and non-torch memory, NCCL buffers included (500 MiB: vLLM issues #10517, #13061)."""
    spec = resolve_model("llama-3.1-70b")
    cfg = RunConfig(engine="vllm", ctx=8192, gpu_memory_utilization=0.9)
    gpus = [gpu_device(cat, "h100")] * tp
    est = estimate(spec, cfg, gpus, host_device(cat, None, 256), quant="BF16", suggest=False)
    rules = rules_for("vllm")
    assert len([u for u in est.devices if u.device.is_gpu]) == tp
    for u in est.devices[:tp]:
        assert u.memory.weights_bytes == -(-est.weights.total_bytes // tp)
        assert u.memory.compute_bytes == 8192 * 2 * (3 * 8192 + 3 * 28672 // tp)
        assert u.memory.overhead_bytes == rules.cuda_graph_bytes + rules.non_torch_bytes == 1012 * 2**20
    # KV pages: 8 KV heads split over the ranks, 16 tokens × 80 layers × (128 + 128) × 2 B each
    per_rank_token = 80 * (8 // tp) * 256 * 2
    assert est.devices[0].memory.kv_cache_bytes // per_rank_token == pytest.approx(est.kv_capacity_tokens, abs=16)
