"""The speed model (planner/estimate/speed.py): batched decode, layer split, prefill by prompt length,
datacenter parts and the batch calibration ratio.

Expected numbers are worked out by hand from the formula in each test's comment, on devices with round
figures so the arithmetic is checkable; the catalog cases quote where the measured figure comes from.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from planner.catalog import load_catalog
from planner.errors import EstimateError
from planner.estimate.devices import gpu_devices, host_device
from planner.estimate.estimate import estimate
from planner.estimate.speed import (
    SPLIT_DOUBLING_FRACTION,
    SPLIT_FIRST_FRACTION,
    VLLM_STEP_S,
    DeviceLoad,
    compute_bound_slots,
    estimate_speed,
    split_slowdown,
    tensor_allreduce_s,
    vllm_allreduce_s,
    vllm_cpu_s_per_seq,
)
from planner.estimate.types import Device, DeviceCalibration, RunConfig
from planner.model.arch import Source
from planner.sources.resolve import resolve_model

# An Ampere-class card with round figures: 1000 GB/s, 100 TFLOPS FP16 (CUDA, not Ada: t0 = 2.9 ms).
GPU = Device(
    id="test-gpu",
    kind="gpu",
    name="test GPU",
    capacity_bytes=24 * 2**30,
    bandwidth_gbs=1000.0,
    compute_tflops=100.0,
    vendor="nvidia",
    backend="cuda",
    source=Source("formula", "test"),
    arch="Ampere (GA102, sm_86)",
)
# 5 GB of Q4 weights, 8 B parameters, no KV at depth 0
LOAD = DeviceLoad(GPU, {"q4": 5_000_000_000}, {}, 131072, 8_000_000_000, 8_000_000_000, 2 * 32 * 256 * 32)
T_MEM_S = 5e9 / (1000e9 * 0.78)  # bytes / (bandwidth × η_q4)
T0_S = 2.9e-3
T_GEMM_S = 2 * 8e9 / (100e12 * 0.66)  # a token at the prefill rate: 2 × params / (FLOPS × η_prefill q4)
T_VECTOR_S = 2.2 * T_GEMM_S  # a column of the matrix-vector kernels: BATCH_TOKEN_FACTOR q4 × the above


def _speed(loads: list[DeviceLoad], **kw: object) -> object:
    args: dict[str, object] = {"depth_tokens": 0, "parallel": 1, "expert_fraction_one": 1.0}
    args.update(kw)
    return estimate_speed(loads, **args)  # type: ignore[arg-type]


def test_batched_decode_is_not_free() -> None:
    # t_step(B) = t_mem + t0 + 7 columns of the vector kernels + (B − 8) tokens at the GEMM rate:
    # 9.310 ms at B = 1, 9.310 + 7 × 0.5333 + 8 × 0.2424 = 14.98 ms at B = 16
    s1 = estimate_speed([LOAD], depth_tokens=0, parallel=1, expert_fraction_one=1.0)
    s16 = estimate_speed([LOAD], depth_tokens=0, parallel=16, expert_fraction_one=1.0)
    assert s1.decode_tok_s == pytest.approx(1 / (T_MEM_S + T0_S), rel=1e-9)
    assert s16.decode_tok_s == pytest.approx(s1.decode_tok_s, rel=1e-9)  # one stream is quoted alone
    t16 = T_MEM_S + T0_S + 7 * T_VECTOR_S + 8 * T_GEMM_S
    assert s16.decode_tok_s_per_slot == pytest.approx(1 / t16, rel=1e-9)
    assert s16.aggregate_tok_s == pytest.approx(16 / t16, rel=1e-9)
    assert s16.aggregate_tok_s == pytest.approx(1068.0, abs=1.0)
    assert s16.decode_tok_s_per_slot < 0.7 * s1.decode_tok_s  # 66.8 vs 107.4 t/s per stream


def test_kv_is_read_per_slot_at_depth() -> None:
    # each slot reads its own 8192 × 131072 B of KV: + B × 1.074 GB / 780 GB/s per step
    s = estimate_speed([LOAD], depth_tokens=8192, parallel=4, expert_fraction_one=1.0)
    kv_s = 4 * 8192 * 131072 / (1000e9 * 0.78)
    assert 1 / s.decode_tok_s_per_slot == pytest.approx(T_MEM_S + T0_S + kv_s + 3 * T_VECTOR_S, rel=1e-9)


def test_compute_bound_point() -> None:
    # compute(B) > t_mem = 6.410 ms: 7 × 0.5333 + (B − 8) × 0.2424 passes it at B = 20 (19: 6.40 ms)
    assert 7 * T_VECTOR_S + 11 * T_GEMM_S < T_MEM_S < 7 * T_VECTOR_S + 12 * T_GEMM_S
    assert compute_bound_slots([LOAD]) == 20
    # vLLM's GEMMs from the second sequence on: (B − 1) × 0.2424 > 6.410 at B = 28
    assert compute_bound_slots([LOAD], engine="vllm") == 28
    assert compute_bound_slots([LOAD], limit=10) is None


def test_batch_calibration_scales_only_the_per_slot_compute() -> None:
    cal = {GPU.id: DeviceCalibration(decode_ratio=1.0, prefill_ratio=1.0, batch_ratio=2.0)}
    s = estimate_speed([LOAD], depth_tokens=0, parallel=8, expert_fraction_one=1.0, calibration=cal)
    assert 1 / s.decode_tok_s_per_slot == pytest.approx(T_MEM_S + T0_S + 7 * T_VECTOR_S / 2.0, rel=1e-9)
    assert 1 / s.decode_tok_s == pytest.approx(T_MEM_S + T0_S, rel=1e-9)


def test_vllm_step_time() -> None:
    # vLLM: every extra sequence at the GEMM rate, plus its scheduler's fixed step time
    s = estimate_speed([LOAD], depth_tokens=0, parallel=4, expert_fraction_one=1.0, engine="vllm")
    assert 1 / s.decode_tok_s_per_slot == pytest.approx(T_MEM_S + T0_S + VLLM_STEP_S + 3 * T_GEMM_S, rel=1e-9)


def test_split_slowdown_per_added_card() -> None:
    # issue #13: Llama-3.1-8B Q4_K_M on 2 / 4 / 8 × RTX 4090 measured 13 / 17 / 19 % slower than on one card
    assert split_slowdown(1) == 0.0
    assert split_slowdown(2) == SPLIT_FIRST_FRACTION == 0.13
    assert split_slowdown(4) == pytest.approx(SPLIT_FIRST_FRACTION + SPLIT_DOUBLING_FRACTION)
    assert split_slowdown(8) == pytest.approx(0.19)
    cat = load_catalog()
    spec = resolve_model("llama-3.1-8b")
    host = host_device(cat, None, 64)

    def decode(n: int) -> float:
        gpus = gpu_devices(cat, ["rtx-4090"] * n)
        return estimate(spec, RunConfig(ctx=4096), gpus, host, quant="Q4_K_M", suggest=False).speed.decode_tok_s

    one = decode(1)
    for n, slower in ((2, 0.13), (4, 0.17), (8, 0.19)):
        assert one / decode(n) == pytest.approx(1 + slower, abs=0.011), n


def test_prefill_falls_with_prompt_length() -> None:
    # attention: 2 × 32 heads × 256 × 32 layers = 524,288 FLOPs per position; at mean position 4096 (pp8192)
    # that is 2.15 GFLOP per token at 0.35 of the GEMM rate next to 16 GFLOP of weights
    flops = 100e12 * 0.66
    attn = 524288
    for prompt in (512, 8192):
        s = estimate_speed([LOAD], depth_tokens=0, parallel=1, expert_fraction_one=1.0, prompt_tokens=prompt)
        expected = flops / (2 * 8e9 + attn * prompt / 2 / 0.35)
        assert s.prefill_tok_s == pytest.approx(expected, rel=1e-9)
    no_fa = estimate_speed(
        [LOAD], depth_tokens=0, parallel=1, expert_fraction_one=1.0, prompt_tokens=8192, flash_attn=False
    )
    assert no_fa.prefill_tok_s == pytest.approx(flops / (2 * 8e9 + attn * 4096 / 0.21), rel=1e-9)


def test_moe_prompt_reads_the_experts_each_micro_batch_touches() -> None:
    # 4 GB of the 5 GB are routed experts, 1 of 32 active (f = 1/32); 2 B active parameters. A micro-batch of 512
    # tokens touches 1 − (31/32)^512 ≈ 1 of the experts: 4e9 / (1000 GB/s × η_q4 0.78) = 5.13 ms a micro-batch,
    # 10.0 µs a token, on top of 2 × 2e9 / (100 TFLOPS × 0.66) = 60.6 µs of compute. A 16-token prompt touches
    # 1 − (31/32)^16 = 39.9 % of them, 2.05 ms read for 16 tokens: 128 µs a token.
    moe = DeviceLoad(GPU, {"q4": 5_000_000_000}, {"q4": 4_000_000_000}, 0, 8_000_000_000, 2_000_000_000)
    compute_s = 2 * 2e9 / (100e12 * 0.66)
    read_s = 4e9 / (1000e9 * 0.78)
    for prompt, touched in ((512, 1 - (31 / 32) ** 512), (16, 1 - (31 / 32) ** 16)):
        s = estimate_speed([moe], depth_tokens=0, parallel=1, expert_fraction_one=1 / 32, prompt_tokens=prompt)
        assert 1 / s.prefill_tok_s == pytest.approx(compute_s + read_s * touched / prompt, rel=1e-9)
    # a dense model of the same size pays no read: its 512-column GEMMs are compute-bound
    dense = replace(moe, expert_bytes_by_family={})
    s = estimate_speed([dense], depth_tokens=0, parallel=1, expert_fraction_one=1.0, prompt_tokens=512)
    assert 1 / s.prefill_tok_s == pytest.approx(compute_s, rel=1e-9)


def test_layer_split_prefill_is_pipelined() -> None:
    # two equal stages, 2048 / 512 = 4 micro-batches per llama_decode call: (2 + 3) / 4 = 1.25 stage times per
    # token instead of 2, i.e. 1.6 × a sequential split (issue #13: multi-GPU pp4096 was under by 39 %)
    half = DeviceLoad(GPU, {"q4": 2_500_000_000}, {}, 65536, 4_000_000_000, 4_000_000_000, 2 * 32 * 256 * 16)
    other = DeviceLoad(
        Device(**{**GPU.__dict__, "id": "test-gpu-2"}),
        {"q4": 2_500_000_000},
        {},
        65536,
        4_000_000_000,
        4_000_000_000,
        2 * 32 * 256 * 16,
    )
    split = estimate_speed([half, other], depth_tokens=0, parallel=1, expert_fraction_one=1.0, prompt_tokens=4096)
    one = estimate_speed([LOAD], depth_tokens=0, parallel=1, expert_fraction_one=1.0, prompt_tokens=4096)
    assert split.prefill_tok_s == pytest.approx(1.6 * one.prefill_tok_s, rel=1e-9)
    # a 512-token prompt is one micro-batch: nothing to overlap
    short = estimate_speed([half, other], depth_tokens=0, parallel=1, expert_fraction_one=1.0, prompt_tokens=512)
    one_short = estimate_speed([LOAD], depth_tokens=0, parallel=1, expert_fraction_one=1.0, prompt_tokens=512)
    assert short.prefill_tok_s == pytest.approx(one_short.prefill_tok_s, rel=1e-9)


def test_tensor_split_shares_every_layer() -> None:
    """-sm tensor: the two cards' work is shared, no layer-split factor, two all-reduces per layer
    (TENSOR_ALLREDUCE_S × 2 (n − 1) / 6 = 17.7 µs for two cards plus the hidden states over 11 GB/s); the prompt is
    not pipelined and pays the reductions of each 512-token micro-batch."""
    half = DeviceLoad(GPU, {"q4": 2_500_000_000}, {}, 65536, 4_000_000_000, 4_000_000_000, 2 * 32 * 256 * 16)
    other = replace(half, device=replace(GPU, id="test-gpu-2"))
    kw: dict[str, object] = {"n_layers": 32, "hidden_size": 4096}
    layer = _speed([half, other], **kw)
    tensor = _speed([half, other], split_mode="tensor", **kw)
    reduce_1 = 53e-6 * 2 / 6 + 1 * 4096 * 4 / 11e9  # one token's all-reduce over 2 cards: 2 (n-1)/n = 1
    assert tensor_allreduce_s(2, 1, 4096) == pytest.approx(reduce_1, rel=1e-9)
    assert 1 / layer.decode_tok_s == pytest.approx((T_MEM_S + T0_S) * 1.13, rel=1e-9)
    assert 1 / tensor.decode_tok_s == pytest.approx(T_MEM_S / 2 + T0_S + 64 * reduce_1, rel=1e-9)
    assert tensor.decode_tok_s / layer.decode_tok_s == pytest.approx(1.435, abs=0.005)  # 7.33 vs 10.52 ms
    # prefill: the whole model's compute on two cards at once + 64 reductions of 512 tokens, per token
    flops_s = (2 * 8e9 + 524288 * 256 / 0.35) / (100e12 * 0.66)
    per_token = flops_s / 2 + 64 * tensor_allreduce_s(2, 512, 4096) / 512
    assert 1 / tensor.prefill_tok_s == pytest.approx(per_token, rel=1e-9)
    # one card, or vLLM: split mode changes nothing
    assert _speed([LOAD], split_mode="tensor", **kw).decode_tok_s == _speed([LOAD]).decode_tok_s
    assert tensor_allreduce_s(1, 1, 4096) == 0.0


def test_tensor_split_needs_flash_attention_and_f16_kv() -> None:
    """llama.cpp refuses -sm tensor without flash attention or with a quantized KV cache (docs/multi-gpu.md)."""
    cat = load_catalog()
    spec = resolve_model("llama-3.1-8b")
    gpus = gpu_devices(cat, ["rtx-4090"] * 2)
    host = host_device(cat, None, 64)
    ok = estimate(spec, RunConfig(ctx=4096, split_mode="tensor"), gpus, host, quant="Q4_K_M", suggest=False)
    layer = estimate(spec, RunConfig(ctx=4096), gpus, host, quant="Q4_K_M", suggest=False)
    assert ok.speed.decode_tok_s > layer.speed.decode_tok_s
    assert any("-sm tensor (EXPERIMENTAL" in n for n in ok.notes)
    for cfg, msg in (
        (RunConfig(ctx=4096, split_mode="tensor", flash_attn=False), "requires flash attention"),
        (RunConfig(ctx=4096, split_mode="tensor", kv_type_k="q8_0", kv_type_v="q8_0"), "quantized KV cache"),
        (RunConfig(ctx=4096, split_mode="tensor", engine="ollama"), "is llama.cpp's"),
    ):
        with pytest.raises(EstimateError, match=msg):
            estimate(spec, cfg, gpus, host, quant="Q4_K_M", suggest=False)
    with pytest.raises(EstimateError, match="at least two GPUs"):
        estimate(spec, RunConfig(ctx=4096, split_mode="tensor"), gpus[:1], host, quant="Q4_K_M", suggest=False)


def test_vllm_tensor_parallel_step() -> None:
    """vLLM TP over NVLink: the merged ranks' step plus 2 all-reduces a layer of the batch's bf16 hidden states
    (10 µs + 2 (n − 1) / n × B × 4096 × 2 B / 150 GB/s), plus vLLM 0.5's CPU time per running sequence."""
    kw: dict[str, object] = {"engine": "vllm", "n_layers": 32, "hidden_size": 4096, "tensor_parallel": 2}
    one = _speed([LOAD], nvlink=True, **kw)
    reduce_1 = 10e-6 + 1 * 4096 * 2 / 150e9
    assert vllm_allreduce_s(2, 1, 4096, nvlink=True) == pytest.approx(reduce_1, rel=1e-9)
    assert 1 / one.decode_tok_s == pytest.approx(T_MEM_S + T0_S + VLLM_STEP_S + 64 * reduce_1, rel=1e-9)
    # PCIe cards reduce through the host at llama.cpp -sm tensor's figures: 2 cards 17.7 µs + 8 KiB / 11 GB/s
    pcie = _speed([LOAD], **kw)
    assert 1 / pcie.decode_tok_s - 1 / one.decode_tok_s == pytest.approx(
        64 * (53e-6 / 3 + 4096 * 2 / 11e9 - reduce_1), rel=1e-6
    )
    # 16 sequences on vLLM 0.5.4: + 16 × 0.25 ms of CPU a step, which more GPUs do not shorten
    cpu = vllm_cpu_s_per_seq("0.5.4")
    assert cpu == 0.25e-3
    assert vllm_cpu_s_per_seq("0.6.0") == vllm_cpu_s_per_seq("0.11.0") == 0.0
    old = _speed([LOAD], nvlink=True, parallel=16, cpu_s_per_seq=cpu, **kw)
    new = _speed([LOAD], nvlink=True, parallel=16, **kw)
    assert 1 / old.decode_tok_s_per_slot - 1 / new.decode_tok_s_per_slot == pytest.approx(16 * 0.25e-3, rel=1e-9)
    assert vllm_allreduce_s(1, 16, 4096, nvlink=True) == 0.0


