"""Devices from catalog ids: GPUs by id, a host from a CPU id and a RAM size (or a generic desktop).

Bandwidth of a host = memory channels × 8 bytes × DDR transfer rate (officially supported speed),
e.g. dual-channel DDR5-5200 = 2 × 8 × 5200e6 = 83.2 GB/s.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.catalog import Catalog
from planner.errors import HardwareError
from planner.estimate.types import Device
from planner.model.arch import Source
from planner.units import GIB, MIB

# A planning host when no --cpu is given: a desktop with dual-channel DDR5-5200 (AMD's official
# maximum for Ryzen 7000) and 64 GiB; compute like a 16-core AVX2 CPU.
GENERIC_HOST_RAM_GIB = 64
GENERIC_HOST_BANDWIDTH_GBS = 83.2
GENERIC_HOST_FP32_TFLOPS = 2.0


def gpu_device(cat: Catalog, gpu_id: str, *, reserved_bytes: int = 0) -> Device:
    """A catalog GPU; on a unified-memory machine only the part of the pool its GPU may use."""
    g = cat.gpu(gpu_id)
    backend = "cuda" if g.vendor == "nvidia" else ("rocm" if "rocm" in g.backends else g.backends[0])
    return Device(
        id=g.id,
        kind="gpu",
        name=g.name,
        capacity_bytes=_gpu_part_bytes(g.memory_mib, g.gpu_share),
        bandwidth_gbs=g.bandwidth_gbs,
        compute_tflops=g.fp16_tflops,
        vendor=g.vendor,
        backend=backend,
        source=Source("catalog", f"catalog/hardware.yaml: {g.id} ({g.source})"),
        reserved_bytes=reserved_bytes,
        arch=g.arch,
    )


def _gpu_part_bytes(memory_mib: int, gpu_share: float | None) -> int:
    total = memory_mib * MIB
    return total if gpu_share is None else int(total * gpu_share) // MIB * MIB


def unified_host(cat: Catalog, gpu_ids: Sequence[str], host: Device) -> Device:
    """The host of a unified-memory machine: the pool less its GPU's part, read at the pool's bandwidth.

    On such a machine (Apple M-series, Ryzen AI Max, DGX Spark) the GPU and the CPU share one memory, so
    the model's weights live there once: a layer is either in the GPU's part or in the rest, never in
    both, and the two parts add up to the pool. Without a unified GPU among `gpu_ids`, `host` as given."""
    unified = [cat.gpu(g) for g in gpu_ids if cat.gpu(g).unified_memory]
    if not unified:
        return host
    if len(gpu_ids) != 1:
        raise HardwareError(
            f"{unified[0].name} is a whole machine with unified memory: give it alone with --gpu, once."
        )
    g = unified[0]
    total = g.memory_mib * MIB
    gpu_part = _gpu_part_bytes(g.memory_mib, g.gpu_share)
    return Device(
        id=f"{g.id}-host",
        kind="cpu",
        name=f"{g.name}: the CPU's part of the unified memory, {(total - gpu_part) / GIB:.1f} GiB",
        capacity_bytes=total - gpu_part,
        bandwidth_gbs=g.bandwidth_gbs,
        compute_tflops=host.compute_tflops,
        vendor="cpu",
        backend="cpu",
        source=Source(
            "catalog",
            f"catalog/hardware.yaml: {g.id}: pool {g.memory_mib} MiB less the GPU's share {g.gpu_share} "
            f"({g.source_of('gpu_share')})",
        ),
        threads=host.threads,
    )


def detected_ram_gib(cat: Catalog, cpu_id: str | None, ram_total_bytes: int) -> float:
    """A detected machine's RAM for planning: capped at its catalog CPU's maximum, which can be older than the
    board's BIOS (host_device refuses more, as it should for a RAM size someone typed)."""
    ram_gib = ram_total_bytes / GIB
    if cpu_id is not None and cpu_id in cat.cpus:
        ram_gib = min(ram_gib, float(cat.cpu(cpu_id).max_ram_gib))
    return ram_gib


def host_device(cat: Catalog, cpu_id: str | None, ram_gib: float | None) -> Device:
    """The host as a device: its RAM is the capacity, its DRAM bandwidth the speed of offloaded layers."""
    if ram_gib is not None and not 0 < ram_gib < float("inf"):  # also NaN
        raise HardwareError(f"--ram must be a positive number of GiB, got {ram_gib}.")
    if cpu_id is None:
        ram = GENERIC_HOST_RAM_GIB if ram_gib is None else ram_gib
        return Device(
            id="cpu",
            kind="cpu",
            name=f"generic desktop, dual-channel DDR5-5200, {ram:g} GiB",
            capacity_bytes=int(ram * GIB),
            bandwidth_gbs=GENERIC_HOST_BANDWIDTH_GBS,
            compute_tflops=GENERIC_HOST_FP32_TFLOPS,
            vendor="cpu",
            backend="cpu",
            source=Source("formula", "assumed host: 2 channels × 8 B × 5200 MT/s (pass --cpu ID --ram GIB)"),
            threads=16,
        )
    c = cat.cpu(cpu_id)
    ram = float(min(c.max_ram_gib, 64)) if ram_gib is None else ram_gib
    if ram > c.max_ram_gib:
        raise HardwareError(f"{c.name} supports at most {c.max_ram_gib} GiB of RAM; --ram {ram:g} is more.")
    bw = c.peak_bandwidth_gbs
    return Device(
        id=c.id,
        kind="cpu",
        name=f"{c.name}, {c.memory_channels}-channel {c.ddr}-{c.ddr_speed_mts}, {ram:g} GiB",
        capacity_bytes=int(ram * GIB),
        bandwidth_gbs=bw,
        compute_tflops=c.fp32_gflops / 1000.0,
        vendor="cpu",
        backend="cpu",
        source=Source("catalog", f"catalog/hardware.yaml: {c.id} ({c.source}); bandwidth = channels × 8 B × MT/s"),
        threads=c.cores,
    )


def gpu_devices(cat: Catalog, gpu_ids: Sequence[str]) -> list[Device]:
    return [gpu_device(cat, g) for g in gpu_ids]
