"""Byte and rate units. Names carry the unit: *_bytes, *_gib, *_gbs (10^9 B/s), *_tok_s."""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3
GB = 10**9


def pad(n: int, multiple: int) -> int:
    """Round `n` up to a multiple of `multiple` (GGML_PAD)."""
    return ((n + multiple - 1) // multiple) * multiple


def fmt_gib(n_bytes: float, digits: int = 1) -> str:
    """Always in GiB, for tables and sentences that compare sizes: fmt_gib(49.5 * GIB) == "49.5 GiB"."""
    return f"{n_bytes / GIB:.{digits}f} GiB"


def fmt_bytes(n_bytes: float) -> str:
    """Human form: 46.1 GiB, 512 MiB, 12 KiB."""
    if abs(n_bytes) >= GIB:
        return f"{n_bytes / GIB:.1f} GiB"
    if abs(n_bytes) >= MIB:
        return f"{n_bytes / MIB:.0f} MiB"
    if abs(n_bytes) >= KIB:
        return f"{n_bytes / KIB:.0f} KiB"
    return f"{n_bytes:.0f} B"
