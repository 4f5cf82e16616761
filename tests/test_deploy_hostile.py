"""Hostile plans and output folders against `agiplan deploy` (issue #14): each reproduction of the issue as a
test that failed on 80e0116, and a fuzz test that runs the generated scripts with stub engines.

The stubs are the one fake here: real llama-server / vLLM / Ollama would load models; what is under test is
what the shell hands them. Each stub is a bash script named like the engine that records its argv and the
environment variables deploy sets, NUL-separated, and exits 0."""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_report_fixtures import agents_plan, main_server, placement

from planner.deploy import Deployment, Process, build_deployment
from planner.deploy.write import MANIFEST, write_deployment
from planner.errors import PlannerError
from planner.plan.schema import Plan, PlanOption, save_plan

ENGINES = ("llama-server", "ggml-rpc-server", "vllm", "ray", "ollama", "litellm", "hf")
RECORDED_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GGML_VK_VISIBLE_DEVICES",
    "OLLAMA_HOST",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_KV_CACHE_TYPE",
    "OLLAMA_FLASH_ATTENTION",
    "OLLAMA_KEEP_ALIVE",
    "LLAMA_ARG_API_KEY_FILE",
    "VLLM_API_KEY",
)
STUB = """#!/usr/bin/env bash
f="$STUB_LOG/$(basename "$0").$$.$RANDOM"
{ printf '%s\\0' "$(basename "$0")" "$@"; printf '\\1\\0'
  for v in VARS; do printf '%s=%s\\0' "$v" "${!v-}"; done; } > "$f"
"""


def _stubs(root: Path) -> tuple[Path, Path]:
    bin_dir, log = root / "stub-bin", root / "stub-log"
    bin_dir.mkdir()
    log.mkdir()
    for name in ENGINES:
        exe = bin_dir / name
        exe.write_text(STUB.replace("VARS", " ".join(RECORDED_ENV)))
        exe.chmod(0o755)
    return bin_dir, log


def _calls(log: Path) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    out = []
    for f in sorted(log.iterdir()):
        parts = f.read_bytes().split(b"\0")[:-1]
        sep = parts.index(b"\1")
        argv = tuple(p.decode() for p in parts[:sep])
        env = dict(p.decode().split("=", 1) for p in parts[sep + 1 :])
        out.append((argv, {k: v for k, v in env.items() if v}))
    return out


def _tree(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in (p, *p.parents)}


def _run_scripts(dep: Deployment, out: Path, tmp: Path) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """start.sh, then every process start.sh leaves for later (on demand), with the stubs first on PATH."""
    bin_dir, log = _stubs(tmp)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(tmp / "home")}
    (tmp / "home").mkdir()
    scripts = ["start.sh"] + [f"{p.name}.sh" for p in dep.processes if not p.boot]
    for s in scripts:
        res = subprocess.run(["bash", str(out / s)], env=env, cwd=tmp, capture_output=True, timeout=60, check=False)
        assert res.returncode == 0, (s, res.stderr.decode())
    # fetch.sh: catalog models are downloaded (the hf stub), local files only checked (missing here: exit 1)
    fetch = out / "fetch.sh"
    res = subprocess.run(["bash", str(fetch)], env=env, cwd=tmp, capture_output=True, timeout=60, check=False)
    assert res.returncode == (1 if "test -f " in fetch.read_text() else 0), res.stderr
    return _calls(log)


def _expected(dep: Deployment) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    want: list[tuple[tuple[str, ...], dict[str, str]]] = []
    for p in dep.processes:
        env = dict(p.env)
        for k in p.key_env:
            env[k.name] = "<key>"
        want.append((p.argv, env))
        want += [(cmd, {"OLLAMA_HOST": f"127.0.0.1:{p.port}"}) for cmd in p.setup]
    return want


