"""The estimator: KV cache, compute buffers, weights, placement, vLLM reservation and speed.

Expected numbers are worked out by hand from the formula in each row's comment, or read from
llama.cpp's own allocation log (tests marked `llama`, run against the real library).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.errors import EstimateError, UnknownIdError
from planner.estimate.devices import gpu_devices, host_device
from planner.estimate.estimate import estimate
from planner.estimate.kv import kv_bytes_per_token, llama_cpp_kv_bytes
from planner.estimate.placement import place_layers
from planner.estimate.types import RunConfig
from planner.model.arch import ModelSpec
from planner.sources.gguf_file import read_gguf
from planner.sources.resolve import resolve_model

MIB = 2**20
GIB = 2**30


@pytest.fixture(scope="module")
def cat():  # type: ignore[no-untyped-def]
    return load_catalog()


def _spec(model_id: str) -> ModelSpec:
    return resolve_model(model_id)


# ----------------------------------------------------------------------------------------------- KV


KV_CASES = [
    # (model, ctx, parallel, kv type, expected bytes, why)
    # Llama 3 70B: 80 layers × 8192 × 8 KV heads × (128 + 128) × 2 B = 2.5 GiB
    ("llama-3-70b", 8192, 1, "f16", 80 * 8192 * 8 * 256 * 2),
    # DeepSeek-Coder 6.7B is MHA (32 KV heads): 32 × 16384 × 32 × 256 × 2 B = 8 GiB, more than its Q4 weights
    ("deepseek-coder-6.7b", 16384, 1, "f16", 8 * GIB),
    # Qwen1.5-72B is MHA: 80 × 4096 × 64 × 256 × 2 = 10 GiB, 8× Qwen2-72B's 1.25 GiB (8 KV heads)
    ("qwen1.5-72b", 4096, 1, "f16", 80 * 4096 * 64 * 256 * 2),
    ("qwen2-72b", 4096, 1, "f16", 80 * 4096 * 8 * 256 * 2),
    # q8_0 stores 34 B per 32 values: Llama 3 8B 32 × 8192 × 8 × 256 values × 34/32
    ("llama-3-8b", 8192, 1, "q8_0", 32 * 8192 * 8 * 256 * 34 // 32),
    # q4_0: 18 B per 32 values
    ("llama-3-8b", 8192, 1, "q4_0", 32 * 8192 * 8 * 256 * 18 // 32),
    # 4 slots of 4096: llama-server gets -c 16384 -np 4: 4 streams × 4096 cells
    ("llama-3-8b", 4096, 4, "f16", 32 * 16384 * 8 * 256 * 2),
    # ctx 1000 is padded to 1024 (GGML_PAD(n_ctx, 256))
    ("llama-3-8b", 1000, 1, "f16", 32 * 1024 * 8 * 256 * 2),
]


@pytest.mark.parametrize(("model", "ctx", "parallel", "kv", "expected"), KV_CASES)
def test_kv_cache_bytes(model: str, ctx: int, parallel: int, kv: str, expected: int) -> None:
    spec = _spec(model)
    cfg = RunConfig(ctx=ctx, parallel=parallel, kv_type_k=kv, kv_type_v=kv)
    assert sum(llama_cpp_kv_bytes(spec.arch, cfg).values()) == expected


def test_gemma3_sliding_window_kv(gemma_gguf_path: Path) -> None:
    """Gemma 3 270M: 3 global layers hold the context, 15 sliding-window layers hold
    pad(min(ctx, 512 + n_ubatch 512), 256) = 1024 cells; 1 KV head × (256 + 256) × 2 B = 1 KiB per cell."""
    spec = read_gguf(gemma_gguf_path)
    cfg = RunConfig(ctx=32768)
    assert sum(llama_cpp_kv_bytes(spec.arch, cfg).values()) == 3 * 32768 * 1024 + 15 * 1024 * 1024  # 111 MiB
    full = replace(cfg, swa_full=True)  # llama.cpp's swa_full: every layer keeps the full context
    assert sum(llama_cpp_kv_bytes(spec.arch, full).values()) == 18 * 32768 * 1024  # 576 MiB


def test_mistral_window_ignored_by_llama_cpp() -> None:
    """llama.cpp's `llama` graph does not use Mistral v0.1's window (src/models/llama.cpp sets no swa_type)."""
    spec = _spec("mistral-7b")
    assert spec.arch.sliding_window == 4096
    cfg = RunConfig(ctx=32768)
    assert sum(llama_cpp_kv_bytes(spec.arch, cfg).values()) == 32 * 32768 * 8 * 256 * 2


def test_moe_kv_per_token() -> None:
    # Mixtral 8x7B: 32 layers × 8 KV heads × 256 × 2 B = 128 KiB per token, like Mistral 7B
    assert kv_bytes_per_token(_spec("mixtral-8x7b").arch) == 32 * 8 * 256 * 2


@given(ctx_blocks=st.integers(1, 256), parallel=st.integers(1, 8))
@settings(max_examples=60, deadline=None)
def test_kv_linear_in_context(ctx_blocks: int, parallel: int) -> None:
    """Without sliding windows, KV = per-token bytes × padded context × slots, exactly."""
    arch = _spec("llama-3-8b").arch
    ctx = ctx_blocks * 256
    kv = sum(llama_cpp_kv_bytes(arch, RunConfig(ctx=ctx, parallel=parallel)).values())
    assert kv == kv_bytes_per_token(arch) * ctx * parallel


# ----------------------------------------------------------------------------------------------- compute


def test_compute_buffer_reserves_one_output_per_slot(gemma_gguf_path: Path, cat) -> None:  # type: ignore[no-untyped-def]
    """llama-server reserves logits for one output per slot (262144 × 4 B = 1 MiB for Gemma's vocabulary), not
    for all 512 rows of the ubatch (512 MiB, the library's default), so Gemma 3 270M's buffer is a layer's FFN on
    top of the graph's inputs: 2 token-embedding rows 2 × 640 × 512 × 4 B, 20 B of ids and positions per token,
    the output ids (4 B per slot), and per KV cache (global, sliding-window) its f16 mask (4096 + 1024 cells × 512
    × 2 B = 5 MiB) and K and V row indices (2 × 512 × 8 B); then 3 × 640 × 512 × 4 B and gate, up and their
    product 3 × 2048 × 512 × 4 B: 24,406,020 B at one slot. The pinned llama-server logs 'CPU compute buffer
    size = 23.28 MiB' (24,408,096 B; tests/test_estimate_vs_llama_tools.py)."""
    spec = read_gguf(gemma_gguf_path)
    for parallel in (1, 4):
        est = estimate(spec, RunConfig(ctx=4096, parallel=parallel), [], host_device(cat, None, None))
        inputs = 2 * 640 * 512 * 4 + 20 * 512 + 4 * parallel + 5 * MIB + 2 * 2 * 512 * 8
        assert est.devices[-1].memory.compute_bytes == inputs + 3 * 640 * 512 * 4 + 3 * 2048 * 512 * 4


# Gemma 3 270M (640 wide, 4 heads of 256, 1 KV head, 2048 FFN, a global and a 512-token sliding cache) at ctx 4096,
# ubatch 512, one slot, on the CPU. The graph's inputs, which ggml-alloc places before any node: 2 token-embedding
# rows, 20 B of ids and positions per token, 4 B of output ids, and per cache K's and V's row indices.
GEMMA_TOKEN_INPUTS = 2 * 640 * 512 * 4 + 20 * 512 + 4
GEMMA_ROW_INDICES_FA = 2 * (512 * 8 + 512 * 8)


@pytest.mark.parametrize(
    ("kv", "flash_attn", "expected_bytes", "llama_server_mib"),
    [
        # no flash attention: V stored transposed, its row indices 512 × 256 i64 per cache; f32 masks (4096 + 1024
        # cells) × 512; 3 hidden-size rows; Q's projection (1024 wide > 640) leaves a 2 MiB hole below Q; KQ of a
        # global layer 4096 × 512 × 4 heads f32
        (
            "f16",
            False,
            GEMMA_TOKEN_INPUTS + 2 * (512 * 8 + 512 * 256 * 8) + 5120 * 512 * 4
            + 3 * 640 * 512 * 4 + 2 * 1024 * 512 * 4 + 4096 * 512 * 4 * 4,
            54.27,
        ),
        # q4_0 with flash attention: f16 masks, and each cache's Hadamard rotations 256 × 256 and 64 × 64 f32;
        # the FFN's gate, up and their product on top
        (
            "q4_0",
            True,
            GEMMA_TOKEN_INPUTS + GEMMA_ROW_INDICES_FA + 2 * (256 * 256 + 64 * 64) * 4 + 5120 * 512 * 2
            + 3 * 640 * 512 * 4 + 3 * 2048 * 512 * 4,
            23.81,
        ),
    ],
)  # fmt: skip
def test_cpu_compute_sits_above_every_graph_input(  # type: ignore[no-untyped-def]
    gemma_gguf_path: Path, cat, kv: str, flash_attn: bool, expected_bytes: int, llama_server_mib: float
) -> None:
    """The rule of planner/estimate/compute.py for the backend that runs the token embeddings, term by term (read
    with bench/ggml_alloc_layout.py). The pinned llama-server's log, to its 0.01 MiB: 54.27 MiB without flash
    attention (the rule before gave 52.00), 23.81 with a q4_0 cache (23.25 before); it also reserves Gemma's
    4 B per token of row scales, which the rule leaves out (2 KiB)."""
    cfg = RunConfig(ctx=4096, kv_type_k=kv, kv_type_v=kv, flash_attn=flash_attn)
    est = estimate(read_gguf(gemma_gguf_path), cfg, [], host_device(cat, None, None))
    assert est.devices[-1].memory.compute_bytes == expected_bytes
    assert abs(expected_bytes / MIB - llama_server_mib) < 0.005


def test_compute_grows_with_context_without_flash_attention(cat) -> None:  # type: ignore[no-untyped-def]
    """Without flash attention the KQ matrix n_kv × n_ubatch × n_head × 4 B grows with the context:
    Llama 3 8B at 131072: 131072 × 512 × 32 × 4 B = 8 GiB (+ Q and the output), far above the 250.5 MiB logits.
    With flash attention a layer's FFN is the peak: the f16 mask 128 MiB, the K and V row indices (2 × 512 × 8 B),
    2 token-embedding rows and 3 more hidden-size buffers (5 × 8 MiB), 20 B of ids and positions per token and 4 B
    of output ids, then gate, up and their product 3 × 14336 × 512 × 4 B."""
    spec = _spec("llama-3.1-8b")
    host = host_device(cat, None, 256)
    fa = estimate(spec, RunConfig(ctx=131072, flash_attn=True), [], host, quant="Q4_K_M")
    nofa = estimate(spec, RunConfig(ctx=131072, flash_attn=False), [], host, quant="Q4_K_M")
    assert fa.memory.compute_bytes == (128 + 3 * 28 + 5 * 8) * MIB + 2 * 512 * 8 + 20 * 512 + 4
    assert nofa.memory.compute_bytes >= 131072 * 512 * 32 * 4


# ----------------------------------------------------------------------------------------------- weights


def test_weights_from_file_are_exact_plus_cpu_repack(gemma_gguf_path: Path, cat) -> None:  # type: ignore[no-untyped-def]
    """On the CPU, llama.cpp maps all tensors (246587904 B = 235.16 MiB, CPU_Mapped) and keeps repacked
    copies of its Q4_K tensors (13271040 B = 12.66 MiB, CPU_REPACK): 247.82 MiB in its log."""
    spec = read_gguf(gemma_gguf_path)
    est = estimate(spec, RunConfig(ctx=4096), [], host_device(cat, None, None))
    assert est.weights.exact
    assert est.memory.weights_bytes == 246587904 + 13271040


def test_file_quant_conflict_is_an_error(gemma_gguf_path: Path, cat) -> None:  # type: ignore[no-untyped-def]
    spec = read_gguf(gemma_gguf_path)
    with pytest.raises(EstimateError, match="Q4_K_M file"):
        estimate(spec, RunConfig(), [], host_device(cat, None, None), quant="Q8_0")


# ----------------------------------------------------------------------------------------------- placement


PLACE_CASES = [
    # (n_layers, ngl, split, expected layers per device [gpu0, gpu1, cpu], output device)
    # llama.cpp: layer il of the last ngl of n+1 goes to upper_bound(splits, (il - start) / ngl).
    # 80 layers on two equal GPUs: il/81 < 0.5 for il <= 40 → 41 on GPU 0, 39 + output on GPU 1
    (80, 81, [1.0, 1.0], [41, 39, 0], 1),
    # -ngl 40: layers 41..79 and the output on the GPUs (start = 81 - 40 = 41), 41 on the CPU
    (80, 40, [1.0, 1.0], [20, 19, 41], 1),
    # a 24 GiB card next to a 12 GiB card gets two thirds
    (32, 33, [24.0, 12.0], [22, 10, 0], 1),
    # no GPU layers: everything and the output on the CPU
    (32, 0, [1.0], [0, 32], -1),
]


@pytest.mark.parametrize(("n_layers", "ngl", "split", "expected", "out"), PLACE_CASES)
def test_layer_split_like_llama_cpp(n_layers: int, ngl: int, split: list[float], expected: list[int], out: int) -> None:
    p = place_layers(n_layers, ngl, split)
    counts = [sum(1 for d in p.layer_device.values() if d == i) for i in range(len(split))]
    counts.append(sum(1 for d in p.layer_device.values() if d < 0))
    assert counts == expected
    assert p.output_device == out


def test_70b_fits_two_4090s_at_8k_and_offloads_at_32k(cat) -> None:  # type: ignore[no-untyped-def]
    """The README example: Llama 3 70B Q4_K_M (≈ 39.6 GiB of weights) + 2.5 GiB KV fits 2 × 24 GiB
    with llama.cpp's 1 GiB margin per card; at 32k the 10 GiB KV does not, so layers go to the CPU."""
    spec = _spec("llama-3-70b")
    gpus = gpu_devices(cat, ["rtx-4090", "rtx-4090"])
    host = host_device(cat, None, None)
    e8 = estimate(spec, RunConfig(ctx=8192), gpus, host, quant="Q4_K_M")
    assert e8.fits and e8.gpu_layers == 81
    assert all(d.fits for d in e8.devices)
    e32 = estimate(spec, RunConfig(ctx=32768), gpus, host, quant="Q4_K_M")
    assert 0 < e32.gpu_layers < 81
    assert e32.speed.decode_tok_s < e8.speed.decode_tok_s / 2  # CPU layers dominate decode


# GPU sets whose placements the memo shares: equal cards (2x 4090 and 2x 3090 split the layers alike), unequal
# pairs both ways round (24 and 16 GiB: other splits), one card, another vendor and no GPU at all
MEMO_GPU_SETS = [
    ["rtx-4090", "rtx-4090"],
    ["rtx-3090", "rtx-3090"],
    ["rtx-4090", "rtx-4060-ti-16gb"],
    ["rtx-4060-ti-16gb", "rtx-4090"],
    ["rtx-4090"],
    ["rx-7900-xtx"],
    [],
]


@pytest.mark.parametrize(
    ("model", "quant", "ctx"), [("llama-3-70b", "Q4_K_M", 16384), ("mixtral-8x7b", "Q5_K_M", 8192)]
)
def test_memoized_placements_answer_as_a_fresh_estimate(cat, model: str, quant: str, ctx: int) -> None:  # type: ignore[no-untyped-def]
    """estimate() remembers, per model and config, what each llama.cpp placement puts on each device (the solver
    tries one model on hundreds of GPU sets). Each answer after the other sets were tried equals the answer with
    nothing remembered: no numbers of one device set carry over to another (the 70B at 16k partly offloads
    on 2x RTX 3090; Mixtral moves experts to the CPU)."""
    from planner.estimate.estimate import _llama_cpp_model

    spec = _spec(model)
    host = host_device(cat, None, 128)
    cfg = RunConfig(ctx=ctx)
    warm = [estimate(spec, cfg, gpu_devices(cat, ids), host, quant=quant) for ids in MEMO_GPU_SETS]
    for ids, answer in zip(MEMO_GPU_SETS, warm, strict=True):
        _llama_cpp_model.cache_clear()
        assert estimate(spec, cfg, gpu_devices(cat, ids), host, quant=quant) == answer, ids
    assert [d.device.id for d in warm[1].devices] == ["rtx-3090", "rtx-3090", host.id]
    assert warm[0].speed.decode_tok_s != warm[1].speed.decode_tok_s


@given(extra_gib=st.integers(0, 64), ctx_k=st.sampled_from([2, 8, 32]))
@settings(max_examples=25, deadline=None)
def test_more_vram_never_hurts(extra_gib: int, ctx_k: int) -> None:
    """Property: a bigger GPU never puts fewer layers on the GPU nor turns a fit into a non-fit."""
    cat = load_catalog()
    spec = _spec("qwen2.5-32b")
    host = host_device(cat, None, 128)
    base = gpu_devices(cat, ["rtx-4090"])[0]
    bigger = replace(base, capacity_bytes=base.capacity_bytes + extra_gib * GIB)
    cfg = RunConfig(ctx=ctx_k * 1024)
    a = estimate(spec, cfg, [base], host, quant="Q4_K_M", suggest=False)
    b = estimate(spec, cfg, [bigger], host, quant="Q4_K_M", suggest=False)
    assert b.gpu_layers >= a.gpu_layers
    assert b.fits or not a.fits
    for d in b.devices:
        if d.device.is_gpu:
            assert d.fits  # auto placement never overflows a GPU


def test_moe_experts_go_to_cpu_first(cat) -> None:  # type: ignore[no-untyped-def]
    """Mixtral 8x7B Q4_K_M (≈ 26 GiB) on one 24 GiB card: like llama.cpp's --fit / --n-cpu-moe N, the routed
    experts of the first N layers move to the CPU — the fewest N that fits — while every layer's attention and
    shared weights stay on the GPU. Fewer experts on the CPU than --cpu-moe (all of them) means faster decode."""
    import re

    spec = _spec("mixtral-8x7b")
    gpus, host = gpu_devices(cat, ["rtx-4090"]), host_device(cat, None, 64)
    est = estimate(spec, RunConfig(ctx=8192), gpus, host)
    note = next(n for n in est.notes if "--n-cpu-moe" in n)
    n_cpu = int(re.search(r"--n-cpu-moe (\d+)", note).group(1))  # type: ignore[union-attr]
    assert 0 < n_cpu < 32
    gpu, host_use = est.devices[0], est.devices[-1]
    assert gpu.fits and est.gpu_layers == 33  # every layer (and the output) still has its attention on the GPU
    # what must stay resident on the host is those layers' experts once (repacked copies replace the mapped
    # originals, which become page cache), give or take the token embeddings
    resident = host_use.memory.weights_bytes - host_use.reclaimable_bytes
    share = est.weights.expert_bytes * n_cpu / 32
    assert 0.95 * share < resident < share + est.weights.token_embedding_bytes + 2**30
    # without the expert offload the card overflows; with a 16 GB card more layers' experts go to the CPU
    assert not estimate(spec, RunConfig(ctx=8192, gpu_layers=33), gpus, host).fits
    small = estimate(spec, RunConfig(ctx=8192), gpu_devices(cat, ["rtx-4080"]), host)
    n_small = int(re.search(r"--n-cpu-moe (\d+)", " ".join(small.notes)).group(1))  # type: ignore[union-attr]
    assert n_small > n_cpu
    assert small.speed.decode_tok_s < est.speed.decode_tok_s  # more experts read from DDR per token


def test_not_fitting_gives_suggestions(cat) -> None:  # type: ignore[no-untyped-def]
    """Llama 3 70B Q4_K_M (≈ 40 GiB) on one RTX 4080 and 16 GiB of RAM fits nowhere; agiplan says what would."""
    spec = _spec("llama-3-70b")
    est = estimate(spec, RunConfig(ctx=8192), gpu_devices(cat, ["rtx-4080"]), host_device(cat, None, 16))
    assert not est.fits
    kinds = {s.kind for s in est.suggestions}
    assert "quant" in kinds or "ram" in kinds


def test_bad_inputs(cat) -> None:  # type: ignore[no-untyped-def]
    spec = _spec("llama-3-8b")
    host = host_device(cat, None, None)
    with pytest.raises(EstimateError, match="positive"):
        estimate(spec, RunConfig(ctx=0), [], host)
    with pytest.raises(EstimateError, match="KV cache type"):
        estimate(spec, RunConfig(kv_type_k="q3_x"), [], host)
    with pytest.raises(UnknownIdError, match="Did you mean"):
        gpu_devices(cat, ["rtx-4909"])
    with pytest.raises(EstimateError, match="needs at least one GPU"):
        estimate(spec, RunConfig(engine="vllm"), [], host)


# ----------------------------------------------------------------------------------------------- vLLM


def test_vllm_reserves_fraction_of_total_memory(cat) -> None:  # type: ignore[no-untyped-def]
    """vLLM takes gpu_memory_utilization × TOTAL memory; KV gets what weights and activations leave."""
    spec = _spec("llama-3.1-8b")
    gpus = gpu_devices(cat, ["h100"])
    est = estimate(spec, RunConfig(engine="vllm", ctx=8192), gpus, host_device(cat, None, None), quant="BF16")
    gpu = est.devices[0]
    assert gpu.used_bytes == int(gpus[0].capacity_bytes * 0.9)
    assert gpu.memory.weights_bytes == est.weights.total_bytes  # TP = 1
    per_token = kv_bytes_per_token(spec.arch)  # 128 KiB for Llama 3.1 8B
    assert est.kv_capacity_tokens == gpu.memory.kv_cache_bytes // (16 * per_token) * 16
    half = estimate(
        spec,
        RunConfig(engine="vllm", ctx=8192, gpu_memory_utilization=0.45),
        gpus,
        host_device(cat, None, None),
        quant="BF16",
    )
    assert half.kv_capacity_tokens < est.kv_capacity_tokens


def test_vllm_refuses_gguf_quants(cat) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EstimateError, match=r"does not serve llama\.cpp quant"):
        estimate(
            _spec("llama-3-8b"),
            RunConfig(engine="vllm"),
            gpu_devices(cat, ["rtx-4090"]),
            host_device(cat, None, None),
            quant="Q4_K_M",
        )


# ----------------------------------------------------------------------------------------------- speed


def test_decode_speed_bands(cat) -> None:  # type: ignore[no-untyped-def]
    """Decode is bandwidth-bound: more bytes per token → slower; a 4090 beats a 4080; more slots
    raise the aggregate and lower each slot's speed."""
    host = host_device(cat, None, None)
    spec = _spec("llama-3-8b")
    q4 = estimate(spec, RunConfig(), gpu_devices(cat, ["rtx-4090"]), host, quant="Q4_K_M").speed
    q8 = estimate(spec, RunConfig(), gpu_devices(cat, ["rtx-4090"]), host, quant="Q8_0").speed
    q4_4080 = estimate(spec, RunConfig(), gpu_devices(cat, ["rtx-4080"]), host, quant="Q4_K_M").speed
    multi = estimate(
        spec, RunConfig(parallel=4, depth_tokens=2048), gpu_devices(cat, ["rtx-4090"]), host, quant="Q4_K_M"
    ).speed
    assert q8.decode_tok_s < q4.decode_tok_s
    assert q4_4080.decode_tok_s < q4.decode_tok_s
    assert multi.decode_tok_s_per_slot < multi.decode_tok_s
    assert multi.aggregate_tok_s > multi.decode_tok_s
    assert q4.decode_low_tok_s < q4.decode_tok_s < q4.decode_high_tok_s


def test_a_placement_with_experts_on_the_cpu_replays_as_planned(cat) -> None:  # type: ignore[no-untyped-def]
    """Mixtral 8x7B Q4_K_M, 8k context, one RTX 4090: the fit puts the routed experts of 7 layers on the CPU
    (--n-cpu-moe 7) with all 33 layers' attention on the GPU. A plan replays that placement (report headroom:
    gpu_layers and n_cpu_moe from the plan); given only gpu_layers=33 it put every expert on the GPU, did not
    fit, and the report called a fitting plan full. With cpu_moe_layers the replay is the same estimate."""
    spec = _spec("mixtral-8x7b")
    gpus = gpu_devices(cat, ["rtx-4090"])
    host = host_device(cat, None, None)
    auto = estimate(spec, RunConfig(ctx=8192), gpus, host, quant="Q4_K_M")
    assert (auto.fits, auto.gpu_layers, auto.cpu_moe_layers) == (True, 33, 7)
    replay = estimate(
        spec, RunConfig(ctx=8192, gpu_layers=33, cpu_moe_layers=auto.cpu_moe_layers), gpus, host, quant="Q4_K_M"
    )
    assert replay.fits and replay.cpu_moe_layers == 7
    assert replay.devices == auto.devices
    all_on_gpu = estimate(spec, RunConfig(ctx=8192, gpu_layers=33), gpus, host, quant="Q4_K_M")
    assert not all_on_gpu.fits and all_on_gpu.cpu_moe_layers == 0
