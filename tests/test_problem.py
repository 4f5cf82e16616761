"""planner.plan.problem: the estimate memo recommend's candidates come from."""

from __future__ import annotations

from planner.catalog import load_catalog
from planner.estimate.devices import gpu_device, host_device
from planner.estimate.estimate import estimate
from planner.estimate.types import RunConfig
from planner.plan.problem import EstimateCache
from planner.sources.resolve import resolve_model

CAT = load_catalog()


def test_memo_tells_apart_two_servers_with_one_cpu_and_different_ram() -> None:
    # Llama 3 70B Q4_K_M is 39.6 GiB: one RTX 4090 takes about 21 GiB of it, so the rest fits a 128 GiB
    # host and not a 16 GiB one. The memo once keyed the host by CPU id and bandwidth alone and answered the
    # 16 GiB server with the 128 GiB server's estimate.
    gpus = [gpu_device(CAT, "rtx-4090")]
    big = host_device(CAT, "ryzen-9-7950x", 128)
    small = host_device(CAT, "ryzen-9-7950x", 16)
    cfg = RunConfig(ctx=8192)
    cache = EstimateCache(CAT)
    on_big = cache.estimate("llama-3-70b", "Q4_K_M", cfg, gpus, big)
    on_small = cache.estimate("llama-3-70b", "Q4_K_M", cfg, gpus, small)
    fresh = estimate(resolve_model("llama-3-70b"), cfg, gpus, small, quant="Q4_K_M", suggest=False)
    assert on_big is not None and on_big.fits
    assert on_small is not None
    assert (on_small.fits, on_small.devices[-1].device.capacity_bytes) == (False, 16 * 2**30)
    assert on_small.devices == fresh.devices
