"""Servers to plan on: existing ones (`--server "main: 2x rtx-4090, ryzen-9-7950x, 128GiB"`, or the JSON
of `agiplan detect`) and candidate new ones assembled from catalog parts with prices (CPU + RAM + 0..2 GPUs).

A new server costs CPU + RAM (catalog price per GiB of its DDR generation) + GPUs. Motherboard, PSU,
case and disk are not in the catalog; `BASE_PLATFORM_USD` stands for them and is stated in the plan.
A CPU or GPU is priced at its street price where the catalog has one, else its launch MSRP; at its used
price only where the stack allows used parts (`allow_used: true`). Each part says which price it carries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.catalog import Catalog
from planner.catalog.schema import CpuEntry, GpuEntry, PartPrice
from planner.errors import HardwareError, PlannerError, shown
from planner.estimate.devices import detected_ram_gib, gpu_device, host_device
from planner.estimate.types import Device
from planner.model.arch import Source
from planner.units import GIB

if TYPE_CHECKING:
    from planner.hardware.detect import HostInfo

DEFAULT_SERVER_SPEC = "main: 2x rtx-4090, ryzen-9-7950x, 128GiB"
DEFAULT_SERVER_NOTE = (
    "no --server given: assumed the seed's 'one strong server': 2x RTX 4090, Ryzen 9 7950X, 128 GiB DDR5 "
    "(give yours with --server or --server-file)"
)
# Motherboard + PSU + case + NVMe for a new desktop-class server: agiplan's assumption, not a catalog price.
BASE_PLATFORM_USD = 600.0
BASE_PLATFORM_NOTE = (
    f"a new server's price includes ${BASE_PLATFORM_USD:.0f} for motherboard, PSU, case and NVMe "
    "(an assumption; the catalog prices CPUs, RAM and GPUs)"
)
NEW_SERVER_RAM_GIB: tuple[int, ...] = (64, 128)  # the seed's second server: 64–128 GB RAM
MAX_NEW_GPUS = 2
MAX_GPUS_PER_SERVER = 16  # 8-GPU boards are the common maximum; 16 covers the largest (HGX-class 16-way) hosts


@dataclass(frozen=True)
class Part:
    id: str
    kind: str  # cpu / gpu / ram / platform
    count: float
    price_usd: float  # for all `count` units
    price_date: str | None
    condition: str = "new"  # new / used
    price_basis: str = "assumption"  # street / used / msrp (catalog) / estimate (RAM) / assumption (platform)
    price_source: str | None = None

    @classmethod
    def priced(cls, id: str, kind: str, count: int, unit: PartPrice) -> Part:
        """`count` units of a catalog part at its buyer's price."""
        return cls(id, kind, count, count * unit.usd, unit.date, unit.condition, unit.basis, unit.source)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "count": self.count,
            "price_usd": self.price_usd,
            "price_date": self.price_date,
            "condition": self.condition,
            "price_basis": self.price_basis,
            "price_source": self.price_source,
        }


def buyer_price(entry: CpuEntry | GpuEntry, *, allow_used: bool = False) -> PartPrice:
    """The unit price a purchasable catalog part is bought at (see `_Priced.purchase_price`)."""
    price = entry.purchase_price(allow_used=allow_used)
    assert price is not None, "purchasable parts have a price"
    return price


