"""`agiplan recommend` through typer's CliRunner (JSON keys, table, --out, what-ifs, exit codes) and the
real entry point for the bad-input path (one line on stderr, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.catalog import load_catalog
from planner.cli import app
from planner.errors import PlannerError
from planner.plan.schema import OPTION_KINDS, load_plan

runner = CliRunner()

SMALL = """\
name: small
roles:
  - name: chat
    models: [llama-3.2-3b, gemma-3-270m]
    quants: [Q8_0, Q4_K_M]
    ctx: 4096
    parallel: 2
    min_tok_s: 10
  - name: helper
    models: [gemma-3-270m]
    quants: [Q8_0]
    ctx: 2048
    residency: on-demand
    max_swap_in_s: 5
services:
  - {name: web-ui, cpu_cores: 1, ram_gib: 2}
"""
# cheap purchase space: one CPU, one GPU type (6 second servers)
ALLOW = ["--allow", "ryzen-9-9950x", "--allow", "rtx-4060-ti-16gb"]
SERVER = ["--server", "main: rtx-4060-ti-16gb, ryzen-9-7950x, 64GiB"]


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "220")


@pytest.fixture
def small_stack(tmp_path: Path) -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(SMALL, encoding="utf-8")
    return p


def test_json_has_the_stable_keys_and_writes_the_plan(small_stack: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = runner.invoke(app, ["recommend", str(small_stack), *SERVER, *ALLOW, "--format", "json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [o["kind"] for o in data["options"]] == list(OPTION_KINDS)
    assert isinstance(data["recommended"], int)
    rec = data["options"][data["recommended"]]
    assert rec["meets_targets"] is True
    for o in data["options"]:
        assert {"kind", "servers", "total_cost_usd", "meets_targets", "why"} <= set(o)
        for s in o["servers"]:
            assert {"name", "new", "cost_usd", "hardware", "devices", "placements"} <= set(s)
            for d in s["devices"]:
                assert {"id", "used_bytes", "capacity_bytes"} <= set(d)
                assert d["used_bytes"] + d["margin_bytes"] <= d["capacity_bytes"]
            for p in s["placements"]:
                assert {
                    "role",
                    "model",
                    "quant",
                    "ctx",
                    "parallel",
                    "engine",
                    "devices",
                    "memory_bytes",
                    "decode_tok_s",
                } <= set(p)
    two = data["options"][OPTION_KINDS.index("two-server")]
    assert two["servers"][1]["new"] is True and two["total_cost_usd"] == two["servers"][1]["cost_usd"] > 0
    # --out: schema-versioned, loads back through the shared contract
    plan = load_plan(out)
    assert plan.recommended == data["recommended"] and plan.stack_name == "small"


def test_table_marks_recommended_and_shows_bars_and_roles(small_stack: Path) -> None:
    res = runner.invoke(app, ["recommend", str(small_stack), *SERVER, *ALLOW])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "★ recommended" in out
    for kind in OPTION_KINDS:
        assert kind in out
    assert "█" in out and "host RAM" in out and "gpu0 rtx-4060-ti-16gb" in out
    assert "llama-3.2-3b" in out and "why:" in out and "NEW $" in out


def test_default_server_is_stated(tmp_path: Path) -> None:
    p = tmp_path / "tiny.yaml"
    p.write_text("roles:\n  - name: a\n    models: [gemma-3-270m]\n    quants: [Q8_0]\n    ctx: 2048\n")
    res = runner.invoke(app, ["recommend", str(p), "--allow", "ryzen-9-9950x", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert any("no --server given" in a and "2x RTX 4090" in a for a in data["assumptions"])
    assert data["options"][0]["servers"][0]["hardware"] == "2x rtx-4090, ryzen-9-7950x, 128 GiB"


def test_what_if_is_a_delta_against_the_base(small_stack: Path) -> None:
    res = runner.invoke(
        app,
        [
            "recommend",
            str(small_stack),
            *SERVER,
            *ALLOW,
            "--what-if",
            "+1 rtx-4090",
            "--what-if",
            "chat.ctx=8192",
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    w = json.loads(res.stdout)["what_ifs"]
    assert [x["what_if"] for x in w] == ["+1 rtx-4090", "chat.ctx=8192"]
    # the extra card is bought (RTX 4090: street $2,200 in the catalog, 2026-02), and never makes a role slower
    # (speed is not in the objective once the targets are met, so the solver may leave chat where it was)
    assert w[0]["total_cost_usd"] >= 2200 and w[0]["roles"]["chat"]["delta_tok_s"] >= 0
    assert "summary" in w[1] and w[1]["meets_targets"] is True


def test_nothing_fits_exits_1_with_failing_role_and_relaxation(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    # a 14B at Q8_0 with 32k context needs ~20 GiB: more than the 16 GB card; the 15 tok/s target rules out
    # the CPU (DDR5 at 83 GB/s); a second server is out of a $100 budget. Q4_K_M at 16k fits the card.
    p.write_text(
        "roles:\n  - name: big\n    models: [qwen2.5-14b]\n    quants: [Q8_0]\n    ctx: 32768\n    min_tok_s: 15\n"
    )
    res = runner.invoke(app, ["recommend", str(p), *SERVER, *ALLOW, "--budget", "100"])
    assert res.exit_code == 1, res.output
    assert "nothing meets every target within the budget: big" in res.stderr
    assert "would work: " in res.stderr
    assert "lower quant" in res.stderr or "shorter context" in res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["recommend"], "give a stack file or --preset"),
        (["recommend", "--preset", "agent"], "Did you mean agents"),
        (["recommend", "--preset", "deep", "--server", "main: 2x rtx-9999"], "'rtx-9999' is not a catalog GPU"),
        (["recommend", "--preset", "deep", "--what-if", "bogus"], "expected ROLE.FIELD=VALUE"),
        (["recommend", "--preset", "deep", "--budget", "-5"], "--budget must be >= 0"),
        (["recommend", "--preset", "deep", "--time-limit", "0"], "--time-limit must be a positive number"),
        (["recommend", "--preset", "deep", "--report", "r.md", "--lang", "de"], "--lang 'de': use one of en, ru"),
        (["recommend", "--preset", "deep", "--time-limit", "inf"], "--time-limit must be a positive number"),
    ],
)
def test_bad_arguments_raise_planner_errors(args: list[str], expected: str) -> None:
    res = runner.invoke(app, args)
    assert isinstance(res.exception, PlannerError), res.output
    assert expected in str(res.exception)


def test_bad_stack_file_real_entry_point_one_line_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("roles:\n  - name: a\n    models: [mistral-7b]\n    parallel: many\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from planner.cli import main; main()", "recommend", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {p}: roles.0.parallel: Input should be a valid integer")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_time_limit_default_is_the_solvers() -> None:
    """The CLI states 60 s without importing the solver (start-up time); it must be the solver's own default."""
    import inspect

    from planner.cli.recommend_cmd import recommend_command
    from planner.plan.solver import MILP_TIME_LIMIT_S

    assert inspect.signature(recommend_command).parameters["time_limit"].default == MILP_TIME_LIMIT_S