def _check_calls(dep: Deployment, out: Path, calls: list[tuple[tuple[str, ...], dict[str, str]]]) -> None:
    """Every engine got exactly the generated argv and environment, and nothing else ran (but `ollama list`,
    start.sh's wait for an Ollama instance)."""
    key = (out / "api-key").read_text().strip()
    got = []
    for argv, env in calls:
        if argv == ("ollama", "list"):
            continue
        env = {k: ("<key>" if v in (key, str(out.resolve() / "api-key")) else v) for k, v in env.items()}
        got.append((argv, env))
    want = _expected(dep)
    fetch = [shlex.split(ln) for ln in (out / "fetch.sh").read_text().splitlines() if ln.startswith("hf download ")]
    want += [(tuple(tok), {}) for tok in fetch]
    assert sorted(repr((a, sorted(e.items()))) for a, e in got) == sorted(repr((a, sorted(e.items()))) for a, e in want)


HOSTILE = 'x\'; touch pwned; echo "$(touch pwned2)" `touch pwned3` & #\\ ${HOME} * ?'


def _hostile_plan(text: str, *, on_demand: bool = False, model: str | None = None) -> Plan:
    """The agents fixture with `text` in every free-text field that reaches a generated file: model paths,
    model names, notes, hardware, the plan's date and assumptions, adapters."""
    plan = agents_plan()
    mp = model if model is not None else f"/m/{text}.gguf"
    chat = placement(
        "chat", mp, text, engine="ollama", devices=["cpu"], gpu_indices=[], gpu_layers=0, note=text,
        adapters=[f"/a/{text}"], residency="on-demand" if on_demand else "always",
    )  # fmt: skip
    coder = placement(
        "coder", mp, text, engine="llama.cpp", note=text, residency="on-demand" if on_demand else "always",
        swap_in_s=3.0,
    )  # fmt: skip
    embed = placement("rag", mp, text, devices=["cpu"], gpu_indices=[], gpu_layers=0, embedding=True)
    srv = main_server([coder], [chat, embed]).model_copy(update={"hardware": text})
    opt = PlanOption(
        kind="one-server-serial", servers=[srv], total_cost_usd=0, meets_targets=True, why=text, failing_roles=[]
    )
    two = plan.options[1]
    return plan.model_copy(
        update={
            "options": [opt, two, plan.options[2]],
            "recommended": 0,
            "created_at": text,
            "assumptions": [text],
        }
    )


def _deploy_and_run(plan: Plan, server: str, option: int, tmp: Path) -> tuple[Deployment, Path]:
    path = tmp / "plan.json"
    save_plan(plan, path)
    from planner.plan.schema import load_plan

    loaded = load_plan(path)  # the plan goes through the same validation as deploy's
    dep = build_deployment(loaded, server, option, compose=True, addresses={"helper": "10.0.0.2"})
    out = tmp / "out"
    before = _tree(tmp, out)
    write_deployment(dep, out)
    calls = _run_scripts(dep, out, tmp)
    _check_calls(dep, out, calls)
    after = _tree(tmp, out)
    new = {p for p in after - before if not p.startswith(("stub-", "home"))}
    assert new == set(), new  # nothing outside --out (the stubs' own folders aside)
    assert not list((tmp / "home").iterdir())
    assert not [p for p in out.rglob("pwned*")]
    return dep, out


@pytest.mark.parametrize(("server", "option"), [("main", 0), ("main", 1), ("second", 1), ("main", 2), ("helper", 2)])
def test_hostile_strings_reach_engines_as_one_argument(tmp_path: Path, server: str, option: int) -> None:
    """Shell metacharacters in every free-text field: each engine sees exactly its generated argv, no file
    appears anywhere, no `pwned`."""
    dep, out = _deploy_and_run(_hostile_plan(HOSTILE), server, option, tmp_path)
    if (server, option) == ("main", 0):
        llama = next(p for p in dep.processes if p.name == "llama-server-coder")
        assert llama.argv[llama.argv.index("-m") + 1] == f"/m/{HOSTILE}.gguf"
        mf = (out / "ollama" / "chat.Modelfile").read_text()
        assert f'FROM """/m/{HOSTILE}.gguf"""\n' in mf  # one quoted argument (Ollama's parser), not two