@dataclass(frozen=True)
class Server:
    """One machine: catalog CPU (or None: a generic desktop), GPUs by catalog id in index order, RAM."""

    name: str
    cpu: str | None
    gpus: tuple[str, ...]
    ram_gib: float
    new: bool = False
    cost_usd: float = 0.0
    parts: tuple[Part, ...] = ()
    gpu_reserved_bytes: tuple[int, ...] = ()  # per GPU: already used by other processes (from detect)
    disk_read_gbs: float | None = None  # measured by detect; else the stack's disk
    notes: tuple[str, ...] = field(default=())
    ram_bandwidth_gbs: float | None = None  # measured by `detect --measure`; else the catalog CPU's DDR figure
    detected_cores: int | None = None  # physical cores from detect (sizes a CPU that is not in the catalog)

    @property
    def hardware(self) -> str:
        parts: list[str] = []
        counts: dict[str, int] = {}
        for g in self.gpus:
            counts[g] = counts.get(g, 0) + 1
        parts += [f"{n}x {g}" if n > 1 else g for g, n in counts.items()]
        if not self.gpus:
            parts.append("no GPU")
        parts.append(self.cpu or "generic CPU")
        parts.append(f"{self.ram_gib:g} GiB")
        return ", ".join(parts)

    def gpu_devices(self, cat: Catalog) -> list[Device]:
        res = self.gpu_reserved_bytes or (0,) * len(self.gpus)
        return [gpu_device(cat, g, reserved_bytes=r) for g, r in zip(self.gpus, res, strict=True)]

    def host(self, cat: Catalog) -> Device:
        host = host_device(cat, self.cpu, self.ram_gib)
        if self.cpu is None and self.detected_cores:
            # a CPU outside the catalog: scale the generic 16-core desktop's FP32 peak by the cores detected
            host = replace(
                host,
                compute_tflops=host.compute_tflops * self.detected_cores / 16,
                threads=self.detected_cores,
                name=f"{host.name}, {self.detected_cores} cores",
            )
        if self.ram_bandwidth_gbs:
            host = replace(
                host,
                bandwidth_gbs=self.ram_bandwidth_gbs,
                name=f"{host.name}, measured {self.ram_bandwidth_gbs:.1f} GB/s",
                source=Source("measured", f"RAM read bandwidth measured by agiplan detect --measure ({host.source})"),
            )
        return host

    def cores(self, cat: Catalog) -> int:
        return cat.cpu(self.cpu).cores if self.cpu else (self.detected_cores or 16)

    def with_gpus(self, extra: Sequence[str]) -> Server:
        """The same server with the `extra` catalog GPUs added (free: nothing reserved on them)."""
        reserved = (*self.gpu_reserved_bytes, *(0 for _ in extra)) if self.gpu_reserved_bytes else ()
        return replace(self, gpus=(*self.gpus, *extra), gpu_reserved_bytes=reserved)


_RAM_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(gib|gb|g|tib|tb|t)$", re.IGNORECASE)
_GPU_RE = re.compile(r"^(?:(\d+)\s*[x×*]\s*)?(\S.*)$")
MAX_RAM_GIB = 64 * 1024  # 64 TiB: above any single host's RAM today (the largest 8-socket boards hold 32 TiB)
_SPEC_MAX_CHARS = 1000  # a --server string is typed by hand: "main: 2x rtx-4090, ryzen-9-7950x, 128GiB" is 40


def parse_server_spec(spec: str, cat: Catalog, *, default_name: str = "main") -> Server:
    """`"main: 2x rtx-4090, ryzen-9-7950x, 128GiB"` -> Server. The name is optional; parts in any order;
    GPU ids may repeat or carry a count; RAM as 128GiB / 128GB / 128G (read as GiB)."""
    if len(spec) > _SPEC_MAX_CHARS:
        raise HardwareError(f"--server: a description of {len(spec)} characters; at most {_SPEC_MAX_CHARS}.")
    text = spec.strip()
    name = default_name
    if ":" in text:
        name, text = (s.strip() for s in text.split(":", 1))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
            raise HardwareError(f"--server '{spec}': server name '{name}' must be letters, digits, '-', '_' or '.'.")
    cpu: str | None = None
    gpus: list[str] = []
    ram_gib: float | None = None
    for raw in (p.strip() for p in text.split(",")):
        if not raw:
            continue
        m = _RAM_RE.match(raw.replace(" ", ""))
        if m:
            value = float(m.group(1))
            ram_gib = value * 1024 if m.group(2).lower().startswith("t") else value
            continue
        gm = _GPU_RE.match(raw)
        digits = gm.group(1) if gm and gm.group(1) else "1"
        # the count is bounded as text, before int() and before a list of that many GPUs is built
        # ("1000000000x rtx-4090" took 40 s and 15.6 GB; 20 digits overflowed)
        count = int(digits) if len(digits) <= 3 else MAX_GPUS_PER_SERVER + 1
        if count > MAX_GPUS_PER_SERVER - len(gpus):
            raise HardwareError(
                f"--server '{shown(spec)}': more than {MAX_GPUS_PER_SERVER} GPUs; agiplan plans at most "
                f"{MAX_GPUS_PER_SERVER} per server."
            )
        ident = gm.group(2).strip() if gm else raw
        try:
            kind, entry = cat.find(ident)
        except PlannerError:
            raise HardwareError(
                f"--server '{spec}': '{ident}' is not a catalog GPU or CPU id nor a RAM size like 128GiB "
                "(see 'agiplan catalog hardware')."
            ) from None
        if kind == "gpu":
            gpus += [entry.id] * count
        elif kind == "cpu":
            if cpu is not None:
                raise HardwareError(f"--server '{spec}': two CPUs ({cpu}, {entry.id}); give one per server.")
            cpu = entry.id
        else:
            raise HardwareError(f"--server '{spec}': '{ident}' is a catalog {kind}, not a GPU or CPU.")
    if ram_gib is None:
        ram_gib = float(min(cat.cpu(cpu).max_ram_gib, 64)) if cpu else 64.0
    if cpu is not None and ram_gib > cat.cpu(cpu).max_ram_gib:
        raise HardwareError(f"--server '{spec}': {cpu} supports at most {cat.cpu(cpu).max_ram_gib} GiB of RAM.")
    if not 0 < ram_gib <= MAX_RAM_GIB:
        raise HardwareError(f"--server '{shown(spec)}': RAM must be more than 0 and at most {MAX_RAM_GIB} GiB.")
    return Server(name=name, cpu=cpu, gpus=tuple(gpus), ram_gib=ram_gib)