def test_vllm_tensor_parallel_gains_less_per_added_gpu() -> None:
    """LambdaLabs vLLM 0.5.4 bench (shared/data/concurrency_speed.csv rows 125-141): Llama 3.1 8B FP8 on 1 and 8
    A100 SXM gave 1517.54 and 1972.26 output tok/s (1.30 ×); the CPU time per sequence keeps agiplan's gain well
    under the 8 × more bandwidth (it gave 5.3 × before), and the current vLLM, which overlaps that CPU work,
    gains more from the same cards."""
    cat = load_catalog()
    spec = resolve_model("llama-3.1-8b")
    host = host_device(cat, None, 128)

    def agg(n: int, version: str) -> float:
        cfg = RunConfig(engine="vllm", ctx=1024, parallel=256, depth_tokens=300, vllm_version=version)
        est = estimate(spec, cfg, gpu_devices(cat, ["a100-80gb"] * n), host, quant="FP8", suggest=False)
        return est.speed.aggregate_tok_s

    old_gain = agg(8, "0.5.4") / agg(1, "0.5.4")
    assert 1.3 < old_gain < 2.0
    assert agg(8, "0.11.0") / agg(1, "0.11.0") > 2 * old_gain


def test_datacenter_parts_are_scaled() -> None:
    # A100 80GB: GA100 marks a datacenter part; decode η × 0.70, prefill η × 0.42
    a100 = Device(**{**GPU.__dict__, "arch": "Ampere (GA100, sm_80)"})
    load = DeviceLoad(a100, {"q4": 5_000_000_000}, {}, 0, 8_000_000_000, 8_000_000_000, 0)
    s = estimate_speed([load], depth_tokens=0, parallel=1, expert_fraction_one=1.0)
    assert 1 / s.decode_tok_s == pytest.approx(5e9 / (1000e9 * 0.78 * 0.70) + T0_S, rel=1e-9)
    assert s.prefill_tok_s == pytest.approx(100e12 * 0.66 * 0.42 / 16e9, rel=1e-9)
    assert math.isfinite(compute_bound_slots([load]))


