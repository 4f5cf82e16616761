"""Map device names reported by drivers (NVML, sysfs, /proc/cpuinfo) to catalog ids.

The library takes plain candidate lists, `(catalog_id, [names...])`, so it does not depend on the
catalog module. Matching is deliberately strict: a name matches a candidate only when the
*model-defining* tokens are equal after normalisation. So "RTX 4080 SUPER" never becomes
`rtx-4080`, "RTX 4090 Laptop GPU" never becomes the desktop `rtx-4090`, and "7950X3D" never
becomes `ryzen-9-7950x`. A wrong id would silently plan with the wrong memory and bandwidth;
no id (None) makes the caller say "not in the catalog" instead.

Normalisation, in order:
1. lower case; drop trademark marks "(r)", "(tm)";
2. CPU noise: "13th Gen", "16-Core Processor", "w/ Radeon 780M Graphics", "@ 3.00GHz";
3. split on anything that is not a letter or digit;
4. drop brand words that drivers add or omit at will (nvidia, geforce, amd, radeon, intel, tesla,
   gpu, processor, cpu) and form-factor words that do not change the part (pcie, sxm4, hbm3 ...);
5. pull out memory-size tokens ("80gb"): if both sides give one they must agree, a side without
   one matches any (so "NVIDIA H100 80GB HBM3" matches a candidate named "H100");
6. split letter/digit runs ("rtx4090" → "rtx 4090", "7900xtx" → "7900 xtx") so spacing does not matter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["match_cpu", "match_gpu", "normalise_name"]

# Words that vendors put in front of, or after, the part name inconsistently.
_BRAND_WORDS = frozenset(
    {"nvidia", "geforce", "amd", "ati", "radeon", "intel", "tesla", "gpu", "processor", "cpu", "graphics"}
)
# Packaging / memory-technology tokens that do not change which catalog part it is.
_FORM_FACTOR_WORDS = frozenset({"pcie", "sxm", "sxm2", "sxm3", "sxm4", "sxm5", "hbm2", "hbm2e", "hbm3", "hbm3e", "oam"})
_MEMORY_TOKEN = re.compile(r"^(\d+)gb$")
_TRADEMARKS = re.compile(r"\((?:r|tm|c)\)")
_CPU_NOISE = (
    re.compile(r"\b\d+(?:st|nd|rd|th) gen\b"),  # "13th Gen Intel(R) Core(TM) i9-13900K"
    re.compile(r"\b\d+-cores?\b(?: processor)?"),  # "AMD Ryzen 9 7950X 16-Core Processor"
    re.compile(r"\s(?:w/|with)\s.*$"),  # "AMD Ryzen 7 7840HS w/ Radeon 780M Graphics"
    re.compile(r"\s@\s.*$"),  # "Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz"
)
_LETTER_DIGIT = re.compile(r"[a-z]+|\d+")


def normalise_name(name: str, *, cpu: bool = False) -> tuple[tuple[str, ...], str | None]:
    """(model-defining tokens, memory token or None) for a device name; see the module docstring."""
    text = _TRADEMARKS.sub(" ", name.lower())
    if cpu:
        for pattern in _CPU_NOISE:
            text = pattern.sub(" ", text)
    memory: str | None = None
    tokens: list[str] = []
    for raw in re.split(r"[^a-z0-9]+", text):
        if not raw or raw in _BRAND_WORDS or raw in _FORM_FACTOR_WORDS:
            continue
        mem = _MEMORY_TOKEN.match(raw)
        if mem:
            memory = f"{int(mem.group(1))}gb"
            continue
        tokens.extend(_LETTER_DIGIT.findall(raw))
    return tuple(tokens), memory


def _match(name: str, candidates: Iterable[tuple[str, list[str]]], *, cpu: bool) -> str | None:
    tokens, memory = normalise_name(name, cpu=cpu)
    if not tokens:
        return None
    exact: set[str] = set()  # memory sizes given on both sides and equal
    loose: set[str] = set()  # memory size missing on one side
    for catalog_id, names in candidates:
        # The id itself ("rtx-4080-super", "ryzen-9-7950x") is a name too.
        for candidate in [catalog_id, *names]:
            cand_tokens, cand_memory = normalise_name(candidate, cpu=cpu)
            if cand_tokens != tokens:
                continue
            if memory is not None and cand_memory is not None:
                if memory == cand_memory:
                    exact.add(catalog_id)
            else:
                loose.add(catalog_id)
    hits = exact or loose
    # Two different ids for one device name is ambiguous: say "unknown" rather than guess.
    return next(iter(hits)) if len(hits) == 1 else None


def match_gpu(name: str, candidates: Iterable[tuple[str, list[str]]]) -> str | None:
    """Catalog id for a GPU device name (e.g. NVML's "NVIDIA GeForce RTX 4090" → "rtx-4090"), or None.

    `candidates` are `(catalog_id, names)` pairs; the id itself is also tried as a name.
    """
    return _match(name, candidates, cpu=False)


def match_cpu(model_name: str, candidates: Iterable[tuple[str, list[str]]]) -> str | None:
    """Catalog id for a /proc/cpuinfo model name, or None.

    "AMD Ryzen 9 7950X 16-Core Processor" → "ryzen-9-7950x"; "13th Gen Intel(R) Core(TM) i9-13900K"
    → "core-i9-13900k"; "AMD Ryzen 9 7950X3D ..." does not match "ryzen-9-7950x".
    """
    return _match(model_name, candidates, cpu=True)
