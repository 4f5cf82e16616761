"""The generated deployment, run for real on loopback with the real llama.cpp tools (the [engines] extra).

A small stack on two CPU-only hosts. On `main`: the real Gemma 3 270M (chat, resident), a synthetic tiny
Qwen2-layout model (coder, resident), a synthetic tiny Llama and Qwen2 (summarizer, drafter: on demand,
served one at a time by llama-server's router mode) and a synthetic tiny Llama split over main and `helper`
(reasoner: llama-server --rpc to the helper's ggml-rpc-server). On `helper`: a synthetic BGE-M3-width
encoder (rag, embeddings), which the router on main reaches, so it listens on all interfaces and needs the
key. `deploy` writes both folders; the test rewrites only ports (to free ones) and the helper's
all-interfaces address (to 127.0.0.1), runs each folder's start.sh, and checks that every process runs
with exactly the generated arguments and answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench_fixtures import free_port, process_state, require_tools, tiny_llama_arch
from test_report_fixtures import GIB, device, mem, placement

from planner.deploy import Deployment, build_deployment
from planner.deploy.write import write_deployment
from planner.measure.processes import stop_group
from planner.measure.synthetic import write_synthetic_gguf
from planner.plan.schema import PLAN_SCHEMA_VERSION, Plan, PlanOption, PlanServer, save_plan

pytestmark = [pytest.mark.engines, pytest.mark.slow]

START_TIMEOUT_S = 120.0
LOG: list[str] = []


def _log(line: str) -> None:
    LOG.append(line)
    print(line, file=sys.stderr)


@pytest.fixture(scope="module")
def tools() -> Any:
    return require_tools("llama-server", "ggml-rpc-server")


def _cpu_placement(role: str, path: Path, name: str, n_layers: int, **kw: Any) -> Any:
    return placement(
        role, str(path), name, devices=["cpu"], gpu_indices=[], gpu_layers=0, n_layers=n_layers, ctx=256,
        parallel=1, kv_type="f16", memory=mem(0.3, 0.01, 0.1), decode_tok_s=20.0, decode_tok_s_alone=20.0,
        prefill_tok_s=200.0, min_tok_s=None, **kw,
    )  # fmt: skip


def _server(name: str, placements: list[Any]) -> PlanServer:
    return PlanServer(
        name=name, new=False, cost_usd=0.0, hardware="cpu only", cpu=None, gpus=[], ram_bytes=16 * GIB,
        devices=[device(-1, "cpu", "host", 16 * GIB, placements, 0)], placements=placements,
    )  # fmt: skip


def _plan(models: dict[str, Path]) -> Plan:
    chat = _cpu_placement("chat", models["gemma"], "Gemma 3 270M", 18, quant="Q4_K_M")
    coder = _cpu_placement("coder", models["qwen2"], "tiny Qwen2 (synthetic)", 2, quant="Q8_0")
    summarizer = _cpu_placement(
        "summarizer", models["llama"], "tiny Llama (synthetic)", 2, quant="Q8_0", residency="on-demand", swap_in_s=0.2
    )
    drafter = _cpu_placement(
        "drafter", models["qwen2"], "tiny Qwen2 (synthetic)", 2, quant="Q8_0", residency="on-demand", swap_in_s=0.2
    )
    # the split: every layer + the output on "GPUs", which for a CPU-only head are the RPC worker's devices
    reasoner = _cpu_placement(
        "reasoner", models["llama4"], "tiny Llama 4 layers (synthetic)", 4, quant="Q8_0",
        split_hosts=["main", "helper"], memory_by_device={"main/cpu": 2**20, "helper/cpu": 2**20},
    )  # fmt: skip
    reasoner = reasoner.model_copy(update={"gpu_layers": 5})
    rag = _cpu_placement("rag", models["bge"], "BGE-M3 widths (synthetic)", 2, quant="F16", embedding=True)
    rag = rag.model_copy(update={"n_ubatch": 256})
    opt = PlanOption(
        kind="split",
        servers=[_server("main", [chat, coder, summarizer, drafter, reasoner]), _server("helper", [rag])],
        total_cost_usd=0.0,
        meets_targets=True,
        why="loopback test stack",
    )
    return Plan(
        schema_version=PLAN_SCHEMA_VERSION, created_at="2026-12-07T00:00:00Z", agiplan_version="0.1.0",
        stack_name="loopback", options=[opt], recommended=0,
        assumptions=["split: llama.cpp RPC over a 10 Gbit/s network with 0.3 ms per round trip (assumed)"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, gemma_gguf_path: Path) -> dict[str, Path]:
    from planner.catalog import load_catalog

    d = tmp_path_factory.mktemp("models")
    cat = load_catalog()
    small = {"n_layers": 2, "hidden_size": 256, "n_heads": 4, "n_kv_heads": 2, "head_dim_k": 64, "head_dim_v": 64}
    qwen2 = dataclasses.replace(cat.arch("qwen2.5-7b"), **small, ffn_size=512, vocab_size=512)
    bge = dataclasses.replace(cat.arch("bge-m3"), n_layers=2, vocab_size=2000)
    return {
        "gemma": gemma_gguf_path,
        "qwen2": write_synthetic_gguf(qwen2, "Q8_0", d / "tiny-qwen2.gguf"),
        "llama": write_synthetic_gguf(tiny_llama_arch(), "Q8_0", d / "tiny-llama.gguf"),
        "llama4": write_synthetic_gguf(tiny_llama_arch(layers=4), "Q8_0", d / "tiny-llama-4.gguf"),
        "bge": write_synthetic_gguf(bge, "F16", d / "bge-small.gguf", encoders=True),
    }


def _rewrite(out: Path, ports: dict[int, int], *, bind_loopback: bool) -> None:
    """Only addresses and ports: each `--port N` / `-p N` / `:N` of a generated port becomes its free port,
    and on the helper `--host 0.0.0.0` becomes 127.0.0.1 (both hosts are this machine)."""
    pattern = re.compile(r"(--port |-p |127\.0\.0\.1:)(\d+)\b")
    for script in out.glob("*.sh"):
        text = pattern.sub(lambda m: m.group(1) + str(ports.get(int(m.group(2)), m.group(2))), script.read_text())
        if bind_loopback:
            text = text.replace("--host 0.0.0.0", "--host 127.0.0.1")
        script.write_text(text)


def _rewrite_manifest(out: Path, ports: dict[str, dict[int, int]]) -> None:
    """Only ports: each endpoint's base URL in deploy.json gets its server's free port (the bench reads it)."""
    path = out / "deploy.json"
    manifest = json.loads(path.read_text())
    for e in manifest["endpoints"]:
        head, port, tail = re.fullmatch(r"(http://[^:/]+:)(\d+)(/v1)", e["base_url"]).groups()  # type: ignore[union-attr]
        e["base_url"] = f"{head}{ports[e['server']][int(port)]}{tail}"
    path.write_text(json.dumps(manifest))


def _http(port: int, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    res = conn.getresponse()
    raw = res.read()
    conn.close()
    try:
        return res.status, json.loads(raw)
    except ValueError:
        return res.status, raw.decode(errors="replace")


def _wait_health(port: int, group: subprocess.Popen[bytes], logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if group.poll() is not None:
            raise AssertionError(f"start.sh exited {group.returncode}: {_tail(logs)}")
        with contextlib.suppress(OSError):
            status, _ = _http(port, "GET", "/health")
            if status == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"port {port} never became healthy: {_tail(logs)}")


def _tail(logs: Path) -> str:
    return " | ".join(f"{p.name}: {p.read_text()[-600:]}" for p in sorted(logs.glob("*.log")))


def _group_cmdlines(pgid: int) -> list[list[str]]:
    """argv of every live process in the process group (from /proc). A zombie (state Z, argv empty) has already
    exited and waits only for its new parent, init, to reap it: on a loaded machine the check after SIGKILL can
    see one, and it is not a process left running."""
    out = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        state = process_state(int(pid_dir.name))
        if state is not None and state.group == pgid and state.live:
            with contextlib.suppress(OSError):
                out.append([a.decode() for a in (pid_dir / "cmdline").read_bytes().split(b"\0")[:-1]])
    return out


@contextlib.contextmanager
def _started(out: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["bash", "start.sh"], cwd=out, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc, 20)
        deadline = time.monotonic() + 20
        while _group_cmdlines(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _group_cmdlines(proc.pid)  # what start.sh's own stop (SIGTERM, SIGKILL after the grace) left
        if left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5  # SIGKILL is delivered, not waited for
            while _group_cmdlines(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert not left, f"processes left behind: {left}"


def _expected_argv(dep: Deployment, name: str, ports: dict[int, int], loopback: bool) -> list[str]:
    proc = next(p for p in dep.processes if p.name == name)
    out = []
    for i, a in enumerate(proc.argv):
        prev = proc.argv[i - 1] if i else ""
        if prev in ("--port", "-p") and int(a) in ports:
            a = str(ports[int(a)])
        elif prev == "--rpc":
            host, port = a.rsplit(":", 1)
            a = f"{host}:{ports[int(port)]}"
        elif prev == "--host" and loopback:
            a = "127.0.0.1"
        out.append(a)
    return out


def test_deployment_runs_on_loopback(tmp_path: Path, tools: Any, models: dict[str, Path]) -> None:
    plan = _plan(models)
    plan_path = tmp_path / "plan.json"
    save_plan(plan, plan_path)
    addresses = {"helper": "127.0.0.1"}
    main = build_deployment(plan, "main", addresses=addresses)
    helper = build_deployment(plan, "helper", addresses=addresses)
    main_out, helper_out = tmp_path / "main", tmp_path / "helper"
    write_deployment(main, main_out)
    write_deployment(helper, helper_out, api_key=(main_out / "api-key").read_text().strip())
    key = (helper_out / "api-key").read_text().strip()
    names = {p.name: p for p in main.processes + helper.processes}
    assert set(names) == {
        "llama-server-chat", "llama-server-coder", "llama-server-reasoner", "llama-router-0",
        "rpc-server-reasoner", "llama-server-rag",
    }  # fmt: skip
    assert not {"llama-server-summarizer", "llama-server-drafter"} & set(names)  # on demand: no server at boot
    assert names["llama-router-0"].roles == ("summarizer", "drafter")

    main_ports = {p.port: free_port() for p in main.processes if p.port}
    helper_ports = {p.port: free_port() for p in helper.processes if p.port}
    _rewrite(main_out, {**main_ports, 50052: helper_ports[50052]}, bind_loopback=False)
    _rewrite(helper_out, helper_ports, bind_loopback=True)
    env = tools.env()
    env["PATH"] = f"{tools.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["LLAMA_CACHE"] = str(tmp_path / "llama-cache")  # ggml-rpc-server -c keeps its tensor cache there

    with _started(helper_out, env) as hg:
        rag_port = helper_ports[names["llama-server-rag"].port or 0]
        _wait_health(rag_port, hg, helper_out / "logs")
        with _started(main_out, env) as mg:
            for p in main.processes:
                _wait_health(main_ports[p.port or 0], mg, main_out / "logs")
            running = _group_cmdlines(mg.pid) + _group_cmdlines(hg.pid)
            for dep, out_ports, loopback in ((main, {**main_ports, 50052: helper_ports[50052]}, False),
                                              (helper, helper_ports, True)):  # fmt: skip
                for p in dep.processes:
                    want = _expected_argv(dep, p.name, out_ports, loopback)
                    got = [a for a in running if a[1:] == want[1:] and Path(a[0]).name == want[0]]
                    assert len(got) == 1, (p.name, want, running)
                    _log(f"started {p.name}: {' '.join(want)}")

            for role in ("chat", "coder", "reasoner"):
                port = main_ports[next(p.port for p in main.processes if role in p.roles) or 0]
                body = {"model": role, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
                status, res = _http(port, "POST", "/v1/chat/completions", body)
                assert status == 200 and res["choices"][0]["message"] is not None, (role, status, res)
                _log(f"{role}: chat completion 200, {res['usage']['completion_tokens']} tokens")

            # the embedder on the other host: refused without the key, answers with it
            emb = {"model": "rag", "input": "hello world"}
            status, _ = _http(rag_port, "POST", "/v1/embeddings", emb)
            assert status == 401
            status, res = _http(rag_port, "POST", "/v1/embeddings", emb, key=key)
            assert status == 200 and len(res["data"][0]["embedding"]) == 1024, (status, res)
            _log("rag: /v1/embeddings 401 without the key, 200 with it, 1024 dimensions")

            # the on-demand role: not loaded until asked, loaded by its first request, unloaded on request
            router_port = main_ports[names["llama-router-0"].port or 0]

            def state(role: str) -> str:
                _, listing = _http(router_port, "GET", "/models")
                entry = next(m for m in listing["data"] if m["id"] == role)
                return str(entry["status"]["value"])

            def ask(role: str) -> float:
                t0 = time.monotonic()
                body = {"model": role, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
                status, res = _http(router_port, "POST", "/v1/chat/completions", body)
                assert status == 200, (role, res)
                return time.monotonic() - t0

            assert (state("summarizer"), state("drafter")) == ("unloaded", "unloaded")
            load_s = ask("summarizer")
            assert (state("summarizer"), state("drafter")) == ("loaded", "unloaded")
            _log(f"summarizer: unloaded at start, first request 200 after {load_s:.2f} s (load + answer)")
            load_s = ask("drafter")  # the plan's serial residency: one on-demand role at a time (--models-max 1)
            assert (state("summarizer"), state("drafter")) == ("unloaded", "loaded")
            _log(f"drafter: first request 200 after {load_s:.2f} s; summarizer unloaded for it")
            status, res = _http(router_port, "POST", "/models/unload", {"model": "drafter"})
            assert status == 200, res
            deadline = time.monotonic() + 30
            while state("drafter") != "unloaded" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert state("drafter") == "unloaded"
            _log("drafter: unloaded on request")

            # bench measures a deployed server; report puts it next to the plan
            chat_port = main_ports[names["llama-server-chat"].port or 0]
            url = f"http://127.0.0.1:{chat_port}"
            bench = [sys.executable, "-m", "planner", "bench", "--endpoint", url, "--model-name", "chat",
                     "--gen", "8", "-r", "1", "--no-calibrate", "-o", str(tmp_path / "b.json")]  # fmt: skip
            res_b = subprocess.run(bench, capture_output=True, text=True, timeout=300, check=False)
            assert res_b.returncode == 0, res_b.stderr
            report = [sys.executable, "-m", "planner", "report", str(plan_path), str(tmp_path / "b.json"),
                      "-o", str(tmp_path / "report.md")]  # fmt: skip
            res_r = subprocess.run(report, capture_output=True, text=True, timeout=300, check=False)
            assert res_r.returncode == 0, res_r.stderr
            run = json.loads((tmp_path / "b.json").read_text())["runs"][0]
            decode = run["measured"]["decode_tok_s"]
            assert run["verdict"] == "measured" and decode > 0, run
            report_md = (tmp_path / "report.md").read_text()
            assert f"{decode:.1f}" in report_md or f"{decode:g}" in report_md, report_md[-3000:]
            _log(f"bench chat through its deployed server: {decode} tok/s decode; report.md shows it")

            # the whole deployment, role by role, through the servers it runs (deploy.json + the key file)
            _rewrite_manifest(main_out, {"main": main_ports, "helper": helper_ports})
            bench_d = [sys.executable, "-m", "planner", "bench", "--plan", str(plan_path), "--deployment",
                       str(main_out), "--gen", "8", "-r", "1", "--no-calibrate",
                       "-o", str(tmp_path / "bd.json")]  # fmt: skip
            res_d = subprocess.run(bench_d, capture_output=True, text=True, timeout=300, check=False)
            assert res_d.returncode == 0, res_d.stdout[-3000:] + res_d.stderr[-3000:]
            report_d = [sys.executable, "-m", "planner", "report", str(plan_path), str(tmp_path / "bd.json"),
                        "-o", str(tmp_path / "report-d.md")]  # fmt: skip
            res_rd = subprocess.run(report_d, capture_output=True, text=True, timeout=300, check=False)
            assert res_rd.returncode == 0, res_rd.stderr
            saved = (tmp_path / "bd.json").read_text()
            report_d_md = (tmp_path / "report-d.md").read_text()
            for text in (res_d.stdout, res_d.stderr, saved, report_d_md):
                assert key not in text  # the key is read from the folder's api-key, never shown or saved
            runs = {r["role"]: r for r in json.loads(saved)["runs"]}
            assert set(runs) == {"chat", "coder", "summarizer", "drafter", "reasoner", "rag"}, sorted(runs)
            for role, r in runs.items():
                metric = "prefill_tok_s" if role == "rag" else "decode_tok_s"
                measured, predicted = r["measured"][metric], r["predicted"][metric]
                assert r["kind"] == "deployed" and r["verdict"] == "measured" and measured > 0, r
                if role != "rag":  # llama-server's own timings: decode and prefill of the whole prompt
                    assert measured == r["measured"]["llama_decode_tok_s"] and r["measured"]["prefill_tok_s"] > 0, r
                # the report's bench table: one row per role and metric, predicted next to measured
                row = re.search(
                    rf"\| {role}: [^|]* \| [^|]* \| [^|]* \| {predicted:.1f} \| {measured:.1f} \|", report_d_md
                )
                assert row, (role, report_d_md[-4000:])
                _log(
                    f"bench --deployment {role} ({r['server']}): {metric} predicted {predicted:g}, "
                    f"measured {measured:g}"
                )
            assert runs["summarizer"]["measured"]["load_s"] is not None  # on demand: loaded by the first request

            # the split model's layers went to the RPC worker: the head connected to it (llama.cpp's RPC client
            # opens a connection per command) and its tensor cache (-c) is under LLAMA_CACHE
            rpc_log = (helper_out / "logs" / "rpc-server-reasoner.log").read_text()
            connections = rpc_log.count("Accepted client connection")
            assert connections > 0 and str(tmp_path / "llama-cache") in rpc_log, rpc_log[-2000:]
            _log(f"reasoner: served through ggml-rpc-server ({connections} RPC connections from the head)")
    print("\n".join(LOG))