# ------------------------------------------------------------------------------------- unified memory


@pytest.mark.parametrize(
    ("gpu_id", "pool_gib", "share"),
    [
        ("apple-m2-ultra-192gb", 192, 0.75),  # macOS recommendedMaxWorkingSetSize ≈ 3/4 of RAM
        ("apple-m4-max-128gb", 128, 0.75),
        ("ryzen-ai-max-395-128gb", 128, 0.75),  # 96 of 128 GB assignable (AMD Variable Graphics Memory)
        ("dgx-spark", 128, 0.9),
    ],
)
def test_unified_memory_is_one_pool(gpu_id: str, pool_gib: int, share: float) -> None:
    from planner.estimate.devices import unified_host

    cat = load_catalog()
    (gpu,) = gpu_devices(cat, [gpu_id])
    host = unified_host(cat, [gpu_id], host_device(cat, None, None))
    # the GPU's part and the host's part add up to the pool: nothing is counted twice
    assert gpu.capacity_bytes + host.capacity_bytes == pool_gib * 2**30
    assert gpu.capacity_bytes == pytest.approx(share * pool_gib * 2**30, abs=2**20)
    assert host.bandwidth_gbs == gpu.bandwidth_gbs  # offloaded layers read the same memory
    # Llama 3.3 70B Q4_K_M (≈ 40 GiB of weights) at 8k: weights are placed once, on the GPU's part
    est = estimate(resolve_model("llama-3.3-70b"), RunConfig(ctx=8192), [gpu], host, quant="Q4_K_M", suggest=False)
    assert est.fits
    used = sum(d.used_bytes for d in est.devices)
    assert used < pool_gib * 2**30
    assert est.devices[0].layers == tuple(range(80))