def server_from_detect(path: Path | str, cat: Catalog, *, name: str | None = None) -> Server:
    """A server from the JSON of `agiplan detect --format json`: catalog-matched GPUs (memory already
    used by other processes is reserved), the CPU, total RAM and the measured disk speed."""
    from planner.hardware.detect import read_host_json

    info = read_host_json(Path(path))
    _check_detect_strings(path, info)
    gpus: list[str] = []
    reserved: list[int] = []
    notes: list[str] = []
    for g in info.gpus:
        if g.catalog_id is None or g.catalog_id not in cat.gpus:
            raise HardwareError(
                f"{path}: GPU {g.index} '{g.name}' is not in the catalog; add it to catalog/hardware.yaml "
                "or describe the server with --server."
            )
        gpus.append(g.catalog_id)
        reserved.append(g.memory_used_bytes)
        if g.memory_used_bytes:
            notes.append(f"GPU {g.index}: {g.memory_used_bytes / GIB:.1f} GiB already in use (from detect)")
    cpu = info.cpu.catalog_id if info.cpu.catalog_id in cat.cpus else None
    if cpu is None:
        notes.append(f"CPU '{info.cpu.model_name}' is not in the catalog: planned as a generic desktop CPU")
    ram_gib = detected_ram_gib(cat, cpu, info.ram_total_bytes)
    if ram_gib < info.ram_total_bytes / GIB:
        notes.append(f"RAM planned as {ram_gib:g} GiB, the catalog maximum of {cpu} (detected more)")
    return Server(
        name=name or info.hostname or "main",
        cpu=cpu,
        gpus=tuple(gpus),
        ram_gib=round(ram_gib, 1),
        gpu_reserved_bytes=tuple(reserved),
        disk_read_gbs=info.disk_read_gbs,
        notes=tuple(notes),
        ram_bandwidth_gbs=info.ram_bandwidth_gbs,
        detected_cores=info.cpu.cores_physical,
    )


_SERVER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def _check_detect_strings(path: Path | str, info: HostInfo) -> None:
    """A server file is input like any other: its hostname becomes the server's name (file names, script
    lines, URLs), so it must be a plain host name; the GPU and CPU names printed in notes must hold no
    control character."""
    if info.hostname and not _SERVER_NAME_RE.fullmatch(info.hostname):
        raise HardwareError(
            f"{path}: hostname {info.hostname!r} must be letters, digits, '-', '_' or '.' (at most 64); "
            "fix the hostname in the file."
        )
    texts = [info.cpu.model_name, *(g.name for g in info.gpus)]
    for text in texts:
        if any(ord(c) < 0x20 or c in "\x7f\x85\u2028\u2029" for c in text):
            raise HardwareError(f"{path}: {text!r} holds a control character; fix the server file.")


def _dominated_cpu(a: str, b: str, cat: Catalog, allow_used: bool) -> bool:
    """CPU `a` is dominated by `b`: b costs no more and is at least as good in cores, DRAM bandwidth,
    FP32 peak and maximum RAM, on the same DDR generation (same RAM price)."""
    ca, cb = cat.cpu(a), cat.cpu(b)
    pa, pb = buyer_price(ca, allow_used=allow_used).usd, buyer_price(cb, allow_used=allow_used).usd
    no_worse = (
        pb <= pa
        and cb.cores >= ca.cores
        and cb.peak_bandwidth_gbs >= ca.peak_bandwidth_gbs
        and cb.fp32_gflops >= ca.fp32_gflops
        and cb.max_ram_gib >= ca.max_ram_gib
        and cb.ddr == ca.ddr
    )
    strictly = (pb, -cb.cores, -cb.peak_bandwidth_gbs, -cb.fp32_gflops) != (
        pa,
        -ca.cores,
        -ca.peak_bandwidth_gbs,
        -ca.fp32_gflops,
    )
    return no_worse and (strictly or b < a)


