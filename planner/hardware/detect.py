"""Detect this host's GPUs (NVIDIA via NVML, AMD via sysfs), CPU and RAM; never raises on missing drivers.

The result, `HostInfo`, is also the *server file* format: `agiplan detect --format json` writes it,
`agiplan recommend --server-file` reads it back with `HostInfo.from_dict` / `read_host_json`.

JSON keys (schema_version 1; keep them stable):

    schema_version          int, 1
    hostname                str
    gpus[]                  index, name, vendor ("nvidia" | "amd"), memory_total_bytes,
                            memory_free_bytes, memory_used_bytes, driver_version (str | null),
                            catalog_id (str | null), source ("nvml" | "sysfs")
    cpu                     model_name, vendor, cores_physical, threads, avx2, avx512, catalog_id
    ram_total_bytes         int
    ram_available_bytes     int (free for new processes now, as psutil reports it)
    ram_bandwidth_gbs       float | null (measured, 10^9 B/s; null unless measured)
    ram_bandwidth_method    str | null (how it was measured: single-process; see bandwidth.py)
    disk_read_gbs           float | null (sequential read of one file; null unless measured)
    notes[]                 str: what could not be detected and why
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from planner.errors import HardwareError, PlannerError, shown
from planner.hardware.match import match_cpu, match_gpu
from planner.io import read_bytes_bounded, write_json_atomic

__all__ = [
    "NO_GPU_NOTE",
    "SCHEMA_VERSION",
    "CpuInfo",
    "GpuInfo",
    "HostInfo",
    "detect_amd_gpus",
    "detect_cpu",
    "detect_host",
    "detect_nvidia_gpus",
    "read_host_json",
    "write_host_json",
]

SCHEMA_VERSION = 1
NO_GPU_NOTE = "no GPU found: planning will use the CPU only"

_CONFIG = ConfigDict(extra="forbid", strict=True)  # a saved format: no "16" for 16, no "yes" for true
# Counts and bytes from a server file: at most 2^62 (4 EiB), so float conversions of them cannot overflow
# (a ram_total_bytes of 10^400 raised OverflowError in recommend; found by bench/fuzz_inputs.py).
NonNegInt = Annotated[int, Field(ge=0, le=1 << 62)]
Candidates = Iterable[tuple[str, list[str]]]


@dataclass(frozen=True, config=_CONFIG)
class GpuInfo:
    """One GPU as the driver reports it. Memory in bytes; `used` includes other processes and the desktop."""

    index: NonNegInt
    name: str
    vendor: Literal["nvidia", "amd"]
    memory_total_bytes: NonNegInt
    memory_free_bytes: NonNegInt
    memory_used_bytes: NonNegInt
    driver_version: str | None
    catalog_id: str | None
    source: str  # "nvml" or "sysfs": where the figures were read


@dataclass(frozen=True, config=_CONFIG)
class CpuInfo:
    """The host CPU (all sockets together). `avx512` means AVX-512 Foundation (avx512f)."""

    model_name: str
    vendor: str
    cores_physical: Annotated[int, Field(ge=1, le=1 << 20)]
    threads: Annotated[int, Field(ge=1, le=1 << 20)]
    avx2: bool
    avx512: bool
    catalog_id: str | None


@dataclass(frozen=True, config=_CONFIG)
class HostInfo:
    """Everything detect learns about one host; the JSON form is documented in the module docstring."""

    hostname: str
    gpus: Annotated[list[GpuInfo], Field(max_length=16)]  # plan.servers.MAX_GPUS_PER_SERVER: bounded before work
    cpu: CpuInfo
    ram_total_bytes: NonNegInt
    ram_available_bytes: NonNegInt
    ram_bandwidth_gbs: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    disk_read_gbs: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    ram_bandwidth_method: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with `schema_version` first; keys as in the module docstring."""
        body: dict[str, Any] = _HOST_ADAPTER.dump_python(self, mode="json")
        return {"schema_version": SCHEMA_VERSION, **body}

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "host data") -> HostInfo:
        """Validate a dict written by `to_dict` (e.g. a server file); errors name the field path."""
        if not isinstance(data, dict):
            raise HardwareError(f"{origin}: expected a JSON object, got {type(data).__name__}.")
        body = dict(data)
        version = body.pop("schema_version", None)
        if version != SCHEMA_VERSION:
            raise HardwareError(
                f"{origin}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION}); "
                "re-create it with 'agiplan detect --format json'."
            )
        try:
            text = json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise HardwareError(f"{origin}: not JSON data ({exc}).") from None
        try:
            # JSON mode: strict types, while nested objects may be plain dicts.
            return _HOST_ADAPTER.validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
            )
            raise HardwareError(f"{origin}: {problems}") from None