def test_unified_machine_goes_alone() -> None:
    from planner.errors import HardwareError
    from planner.estimate.devices import unified_host

    cat = load_catalog()
    host = host_device(cat, None, None)
    assert unified_host(cat, ["rtx-4090"], host) is host  # a discrete card: the host as given
    with pytest.raises(HardwareError, match="alone"):
        unified_host(cat, ["apple-m4-max-128gb", "rtx-4090"], host)
    with pytest.raises(HardwareError, match="alone"):
        unified_host(cat, ["dgx-spark", "dgx-spark"], host)


def test_rpc_cost_by_link_speed() -> None:
    from planner.estimate.speed import RpcLink, rpc_decode_s, rpc_prefill_s_per_token

    # a 70B model's hidden state (8192 × 4 B = 32 KiB) there and back: 65,536 B per token per remote host
    gbe = RpcLink(link_gbps=1.0, rtt_s=0.3e-3)
    ten = RpcLink(link_gbps=10.0, rtt_s=0.3e-3)
    assert rpc_decode_s(8192, 1, gbe) == pytest.approx(0.3e-3 + 65536 / 125e6)  # 0.82 ms
    assert rpc_decode_s(8192, 1, ten) == pytest.approx(0.3e-3 + 65536 / 1.25e9)  # 0.35 ms
    assert rpc_decode_s(8192, 4, gbe, remote_hosts=2) == pytest.approx(2 * (0.3e-3 + 4 * 65536 / 125e6))
    # prefill: 0.52 ms a token on 1 GbE caps a split prompt near 1,900 t/s whatever the GPUs do
    per_token = rpc_prefill_s_per_token(8192, 512, gbe)
    assert per_token == pytest.approx(0.3e-3 / 512 + 65536 / 125e6)
    assert 1 / per_token == pytest.approx(1905, abs=1)
    assert rpc_prefill_s_per_token(8192, 512, ten) == pytest.approx(per_token / 10, rel=0.02)