def _dominated_gpu(a: str, b: str, cat: Catalog, allow_used: bool) -> bool:
    """GPU `a` is dominated by `b`: same vendor, b costs no more, has at least the memory, bandwidth and FLOPS."""
    ga, gb = cat.gpu(a), cat.gpu(b)
    pa, pb = buyer_price(ga, allow_used=allow_used).usd, buyer_price(gb, allow_used=allow_used).usd
    no_worse = (
        ga.vendor == gb.vendor
        and pb <= pa
        and gb.memory_mib >= ga.memory_mib
        and gb.bandwidth_gbs >= ga.bandwidth_gbs
        and gb.fp16_tflops >= ga.fp16_tflops
    )
    strictly = (pb, -gb.memory_mib, -gb.bandwidth_gbs, -gb.fp16_tflops) != (
        pa,
        -ga.memory_mib,
        -ga.bandwidth_gbs,
        -ga.fp16_tflops,
    )
    return no_worse and (strictly or b < a)


def purchasable(
    cat: Catalog, allow: Sequence[str] | None = None, *, allow_used: bool = False
) -> tuple[list[str], list[str]]:
    """Priced CPUs and consumer/workstation GPUs that may be bought (only `allow` ids when given),
    with SKUs dominated at their buyer's price removed. Returns (cpu_ids, gpu_ids)."""
    allowed = {cat.find(a)[1].id for a in allow} if allow else None
    cpus = [c.id for c in cat.cpus.values() if c.price_usd is not None and (allowed is None or c.id in allowed)]
    gpus = [
        g.id
        for g in cat.gpus.values()
        if g.price_usd is not None and g.form != "datacenter" and (allowed is None or g.id in allowed)
    ]
    cpus = [a for a in cpus if not any(b != a and _dominated_cpu(a, b, cat, allow_used) for b in cpus)]
    gpus = [a for a in gpus if not any(b != a and _dominated_gpu(a, b, cat, allow_used) for b in gpus)]
    if allowed is not None and not cpus:
        # GPUs allowed but no CPU named: any priced CPU may carry them
        cpus = [c.id for c in cat.cpus.values() if c.price_usd is not None]
        cpus = [a for a in cpus if not any(b != a and _dominated_cpu(a, b, cat, allow_used) for b in cpus)]
    return sorted(cpus), sorted(gpus)


def new_server(
    cat: Catalog, cpu: str, ram_gib: int, gpus: Sequence[str], *, name: str = "new", allow_used: bool = False
) -> Server:
    """A server to buy, priced from the catalog: CPU + RAM × price per GiB + GPUs + the base platform;
    CPU and GPUs at their buyer's price (used where allowed and known, else street, else MSRP)."""
    c = cat.cpu(cpu)
    ram_price = cat.ram_prices[c.ddr]
    parts = [
        Part.priced(c.id, "cpu", 1, buyer_price(c, allow_used=allow_used)),
        Part(
            f"{c.ddr}-ram-gib",
            "ram",
            ram_gib,
            ram_gib * ram_price.usd_per_gib,
            ram_price.price_date,
            price_basis="estimate",
            price_source=ram_price.source,
        ),
        Part("base-platform", "platform", 1, BASE_PLATFORM_USD, None),
    ]
    counts: dict[str, int] = {}
    for g in gpus:
        counts[g] = counts.get(g, 0) + 1
    for g, n in counts.items():
        parts.append(Part.priced(g, "gpu", n, buyer_price(cat.gpu(g), allow_used=allow_used)))
    cost = round(sum(p.price_usd for p in parts), 2)
    return Server(
        name=name, cpu=cpu, gpus=tuple(gpus), ram_gib=float(ram_gib), new=True, cost_usd=cost, parts=tuple(parts)
    )


def new_server_candidates(
    cat: Catalog,
    *,
    budget_usd: float | None = None,
    allow: Sequence[str] | None = None,
    max_gpus: int = MAX_NEW_GPUS,
    name: str = "new",
    allow_used: bool = False,
) -> list[Server]:
    """Every purchasable second server (CPU × RAM size × 0..max_gpus identical GPUs) within the budget,
    cheapest first; with `allow_used`, a part that has a used price is bought used (same hardware, cheaper)."""
    cpus, gpus = purchasable(cat, allow, allow_used=allow_used)
    gpu_sets: list[tuple[str, ...]] = [()]
    for g in gpus:
        gpu_sets += [(g,) * n for n in range(1, max_gpus + 1)]
    out: list[Server] = []
    for cpu in cpus:
        for ram in NEW_SERVER_RAM_GIB:
            if ram > cat.cpu(cpu).max_ram_gib:
                continue
            for gs in gpu_sets:
                s = new_server(cat, cpu, ram, gs, name=name, allow_used=allow_used)
                if budget_usd is None or s.cost_usd <= budget_usd:
                    out.append(s)
    out.sort(key=lambda s: (s.cost_usd, s.hardware))
    return out
