"""Hardware detection: the real host, AMD via a written sysfs tree, NVIDIA via a stand-in NVML, matching.

What runs for real: detection on this machine (it has no GPU: no NVIDIA driver, no /sys/class/drm),
the real `pynvml` failing to find its library, /proc/cpuinfo and psutil, the numpy bandwidth
measurement and the CLI. What cannot run here is stood in for, and only that: an AMD GPU (a sysfs
tree with the files the amdgpu driver writes) and an NVIDIA driver (an object with pynvml's
functions, raising pynvml's own exception classes).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pynvml
import pytest
from typer.testing import CliRunner

from planner.cli import app
from planner.errors import HardwareError
from planner.hardware.bandwidth import measure_disk_read_gbs, measure_ram_bandwidth_gbs
from planner.hardware.detect import (
    NO_GPU_NOTE,
    SCHEMA_VERSION,
    CpuInfo,
    GpuInfo,
    HostInfo,
    detect_amd_gpus,
    detect_cpu,
    detect_host,
    detect_nvidia_gpus,
    read_host_json,
    write_host_json,
)
from planner.hardware.match import match_cpu, match_gpu
from planner.units import GIB, MIB

# Documented in planner/hardware/detect.py's module docstring; recommend --server-file reads these.
HOST_KEYS = {
    "schema_version",
    "hostname",
    "gpus",
    "cpu",
    "ram_total_bytes",
    "ram_available_bytes",
    "ram_bandwidth_gbs",
    "ram_bandwidth_method",
    "disk_read_gbs",
    "notes",
}
GPU_KEYS = {
    "index",
    "name",
    "vendor",
    "memory_total_bytes",
    "memory_free_bytes",
    "memory_used_bytes",
    "driver_version",
    "catalog_id",
    "source",
}
CPU_KEYS = {"model_name", "vendor", "cores_physical", "threads", "avx2", "avx512", "catalog_id"}

# Candidate lists shaped like the catalog's (id, [name, *names]); names as NVML / drivers print them.
GPU_CANDIDATES: list[tuple[str, list[str]]] = [
    ("rtx-4080", ["GeForce RTX 4080", "NVIDIA GeForce RTX 4080"]),
    ("rtx-4080-super", ["GeForce RTX 4080 SUPER"]),
    ("rtx-4090", ["GeForce RTX 4090"]),
    ("rtx-3090", ["GeForce RTX 3090"]),
    ("rtx-5090", ["GeForce RTX 5090"]),
    ("rx-7900-xtx", ["Radeon RX 7900 XTX"]),
    ("rx-7900-xt", ["Radeon RX 7900 XT"]),
    ("a100-80gb", ["A100 80GB"]),
    ("a100-40gb", ["A100 40GB"]),
    ("h100", ["H100"]),
    ("h200", ["H200"]),
    ("l40s", ["L40S"]),
]
CPU_CANDIDATES: list[tuple[str, list[str]]] = [
    ("ryzen-9-7950x", ["AMD Ryzen 9 7950X"]),
    ("ryzen-9-9950x", ["AMD Ryzen 9 9950X"]),
    ("core-i9-13900k", ["Intel Core i9-13900K"]),
    ("core-i9-14900k", ["Intel Core i9-14900K"]),
    ("threadripper-7980x", ["AMD Ryzen Threadripper 7980X"]),
    ("epyc-9654", ["AMD EPYC 9654"]),
]


def _nvml_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def _real_gpu_present() -> bool:
    return _nvml_present() or any(Path("/sys/class/drm").glob("card*/device/mem_info_vram_total"))


needs_gpu_less_host = pytest.mark.skipif(_real_gpu_present(), reason="this host has a GPU")


# ------------------------------------------------------------------------------------------ real host


@needs_gpu_less_host
def test_real_host_without_gpu() -> None:
    host = detect_host()
    assert host.gpus == []
    assert NO_GPU_NOTE in host.notes
    assert any(n.startswith("no NVIDIA driver (NVML: ") for n in host.notes)
    assert host.hostname == socket.gethostname()


def test_real_host_cpu_and_ram_match_psutil_and_cpuinfo() -> None:
    host = detect_host()
    assert host.cpu.threads == psutil.cpu_count(logical=True)
    assert host.cpu.cores_physical == (psutil.cpu_count(logical=False) or psutil.cpu_count(logical=True))
    assert host.ram_total_bytes == psutil.virtual_memory().total
    assert 0 < host.ram_available_bytes <= host.ram_total_bytes
    # Flags straight from the kernel, read here independently of the parser.
    flags_line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    flags = set(flags_line.split(":", 1)[1].split())
    assert host.cpu.avx2 == ("avx2" in flags)
    assert host.cpu.avx512 == ("avx512f" in flags)
    model_line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
    assert host.cpu.model_name == model_line.split(":", 1)[1].strip()
    assert host.ram_bandwidth_gbs is None and host.disk_read_gbs is None  # not measured unless asked


@needs_gpu_less_host
def test_real_pynvml_without_driver_reports_library_not_found() -> None:
    # The real nvidia-ml-py on a machine without libnvidia-ml.so raises NVMLError_LibraryNotFound.
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        pynvml.nvmlInit()
    gpus, notes = detect_nvidia_gpus()
    assert gpus == []
    assert notes == ["no NVIDIA driver (NVML: NVML Shared Library Not Found)"]


# ------------------------------------------------------------------------------------------ fake NVML


@dataclass
class _Mem:
    total: int
    free: int
    used: int


class FakeNvml:
    """Stands in for pynvml because no NVIDIA driver exists here; raises pynvml's real error classes.

    `devices` are (name, total, free, used, fail) rows; `fail` makes that device's memory query raise.
    """

    def __init__(
        self,
        devices: list[tuple[str | bytes, int, int, int, bool]],
        *,
        init_error: int | None = None,
        driver: str | bytes = "550.54.15",
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.driver = driver
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)  # NVMLError(code) builds the matching subclass

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return self.devices[handle][0]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Mem:
        _name, total, free, used, fail = self.devices[handle]
        if fail:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return _Mem(total, free, used)


# NVML reports an RTX 4090 as 24564 MiB total (nvidia-smi "24564MiB"), an RTX 4080 SUPER as 16376 MiB.
RTX_4090_TOTAL = 24564 * MIB
RTX_4080S_TOTAL = 16376 * MIB


def test_fake_nvml_two_gpus_matched_to_catalog(tmp_path: Path) -> None:
    nvml = FakeNvml(
        [
            ("NVIDIA GeForce RTX 4090", RTX_4090_TOTAL, RTX_4090_TOTAL - 900 * MIB, 900 * MIB, False),
            (
                b"NVIDIA GeForce RTX 4080 SUPER",
                RTX_4080S_TOTAL,
                RTX_4080S_TOTAL - 300 * MIB,
                300 * MIB,
                False,
            ),
        ],
        driver=b"550.54.15",
    )
    host = detect_host(nvml=nvml, sysfs_root=tmp_path, catalog_gpus=GPU_CANDIDATES)
    assert [(g.index, g.name, g.catalog_id, g.vendor, g.source) for g in host.gpus] == [
        (0, "NVIDIA GeForce RTX 4090", "rtx-4090", "nvidia", "nvml"),
        (1, "NVIDIA GeForce RTX 4080 SUPER", "rtx-4080-super", "nvidia", "nvml"),
    ]
    assert host.gpus[0].memory_total_bytes == RTX_4090_TOTAL
    assert host.gpus[0].memory_used_bytes == 900 * MIB
    assert host.gpus[1].memory_free_bytes == RTX_4080S_TOTAL - 300 * MIB
    assert {g.driver_version for g in host.gpus} == {"550.54.15"}  # bytes decoded
    assert NO_GPU_NOTE not in host.notes
    assert nvml.shutdown_calls == 1


def test_fake_nvml_init_failure_gives_note_not_exception(tmp_path: Path) -> None:
    nvml = FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    host = detect_host(nvml=nvml, sysfs_root=tmp_path)
    assert host.gpus == []
    assert "no NVIDIA driver (NVML: Driver Not Loaded)" in host.notes
    assert NO_GPU_NOTE in host.notes


def test_fake_nvml_one_failing_device_is_skipped_with_note() -> None:
    nvml = FakeNvml(
        [
            ("NVIDIA GeForce RTX 3090", 24576 * MIB, 24000 * MIB, 576 * MIB, True),
            ("NVIDIA GeForce RTX 3090", 24576 * MIB, 24000 * MIB, 576 * MIB, False),
        ]
    )
    gpus, notes = detect_nvidia_gpus(nvml)
    assert [g.index for g in gpus] == [1]  # NVML index kept: CUDA_VISIBLE_DEVICES order
    assert notes == ["NVIDIA GPU 0 skipped (NVML: GPU is lost)"]
    assert nvml.shutdown_calls == 1


def test_unmatched_gpu_gets_note(tmp_path: Path) -> None:
    nvml = FakeNvml([("NVIDIA GeForce RTX 4090 Laptop GPU", 16376 * MIB, 16000 * MIB, 376 * MIB, False)])
    host = detect_host(nvml=nvml, sysfs_root=tmp_path, catalog_gpus=GPU_CANDIDATES)
    assert host.gpus[0].catalog_id is None
    assert "GPU 0 'NVIDIA GeForce RTX 4090 Laptop GPU' is not in the catalog; give its figures by hand" in (host.notes)


# ------------------------------------------------------------------------------------------ fake sysfs


def _card(root: Path, name: str, files: dict[str, str]) -> None:
    device = root / "class" / "drm" / name / "device"
    device.mkdir(parents=True)
    for fname, text in files.items():
        (device / fname).write_text(text + "\n")


def _amd_sysfs(root: Path) -> None:
    """The files amdgpu writes per card (no AMD GPU exists here, so they are written by hand).

    (device, revision) pairs are from libdrm's data/amdgpu.ids.
    """
    # 7900 XTX without product_name (most consumer boards): the name comes from (0x744c, 0xc8).
    _card(
        root,
        "card0",
        {
            "vendor": "0x1002",
            "device": "0x744c",
            "revision": "0xc8",
            "mem_info_vram_total": str(24 * GIB),
            "mem_info_vram_used": str(512 * MIB),
        },
    )
    # A connector entry next to the card: not a card, must be ignored.
    (root / "class" / "drm" / "card0-DP-1").mkdir()
    # An NVIDIA card in sysfs is NVML's business; sysfs detection skips vendor 0x10de.
    _card(root, "card1", {"vendor": "0x10de", "device": "0x2684", "revision": "0xa1"})
    # 7900 XT (same die, revision 0xcc) that exposes product_name: it wins over the table.
    _card(
        root,
        "card2",
        {
            "vendor": "0x1002",
            "device": "0x744c",
            "revision": "0xcc",
            "product_name": "AMD Radeon RX 7900 XT",
            "mem_info_vram_total": str(20 * GIB),
            "mem_info_vram_used": str(2 * GIB),
        },
    )
    # Ryzen 7000 iGPU (Raphael, 0x164e) with a 512 MiB carve-out: listed, with a note.
    _card(
        root,
        "card3",
        {
            "vendor": "0x1002",
            "device": "0x164e",
            "revision": "0xc1",
            "mem_info_vram_total": str(512 * MIB),
            "mem_info_vram_used": str(100 * MIB),
        },
    )
    # AMD device whose driver is not bound: no VRAM files.
    _card(root, "card4", {"vendor": "0x1002", "device": "0x744c", "revision": "0xc8"})
    version = root / "module" / "amdgpu"
    version.mkdir(parents=True)
    (version / "version").write_text("6.7.0\n")


def test_amd_gpus_from_sysfs(tmp_path: Path) -> None:
    _amd_sysfs(tmp_path)
    gpus, notes = detect_amd_gpus(tmp_path)
    assert [(g.index, g.name, g.memory_total_bytes, g.memory_used_bytes, g.memory_free_bytes) for g in gpus] == [
        (0, "AMD Radeon RX 7900 XTX", 24 * GIB, 512 * MIB, 24 * GIB - 512 * MIB),
        (1, "AMD Radeon RX 7900 XT", 20 * GIB, 2 * GIB, 18 * GIB),
        (2, "AMD GPU (PCI device 0x164e rev 0xc1)", 512 * MIB, 100 * MIB, 412 * MIB),
    ]
    assert {(g.vendor, g.source, g.driver_version) for g in gpus} == {("amd", "sysfs", "6.7.0")}
    assert notes == [
        "card3 (AMD GPU (PCI device 0x164e rev 0xc1)) has 512 MiB VRAM: likely an integrated GPU sharing system RAM",
        "card4 (AMD Radeon RX 7900 XTX): no VRAM figures in sysfs (amdgpu driver not loaded?); skipped",
    ]


def test_amd_and_nvidia_together_are_indexed_after_nvml(tmp_path: Path) -> None:
    _amd_sysfs(tmp_path)
    nvml = FakeNvml([("NVIDIA GeForce RTX 4090", RTX_4090_TOTAL, RTX_4090_TOTAL, 0, False)])
    host = detect_host(nvml=nvml, sysfs_root=tmp_path, catalog_gpus=GPU_CANDIDATES)
    assert [(g.index, g.vendor, g.catalog_id) for g in host.gpus] == [
        (0, "nvidia", "rtx-4090"),
        (1, "amd", "rx-7900-xtx"),
        (2, "amd", "rx-7900-xt"),
        (3, "amd", None),
    ]


def test_missing_sysfs_means_no_amd_gpu(tmp_path: Path) -> None:
    assert detect_amd_gpus(tmp_path / "nothing") == ([], [])


# ------------------------------------------------------------------------------------------------ CPU

# Abridged /proc/cpuinfo of an i9-13900K (hybrid: AVX2 but no AVX-512 in the fused-off P-cores).
CPUINFO_13900K = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: 13th Gen Intel(R) Core(TM) i9-13900K
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse sse2 avx avx2 fma

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: 13th Gen Intel(R) Core(TM) i9-13900K
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse sse2 avx avx2 fma
"""


