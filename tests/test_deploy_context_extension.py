"""Long context in deploy: a placement past its trained context (the plan's `context_extension`, issue 12)
starts with the catalog's documented RoPE extension — llama-server `--rope-scaling yarn --rope-scale 4
--yarn-orig-ctx 32768`, vLLM `--hf-overrides` with config.json's rope_scaling, a note for Ollama (its Modelfile
has no such parameter). Expected figures: catalog/models.yaml qwen2.5-14b, context_trained 32768,
context_extended 131072 ("YaRN, factor 4 over 32768"); flags from the pinned build's README table
(tests/data/llama_server_readme_options_b11434.md) and docs.vllm.ai."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from bench_fixtures import free_port, require_tools
from test_deploy_flags import VLLM_SERVE_FLAGS
from test_report_fixtures import GIB, device, mem, placement

from planner.catalog import load_catalog
from planner.deploy import RopeScaling, build_deployment, rope_scaling
from planner.deploy import llama_cpp as llama_mod
from planner.errors import PlannerError
from planner.measure.processes import stop_group
from planner.measure.synthetic import write_synthetic_gguf
from planner.plan.schema import PLAN_SCHEMA_VERSION, Placement, Plan, PlanOption, PlanServer

README_B11434 = Path(__file__).parent / "data" / "llama_server_readme_options_b11434.md"
QWEN_EXTENSION = (  # catalog/models.yaml qwen2.5-14b context_extension
    "YaRN, factor 4 over 32768 (config.json rope_scaling: {type: yarn, factor: 4.0, "
    "original_max_position_embeddings: 32768})"
)


def _long(role: str = "longdoc", engine: str = "llama.cpp", model: str = "qwen2.5-14b", **kw: Any) -> Placement:
    base: dict[str, Any] = {
        "ctx": 65536,
        "context_extension": QWEN_EXTENSION,
        "kv_capacity_tokens": 65536,
        "memory": mem(9.0, 12.0, 1.0),
    }
    base.update(kw)
    return placement(role, model, "Qwen2.5 14B Instruct", engine=engine, **base)


def _plan(*placements: Placement) -> Plan:
    ps = list(placements)
    srv = PlanServer(
        name="box", new=False, cost_usd=0.0, hardware="1x rtx-4090", cpu=None, gpus=["rtx-4090"],
        ram_bytes=64 * GIB, devices=[device(0, "gpu", "rtx-4090", 24 * GIB, ps, 1)], placements=ps,
    )  # fmt: skip
    opt = PlanOption(kind="one-server-concurrent", servers=[srv], total_cost_usd=0.0, meets_targets=True, why="t")
    return Plan(
        schema_version=PLAN_SCHEMA_VERSION, created_at="2026-12-07T00:00:00Z", agiplan_version="0.1.0",
        stack_name="long", options=[opt], recommended=0,
    )  # fmt: skip


def _readme_flags() -> set[str]:
    """Every long flag of the pinned llama-server's option table."""
    return set(re.findall(r"`(--[a-z0-9-]+)", README_B11434.read_text()))


def test_catalog_extension_gives_yarn_factor_4_over_32768() -> None:
    assert rope_scaling(_long()) == RopeScaling("yarn", 4.0, 32768)
    assert rope_scaling(_long(ctx=16384, context_extension="")) is None  # within the trained context