_HOST_ADAPTER: TypeAdapter[HostInfo] = TypeAdapter(HostInfo)


def write_host_json(path: Path, host: HostInfo) -> None:
    """Write `host.to_dict()` to `path` atomically (temp file in the same folder, then rename)."""
    write_json_atomic(Path(path), host.to_dict())


def read_host_json(path: Path) -> HostInfo:
    """Read a server file written by `agiplan detect --format json` (or `write_host_json`)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise HardwareError(
            f"Server file {path} does not exist; create it on that server with "
            "'agiplan detect --format json > server.json'."
        )
    try:
        # a regular file of at most 1 MiB (one host is ~1 KiB): a FIFO would hang, a huge file fill memory
        data = json.loads(read_bytes_bounded(path, "server file", 1 << 20))
    except PlannerError as exc:
        raise HardwareError(str(exc)) from None
    except (ValueError, RecursionError) as exc:  # bad JSON, not UTF-8, an integer of > 4300 digits
        raise HardwareError(f"Cannot read server file {path}: {shown(str(exc))}") from None
    return HostInfo.from_dict(data, origin=str(path))


# --------------------------------------------------------------------------------------------- NVIDIA


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def detect_nvidia_gpus(nvml: Any | None = None) -> tuple[list[GpuInfo], list[str]]:
    """NVIDIA GPUs through NVML (nvidia-ml-py's `pynvml`, or an object with the same functions).

    Returns (gpus, notes). A missing library or driver, or any NVML failure, gives no GPUs and a note
    "no NVIDIA driver (NVML: <reason>)" — never an exception.
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError as exc:
            return [], [f"no NVIDIA driver (NVML: nvidia-ml-py is not installed: {exc})"]
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, OSError ...: all mean "none"
        return [], [f"no NVIDIA driver (NVML: {_text(exc) or type(exc).__name__})"]
    gpus: list[GpuInfo] = []
    notes: list[str] = []
    try:
        try:
            driver: str | None = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception as exc:
            driver = None
            notes.append(f"NVIDIA driver version unknown (NVML: {_text(exc)})")
        count = int(nvml.nvmlDeviceGetCount())
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(nvml.nvmlDeviceGetName(handle))
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                notes.append(f"NVIDIA GPU {index} skipped (NVML: {_text(exc)})")
                continue
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name,
                    vendor="nvidia",
                    memory_total_bytes=int(mem.total),
                    memory_free_bytes=int(mem.free),
                    memory_used_bytes=int(mem.used),
                    driver_version=driver,
                    catalog_id=None,
                    source="nvml",
                )
            )
    except Exception as exc:
        notes.append(f"no NVIDIA driver (NVML: {_text(exc)})")
    finally:
        with contextlib.suppress(Exception):  # shutting down a half-initialised NVML is best effort
            nvml.nvmlShutdown()
    return gpus, notes


# ------------------------------------------------------------------------------------------------ AMD

