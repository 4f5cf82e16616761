"""Issue #14's acceptance on real plans: `agiplan recommend` for each preset on the seed scenario's box (2× RTX
4090, Ryzen 9 7950X, 128 GiB, $3000 for new hardware), then `deploy` of every server of every option: every
script passes `bash -n`, every model path an engine loads has a line in fetch.sh that downloads exactly that
file (or checks it is there), and no on-demand role is started at boot."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.cli import app
from planner.deploy import build_deployment
from planner.plan.schema import load_plan
from planner.plan.stack import PRESETS

SERVER = "main: 2x rtx-4090, ryzen-9-7950x, 128GiB"


def _fetched(fetch_sh: str) -> set[str]:
    """The paths fetch.sh provides: DIR/FILE of each `hf download REPO FILE --local-dir DIR`, and each
    `test -f PATH` (a file it checks is there)."""
    out = set()
    for line in fetch_sh.splitlines():
        tok = shlex.split(line, comments=True)
        if tok[:2] == ["hf", "download"] and "--local-dir" in tok:
            out.add(f"{tok[tok.index('--local-dir') + 1].rstrip('/')}/{tok[3]}")
        elif tok[:2] == ["test", "-f"]:
            out.add(tok[2])
    return out


def _loaded_paths(files: dict[str, str], argvs: list[tuple[str, ...]]) -> set[str]:
    """Every GGUF an engine of the deployment loads: llama-server -m, router presets' `m = `, Modelfile FROM."""
    paths = {a[a.index("-m") + 1] for a in argvs if a[0] == "llama-server" and "-m" in a}
    for rel, text in files.items():
        if rel.endswith(".ini"):
            paths |= set(re.findall(r"^m = (.+)$", text, flags=re.M))
        if rel.endswith(".Modelfile"):
            paths |= {shlex.split(ln)[1] for ln in text.splitlines() if ln.startswith("FROM ")}
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_plans_deploy_clean(tmp_path: Path, preset: str) -> None:
    plan_path = tmp_path / "plan.json"
    res = CliRunner().invoke(
        app,
        ["recommend", "--preset", preset, "--server", SERVER, "--budget", "3000", "--time-limit", "10",
         "--out", str(plan_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    plan = load_plan(plan_path)
    checked = 0
    for i, opt in enumerate(plan.options):
        for srv in opt.servers:
            dep = build_deployment(plan, srv.name, i, compose=True)
            for rel, text in dep.files.items():
                if rel.endswith(".sh"):
                    script = tmp_path / "s.sh"
                    script.write_text(text)
                    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
                    assert r.returncode == 0, (preset, i, srv.name, rel, r.stderr)
            loaded = _loaded_paths(dep.files, [p.argv for p in dep.processes])
            missing = loaded - _fetched(dep.files["fetch.sh"])
            assert not missing, (preset, i, srv.name, missing)
            for proc in dep.processes:  # each host pins only GPUs it has (deep's split wrote 0,1,0 on main)
                for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
                    value = dict(proc.env).get(var)
                    if value and value != "-1":
                        assert all(0 <= int(x) < len(srv.gpus) for x in value.split(",")), (preset, proc.name, value)
            on_demand = {p.role for p in srv.placements if p.residency == "on-demand"}
            for proc in dep.processes:
                if proc.boot and proc.kind == "server" and proc.engine in ("llama.cpp", "vllm"):
                    assert not on_demand & set(proc.roles), (preset, i, proc.name)
            checked += len(loaded)
    assert checked > 0