def test_cpuinfo_parsed_and_matched(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO_13900K)
    cpu, notes = detect_cpu(tmp_path, CPU_CANDIDATES)
    assert (cpu.model_name, cpu.vendor, cpu.avx2, cpu.avx512, cpu.catalog_id) == (
        "13th Gen Intel(R) Core(TM) i9-13900K",
        "intel",
        True,
        False,
        "core-i9-13900k",
    )
    assert notes == []


def test_unreadable_cpuinfo_is_a_note(tmp_path: Path) -> None:
    cpu, notes = detect_cpu(tmp_path)
    assert notes == ["could not read /proc/cpuinfo: CPU model and AVX flags unknown"]
    assert cpu.avx2 is False and cpu.threads == psutil.cpu_count(logical=True)


# ---------------------------------------------------------------------------------------------- match

GPU_MATCH_CASES = [
    # NVML names (nvidia-smi -L output format)
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("NVIDIA GeForce RTX 4080", "rtx-4080"),
    ("NVIDIA GeForce RTX 4080 SUPER", "rtx-4080-super"),  # SUPER is its own part
    ("nvidia geforce rtx 4080 super", "rtx-4080-super"),  # case does not matter
    ("NVIDIA GeForce RTX 4090 Laptop GPU", None),  # 16 GB mobile part, not the desktop card
    ("NVIDIA GeForce RTX 4090 D", None),  # China-market variant, different bandwidth/compute
    ("NVIDIA GeForce RTX 3090 Ti", None),  # Ti is not the 3090
    ("NVIDIA GeForce RTX 3090", "rtx-3090"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"),  # form factor dropped, memory must agree
    ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
    ("NVIDIA A100", None),  # no size: 40 and 80 GB both fit, so ambiguous
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA H100 NVL", None),  # 94 GB NVL is a different product
    ("NVIDIA H200", "h200"),
    ("NVIDIA L40S", "l40s"),
    ("NVIDIA L40", None),
    # amdgpu product_name / libdrm names
    ("AMD Radeon RX 7900 XTX", "rx-7900-xtx"),
    ("AMD Radeon RX 7900 XT", "rx-7900-xt"),
    ("AMD Radeon RX 7900 GRE", None),
    ("Radeon RX 7900XTX", "rx-7900-xtx"),  # spacing
    ("", None),
    ("NVIDIA", None),  # only brand words
]


@pytest.mark.parametrize(("name", "expected"), GPU_MATCH_CASES)
def test_match_gpu(name: str, expected: str | None) -> None:
    assert match_gpu(name, GPU_CANDIDATES) == expected


CPU_MATCH_CASES = [
    # /proc/cpuinfo "model name" lines as the kernel prints them
    ("AMD Ryzen 9 7950X 16-Core Processor", "ryzen-9-7950x"),
    ("AMD Ryzen 9 7950X3D 16-Core Processor", None),  # X3D is a different part
    ("AMD Ryzen 9 9950X 16-Core Processor", "ryzen-9-9950x"),
    ("13th Gen Intel(R) Core(TM) i9-13900K", "core-i9-13900k"),
    ("13th Gen Intel(R) Core(TM) i9-13900KF", None),  # KF: no iGPU; own catalog entry if needed
    ("Intel(R) Core(TM) i9-14900K", "core-i9-14900k"),
    ("AMD Ryzen Threadripper 7980X 64-Cores", "threadripper-7980x"),
    ("AMD EPYC 9654 96-Core Processor", "epyc-9654"),
    ("AMD EPYC", None),  # what this VM reports
    ("AMD Ryzen 7 7840HS w/ Radeon 780M Graphics", None),
]


@pytest.mark.parametrize(("model_name", "expected"), CPU_MATCH_CASES)
def test_match_cpu(model_name: str, expected: str | None) -> None:
    assert match_cpu(model_name, CPU_CANDIDATES) == expected


# ----------------------------------------------------------------------------------------------- JSON


def _sample_host() -> HostInfo:
    return HostInfo(
        hostname="box",
        gpus=[
            GpuInfo(
                index=0,
                name="NVIDIA GeForce RTX 4090",
                vendor="nvidia",
                memory_total_bytes=RTX_4090_TOTAL,
                memory_free_bytes=RTX_4090_TOTAL - GIB,
                memory_used_bytes=GIB,
                driver_version="550.54.15",
                catalog_id="rtx-4090",
                source="nvml",
            )
        ],
        cpu=CpuInfo(
            model_name="AMD Ryzen 9 7950X 16-Core Processor",
            vendor="amd",
            cores_physical=16,
            threads=32,
            avx2=True,
            avx512=True,
            catalog_id="ryzen-9-7950x",
        ),
        ram_total_bytes=64 * GIB,
        ram_available_bytes=60 * GIB,
        ram_bandwidth_gbs=62.5,
        disk_read_gbs=6.8,
        ram_bandwidth_method="numpy streaming read",
        notes=["a note"],
    )


def test_host_json_round_trip_and_keys(tmp_path: Path) -> None:
    host = _sample_host()
    data = json.loads(json.dumps(host.to_dict()))
    assert set(data) == HOST_KEYS
    assert set(data["gpus"][0]) == GPU_KEYS
    assert set(data["cpu"]) == CPU_KEYS
    assert data["schema_version"] == SCHEMA_VERSION
    assert HostInfo.from_dict(data) == host
    path = tmp_path / "server.json"
    write_host_json(path, host)
    assert read_host_json(path) == host
    assert [p.name for p in tmp_path.iterdir()] == ["server.json"]  # no temp file left behind


def _mutated(change: dict[str, Any]) -> dict[str, Any]:
    data = _sample_host().to_dict()
    for dotted, value in change.items():
        node: Any = data
        *path, last = dotted.split(".")
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 2}, "schema_version 2 is not supported (expected 1)"),
        (
            {"gpus.0.memory_total_bytes": -1},
            "gpus.0.memory_total_bytes: Input should be greater than or equal to 0",
        ),
        ({"gpus.0.vendor": "intel"}, "gpus.0.vendor: Input should be 'nvidia' or 'amd'"),
        ({"cpu.threads": 0}, "cpu.threads: Input should be greater than or equal to 1"),
        ({"ram_bandwidth_gbs": -3.0}, "ram_bandwidth_gbs: Input should be greater than 0"),
        ({"gpu_count": 1}, "gpu_count: Unexpected keyword argument"),  # extra keys are refused
        ({"cpu.avx512": "yes"}, "cpu.avx512: Input should be a valid boolean"),  # strict types
        ({"ram_total_bytes": "64"}, "ram_total_bytes: Input should be a valid integer"),
    ],
)
def test_host_json_validation_names_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(HardwareError) as err:
        HostInfo.from_dict(_mutated(change), origin="server.json")
    assert str(err.value).startswith("server.json: ")
    assert message in str(err.value)


