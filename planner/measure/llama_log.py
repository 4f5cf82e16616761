"""Read llama.cpp's own allocation lines ("CPU KV buffer size = 18.00 MiB") into bytes per device and kind.

Formats (src/llama-model.cpp, src/llama-kv-cache.cpp, src/llama-context.cpp):
    load_tensors:   CPU_Mapped model buffer size =   236.06 MiB
    llama_kv_cache:        CPU KV buffer size =    18.00 MiB
    llama_context:        CPU compute buffer size =   514.25 MiB
    llama_context:   CPU  output buffer size =     1.00 MiB
Sizes are printed with two decimals of MiB, so a parsed figure is exact to ±0.005 MiB (5 KiB).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

_LINE_LOOSE = re.compile(
    r"(?P<dev>[A-Za-z0-9_]+)\s+(?P<kind>model|KV|compute|output|RS)\s+buffer size\s*=\s*(?P<mib>[0-9.]+)\s*MiB"
)
MIB = 1024 * 1024


@dataclass
class BufferSizes:
    """Bytes by (device buffer name, kind). kind: model, KV, compute, output."""

    by_device: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    def total(self, kind: str) -> int:
        return sum(d.get(kind, 0) for d in self.by_device.values())

    @property
    def devices(self) -> list[str]:
        return list(self.by_device)


def parse_buffer_sizes(log_text: str) -> BufferSizes:
    """All '... buffer size = X MiB' lines of ONE model load + context creation.

    Model and KV lines add up (split files; a sliding-window model has two KV caches, one line each);
    compute and output lines replace earlier ones (llama.cpp re-reserves its graph, last one wins)."""
    out = BufferSizes()
    for m in _LINE_LOOSE.finditer(log_text):
        dev, kind = m.group("dev"), m.group("kind")
        n = round(float(m.group("mib")) * MIB)
        if kind in ("model", "KV", "RS"):
            out.by_device[dev][kind] = out.by_device[dev].get(kind, 0) + n
        else:
            out.by_device[dev][kind] = n
    return out