# (PCI device id, revision) → marketing name, for discrete RDNA2/3/4 and Instinct parts.
# Source: libdrm data/amdgpu.ids (the table Mesa and amdgpu_top use), revision column included
# because one die serves several cards (0x744c rev c8 / cc / ce = 7900 XTX / XT / GRE).
_AMDGPU_IDS: dict[tuple[int, int], str] = {
    (0x73A5, 0xC0): "AMD Radeon RX 6950 XT",
    (0x73AF, 0xC0): "AMD Radeon RX 6900 XT",
    (0x73BF, 0xC0): "AMD Radeon RX 6900 XT",
    (0x73BF, 0xC1): "AMD Radeon RX 6800 XT",
    (0x73BF, 0xC3): "AMD Radeon RX 6800",
    (0x73DF, 0xC1): "AMD Radeon RX 6700 XT",
    (0x73DF, 0xC5): "AMD Radeon RX 6700 XT",
    (0x73FF, 0xC1): "AMD Radeon RX 6600 XT",
    (0x73FF, 0xC7): "AMD Radeon RX 6600",
    (0x738C, 0x01): "AMD Instinct MI100",
    (0x740C, 0x01): "AMD Instinct MI250X / MI250",
    (0x740F, 0x02): "AMD Instinct MI210",
    (0x7448, 0x00): "AMD Radeon Pro W7900",
    (0x744C, 0xC8): "AMD Radeon RX 7900 XTX",
    (0x744C, 0xCC): "AMD Radeon RX 7900 XT",
    (0x744C, 0xCE): "AMD Radeon RX 7900 GRE",
    (0x744C, 0xCF): "AMD Radeon RX 7900M",
    (0x745E, 0xCC): "AMD Radeon Pro W7800",
    (0x747E, 0xC8): "AMD Radeon RX 7800 XT",
    (0x747E, 0xFF): "AMD Radeon RX 7700 XT",
    (0x7480, 0xC0): "AMD Radeon RX 7600 XT",
    (0x7480, 0xCF): "AMD Radeon RX 7600",
    (0x74A1, 0x00): "AMD Instinct MI300X",
    (0x74A5, 0x00): "AMD Instinct MI325X",
    (0x7550, 0xC0): "AMD Radeon RX 9070 XT",
    (0x7550, 0xC3): "AMD Radeon RX 9070",
    (0x7551, 0xC0): "AMD Radeon AI PRO R9700",
}
_SYSTEM_AMDGPU_IDS = Path("/usr/share/libdrm/amdgpu.ids")
_AMD_VENDOR = 0x1002
_SMALL_VRAM_BYTES = 2 * 1024**3  # an APU's carve-out is 512 MiB–2 GiB; a discrete card has more
_CARD_DIR = re.compile(r"^card\d+$")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_hex(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _amd_name(device_dir: Path, device_id: int | None, revision: int | None) -> str:
    product = _read(device_dir / "product_name")  # amdgpu exposes it on some boards (from the VBIOS FRU)
    if product:
        return product
    if device_id is not None and revision is not None:
        known = _AMDGPU_IDS.get((device_id, revision))
        if known:
            return known
        text = _read(_SYSTEM_AMDGPU_IDS)
        if text:
            for line in text.splitlines():
                parts = [p.strip() for p in line.split(",", 2)]
                if len(parts) == 3 and not line.startswith("#"):
                    try:
                        if (int(parts[0], 16), int(parts[1], 16)) == (device_id, revision):
                            return parts[2]
                    except ValueError:
                        continue
    dev = f"{device_id:#06x}" if device_id is not None else "?"
    rev = f"{revision:#04x}" if revision is not None else "?"
    return f"AMD GPU (PCI device {dev} rev {rev})"


def detect_amd_gpus(sysfs_root: Path = Path("/sys"), *, first_index: int = 0) -> tuple[list[GpuInfo], list[str]]:
    """AMD GPUs through the amdgpu driver's sysfs files under `sysfs_root`/class/drm/card*/device.

    vendor == 0x1002, memory from `mem_info_vram_total` / `mem_info_vram_used` (bytes), name from
    `product_name` or the (device, revision) table above. Integrated GPUs (small VRAM carve-out) are
    listed with a note so a planner can ignore them.
    """
    drm = Path(sysfs_root) / "class" / "drm"
    gpus: list[GpuInfo] = []
    notes: list[str] = []
    try:
        cards = sorted((p for p in drm.iterdir() if _CARD_DIR.match(p.name)), key=lambda p: int(p.name[4:]))
    except OSError:
        return gpus, notes
    seen: set[str] = set()
    driver = _read(Path(sysfs_root) / "module" / "amdgpu" / "version") or None
    for card in cards:
        device_dir = card / "device"
        if _read_hex(device_dir / "vendor") != _AMD_VENDOR:
            continue
        try:
            key = str(device_dir.resolve())
        except OSError:
            key = str(device_dir)
        if key in seen:
            continue
        seen.add(key)
        device_id = _read_hex(device_dir / "device")
        revision = _read_hex(device_dir / "revision")
        name = _amd_name(device_dir, device_id, revision)
        total = _read_int(device_dir / "mem_info_vram_total")
        used = _read_int(device_dir / "mem_info_vram_used")
        if total is None or used is None:
            notes.append(f"{card.name} ({name}): no VRAM figures in sysfs (amdgpu driver not loaded?); skipped")
            continue
        used = min(used, total)
        if total < _SMALL_VRAM_BYTES:
            notes.append(
                f"{card.name} ({name}) has {total // 1024**2} MiB VRAM: likely an integrated GPU sharing system RAM"
            )
        gpus.append(
            GpuInfo(
                index=first_index + len(gpus),
                name=name,
                vendor="amd",
                memory_total_bytes=total,
                memory_free_bytes=total - used,
                memory_used_bytes=used,
                driver_version=driver,
                catalog_id=None,
                source="sysfs",
            )
        )
    return gpus, notes


# ------------------------------------------------------------------------------------------------ CPU


def _parse_cpuinfo(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """First processor's fields, and the set of (physical id, core id) pairs seen (physical cores)."""
    first: dict[str, str] = {}
    cores: set[tuple[str, str]] = set()
    block: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if block:
                if not first:
                    first = block
                if "core id" in block:
                    cores.add((block.get("physical id", "0"), block["core id"]))
                block = {}
            continue
        key, _, value = line.partition(":")
        block[key.strip()] = value.strip()
    return first, cores


_CPU_VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}


def detect_cpu(proc_root: Path = Path("/proc"), candidates: Candidates | None = None) -> tuple[CpuInfo, list[str]]:
    """CPU model and flags from `proc_root`/cpuinfo, core and thread counts from psutil."""
    import psutil

    notes: list[str] = []
    text = _read(Path(proc_root) / "cpuinfo") or ""
    first, core_ids = _parse_cpuinfo(text)
    model = first.get("model name") or first.get("Model") or platform.processor() or "unknown CPU"
    vendor_raw = first.get("vendor_id") or first.get("CPU implementer") or ""
    vendor = _CPU_VENDORS.get(vendor_raw, vendor_raw.lower() or "unknown")
    flags = set(first.get("flags", first.get("Features", "")).split())
    if not text:
        notes.append("could not read /proc/cpuinfo: CPU model and AVX flags unknown")
    threads = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or len(core_ids) or threads
    catalog_id = match_cpu(model, candidates) if candidates is not None else None
    cpu = CpuInfo(
        model_name=model,
        vendor=vendor,
        cores_physical=physical,
        threads=threads,
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        catalog_id=catalog_id,
    )
    return cpu, notes


# ----------------------------------------------------------------------------------------------- host


def detect_host(
    *,
    measure: bool = False,
    progress: Callable[[float], None] | None = None,
    sysfs_root: Path = Path("/sys"),
    proc_root: Path = Path("/proc"),
    nvml: Any | None = None,
    catalog_gpus: Candidates | None = None,
    catalog_cpus: Candidates | None = None,
    measure_seconds: float = 2.0,
    measure_buffer_bytes: int | None = None,
    disk_path: Path | None = None,
) -> HostInfo:
    """Detect this host. Never raises for missing drivers or GPUs: what is missing goes to `notes`.

    `nvml` replaces the `pynvml` module (tests); `catalog_gpus` / `catalog_cpus` are
    `(catalog_id, names)` pairs used to fill `catalog_id` (None: no matching). `measure` runs the RAM
    bandwidth measurement (`measure_seconds`, `measure_buffer_bytes`), reporting 0..1 to `progress`;
    `disk_path` additionally measures the read speed of that file.
    """
    import psutil

    notes: list[str] = []
    nvidia, nvidia_notes = detect_nvidia_gpus(nvml)
    amd, amd_notes = detect_amd_gpus(sysfs_root, first_index=len(nvidia))
    gpus = nvidia + amd
    if catalog_gpus is not None:
        candidates = list(catalog_gpus)
        gpus = [replace(g, catalog_id=match_gpu(g.name, candidates)) for g in gpus]
        notes.extend(
            f"GPU {g.index} '{g.name}' is not in the catalog; give its figures by hand"
            for g in gpus
            if g.catalog_id is None
        )
    notes.extend(nvidia_notes)
    notes.extend(amd_notes)
    if not gpus:
        notes.append(NO_GPU_NOTE)

    cpu_candidates = list(catalog_cpus) if catalog_cpus is not None else None
    cpu, cpu_notes = detect_cpu(proc_root, cpu_candidates)
    notes.extend(cpu_notes)
    if cpu_candidates is not None and cpu.catalog_id is None:
        notes.append(f"CPU '{cpu.model_name}' is not in the catalog")

    vm = psutil.virtual_memory()
    bandwidth: float | None = None
    method: str | None = None
    disk: float | None = None
    if measure:
        from planner.hardware.bandwidth import (
            RAM_BANDWIDTH_METHOD,
            measure_disk_read_gbs,
            measure_ram_bandwidth_gbs,
        )
        from planner.units import MIB

        buffer_bytes = measure_buffer_bytes if measure_buffer_bytes is not None else 256 * MIB
        bandwidth = measure_ram_bandwidth_gbs(
            seconds=measure_seconds, buffer_bytes=buffer_bytes, threads=1, progress=progress
        )
        method = RAM_BANDWIDTH_METHOD.format(threads=1) + f"; buffer {buffer_bytes // MIB} MiB"
        if disk_path is not None:
            result = measure_disk_read_gbs(disk_path)
            disk = result.read_gbs
            notes.append(f"disk read of {disk_path}: {result.note}")
    return HostInfo(
        hostname=socket.gethostname(),
        gpus=gpus,
        cpu=cpu,
        ram_total_bytes=int(vm.total),
        ram_available_bytes=int(vm.available),
        ram_bandwidth_gbs=bandwidth,
        disk_read_gbs=disk,
        ram_bandwidth_method=method,
        notes=notes,
    )