def test_read_host_json_errors(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match="does not exist; create it on that server"):
        read_host_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HardwareError, match="Cannot read server file"):
        read_host_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(HardwareError, match="expected a JSON object, got list"):
        read_host_json(bad)
    # issue 15: a FIFO hung `recommend --server-file`; a 2 MiB file is more than a server file can be
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(HardwareError, match=r"is a FIFO \(named pipe\); a server file must be a regular file"):
        read_host_json(fifo)
    bad.write_bytes(b" " * (2 << 20))
    with pytest.raises(HardwareError, match="larger than the 1024 KiB agiplan reads for a server file"):
        read_host_json(bad)


# ------------------------------------------------------------------------------------------ bandwidth


def test_ram_bandwidth_is_positive_and_reports_progress() -> None:
    seen: list[float] = []
    gbs = measure_ram_bandwidth_gbs(seconds=0.05, buffer_bytes=4 * MIB, progress=seen.append)
    assert gbs > 0 and math.isfinite(gbs)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 1.0


def test_ram_bandwidth_threads() -> None:
    gbs = measure_ram_bandwidth_gbs(seconds=0.05, buffer_bytes=4 * MIB, threads=2)
    assert gbs > 0 and math.isfinite(gbs)


@pytest.mark.parametrize("kwargs", [{"seconds": 0.0}, {"seconds": math.nan}, {"threads": 0}, {"buffer_bytes": 4}])
def test_ram_bandwidth_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(HardwareError):
        measure_ram_bandwidth_gbs(**kwargs)


