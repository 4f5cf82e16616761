"""agiplan deploy: the values in the generated commands, files written atomically, bad input, and the
llama-server command for a Gemma plan started as generated and answering."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from bench_fixtures import free_port, running, running_llama_server
from test_report_fixtures import GIB, agents_plan, gemma_plan
from typer.testing import CliRunner

from planner.cli import app
from planner.deploy import STOP_GRACE_S, Process, build_deployment
from planner.deploy.write import write_deployment
from planner.errors import PlannerError, UnknownIdError
from planner.measure.bench_llama import completion
from planner.plan.schema import save_plan


def arg(proc: Process, flag: str) -> str:
    a = list(proc.argv)
    return a[a.index(flag) + 1]


def proc_named(procs: list[Process], name: str) -> Process:
    return next(p for p in procs if p.name == name)


def test_llama_server_gets_ctx_times_slots_and_pinned_gpus() -> None:
    dep = build_deployment(agents_plan(), "main", 0)
    p = proc_named(dep.processes, "llama-server-reasoner")
    # fixture: reasoner ctx 16384 per conversation × 1 slot, 81 layers on GPUs (80 + output), both 4090s
    assert (arg(p, "-c"), arg(p, "-np"), arg(p, "-ngl")) == ("16384", "1", "81")
    assert (arg(p, "-ctk"), arg(p, "-ctv"), arg(p, "-fa")) == ("f16", "f16", "on")
    assert dict(p.env) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    # -ts: the plan's bytes per GPU in MiB (half of 45.9 GiB each)
    half_mib = round(int(45.9 * GIB) // 2 / 2**20)
    assert [abs(int(x) - half_mib) <= 1 for x in arg(p, "-ts").split(",")] == [True, True]
    # the file bartowski/Llama-3.3-70B-Instruct-GGUF publishes (catalog downloads.gguf), which fetch.sh downloads
    assert arg(p, "-m") == "/models/Llama-3.3-70B-Instruct-Q4_K_M.gguf"
    assert (arg(p, "-a"), arg(p, "--port")) == ("reasoner", "8080")


def test_ollama_instance_env_and_modelfile() -> None:
    dep = build_deployment(agents_plan(), "main", 0)
    o = proc_named(dep.processes, "ollama-0")
    env = dict(o.env)
    # chat: 2 slots, q8_0 KV, CPU only on a server with NVIDIA GPUs -> CUDA_VISIBLE_DEVICES=-1 (Ollama docs/gpu.md);
    # main runs the router: loopback only; a resident role stays loaded (OLLAMA_KEEP_ALIVE=-1, docs/faq.md)
    assert env == {
        "OLLAMA_HOST": "127.0.0.1:11434",
        "CUDA_VISIBLE_DEVICES": "-1",
        "OLLAMA_NUM_PARALLEL": "2",
        "OLLAMA_MAX_LOADED_MODELS": "1",
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_FLASH_ATTENTION": "1",
        "OLLAMA_KEEP_ALIVE": "-1",
    }
    mf = dep.files["ollama/chat.Modelfile"]
    # num_ctx is per request = the plan's ctx per conversation (Ollama multiplies by OLLAMA_NUM_PARALLEL)
    assert "PARAMETER num_ctx 8192\n" in mf
    assert "FROM /models/saiga_llama3_8b.Q4_K_M.gguf\n" in mf  # catalog downloads.gguf (mradermacher's name)
    assert o.setup == (("ollama", "create", "chat", "-f", "ollama/chat.Modelfile"),)


def test_ollama_one_instance_per_gpu_set() -> None:
    plan = agents_plan()
    srv = plan.options[1].servers[1]  # second: coder + summarizer on gpu0, chat on CPU
    srv.placements[0] = srv.placements[0].model_copy(update={"engine": "ollama", "quant": "Q4_K_M"})
    srv.placements[1] = srv.placements[1].model_copy(update={"engine": "ollama", "quant": "Q4_K_M", "parallel": 4})
    dep = build_deployment(plan, "second", 1)
    inst = {p.name: (dict(p.env), p.roles) for p in dep.processes if p.engine == "ollama"}
    # coder (4 slots) and summarizer (now 4 slots) share gpu0 and settings -> one instance; chat on CPU -> another
    assert inst["ollama-0"][1] == ("coder", "summarizer")
    assert inst["ollama-0"][0]["CUDA_VISIBLE_DEVICES"] == "0"
    assert inst["ollama-0"][0]["OLLAMA_MAX_LOADED_MODELS"] == "2"
    assert inst["ollama-1"][1] == ("chat",)
    assert inst["ollama-1"][0]["OLLAMA_HOST"] == "0.0.0.0:11435"
    urls = {e.role: e.base_url for e in dep.endpoints}
    assert urls["coder"] == urls["summarizer"] == "http://second:11434/v1"


def test_vllm_instances_on_one_card_split_its_total_memory() -> None:
    dep = build_deployment(agents_plan(), "second", 1)
    coder = proc_named(dep.processes, "vllm-coder")
    summ = proc_named(dep.processes, "vllm-summarizer")
    u_c = float(arg(coder, "--gpu-memory-utilization"))
    u_s = float(arg(summ, "--gpu-memory-utilization"))
    # both asked for 0.90 in the plan; on one 24 GiB card they must sum to <= 0.95, each at least its planned
    # bytes / total: coder 11.5 GiB / 23.99 GiB = 0.48, summarizer 9.5 / 23.99 = 0.40 (rounded up)
    assert (u_c, u_s) == (0.48, 0.40)
    assert u_c + u_s <= 0.95
    assert (arg(coder, "--max-model-len"), arg(coder, "--max-num-seqs")) == ("16384", "4")
    assert arg(coder, "--quantization") == "awq"
    util_notes = [n for n in dep.notes if "--gpu-memory-utilization" in n]
    assert len(util_notes) == 2 and "0.48" in util_notes[0]


def test_vllm_scaled_down_when_planned_bytes_overflow_the_cap() -> None:
    plan = agents_plan()
    srv = plan.options[1].servers[1]
    big = int(12 * GIB)
    for i in (0, 1):
        p = srv.placements[i]
        srv.placements[i] = p.model_copy(update={"memory_by_device": {"gpu0": big}, "gpu_memory_utilization": None})
    dep = build_deployment(plan, "second", 1)
    names = ("vllm-coder", "vllm-summarizer")
    us = [float(arg(proc_named(dep.processes, n), "--gpu-memory-utilization")) for n in names]
    # 12 GiB each of 23.99 GiB = 0.51 each (1.02 > 0.95) -> scaled by 0.95 / 1.02 and floored: 0.47 each
    assert us == [0.47, 0.47]


def test_split_llama_cpp_rpc() -> None:
    plan = agents_plan()
    head = build_deployment(plan, "main", 2, addresses={"helper": "10.0.0.2"})
    worker = build_deployment(plan, "helper", 2)
    srv = proc_named(head.processes, "llama-server-reasoner")
    assert arg(srv, "--rpc") == "10.0.0.2:50052"
    assert "-ts" not in srv.argv  # llama.cpp splits over local + RPC devices by free memory
    w = worker.processes[0]
    assert w.argv == ("ggml-rpc-server", "-H", "0.0.0.0", "-p", "50052", "-c")
    assert dict(w.env) == {"ROCR_VISIBLE_DEVICES": "0"}  # helper's RX 7900 XTX
    assert "helper" not in {e.server for e in worker.endpoints}


def test_router_maps_every_role_of_the_option() -> None:
    import yaml

    dep = build_deployment(agents_plan(), "second", 1)
    cfg = yaml.safe_load(dep.files["router/litellm-config.yaml"])
    got = {m["model_name"]: m["litellm_params"]["api_base"] for m in cfg["model_list"]}
    # the router runs on main (the option's first server): main's engines on loopback, second's by name
    assert got == {
        "reasoner": "http://127.0.0.1:8080/v1",
        "coder": "http://second:8000/v1",
        "summarizer": "http://second:8001/v1",
        "chat": "http://second:11434/v1",
    }
    assert all(m["litellm_params"]["model"] == f"openai/{m['model_name']}" for m in cfg["model_list"])


def test_compose_pins_nvidia_cards_by_device_ids() -> None:
    import yaml

    dep = build_deployment(agents_plan(), "second", 1, compose=True)
    doc = yaml.safe_load(dep.files["compose.yaml"])
    coder = doc["services"]["vllm-coder"]
    assert coder["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["0"]
    assert "CUDA_VISIBLE_DEVICES" not in coder.get("environment", {})
    assert coder["command"][0] == "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"  # the AWQ checkpoint, not the BF16 one
    assert doc["services"]["ollama-0"]["environment"]["OLLAMA_NUM_PARALLEL"] == "2"


def test_write_is_complete_and_versioned(tmp_path: Path) -> None:
    dep = build_deployment(agents_plan(), "main", 0, compose=True)
    written = write_deployment(dep, tmp_path / "out")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == sorted([*dep.files, "deploy.json", "api-key"])
    manifest = json.loads((tmp_path / "out" / "deploy.json").read_text())
    assert (manifest["kind"], manifest["schema_version"]) == ("agiplan-deploy", 1)
    mode = os.stat(tmp_path / "out" / "start.sh").st_mode
    assert mode & stat.S_IXUSR
    assert not [p for p in (tmp_path / "out").rglob(".*.tmp")]  # no temp files left behind
    text = (tmp_path / "out" / "llama-server-reasoner.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "export CUDA_VISIBLE_DEVICES=0,1\n" in text


def test_bad_input_is_one_line() -> None:
    plan = agents_plan()
    with pytest.raises(UnknownIdError, match="Did you mean second"):
        build_deployment(plan, "secnd", 1)
    with pytest.raises(PlannerError, match=r"options 0\.\.3"):
        build_deployment(plan, "main", 7)
    plan.recommended = None
    with pytest.raises(PlannerError, match="--option N"):
        build_deployment(plan, "main")


def test_cli_deploy(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.json"
    save_plan(agents_plan(), plan_path)
    runner = CliRunner()
    res = runner.invoke(app, ["deploy", str(plan_path), "--server", "main", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kind"] == "agiplan-deploy" and data["processes"][0]["argv"][0] == "llama-server"
    res = runner.invoke(app, ["deploy", str(plan_path), "--server", "main", "--out", str(tmp_path / "d"), "--compose"])
    assert res.exit_code == 0
    assert (tmp_path / "d" / "compose.yaml").exists()
    assert "wrote" in res.stderr and "wrote" not in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy", "{missing}", "--server", "main"], "no such file"),
        (["deploy", "{plan}", "--server", "nope"], "Unknown server 'nope'"),
        (["deploy", "{old}", "--server", "main"], "schema_version 0"),
        (["report", "{old}"], "schema_version 0"),
        (["report", "{plan}", "{plan}"], "not an agiplan-bench file"),
    ],
)
def test_cli_bad_input_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    import subprocess
    import sys

    plan_path = tmp_path / "plan.json"
    save_plan(agents_plan(), plan_path)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"kind": "agiplan-plan", "schema_version": 0}))
    argv = [a.format(missing=tmp_path / "missing.json", plan=plan_path, old=old) for a in args]
    code = "from planner.cli import main; main()"
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert res.stdout == ""


@pytest.mark.engines
@pytest.mark.slow  # 7.0 s here (load 11): a llama-server start and one request
def test_gemma_command_starts_llama_server_with_the_plans_settings(gemma_gguf_path: Path, tmp_path: Path) -> None:
    """Run the generated llama-server command itself (only the port changed, and -lv 4 for llama.cpp's log) on
    the real Gemma GGUF: it loads with the plan's ctx per slot, slots, KV type and flash attention, and decodes."""
    dep = build_deployment(gemma_plan(gemma_gguf_path, kv="q8_0", ctx=512, parallel=2), "box")
    p = proc_named(dep.processes, "llama-server-chat")
    assert arg(p, "-dev") == "none"
    assert arg(p, "-m") == str(gemma_gguf_path)
    assert (arg(p, "-c"), arg(p, "-np"), arg(p, "-ctk"), arg(p, "-fa")) == ("1024", "2", "q8_0", "on")
    argv = list(p.argv[1:])
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    log = tmp_path / "llama-server.log"
    with running_llama_server([*argv, "-lv", "4"], port, log) as url:
        timings = completion(url, [2, 1000, 2000], 2, cache_prompt=False, timeout_s=120)
        text = log.read_text()
    assert (timings.prompt_n, timings.predicted_n) == (3, 2)
    # llama.cpp's own log: each slot gets the plan's 512 tokens, q8_0 K and V, flash attention on
    assert "n_ctx_seq             = 512" in text
    assert "K (q8_0)" in text and "V (q8_0)" in text
    assert "flash_attn            = enabled" in text


@pytest.mark.parametrize("engine", ["llama.cpp", "ollama"])
def test_embedding_role_is_served_for_embeddings(engine: str) -> None:
    """An embedding model's llama-server gets --embeddings: without it /v1/embeddings answers 501 "This server
    does not support embeddings. Start it with `--embeddings`" (llama.cpp tools/server). Its router entry says
    mode: embedding, which LiteLLM's health check needs (docs.litellm.ai/docs/proxy/health); chat roles get
    neither."""
    import yaml
    from test_report_fixtures import main_server, placement

    from planner.plan.schema import PlanOption

    plan = agents_plan()
    rag = placement(
        "rag", "bge-m3", "BGE-M3", engine=engine, devices=["cpu"], gpu_indices=[], gpu_layers=0, min_tok_s=None,
        embedding=True, n_ubatch=8192,
    )  # fmt: skip
    chat = placement("chat", "llama-3-8b", "Llama 3 8B", engine=engine, embedding=False)
    option = PlanOption(
        kind="one-server-concurrent",
        servers=[main_server([chat], [rag])],
        total_cost_usd=0.0,
        meets_targets=True,
        quality_score=1.0,
        why="test",
    )
    dep = build_deployment(plan.model_copy(update={"options": [option], "recommended": 0}), "main", 0)
    if engine == "llama.cpp":
        assert "--embeddings" in proc_named(dep.processes, "llama-server-rag").argv
        assert "--embeddings" not in proc_named(dep.processes, "llama-server-chat").argv
        # one input must fit one micro-batch (non-causal): -b = -ub = the plan's n_ubatch (the estimate's)
        rag_proc = proc_named(dep.processes, "llama-server-rag")
        assert (arg(rag_proc, "-b"), arg(rag_proc, "-ub")) == ("8192", "8192")
        assert "-ub" not in proc_named(dep.processes, "llama-server-chat").argv
    modes = {
        m["model_name"]: m["model_info"].get("mode")
        for m in yaml.safe_load(dep.files["router/litellm-config.yaml"])["model_list"]
    }
    assert modes == {"chat": None, "rag": "embedding"}


def test_plans_written_before_the_embedding_flag_still_start_embedders_for_embeddings() -> None:
    """A plan saved before placements recorded `embedding` (the field is absent: None) gets the model looked
    up: catalog bge-m3 has roles [embedding], llama-3-8b does not."""
    from test_report_fixtures import main_server, placement

    from planner.deploy.llama_cpp import server_argv

    rag = placement("rag", "bge-m3", "BGE-M3", devices=["cpu"], gpu_indices=[], gpu_layers=0)
    chat = placement("chat", "llama-3-8b", "Llama 3 8B")
    assert rag.embedding is None and chat.embedding is None
    server = main_server([chat], [rag])
    assert "--embeddings" in server_argv(server, rag, 8080, "/models")
    assert "--embeddings" not in server_argv(server, chat, 8081, "/models")
    assert "-ub" not in server_argv(server, rag, 8080, "/models")  # its memory was planned at the default batch


def test_bench_plan_leaves_embedding_models_to_their_endpoint() -> None:
    """The in-process bench measures decoding, which is not an embedder's job: an error record that says so (for
    plans that record the flag and for older ones, where the model is looked up)."""
    from test_report_fixtures import placement

    from planner.measure.records import unbenchable_plan_run

    rag = placement("rag", "bge-m3", "BGE-M3", devices=["cpu"], gpu_indices=[], embedding=True, n_ubatch=8192)
    old_plan_rag = placement("rag", "bge-m3", "BGE-M3", devices=["cpu"], gpu_indices=[])  # embedding not recorded
    for pl in (rag, old_plan_rag):
        run = unbenchable_plan_run(pl)
        assert run is not None and run.verdict == "error" and "embedding model" in (run.error or "")
    assert unbenchable_plan_run(placement("chat", "llama-3-8b", "Llama 3 8B", embedding=False)) is None


# LiteLLM's documented config (docs.litellm.ai/docs/proxy/configs): top-level sections, and per model_list entry
# model_name, litellm_params {model, api_base, api_key, ...} and model_info (mode: chat / completion / embedding,
# other keys free). Secrets as "os.environ/NAME" (same page, "os.environ/"). LiteLLM itself is not installed here
# (a large dependency for one check), so the config is checked against that documented shape.
LITELLM_SECTIONS = {"model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables"}


def test_litellm_config_follows_the_documented_schema() -> None:
    import re

    import yaml

    for option, server in ((0, "main"), (1, "main"), (1, "second"), (3, "main")):
        cfg = yaml.safe_load(build_deployment(agents_plan(), server, option).files["router/litellm-config.yaml"])
        assert set(cfg) <= LITELLM_SECTIONS
        assert re.fullmatch(r"os\.environ/[A-Z_]+", cfg["general_settings"]["master_key"])
        for m in cfg["model_list"]:
            assert set(m) == {"model_name", "litellm_params", "model_info"}
            params = m["litellm_params"]
            assert set(params) == {"model", "api_base", "api_key"}
            assert params["model"].startswith("openai/")
            assert re.fullmatch(r"http://[A-Za-z0-9.-]+:\d+/v1", params["api_base"])
            assert params["api_key"] == "none" or re.fullmatch(r"os\.environ/[A-Z_]+", params["api_key"])
            assert m["model_info"].get("mode", "chat") in ("chat", "completion", "embedding")


def test_cli_api_key_file_is_shared_between_hosts(tmp_path: Path) -> None:
    """Deploying the second host with --api-key-file main's key: both folders hold the same key."""
    plan_path = tmp_path / "plan.json"
    save_plan(agents_plan(), plan_path)
    runner = CliRunner()
    args = ["deploy", str(plan_path), "--option", "1", "--server"]
    assert runner.invoke(app, [*args, "main", "--out", str(tmp_path / "main")]).exit_code == 0
    key_file = tmp_path / "main" / "api-key"
    res = runner.invoke(app, [*args, "second", "--out", str(tmp_path / "second"), "--api-key-file", str(key_file)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "second" / "api-key").read_text() == key_file.read_text()
    (tmp_path / "bad-key").write_text("short\n")
    res = runner.invoke(
        app, [*args, "second", "--out", str(tmp_path / "x"), "--api-key-file", str(tmp_path / "bad-key")]
    )
    assert res.exit_code != 0 and not (tmp_path / "x").exists()


# Stand-ins for llama-server and ollama: no real engine can be made to hang on SIGTERM at will (the loopback test
# saw it in about 1 server in 10). Each records its PID and serves until stopped; `ollama list` / `create` succeed.
_ENGINE_STUB = """#!/usr/bin/env bash
case "${1:-}" in list|create) exit 0 ;; esac
IGNORE_TERM
echo $$ >> "$STUB_PIDS"
while :; do sleep 0.1; done
"""


@pytest.mark.slow
@pytest.mark.parametrize("ignores_term", [False, True])
def test_start_sh_leaves_no_engine_running(tmp_path: Path, ignores_term: bool) -> None:
    """Ctrl-C on start.sh (SIGINT to the script) stops its engines: SIGTERM, and SIGKILL after STOP_GRACE_S for one
    that does not exit, so none outlives the script holding its port and memory."""
    out = tmp_path / "out"
    write_deployment(build_deployment(agents_plan(), "main", 0), out)
    bin_dir, pids_file = tmp_path / "bin", tmp_path / "pids"
    bin_dir.mkdir()
    for name in ("llama-server", "ollama"):
        stub = bin_dir / name
        stub.write_text(_ENGINE_STUB.replace("IGNORE_TERM", "trap '' TERM" if ignores_term else ""))
        stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_PIDS": str(pids_file), "HOME": str(tmp_path)}
    proc = subprocess.Popen(["bash", str(out / "start.sh")], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while (not pids_file.exists() or len(pids_file.read_text().split()) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        engines = [int(p) for p in pids_file.read_text().split()]
        assert len(engines) == 2  # the reasoner's llama-server and ollama serve
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=STOP_GRACE_S + 20)
        took_s = time.monotonic() - t0
        assert not [p for p in engines if running(p)]
        if ignores_term:
            assert took_s >= STOP_GRACE_S - 0.5  # they were given the grace, then killed
        else:
            assert took_s < STOP_GRACE_S / 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
