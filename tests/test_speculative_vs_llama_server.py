"""A draft model in the real llama-server (the [engines] extra, llama.cpp b11434): Gemma 3 270M Q4_K_M as the target
and as its own draft (same vocabulary), started with the arguments `agiplan deploy` writes for a plan with a draft.
It must start, answer a chat completion with drafted tokens, and its -lv 4 log must list the draft's buffers (the
lines after "loading draft model"), which agiplan's draft memory must match: weights and KV to the printed rounding,
compute within 2 %, the output buffer exactly. The target's own buffers are those of the plan without the draft.

Only a verbosity flag and a thread count are added to deploy's arguments (and the port replaced); -t 2 keeps the two
cores of the test machine from being oversubscribed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from test_report_fixtures import gemma_plan

from planner.catalog import load_catalog
from planner.deploy import build_deployment
from planner.estimate.devices import host_device
from planner.estimate.estimate import estimate
from planner.measure.llama_log import parse_buffer_sizes
from planner.measure.llama_tools import LlamaTools
from planner.measure.processes import stop_group
from planner.plan.schema import Plan, PlanDraft
from planner.sources.resolve import resolve_model

pytestmark = [pytest.mark.engines, pytest.mark.slow]

MIB = 2**20
ROUNDING = int(0.005 * MIB) + 1  # one printed line (two decimals of MiB)
DRAFT_MARK = "loading draft model"  # common_speculative_init_result (common/speculative.cpp, b11434)


def _plan_with_draft(gguf: Path, *, ctx: int, parallel: int, n_max: int) -> Plan:
    """The Gemma fixture plan (CPU only, f16 KV, flash attention) with the same file as its own draft."""
    plan = gemma_plan(gguf, kv="f16", ctx=ctx, parallel=parallel)
    opt = plan.options[0]
    srv = opt.servers[0]
    draft = PlanDraft(
        model=str(gguf), model_name="Gemma 3 270M", quant="Q4_K_M", n_max=n_max, n_min=0, acceptance=0.7,
        gpu_layers=0, n_layers=18, memory_bytes=0, speedup=1.0,
    )  # fmt: skip
    p = srv.placements[0].model_copy(update={"draft": draft})
    srv = srv.model_copy(update={"placements": [p]})
    return plan.model_copy(update={"options": [opt.model_copy(update={"servers": [srv]})]})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chat(port: int) -> dict[str, object]:
    body = json.dumps(
        {"messages": [{"role": "user", "content": "Count from 1 to 20."}], "max_tokens": 24, "temperature": 0}
    ).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)  # type: ignore[no-any-return]


def test_deployed_draft_runs_and_its_memory_matches(tools: LlamaTools, gemma_gguf_path: Path) -> None:
    ctx, parallel, n_max = 2048, 2, 4
    plan = _plan_with_draft(gemma_gguf_path, ctx=ctx, parallel=parallel, n_max=n_max)
    placement = plan.options[0].servers[0].placements[0]
    proc = next(p for p in build_deployment(plan, "box").processes if p.name == "llama-server-chat")
    argv = list(proc.argv)
    # deploy's draft flags for a CPU-only plan (b11434 spells them --spec-draft-n-max / -n-min)
    i = argv.index("-md")
    assert argv[i : i + 15] == [
        "-md", str(gemma_gguf_path), "--spec-type", "draft-simple", "--spec-draft-n-max", "4",
        "--spec-draft-n-min", "0", "-ngld", "0", "-devd", "none", "-ctkd", "f16", "-ctvd",
    ]  # fmt: skip
    port = _free_port()
    argv[argv.index("--port") + 1] = str(port)
    cmd = [str(tools.path("llama-server")), *argv[1:], "-lv", "4", "-t", "2"]
    with tempfile.TemporaryFile() as log_file:
        server = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=tools.env(),
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while True:
                log_file.seek(0)
                text = log_file.read().decode("utf-8", errors="replace")
                if "listening on http" in text:
                    break
                assert server.poll() is None, text[-1500:]
                assert time.monotonic() < deadline, text[-1500:]
                time.sleep(0.1)
            answer = _chat(port)
        finally:
            stop_group(server, 10.0)
    choices = answer["choices"]
    assert isinstance(choices, list) and choices[0]["message"]["content"]
    timings = answer["timings"]
    assert isinstance(timings, dict) and timings["draft_n"] > 0  # the draft drafted
    assert DRAFT_MARK in text
    before, after = text.split(DRAFT_MARK, 1)
    target, draft = parse_buffer_sizes(before), parse_buffer_sizes(after)

    est = estimate(
        resolve_model(placement.model), placement.run_config(), [], host_device(load_catalog(), None, None),
        suggest=False,
    )  # fmt: skip
    assert est.draft is not None
    d = est.draft.memory[-1]
    # Gemma 3 270M Q4_K_M at -c 4096 -np 2, f16 KV, -fa on: llama-server printed for the draft (and the same for the
    # target) CPU_Mapped 235.16 + CPU_REPACK 12.66 MiB, KV 42.00 MiB, compute 21.28 MiB, output 2.00 MiB; agiplan
    # predicts 247.82, 42.00, 21.25 (-0.14 %) and 2.00
    assert abs(d.weights_bytes - draft.total("model")) <= 2 * ROUNDING
    assert abs(d.kv_cache_bytes - draft.total("KV")) <= 2 * ROUNDING
    assert abs(d.compute_bytes / draft.total("compute") - 1) <= 0.02, (d.compute_bytes / MIB, draft.total("compute"))
    # the draft's logits, one output per slot, printed at load; the target's output buffer grows to k + 1 = 5 rows per
    # slot at the first verification (not printed at -lv 4): 2 slots × 4 more rows × 262,144 tokens × 4 B = 8 MiB
    assert est.draft.verify_output_bytes == 2 * 4 * 262144 * 4
    assert abs(d.overhead_bytes - est.draft.verify_output_bytes - draft.total("output")) <= ROUNDING
    # the target's own buffers are unchanged by the draft: those of the same plan without it
    alone = estimate(
        resolve_model(placement.model), placement.model_copy(update={"draft": None}).run_config(), [],
        host_device(load_catalog(), None, None), suggest=False,
    ).devices[-1].memory  # fmt: skip
    assert abs(alone.kv_cache_bytes - target.total("KV")) <= 2 * ROUNDING
    assert abs(alone.weights_bytes - target.total("model")) <= 2 * ROUNDING
    assert abs(alone.compute_bytes / target.total("compute") - 1) <= 0.02
    assert est.devices[-1].memory == alone + d