def test_disk_read_reads_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x01" * (3 * MIB + 5))
    seen: list[float] = []
    result = measure_disk_read_gbs(path, block_bytes=MIB, progress=seen.append)
    assert result.bytes_read == 3 * MIB + 5
    assert result.read_gbs > 0 and math.isfinite(result.read_gbs)
    assert seen[-1] == 1.0 and len(seen) == 4
    assert result.cache_dropped is True  # Linux has posix_fadvise
    assert "posix_fadvise DONTNEED" in result.note
    capped = measure_disk_read_gbs(path, max_bytes=MIB)
    assert capped.bytes_read == MIB


def test_disk_read_errors(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match="missing: no such file"):
        measure_disk_read_gbs(tmp_path / "missing")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(HardwareError, match="is empty"):
        measure_disk_read_gbs(tmp_path / "empty")
    with pytest.raises(HardwareError, match="is a directory; a file to measure disk read speed with must be"):
        measure_disk_read_gbs(tmp_path)


def test_cli_detect_measure_disk_fifo_exits_2_at_once(tmp_path: Path) -> None:
    """`detect --measure --disk fifo` blocked forever in open() (a FIFO with no writer)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "planner", "detect", "--measure", "--disk", str(fifo)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()  # the RAM progress bar leaves an empty line on a non-terminal
    assert len(lines) == 1 and lines[0].startswith(f"error: {fifo}: is a FIFO (named pipe); a file to measure"), lines
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - t0 < 10  # the RAM measurement runs first (~1-2 s); the FIFO is refused at once


# ------------------------------------------------------------------------------------------------ CLI

runner = CliRunner()


def test_cli_detect_json_has_documented_keys() -> None:
    result = runner.invoke(app, ["detect", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == HOST_KEYS
    assert set(data["cpu"]) == CPU_KEYS
    assert all(set(g) == GPU_KEYS for g in data["gpus"])
    assert HostInfo.from_dict(data).cpu.threads == psutil.cpu_count(logical=True)


@needs_gpu_less_host
def test_cli_detect_table_says_cpu_only() -> None:
    result = runner.invoke(app, ["detect"])
    assert result.exit_code == 0, result.output
    assert f"No GPU detected on {socket.gethostname()} — CPU-only planning." in result.stdout
    assert f"note: {NO_GPU_NOTE}" in result.stdout


def test_cli_detect_measure_json() -> None:
    result = runner.invoke(app, ["detect", "--format", "json", "--measure", "--seconds", "0.1", "--buffer-mib", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the progress bar went to stderr, stdout is pure JSON
    assert data["ram_bandwidth_gbs"] > 0 and math.isfinite(data["ram_bandwidth_gbs"])
    assert "one process" in data["ram_bandwidth_method"]
    assert "buffer 4 MiB" in data["ram_bandwidth_method"]


def test_cli_detect_disk_needs_measure(tmp_path: Path) -> None:
    result = runner.invoke(app, ["detect", "--disk", str(tmp_path)])
    assert result.exit_code == 2
    assert "--disk needs --measure" in result.output


def test_more_ram_than_the_catalog_cpu_allows_is_capped_for_bench_and_plans(tmp_path: Path) -> None:
    """A 7950X board with 256 GiB (newer BIOSes allow it; catalog/hardware.yaml says 192): `bench` used to
    abort on such a host ("supports at most 192 GiB") while `recommend --server-file` capped it. Both cap now,
    and the plan says so."""
    from dataclasses import replace

    from planner.catalog import load_catalog
    from planner.measure.host import planning_devices
    from planner.plan.servers import server_from_detect

    cat = load_catalog()
    info = replace(_sample_host(), ram_total_bytes=256 * GIB)
    max_gib = cat.cpu("ryzen-9-7950x").max_ram_gib
    _gpus, host = planning_devices(cat, info)
    assert host.capacity_bytes == int(max_gib * GIB)
    path = tmp_path / "big.json"
    write_host_json(path, info)
    server = server_from_detect(path, cat)
    assert server.ram_gib == max_gib
    assert any(f"RAM planned as {max_gib:g} GiB" in n for n in server.notes)
