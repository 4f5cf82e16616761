"""This host for the bench: detection (reusing planner.hardware.detect), the devices the estimator plans
with, per-process memory (RSS sampling, NVML), and the read speed of the model's disk.

The predicted side of a bench uses the devices exactly as `agiplan estimate` builds them for this host
(the matched catalog CPU, or the generic planning host, with the detected RAM), so that measured ÷
predicted is the factor that corrects *those* estimates; a measured RAM bandwidth is reported beside it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.catalog import Catalog
from planner.estimate.types import Device
from planner.hardware.detect import HostInfo
from planner.measure.results import GpuSummary, HostSummary
from planner.plan.schema import Placement, PlanServer


def detect_this_host(
    cat: Catalog,
    *,
    measure_bandwidth: bool = False,
    disk_path: Path | None = None,
    progress: Callable[[float], None] | None = None,
) -> HostInfo:
    """`detect_host` with catalog matching; optionally RAM bandwidth and the read speed of `disk_path`."""
    from planner.hardware.detect import detect_host

    return detect_host(
        measure=measure_bandwidth or disk_path is not None,
        progress=progress,
        catalog_gpus=cat.gpu_name_candidates(),
        catalog_cpus=cat.cpu_name_candidates(),
        measure_seconds=1.0,
        disk_path=disk_path,
    )


def planning_devices(cat: Catalog, info: HostInfo) -> tuple[list[Device], Device]:
    """(GPUs, host) as the estimator sees this machine: catalog GPUs matched by name (memory already in use
    reserved), and the host from the matched catalog CPU (or the generic host) with the detected RAM."""
    from planner.estimate.devices import detected_ram_gib, gpu_device, host_device

    gpus = [
        gpu_device(cat, g.catalog_id, reserved_bytes=g.memory_used_bytes) for g in info.gpus if g.catalog_id is not None
    ]
    host = host_device(cat, info.cpu.catalog_id, detected_ram_gib(cat, info.cpu.catalog_id, info.ram_total_bytes))
    return gpus, host


def host_summary(info: HostInfo, host: Device) -> HostSummary:
    return HostSummary(
        hostname=info.hostname,
        cpu=info.cpu.model_name,
        cores=info.cpu.cores_physical,
        threads=info.cpu.threads,
        ram_total_bytes=info.ram_total_bytes,
        ram_bandwidth_gbs=info.ram_bandwidth_gbs,
        disk_read_gbs=info.disk_read_gbs,
        gpus=[
            GpuSummary(index=g.index, name=g.name, memory_total_bytes=g.memory_total_bytes, catalog_id=g.catalog_id)
            for g in info.gpus
        ],
        device_id=host.id,
        notes=list(info.notes),
    )


def plan_gpu_gap(server: PlanServer, placements: list[Placement], info: HostInfo) -> str | None:
    """What this host lacks of the GPUs `placements` of `server` are placed on, in plain words ("GPU 0
    (rtx-4090), GPU 1 (rtx-4090); this host has no GPU"), or None when each of those GPU indices is here
    and is the planned card (matched to the catalog by name, as `agiplan detect` does)."""
    here = {g.index: g for g in info.gpus}
    missing = []
    for i in sorted({i for pl in placements for i in pl.gpu_indices}):
        planned = server.gpus[i] if i < len(server.gpus) else "a GPU"
        have = here.get(i)
        if have is None:
            missing.append(f"GPU {i} ({planned})")
        elif have.catalog_id != planned:
            missing.append(f"GPU {i} ({planned}, here a {have.name})")
    if not missing:
        return None
    found = ", ".join(f"GPU {g.index} {g.name}" for g in info.gpus) if info.gpus else "no GPU"
    return f"{', '.join(missing)}; this host has {found}"


# ------------------------------------------------------------------------------------ process memory


@dataclass
class RssSampler:
    """Samples the resident set size of this process (or of `pid`) every `interval_s` in a thread; `peak_bytes`
    after stop()."""

    interval_s: float = 0.02
    pid: int = field(default_factory=os.getpid)
    baseline_bytes: int = 0
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _rss(self) -> int:
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)

    def sample(self) -> int:
        """The RSS now (the peak so far is kept); a process that has ended adds nothing (0)."""
        import psutil

        try:
            rss = self._rss()
        except psutil.NoSuchProcess:  # a child sampled by pid (llama-server) that has stopped
            return 0
        self.peak_bytes = max(self.peak_bytes, rss)
        return rss

    def start(self) -> RssSampler:
        self.baseline_bytes = self._rss()
        self.peak_bytes = self.baseline_bytes

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.sample()

        self._thread = threading.Thread(target=loop, name="agiplan-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.sample()
        return self.peak_bytes

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gpu_process_memory_bytes(pid: int | None = None, nvml: Any | None = None) -> int | None:
    """GPU memory this process holds on all NVIDIA GPUs (NVML's per-process figure); None without NVML/GPUs."""
    pid = os.getpid() if pid is None else pid
    try:
        if nvml is None:
            import pynvml as nvml_mod

            nvml = nvml_mod
        nvml.nvmlInit()
    except Exception:
        return None
    try:
        total = 0
        found = False
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
            for p in procs:
                if int(p.pid) == pid and p.usedGpuMemory is not None:
                    total += int(p.usedGpuMemory)
                    found = True
        return total if found else (0 if nvml.nvmlDeviceGetCount() else None)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