def test_on_demand_roles_are_not_started_at_boot(tmp_path: Path) -> None:
    """The serial option's on-demand roles: no llama-server with their model is started by start.sh; a
    llama-server router (no model) serves them, and its preset names them with load-on-startup = false."""
    dep, out = _deploy_and_run(_hostile_plan("plain", on_demand=True, model="/m/model.gguf"), "main", 0, tmp_path)
    start = (out / "start.sh").read_text()
    assert "llama-server-coder" not in start
    router = next(p for p in dep.processes if p.kind == "router")
    assert router.roles == ("coder",) and "-m" not in router.argv
    ini = (out / "llama-router-0.ini").read_text()
    assert "[coder]\nload-on-startup = false\nm = /m/model.gguf\n" in ini
    ollama = next(p for p in dep.processes if p.engine == "ollama" and "chat" in p.roles)
    assert dict(ollama.env)["OLLAMA_KEEP_ALIVE"] == "10m" and dict(ollama.env)["OLLAMA_MAX_LOADED_MODELS"] == "1"


def test_on_demand_vllm_is_not_started_by_start_sh_nor_compose() -> None:
    import yaml

    plan = agents_plan()
    srv = plan.options[1].servers[1]
    srv.placements[1] = srv.placements[1].model_copy(update={"residency": "on-demand"})
    dep = build_deployment(plan, "second", 1, compose=True)
    commands = [ln for ln in dep.files["start.sh"].splitlines() if not ln.startswith("#")]
    assert not [ln for ln in commands if "vllm-summarizer" in ln]
    assert "./vllm-coder.sh > logs/vllm-coder.log" in dep.files["start.sh"]
    svc = yaml.safe_load(dep.files["compose.yaml"])["services"]
    assert svc["vllm-summarizer"]["profiles"] == ["on-demand"] and "restart" not in svc["vllm-summarizer"]
    assert svc["vllm-coder"]["restart"] == "unless-stopped"


def test_split_pins_only_local_gpus(tmp_path: Path) -> None:
    """The issue's reproduction: a split placement lists main's GPUs 0, 1 and the helper's 0 as gpu_indices
    [0, 1, 0] with memory_by_device by server (as recommend writes it). Main's llama-server pins 0,1; the
    helper's ggml-rpc-server its own 0, bound to its address; main's --rpc names the helper."""
    plan = agents_plan()
    opt = plan.options[2]
    r = opt.servers[0].placements[0]
    gib = 2**30
    opt.servers[0].placements[0] = r.model_copy(
        update={
            "gpu_indices": [0, 1, 0],
            "devices": ["rtx-4090", "rtx-4090", "rx-7900-xtx"],
            "memory_by_device": {"main/gpu0": 21 * gib, "main/gpu1": 21 * gib, "helper/gpu0": 18 * gib},
        }
    )
    head = build_deployment(plan, "main", 2, addresses={"helper": "10.0.0.2"})
    worker = build_deployment(plan, "helper", 2, addresses={"helper": "10.0.0.2"})
    srv = next(p for p in head.processes if p.name == "llama-server-reasoner")
    assert dict(srv.env) == {"CUDA_VISIBLE_DEVICES": "0,1"}  # on 80e0116: 0,1,0
    assert srv.argv[srv.argv.index("--rpc") + 1] == "10.0.0.2:50052"
    w = worker.processes[0]
    assert (w.argv, dict(w.env)) == (
        ("ggml-rpc-server", "-H", "10.0.0.2", "-p", "50052", "-c"),
        {"ROCR_VISIBLE_DEVICES": "0"},
    )