CPU = Device(**{**GPU.__dict__, "id": "cpu", "kind": "cpu", "backend": "cpu", "vendor": "cpu", "arch": ""})
CPU_MEM_S = 1e9 / (1000e9 * 0.70)  # 1 GB of q4 weights / (1000 GB/s × CPU η q4)
CPU_TOKEN_S = 2 * 2e9 / (100e12 * 0.56)  # a token of 2 B parameters at the CPU prefill rate (η q4 0.56)


def test_cpu_one_sequence_and_several_take_different_kernels() -> None:
    # ggml-cpu (pinned b11434): one column runs the vec_dot / gemv kernels, a pass over the weights at
    # memory_s; from two columns tinyBLAS / tiled / repack gemm pass over them at CPU_GEMM_PASS_FACTOR (1.5) ×
    # memory_s and pay a token at the prefill rate per sequence: t(B) = 1.5 × t_mem + B × t_token.
    # Half the bytes are q8 (tinyBLAS tiles 4 columns): B = 6 adds a second pass over that half.
    load = DeviceLoad(CPU, {"q4": 500_000_000, "q8": 500_000_000}, {}, 0, 2_000_000_000, 2_000_000_000, 0)
    mem_s = 0.5e9 / (1000e9 * 0.70) + 0.5e9 / (1000e9 * 0.76)  # CPU η q4 0.70, q8 0.76
    token_s = 2 * 2e9 / (100e12 / (0.5 / 0.56 + 0.5 / 0.65))  # prefill η: bytes-weighted harmonic mean
    for slots, passes in ((1, 0.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.5), (6, 1.5), (8, 1.0), (12, 1.0), (16, 1.0)):
        s = estimate_speed([load], depth_tokens=0, parallel=slots, expert_fraction_one=1.0)
        want = mem_s if slots == 1 else passes * 1.5 * mem_s + slots * token_s
        assert 1 / s.decode_tok_s_per_slot == pytest.approx(want, rel=1e-9), slots
    # two sequences cost more than one (the measured Gemma 3 270M case: 2.3 × at 1 thread), four less than 4 ×
    t = {
        b: 1 / estimate_speed([load], depth_tokens=0, parallel=b, expert_fraction_one=1.0).decode_tok_s_per_slot
        for b in (1, 2, 4)
    }
    assert t[2] > 1.5 * t[1] and t[4] < 4 * t[1]