def test_unknown_disk_is_named_not_replaced_by_a_default(tmp_path: Path) -> None:
    """A stack's `disk` must be a catalog disk: a typo used to plan swap-ins at a silent 7.45 GB/s."""
    stack = tmp_path / "disk.yaml"
    stack.write_text("name: t\ndisk: nvme-gen44\nroles:\n  - {name: a, models: [mistral-7b], ctx: 4096}\n")
    res = runner.invoke(app, ["recommend", str(stack)])
    assert isinstance(res.exception, PlannerError), res.output
    assert "Unknown disk 'nvme-gen44'. Did you mean nvme-gen4" in str(res.exception)


@pytest.mark.parametrize("flag", ["--out", "--report"])
def test_unwritable_output_real_entry_point_one_line_exit_2(tmp_path: Path, flag: str) -> None:
    """An output path the file system refuses (here: under a regular file) ends in one `error:` line naming
    the path, exit 2 — it used to end in a FileExistsError traceback after the whole search."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "plan.out"
    proc = subprocess.run(
        [sys.executable, "-c", "from planner.cli import main; main()", "recommend", "--preset", "ensemble", flag,
         str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {blocker}: ")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


# 12 roles with two or three named models each (bench/solver_speed.py --named): its two-server and split kinds
# search for about a minute each, in threads, mostly inside HiGHS
_BIG = {
    "reasoner": "[llama-3.3-70b, qwen2.5-72b, qwen2.5-32b]",
    "coder": "[deepseek-coder-6.7b, qwen2.5-coder-7b]",
    "chat": "[saiga-llama3-8b, saiga-mistral-7b, qwen2.5-14b]",
    "summarizer": "[mistral-7b, qwen2.5-7b]",
    "embedding": "[bge-m3]",
    "vision": "[gemma-3-27b]",
}
_TASKS = ["reasoner", "coder", "chat", "chat", "summarizer", "embedding"] * 2


@pytest.mark.slow
def test_ctrl_c_during_a_long_search_ends_at_once_with_130(tmp_path: Path) -> None:
    """Ctrl-C while the option kinds search side by side: exit 130 within seconds, no abort. Before, the
    process waited for the running MILP's time limit (11.9 s here), and with search threads inside HiGHS at
    exit it could die with "terminate called without an active exception" (SIGABRT, 1 in 3 tries). A real
    child process and a real SIGINT; SIGINT is set back to its default in the child (a background job
    inherits it ignored)."""
    import signal
    import time

    roles = "".join(
        f"  - {{name: r{i}, models: {_BIG[task]}, ctx: 8192, parallel: {1 + i % 3}"
        + (", min_tok_s: 15" if task not in ("embedding",) else "")
        + (", residency: on-demand}" if i >= 8 else "}")
        + "\n"
        for i, task in enumerate(_TASKS)
    )
    stack = tmp_path / "big.yaml"
    stack.write_text(f"name: big\nroles:\n{roles}")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from planner.cli import main; main()", "recommend", str(stack), "--budget", "4000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        time.sleep(12)  # candidates built, the kinds searching
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        waited_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "terminate called" not in err
    assert waited_s < 5.0  # the search alone would go on for about two minutes


def test_embedding_roles_are_flagged_in_the_plan(tmp_path: Path) -> None:
    """The plan marks the placement of an embedding model (catalog bge-m3: roles [embedding]) so that deploy
    starts it for embeddings; the chat model's is not marked."""
    stack = tmp_path / "s.yaml"
    stack.write_text(
        "name: rag\nroles:\n  - {name: rag, models: [bge-m3], ctx: 512}\n"
        "  - {name: chat, models: [qwen2.5-7b], ctx: 2048}\n",
        encoding="utf-8",
    )
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["recommend", str(stack), "-s", "box: ryzen-9-7950x, 64GiB", "-o", str(out)])
    assert res.exit_code == 0, res.output
    plan = load_plan(out)
    flags = {p.role: (p.embedding, p.n_ubatch) for s in plan.options[plan.recommended].servers for p in s.placements}
    # the encoder's micro-batch is its context (512 here), as deploy starts it; the chat model keeps the default
    assert flags == {"rag": (True, 512), "chat": (False, None)}
    rag = next(p for s in plan.options[plan.recommended].servers for p in s.placements if p.role == "rag")
    # the table shows what an embedder does: tokens embedded per second (its prefill rate), on its row only
    assert f"embeds {rag.prefill_tok_s:,.0f} tok/s" in res.output
    embedders = sum(1 for o in plan.options for s in o.servers for p in s.placements if p.embedding)
    assert res.output.count("embeds ") == embedders