def test_servers_other_hosts_reach_require_the_key(tmp_path: Path) -> None:
    """Main runs the router: its engines listen on loopback without a key; the second server's engines listen
    on all interfaces with the key (vLLM: VLLM_API_KEY read from api-key), and the router sends it."""
    import yaml

    main = build_deployment(agents_plan(), "main", 1)
    second = build_deployment(agents_plan(), "second", 1)
    r = next(p for p in main.processes if p.name == "llama-server-reasoner")
    assert r.argv[r.argv.index("--host") + 1] == "127.0.0.1" and not r.key_env
    assert r.argv[r.argv.index("--cors-origins") + 1] == "localhost"
    coder = next(p for p in second.processes if p.name == "vllm-coder")
    assert coder.argv[coder.argv.index("--host") + 1] == "0.0.0.0"
    assert [k.name for k in coder.key_env] == ["VLLM_API_KEY"]
    assert "0.0.0.0" not in " ".join(" ".join(p.argv) for p in main.processes)
    cfg = yaml.safe_load(main.files["router/litellm-config.yaml"])
    keys = {m["model_name"]: m["litellm_params"]["api_key"] for m in cfg["model_list"]}
    assert keys == {
        "reasoner": "none",
        "coder": "os.environ/AGIPLAN_API_KEY",
        "summarizer": "os.environ/AGIPLAN_API_KEY",
        "chat": "os.environ/AGIPLAN_API_KEY",
    }
    assert cfg["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    out = tmp_path / "d"
    write_deployment(second, out)
    assert stat.S_IMODE(os.stat(out / "api-key").st_mode) == 0o600
    key = (out / "api-key").read_text().strip()
    assert key.startswith("sk-") and len(key) >= 40
    write_deployment(second, out)  # re-deploying keeps the key the other hosts hold
    assert (out / "api-key").read_text().strip() == key


# ---------------------------------------------------------------------------------------- the output folder


def _dep() -> Deployment:
    return build_deployment(agents_plan(), "main", 0)


def test_file_names_cannot_leave_out(tmp_path: Path) -> None:
    """A file name with '..' (the issue's role '../../../victim/backup') is refused before anything is written."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "backup.sh").write_text("precious\n")
    dep = _dep()
    dep.files["../victim/backup.sh"] = "#!/bin/sh\n"
    with pytest.raises(PlannerError, match="leave the output folder"):
        write_deployment(dep, tmp_path / "out")
    assert (victim / "backup.sh").read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]  # no out, no temporary folder


def test_duplicate_file_is_an_error() -> None:
    dep = _dep()
    with pytest.raises(PlannerError, match=r"two files would be named 'start\.sh'"):
        dep.add_file("start.sh", "")


@pytest.mark.parametrize("kind", ["device", "link-to-device", "link-to-dir", "file", "foreign-folder"])
def test_out_must_be_a_folder_of_ours(tmp_path: Path, kind: str) -> None:
    """--out /dev/null, a link to it or to a folder, a file, or a folder of someone else's files: refused,
    and the thing at --out is as it was."""
    out = tmp_path / "out"
    target = tmp_path / "elsewhere"
    target.mkdir()
    if kind == "device":
        out = Path("/dev/null")
    elif kind == "link-to-device":
        out.symlink_to("/dev/null")
    elif kind == "link-to-dir":
        out.symlink_to(target)
    elif kind == "file":
        out.write_text("mine\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    before = {p: (p.lstat().st_mode, p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*")}
    with pytest.raises(PlannerError, match="--out"):
        write_deployment(_dep(), out)
    after = {p: (p.lstat().st_mode, p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*")}
    assert after == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("special", ["link-to-device", "fifo", "folder"])
def test_redeploy_replaces_only_regular_files(tmp_path: Path, special: str) -> None:
    """An earlier deployment whose start.sh is now a link to /dev/null, a FIFO or a folder: refused, left as is."""
    out = tmp_path / "out"
    write_deployment(_dep(), out)
    target = out / "start.sh"
    target.unlink()
    if special == "link-to-device":
        target.symlink_to("/dev/null")
    elif special == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    before = sorted((p.name, p.lstat().st_mode) for p in out.iterdir())
    with pytest.raises(PlannerError, match=r"start\.sh exists and is not a regular file"):
        write_deployment(_dep(), out)
    assert sorted((p.name, p.lstat().st_mode) for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_redeploy_replaces_the_earlier_deployment_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_deployment(build_deployment(agents_plan(), "main", 1), out)
    (out / "logs").mkdir()
    (out / "logs" / "x.log").write_text("log\n")
    write_deployment(build_deployment(agents_plan(), "main", 3), out)  # serial: a router, no resident server
    assert not (out / "llama-server-reasoner.sh").exists()  # nothing of the earlier one is left over
    assert (out / "llama-router-0.sh").exists()
    assert (out / "logs" / "x.log").read_text() == "log\n"  # logs are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _fsize_limited() -> None:
    # A real "disk full": the kernel refuses writes past 1 KiB in one file (EFBIG; deploy.json and README.md
    # are larger); SIGXFSZ ignored so that write() fails instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


@pytest.mark.parametrize("earlier", [False, True])
def test_full_disk_leaves_the_earlier_deployment_or_nothing(tmp_path: Path, earlier: bool) -> None:
    """The issue: a full disk left compose.yaml and one script, no start.sh. Now the deployment is built in a
    temporary folder: a failed write leaves the earlier deployment (or nothing), exit 2, one line."""
    plan_path = tmp_path / "plan.json"
    save_plan(agents_plan(), plan_path)
    out = tmp_path / "out"
    if earlier:
        write_deployment(build_deployment(agents_plan(), "main", 3), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    argv = ["deploy", str(plan_path), "--server", "main", "--option", "1", "--compose", "--out", str(out)]
    code = "from planner.cli import main; main()"
    res = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, preexec_fn=_fsize_limited, check=False
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing was changed" in lines[0], res.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out", "plan.json"] if earlier else ["plan.json"])


def test_cli_hostile_plan_exit_2(tmp_path: Path) -> None:
    """The issue's reproduction end to end: role 'x &\\ntouch pwned\\n#' in plan.json -> deploy refuses (exit 2),
    writes nothing, and nothing is run."""
    path = tmp_path / "plan.json"
    save_plan(agents_plan(), path)
    data: dict[str, Any] = json.loads(path.read_text())
    data["options"][0]["servers"][0]["placements"][0]["role"] = "x &\ntouch pwned\n#"
    path.write_text(json.dumps(data))
    argv = ["deploy", str(path), "--server", "main", "--out", str(tmp_path / "out")]
    code = "from planner.cli import main; main()"
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "role" in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------- fuzz

FUZZ_COUNTS = {"examples": 0, "refused": 0, "ran": 0, "engine_calls": 0}
_printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(_printable, min_size=1, max_size=40), on_demand=st.booleans())
def test_fuzz_generated_scripts_with_stub_engines(
    tmp_path_factory: pytest.TempPathFactory, text: str, on_demand: bool
) -> None:
    """Random printable strings in every free-text field of a plan: either deploy refuses them with a
    PlannerError (a value a Modelfile or preset cannot hold), or every stub engine sees exactly its generated
    argv and environment and no file appears outside --out."""
    tmp = tmp_path_factory.mktemp("fuzz")
    FUZZ_COUNTS["examples"] += 1
    try:
        plan = _hostile_plan(text, on_demand=on_demand)
    except ValueError:  # the schema refused it (a path longer than allowed ...)
        FUZZ_COUNTS["refused"] += 1
        return
    try:
        dep, _out = _deploy_and_run(plan, "main", 0, tmp)
    except PlannerError:
        FUZZ_COUNTS["refused"] += 1
        return
    FUZZ_COUNTS["ran"] += 1
    FUZZ_COUNTS["engine_calls"] += len(_expected(dep))
    print(f"fuzz counts: {FUZZ_COUNTS}", file=sys.stderr)


def test_process_shell_line_round_trips() -> None:
    """Process.shell() for the hostile argv parses back (shlex) to the same tokens."""

    proc = Process("p", "llama.cpp", "server", ("llama-server", "-m", HOSTILE), (("CUDA_VISIBLE_DEVICES", "0"),))
    assert shlex.split(proc.shell()) == ["CUDA_VISIBLE_DEVICES=0", "llama-server", "-m", HOSTILE]


def test_manifest_name() -> None:
    assert MANIFEST == "deploy.json"