def test_cpu_calibration_ratios_divide_their_own_parts() -> None:
    # pass ÷ (decode × pass ratio), columns ÷ (prefill × batch ratio), KV ÷ decode ratio; one sequence only
    # sees the decode ratio
    load = DeviceLoad(CPU, {"q4": 1_000_000_000}, {}, 1000, 2_000_000_000, 2_000_000_000, 0)
    kv_s = 4 * 100 * 1000 / (1000e9 * 0.70)
    cal = {"cpu": DeviceCalibration(decode_ratio=0.5, prefill_ratio=0.8, batch_ratio=0.5, pass_ratio=2.0)}
    s4 = estimate_speed([load], depth_tokens=100, parallel=4, expert_fraction_one=1.0, calibration=cal)
    want = kv_s / 0.5 + 1.5 * CPU_MEM_S / (0.5 * 2.0) + 4 * CPU_TOKEN_S / (0.8 * 0.5)
    assert 1 / s4.decode_tok_s_per_slot == pytest.approx(want, rel=1e-9)
    assert 1 / s4.decode_tok_s == pytest.approx((CPU_MEM_S + 100 * 1000 / (1000e9 * 0.70)) / 0.5, rel=1e-9)


def test_cpu_repacked_weights_take_gemv_below_four_rows() -> None:
    # ggml-cpu/repack.cpp (pinned b11434): rows of a batch go through gemm in groups of 4 and one at a time
    # (gemv) for the B mod 4 left over, each gemv a one-sequence pass over the repacked weights. Here 60 % of the
    # bytes are repacked: that share takes the gemm pass and columns for 4⌊B/4⌋ rows and a one-column pass
    # (0.6 × memory_s) per gemv row; the other 40 % keep the many-column rule (pass + B columns).
    load = DeviceLoad(CPU, {"q4": 1_000_000_000}, {}, 0, 2_000_000_000, 2_000_000_000, 0, 600_000_000)
    share = 0.6
    for slots in (2, 3, 4, 5, 7, 8, 16):
        gemm_rows, gemv_rows = slots - slots % 4, slots % 4
        s = estimate_speed([load], depth_tokens=0, parallel=slots, expert_fraction_one=1.0)
        passes = (1 - share) + (share if gemm_rows else 0.0)
        columns = slots * (1 - share) + gemm_rows * share
        want = passes * 1.5 * CPU_MEM_S + columns * CPU_TOKEN_S + gemv_rows * share * CPU_MEM_S
        assert 1 / s.decode_tok_s_per_slot == pytest.approx(want, rel=1e-9), slots