def test_llama_server_gets_the_documented_rope_flags() -> None:
    dep = build_deployment(_plan(_long()), "box")
    argv = next(p.argv for p in dep.processes if p.name == "llama-server-longdoc")
    i = argv.index("--rope-scaling")
    assert argv[i : i + 6] == ("--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "32768")
    assert argv[argv.index("-c") + 1] == "65536"  # ctx 65536 × 1 slot
    # each flag is a row of the pinned build's README table, and yarn a documented value of --rope-scaling
    assert {"--rope-scaling", "--rope-scale", "--yarn-orig-ctx"} <= _readme_flags()
    assert "`--rope-scaling {none,linear,yarn}`" in README_B11434.read_text()
    readme = dep.files["README.md"]
    assert (
        "`longdoc`: 65536 tokens per conversation, past the 32768 it was trained on: yarn RoPE scaling, factor 4"
        in readme
    )


def test_role_within_trained_context_gets_no_rope_flags() -> None:
    dep = build_deployment(_plan(_long(ctx=16384, context_extension="")), "box")
    argv = next(p.argv for p in dep.processes if p.name == "llama-server-longdoc")
    assert not {"--rope-scaling", "--rope-scale", "--yarn-orig-ctx"} & set(argv)


def test_on_demand_role_preset_carries_the_extension() -> None:
    """The router's preset section holds the same flags as the resident server (INI keys without dashes)."""
    dep = build_deployment(_plan(_long(residency="on-demand", swap_in_s=3.0)), "box")
    ini = dep.files[llama_mod.preset_path(0)]
    section = ini.split("[longdoc]", 1)[1]
    assert "rope-scaling = yarn" in section and "rope-scale = 4" in section and "yarn-orig-ctx = 32768" in section


def test_vllm_gets_hf_overrides_rope_scaling() -> None:
    dep = build_deployment(_plan(_long(engine="vllm", quant="AWQ-INT4")), "box")
    argv = next(p.argv for p in dep.processes if p.argv[:2] == ("vllm", "serve"))
    overrides = json.loads(argv[argv.index("--hf-overrides") + 1])
    # the Qwen2.5 model card's config.json snippet: yarn, factor 4.0, original_max_position_embeddings 32768
    assert overrides == {
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    }
    assert argv[argv.index("--max-model-len") + 1] == "65536"
    assert "--hf-overrides" in VLLM_SERVE_FLAGS


def test_ollama_says_it_has_no_rope_parameter() -> None:
    dep = build_deployment(_plan(_long(engine="ollama")), "box")
    modelfile = dep.files["ollama/longdoc.Modelfile"]
    assert "PARAMETER num_ctx 65536" in modelfile
    assert not re.search(r"^PARAMETER rope", modelfile, re.MULTILINE)  # docs/modelfile.md has none
    assert any("factor 4" in n and "no parameter" in n for n in dep.notes), dep.notes
    assert re.search(r"^# longdoc: .*yarn RoPE scaling, factor 4", modelfile, re.MULTILINE), modelfile


def test_unknown_extension_is_refused_not_guessed() -> None:
    p = placement("x", "/models/own.gguf", "own", ctx=65536, context_extension="NTK by magic")
    with pytest.raises(PlannerError, match="cannot turn into engine flags"):
        rope_scaling(p)
    # a model outside the catalog: the plan's own text gives the figures
    p = placement("x", "/models/own.gguf", "own", ctx=65536, context_extension="YaRN, factor 2.5 over 16384")
    assert rope_scaling(p) == RopeScaling("yarn", 2.5, 16384)


@pytest.mark.engines
@pytest.mark.slow
def test_real_llama_server_starts_with_the_rope_flags(tmp_path: Path) -> None:
    """The generated argv, run by the pinned llama-server on a tiny synthetic Qwen2-layout GGUF at 65,536
    tokens: it answers /health and its log shows the YaRN settings it took (freq_scale = 1/4, the original
    context 32768)."""
    tools = require_tools("llama-server")
    server_bin = tools.path("llama-server")
    small = {"n_layers": 2, "hidden_size": 256, "n_heads": 4, "n_kv_heads": 2, "head_dim_k": 64, "head_dim_v": 64}
    arch = dataclasses.replace(load_catalog().arch("qwen2.5-7b"), **small, ffn_size=512, vocab_size=512)
    gguf = write_synthetic_gguf(arch, "Q8_0", tmp_path / "tiny-qwen2.gguf")
    p = _long(model=str(gguf), devices=["cpu"], gpu_indices=[], gpu_layers=0, n_layers=2)
    srv = PlanServer(
        name="box", new=False, cost_usd=0.0, hardware="cpu", cpu=None, gpus=[], ram_bytes=16 * GIB,
        devices=[device(-1, "cpu", "host", 16 * GIB, [p], 0)], placements=[p],
    )  # fmt: skip
    port = free_port()
    argv = list(llama_mod.server_argv(srv, p, port, "/models"))
    assert "--yarn-orig-ctx" in argv
    log = tmp_path / "server.log"
    env = {**tools.env(), "LLAMA_ARG_LOG_VERBOSITY": "5"}  # the env of -lv (README): logs the context's rope settings
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(server_bin), *argv[1:]], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            status = 0
            deadline = time.monotonic() + 120
            while status != 200 and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                with contextlib.suppress(OSError):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    status = conn.getresponse().status
                    conn.close()
                time.sleep(0.3)
            assert status == 200, log.read_text()[-3000:]
        finally:
            stop_group(proc, 20)
    text = log.read_text()
    assert "n_ctx_slot = 65536" in text, text[-3000:]
    assert re.search(r"freq_scale\s*=\s*0\.25", text), text[-3000:]