def test_markdown_format_prints_the_report() -> None:
    """`recommend -f markdown` prints the Markdown report (it printed the terminal table before)."""
    res = CliRunner().invoke(app, ["recommend", "--preset", "deep", "-f", "markdown"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("# ")  # a Markdown title, not the table's "stack deep: 4 options"
    assert "stack deep: 4 options" not in res.output
    assert "llama-server" in res.output  # the report's deployment commands


def test_bench_refuses_markdown_in_one_line() -> None:
    """bench has no Markdown of its own (it printed a table for -f markdown): one line on stderr, exit 2."""
    code = "from planner.cli import main; main()"
    argv = ["bench", "--show-calibration", "-f", "markdown"]
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "agiplan report" in lines[0], res.stderr
    assert res.stdout == ""


# The seed server (2x RTX 4090) holds the 70B reasoner; the coder's 20 tok/s floor needs a 24 GB card of its own
# (on the host CPU it decodes at 3.0 tok/s), so the recommended plan buys a second server.
USED_STACK = """\
name: used
allow_used: {allow}
roles:
  - name: reasoner
    models: [llama-3.3-70b]
    quants: [Q4_K_M]
    residency: always
  - name: coder
    models: [qwen2.5-32b]
    quants: [Q4_K_M]
    min_tok_s: 20
    residency: always
"""


@pytest.mark.parametrize("allow_used", [True, False])
def test_used_parts_only_when_the_stack_allows_them(tmp_path: Path, allow_used: bool) -> None:
    """With allow_used, the cheapest 24 GB card that meets the coder's floor is a used RTX 3090 (catalog used
    price $700, 2026-02) rather than a new RX 7900 XTX ($999 MSRP); without it, no option buys a 3090 and every
    part is new. Each bought part carries the catalog's price, month and which price it is."""
    stack = tmp_path / "used.yaml"
    stack.write_text(USED_STACK.format(allow=str(allow_used).lower()), encoding="utf-8")
    res = runner.invoke(app, ["recommend", str(stack), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    best = data["options"][data["recommended"]]
    assert best["meets_targets"] and best["kind"] == "two-server"
    bought = {p["id"]: p for s in best["servers"] for p in s["parts"]}
    cat = load_catalog()
    for ident, part in bought.items():
        if part["kind"] in ("cpu", "gpu"):
            entry = cat.gpu(ident) if part["kind"] == "gpu" else cat.cpu(ident)
            price = entry.purchase_price(allow_used=allow_used)
            assert price is not None
            assert (part["price_usd"], part["price_date"], part["price_basis"], part["price_source"]) == (
                part["count"] * price.usd,
                price.date,
                price.basis,
                price.source,
            )
    all_parts = [p for o in data["options"] for s in o["servers"] for p in s["parts"]]
    if allow_used:
        assert "rtx-3090" in bought and "rx-7900-xtx" not in bought
        assert (bought["rtx-3090"]["condition"], bought["rtx-3090"]["price_usd"]) == ("used", 700.0)
        assert bought["rtx-3090"]["price_date"] == "2026-02"
    else:
        assert "rx-7900-xtx" in bought and bought["rx-7900-xtx"]["price_usd"] == 999.0
        assert all(p["id"] != "rtx-3090" and p["condition"] == "new" for p in all_parts)
    # the table says it in one word
    table = runner.invoke(app, ["recommend", str(stack)])
    assert table.exit_code == 0 and ("1× rtx-3090 used $700" in table.stdout) is allow_used
