"""Measure this host's memory read bandwidth and a file's read speed (numpy; imported lazily).

Both are *measurements of what one process sees*, meant as calibration inputs (DDR bandwidth bounds
CPU-offloaded decode speed; disk speed bounds model load time). Tests only check that they return a
positive finite number; the figures themselves come from `bench/ram_bandwidth.py`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from planner.errors import HardwareError, PlannerError
from planner.io import open_regular_file
from planner.units import GB, MIB

__all__ = [
    "RAM_BANDWIDTH_METHOD",
    "DiskReadResult",
    "measure_disk_read_gbs",
    "measure_ram_bandwidth_gbs",
]

ProgressFn = Callable[[float], None]

RAM_BANDWIDTH_METHOD = (
    "numpy streaming read (np.add.reduce over an int64 buffer much larger than the CPU caches), "
    "best of repeated passes, {threads} thread(s) in one process: what one process gets, "
    "not the sum over all memory channels under several processes"
)


def _check_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise HardwareError(f"{name} must be a positive number, got {value!r}.")


def measure_ram_bandwidth_gbs(
    *,
    seconds: float = 2.0,
    buffer_bytes: int = 256 * MIB,
    threads: int = 1,
    progress: ProgressFn | None = None,
) -> float:
    """Best-of-N streaming *read* bandwidth in GB/s (10^9 B/s) seen by this process.

    Method: fill an int64 buffer of `buffer_bytes` (so every page is resident), then repeat
    `np.add.reduce` over it (`threads` > 1: one reduce per thread over its own slice; numpy drops the
    GIL inside the reduction loop) until `seconds` have passed; each pass reads `buffer_bytes` once
    and writes nothing, so bandwidth = buffer_bytes / pass time. The best pass is reported: slower
    passes are interference (other processes, frequency ramp-up), not the memory system.

    This is single-process by design: it says what one process (e.g. one llama.cpp server) can
    stream, and with `threads=1` what one core can pull, which on desktop CPUs is often well below
    the DIMMs' theoretical peak. Use a buffer far larger than the last-level cache (the default
    256 MiB is), or the figure is cache bandwidth. `progress` gets the fraction of time spent, 0..1.
    """
    import numpy as np  # heavy: lazily

    _check_positive("seconds", seconds)
    if buffer_bytes < 8 * threads:
        raise HardwareError(f"buffer_bytes must hold at least one int64 per thread, got {buffer_bytes}.")
    if threads < 1:
        raise HardwareError(f"threads must be at least 1, got {threads}.")
    n_items = buffer_bytes // 8
    buf = np.ones(n_items, dtype=np.int64)  # writes every page: no first-touch faults while timing
    read_bytes = n_items * 8
    slices = [buf[i * n_items // threads : (i + 1) * n_items // threads] for i in range(threads)]

    pool = None
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=threads)

    def one_pass() -> None:
        if pool is None:
            np.add.reduce(buf)
        else:
            list(pool.map(np.add.reduce, slices))

    best_s = math.inf
    try:
        one_pass()  # warm-up: page tables, thread start, CPU frequency
        start = time.perf_counter()
        passes = 0
        while True:
            t0 = time.perf_counter()
            one_pass()
            elapsed = time.perf_counter() - t0
            best_s = min(best_s, elapsed)
            passes += 1
            spent = time.perf_counter() - start
            if progress is not None:
                progress(min(1.0, spent / seconds))
            if spent >= seconds and passes >= 3:
                break
    finally:
        if pool is not None:
            pool.shutdown()
    return read_bytes / best_s / GB


@dataclass(frozen=True)
class DiskReadResult:
    """A sequential read of one file. `cache_dropped` False means the figure may be RAM speed."""

    read_gbs: float
    bytes_read: int
    cache_dropped: bool
    note: str


def measure_disk_read_gbs(
    path: Path,
    *,
    max_bytes: int = 1024 * MIB,
    block_bytes: int = 16 * MIB,
    progress: ProgressFn | None = None,
) -> DiskReadResult:
    """Sequential read speed of `path` (its first `max_bytes`) in GB/s, trying to bypass the page cache.

    Before reading it asks the kernel to drop the file's cached pages
    (`os.posix_fadvise(..., POSIX_FADV_DONTNEED)`, after `fdatasync`). The kernel keeps pages that
    other processes have mapped or that are dirty, and some file systems (tmpfs, some overlay and
    network file systems) ignore the hint; then the figure is partly memory speed. Where the call
    is unavailable (macOS, Windows) the result says so (`cache_dropped=False`).
    """
    if block_bytes <= 0 or max_bytes <= 0:
        raise HardwareError("block_bytes and max_bytes must be positive.")
    try:
        fd = open_regular_file(path, "file to measure disk read speed with")  # a FIFO would hang
    except PlannerError as exc:
        raise HardwareError(str(exc)) from None
    try:
        size = os.fstat(fd).st_size
        to_read = min(size, max_bytes)
        if to_read <= 0:
            raise HardwareError(f"{path} is empty; pass a large file (e.g. a model .gguf) to measure.")
        cache_dropped = False
        note = ""
        if hasattr(os, "posix_fadvise"):
            try:
                # A read-only or special file may refuse: nothing dirty we could flush anyway.
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                cache_dropped = True
                note = (
                    "page cache drop requested (posix_fadvise DONTNEED); pages mapped by other "
                    "processes or on file systems that ignore the hint stay cached"
                )
            except OSError as exc:
                note = f"could not drop the page cache ({exc.strerror}): the figure may be RAM speed"
        else:
            note = "posix_fadvise is not available on this system: the figure may be RAM speed"
        done = 0
        start = time.perf_counter()
        while done < to_read:
            chunk = os.read(fd, min(block_bytes, to_read - done))
            if not chunk:
                break
            done += len(chunk)
            if progress is not None:
                progress(done / to_read)
        elapsed = max(time.perf_counter() - start, 1e-9)
    finally:
        os.close(fd)
    return DiskReadResult(read_gbs=done / elapsed / GB, bytes_read=done, cache_dropped=cache_dropped, note=note)
