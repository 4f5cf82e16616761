"""Load a GGUF in the real `llama-server` (the pinned llama.cpp tools) and read back what it allocated.

llama-server prints llama.cpp's own allocation lines while it loads ("CPU compute buffer size = 54.27 MiB",
planner.measure.llama_log) at verbosity 4 (-lv 4; b11434's default prints none of them), before it listens.
This module starts it on a free loopback port with the settings agiplan deploys it with, reads its log until the
server listens (or exits), and stops it (the whole process group): `measure_server_buffers` parses the lines
(loading is the measurement); `started_server` keeps it running for the block that benches it
(planner.measure.bench_llama).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlannerError
from planner.measure.llama_log import BufferSizes, parse_buffer_sizes
from planner.measure.llama_tools import LlamaTools
from planner.measure.processes import stop_group

_READY = "listening on http"  # "llama_server: listening on http://127.0.0.1:PORT" (b11434)
_POLL_S = 0.05
_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerLoad:
    """One llama-server start: the settings agiplan's deploy writes (total context -c over -np slots)."""

    n_ctx: int  # -c: total over all slots
    n_parallel: int = 1  # -np
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True
    n_ubatch: int = 512
    n_batch: int = 2048
    swa_full: bool = False
    kv_unified: bool = False
    embeddings: bool = False  # --embeddings (encoders: -b = -ub = the input length)
    n_gpu_layers: int = 0
    n_threads: int = 2
    n_cpu_moe: int = 0  # --n-cpu-moe: routed experts of the first N layers kept on the CPU


def server_args(model: Path, load: ServerLoad, port: int) -> list[str]:
    """The llama-server arguments for `load`: every memory setting spelled out (the build's defaults differ
    from llama.cpp's library: -np auto with a unified cache, -fa auto, --fit on), warm-up and prompt cache off."""
    args = [
        "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(load.n_ctx), "-np", str(load.n_parallel),
        "-ctk", load.type_k, "-ctv", load.type_v, "-fa", "on" if load.flash_attn else "off",
        "-b", str(load.n_batch), "-ub", str(load.n_ubatch), "-ngl", str(load.n_gpu_layers),
        "-t", str(load.n_threads), "--kv-unified" if load.kv_unified else "--no-kv-unified",
        "-fit", "off", "--no-warmup", "-cram", "0", "-lv", "4",
    ]  # fmt: skip
    if load.swa_full:
        args.append("--swa-full")
    if load.embeddings:
        args.append("--embeddings")
    if load.n_cpu_moe:
        args += ["--n-cpu-moe", str(load.n_cpu_moe)]
    return args


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    """A llama-server that has loaded its model and listens: its process, base URL, seconds until it listened,
    and its log up to then (the allocation lines)."""

    proc: subprocess.Popen[bytes]
    url: str
    load_s: float
    log: str

    @property
    def buffers(self) -> BufferSizes:
        return parse_buffer_sizes(self.log)


@contextlib.contextmanager
def started_server(
    tools: LlamaTools,
    model: Path,
    load: ServerLoad,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    on_start: Callable[[int], object] | None = None,
) -> Iterator[RunningServer]:
    """Start llama-server with `load` on a free loopback port (its own process group, `env` added to the
    environment), wait until it listens and yield it; stop its whole group on exit, however the block ends.
    `on_start(pid)` is called as soon as the process exists (before it loads: an RSS sampler's baseline).

    Raises PlannerError with the log's last lines when it exits first or does not listen in `timeout_s`."""
    port = _free_port()
    cmd = [str(tools.path("llama-server")), *server_args(model, load, port)]
    with tempfile.TemporaryFile() as log_file:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=tools.env({**os.environ, **(env or {})}), start_new_session=True,
        )  # fmt: skip
        try:
            if on_start is not None:
                on_start(proc.pid)
            while True:
                log_file.seek(0)
                text = log_file.read().decode("utf-8", errors="replace")
                if _READY in text:
                    break
                if proc.poll() is not None:
                    raise PlannerError(f"llama-server exited with code {proc.returncode}: {text[-600:].strip()}")
                if time.monotonic() - t0 > timeout_s:
                    raise PlannerError(f"llama-server did not listen within {timeout_s:.0f} s: {text[-600:].strip()}")
                time.sleep(_POLL_S)
            yield RunningServer(proc, f"http://127.0.0.1:{port}", time.monotonic() - t0, text)
        finally:
            stop_group(proc, _STOP_TIMEOUT_S)


def measure_server_buffers(
    tools: LlamaTools, model: Path, load: ServerLoad, timeout_s: float = 120.0
) -> tuple[BufferSizes, str]:
    """Start llama-server with `load`, wait until it listens, stop it; (buffer sizes, its log).

    Raises PlannerError with the log's last lines when it exits first or does not listen in `timeout_s`."""
    with started_server(tools, model, load, timeout_s=timeout_s) as server:
        return server.buffers, server.log