def test_cpu_repacked_model_steps_slower_at_three_sequences_than_four() -> None:
    """Measured on this project's 2-core Zen 4 host (AVX-512; repack.cpp picks q4_0_8x8_q8_0), llama-batched-bench
    b11434 on a synthetic Llama 2 7B of 8 layers and an 8000-token vocabulary at Q4_0 (868 MiB of repacked layer
    weights, 26 MiB of Q6_K output; planner.measure.synthetic), -npp 16: CPU ms a step at 1 thread (CPU time of
    -ntg 40 minus -ntg 8, over 32 steps, load ≈ 2.7) 57.1 / 106.8 / 164.2 / 156.4 / 210.5 at B = 1 / 2 / 3 / 4 /
    5, and wall ms at -t 2 37.5 / 71.8 / 102.2 / 138.8 at B = 1 / 2 / 4 / 5: each row left over from the 4-row
    gemm costs one one-sequence step (B = 2 ≈ 1.9 ×, B = 3 > B = 4, B = 5 − B = 4 ≈ B = 1). So with the repacked
    bytes on the host load a Q4_0 model's 3-sequence step outlasts its 4-sequence one, while at Q8_0 (tinyBLAS, no
    repack) the step grows with B."""
    cat = load_catalog()
    host = host_device(cat, None, 64)
    spec = resolve_model("llama-2-7b")

    def step_s(quant: str, slots: int) -> float:
        cfg = RunConfig(ctx=4096, parallel=slots, gpu_layers=0, depth_tokens=0, flash_attn=False)
        return 1 / estimate(spec, cfg, [], host, quant=quant, suggest=False).speed.decode_tok_s_per_slot

    q4 = {b: step_s("Q4_0", b) for b in (1, 2, 3, 4)}
    assert q4[3] > q4[4]
    assert q4[2] / q4[1] == pytest.approx(2.0, abs=0.15)  # two gemv passes, measured 1.87 (1 thread)
    q8 = {b: step_s("Q8_0", b) for b in (3, 4)}
    assert q8[3] < q8[4]


