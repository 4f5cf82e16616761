"""deploy with a draft model: llama-server's -md / --spec-* / -ngld / -devd / -ctkd flags (each a flag of the pinned
b11434's option table), fetch.sh downloading the draft's file, vLLM's --speculative-config as its docs write it,
Ollama's note that it has no speculative decoding, and the report naming the draft."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_report_fixtures import GIB, mem, placement

from planner.deploy import build_deployment
from planner.deploy.fetch import fetch_script
from planner.plan.schema import PLAN_SCHEMA_VERSION, Placement, Plan, PlanDraft, PlanOption, PlanServer
from planner.report import build_report, render_markdown

README_B11434 = Path(__file__).parent / "data" / "llama_server_readme_options_b11434.md"
DRAFT = PlanDraft(
    model="llama-3.2-3b", model_name="Llama 3.2 3B Instruct", quant="Q4_K_M", n_max=8, n_min=2, acceptance=0.7,
    gpu_layers=29, n_layers=28, memory_bytes=3 * GIB, speedup=1.86,
)  # fmt: skip


def _plan(p: Placement, gpus: list[str]) -> Plan:
    srv = PlanServer(
        name="main", new=False, cost_usd=0.0, hardware="test", cpu="ryzen-9-7950x", gpus=gpus, ram_bytes=128 * GIB,
        devices=[], placements=[p],
    )  # fmt: skip
    opt = PlanOption(kind="one-server-concurrent", servers=[srv], total_cost_usd=0.0, meets_targets=True, why="t")
    return Plan(
        schema_version=PLAN_SCHEMA_VERSION, created_at="2026-12-07T00:00:00Z", agiplan_version="0.1.0",
        stack_name="s", options=[opt], recommended=0,
    )  # fmt: skip


def _reasoner(engine: str = "llama.cpp", **kw: object) -> Placement:
    args: dict[str, object] = {
        "devices": ["rtx-4090", "rtx-4090"], "gpu_indices": [0, 1], "gpu_layers": 81, "n_layers": 80,
        "memory": mem(40.0, 2.5, 1.0), "draft": DRAFT,
    }  # fmt: skip
    args.update(kw)
    return placement("reasoner", "llama-3.3-70b", "Llama 3.3 70B", engine=engine, **args)


def test_llama_server_gets_the_draft_flags_of_the_plan() -> None:
    proc = build_deployment(_plan(_reasoner(), ["rtx-4090", "rtx-4090"]), "main").processes[0]
    argv = list(proc.argv)
    i = argv.index("-md")
    # the catalog's GGUF of the draft (bartowski's file, as fetch.sh downloads it), the plan's k and min, -ngld the
    # draft's 28 layers + output; on GPUs the draft follows the target's devices (no -devd)
    assert argv[i:] [:14] == [
        "-md", "/models/Llama-3.2-3B-Instruct-Q4_K_M.gguf", "--spec-type", "draft-simple",
        "--spec-draft-n-max", "8", "--spec-draft-n-min", "2", "-ngld", "29", "-ctkd", "f16", "-ctvd", "f16",
    ]  # fmt: skip
    assert "-devd" not in argv
    assert "Draft Llama 3.2 3B Instruct Q4_K_M" in proc.comment and "×1.86" in proc.comment
    documented = set(re.findall(r"`(-[-a-z0-9]+)", README_B11434.read_text()))
    documented |= set(re.findall(r", (-[a-z]+)", README_B11434.read_text()))
    for flag in ("-md", "--spec-type", "--spec-draft-n-max", "--spec-draft-n-min", "-ngld", "-ctkd", "-ctvd"):
        assert flag in documented, flag
    # the flags the brief names, --draft-max / --draft-min, were removed before b11434: not written
    assert "--draft-max" not in argv and "--draft-min" not in argv


def test_cpu_only_draft_stays_off_the_gpus() -> None:
    p = _reasoner(devices=["cpu"], gpu_indices=[], gpu_layers=0, draft=DRAFT.model_copy(update={"gpu_layers": 0}))
    argv = list(build_deployment(_plan(p, ["rtx-4090"]), "main").processes[0].argv)
    assert argv[argv.index("-ngld") + 1] == "0"
    assert argv[argv.index("-devd") + 1] == "none"


def test_fetch_downloads_the_draft_too() -> None:
    srv = _plan(_reasoner(), ["rtx-4090", "rtx-4090"]).options[0].servers[0]
    script = fetch_script(srv, "h", "/models")
    assert "# reasoner-draft: Llama 3.2 3B Instruct Q4_K_M (llama.cpp)" in script
    assert "hf download bartowski/Llama-3.2-3B-Instruct-GGUF Llama-3.2-3B-Instruct-Q4_K_M.gguf" in script


def test_vllm_gets_a_speculative_config() -> None:
    p = _reasoner(engine="vllm", quant="AWQ-INT4", gpu_layers=80, tensor_parallel=2, draft=DRAFT)
    argv = list(build_deployment(_plan(p, ["rtx-4090", "rtx-4090"]), "main").processes[0].argv)
    config = json.loads(argv[argv.index("--speculative-config") + 1])
    # docs.vllm.ai features/speculative_decoding/draft_model: {"model", "num_speculative_tokens", "method"}
    assert config == {"model": "meta-llama/Llama-3.2-3B-Instruct", "num_speculative_tokens": 8, "method": "draft_model"}


def test_ollama_says_it_has_no_speculative_decoding() -> None:
    p = _reasoner(engine="ollama")
    dep = build_deployment(_plan(p, ["rtx-4090", "rtx-4090"]), "main")
    assert any("Ollama has no speculative decoding" in n and "×1.86" in n for n in dep.notes)
    assert all("-md" not in proc.argv for proc in dep.processes)


@pytest.mark.parametrize(
    ("lang", "phrase"),
    [
        ("en", "Llama 3.3 70B + draft Llama 3.2 3B Instruct Q4_K_M (decode ×1.86)"),
        ("ru", "Llama 3.3 70B + черновая модель Llama 3.2 3B Instruct Q4_K_M (декодирование ×1.86)"),
    ],
)
def test_report_names_the_draft(lang: str, phrase: str) -> None:
    """The report's role table says which draft a role runs with and the speed-up the plan counted."""
    report = build_report(_plan(_reasoner(), ["rtx-4090", "rtx-4090"]), [], margins=False, deployment=False)
    assert phrase in render_markdown(report, lang)