def _step_s(ref: str, gpu_id: str, depth: int, *, swa_full: bool) -> tuple[float, float]:
    """Seconds of one decode step and of one prompt token (pp512) at `depth`, llama.cpp on one card."""
    cat = load_catalog()
    cfg = RunConfig(ctx=20480, depth_tokens=depth, swa_full=swa_full)
    gpus = gpu_devices(cat, [gpu_id])
    est = estimate(resolve_model(ref), cfg, gpus, host_device(cat, None, 64), quant="Q4_K_M", suggest=False)
    return 1 / est.speed.decode_tok_s, 1 / est.speed.prefill_tok_s


# Gemma 3 27B (catalog): 62 layers, every 6th full (10), 52 with a 1024-token window; 16 KV heads of 128, f16:
# 8192 B of KV per token per layer. llama.cpp's SWA cache: pad(1024 + n_ubatch 512, 256) = 1536 cells per slot
# (kv.llama_cpp_layout). A decode step at depth d reads 8192 × (10 × d + 52 × min(d, 1536)) B of KV instead of
# 8192 × 62 × d (swa_full, or before issue #13 item 3); prefill (pp512) attends at the mean position m = d + 256
# in the same way. The share is the depth cost with the window over the depth cost without it, t(d) − t(0) over
# t_swa_full(d) − t(0): the bandwidth and FLOP rates cancel. Llama 3.1 8B has no window: 1 at every depth.
# On an RTX 5090 (32 GB): Q4_K_M with swa_full's 62 × 8192 × 20480 B = 10.4 GB of KV still fits, so both runs
# keep every layer on the card.
@pytest.mark.parametrize(
    ("ref", "gpu_id", "depth", "decode_share", "prefill_share"),
    [
        # d = 16384: (10 × 16384 + 52 × 1536) / (62 × 16384) = 243712 / 1015808; prefill m = 16640, m0 = 256:
        # (10 × 16640 + 52 × 1536 − 62 × 256) / (62 × (16640 − 256)) = 230400 / 1015808
        ("gemma-3-27b", "rtx-5090", 16384, 243712 / 1015808, 230400 / 1015808),
        # d = 1024 < 1536 cells: the window has not filled, nothing saved
        ("gemma-3-27b", "rtx-5090", 1024, 1.0, 1.0),
        ("llama-3.1-8b", "rtx-4090", 16384, 1.0, 1.0),
        ("llama-3.1-8b", "rtx-4090", 4096, 1.0, 1.0),
    ],
)
def test_sliding_window_layers_read_only_their_cache(
    ref: str, gpu_id: str, depth: int, decode_share: float, prefill_share: float
) -> None:
    zero = _step_s(ref, gpu_id, 0, swa_full=False)
    assert _step_s(ref, gpu_id, 0, swa_full=True) == pytest.approx(zero, rel=1e-12)  # depth 0: no KV read
    windowed = _step_s(ref, gpu_id, depth, swa_full=False)
    full = _step_s(ref, gpu_id, depth, swa_full=True)
    assert (windowed[0] - zero[0]) / (full[0] - zero[0]) == pytest.approx(decode_share, rel=1e-9)
    assert (windowed[1] - zero[1]) / (full[1] - zero[1]) == pytest.approx(prefill_share, rel=1e-9)


def test_swa_full_reads_every_layer_at_every_depth() -> None:
    # swa_full keeps the old rule, KV read linear in depth over all 62 layers: t(16384) − t(0) = 2 × (t(8192) − t(0))
    zero, mid, deep = (_step_s("gemma-3-27b", "rtx-5090", d, swa_full=True)[0] for d in (0, 8192, 16384))
    assert deep - zero == pytest.approx(2 * (mid - zero), rel=1e-9)
