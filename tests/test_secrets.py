"""Secrets (issue 6): a Hugging Face token and an endpoint API key planted in the environment and on the
command line never appear in stdout, stderr, JSON or any file agiplan writes — through every command that
could print or save them, on success and on error. The servers are real loopback servers (tests/hub_server.py,
the misbehaving OpenAI server of tests/test_faults.py); each check also proves the secret was in play (the
server received it), so a pass is not vacuous."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer
from test_faults import OpenAIServer

from planner.redact import MASK, redact, redact_strings, register_secret

REPO = Path(__file__).resolve().parent.parent
HF_TOKEN = "hf_PlantedHubToken0123456789abcdef"
API_KEY = "planted-endpoint-key-7f3a9c"  # not token-shaped: only registration / the env var can mask it
ENV_API_KEY = "sk-planted-env-key-0123456789abcdef"
SECRETS = (HF_TOKEN, API_KEY, ENV_API_KEY)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    full.pop("AGIPLAN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=180, check=False)  # fmt: skip


def _assert_clean(where: str, text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"{where} contains a planted secret"
        assert s[4:-4] not in text, f"{where} contains part of a planted secret"


def _assert_tree_clean(root: Path) -> int:
    """Every file under `root` (caches, configs, outputs) is free of the secrets; returns how many were read."""
    n = 0
    for p in root.rglob("*"):
        if p.is_file():
            _assert_clean(str(p), p.read_bytes().decode("utf-8", errors="replace"))
            n += 1
    return n


@pytest.fixture
def env(tmp_path: Path, hub_server: HubServer) -> dict[str, str]:
    """Every place agiplan and huggingface_hub write to is under tmp_path; the token is set."""
    return {
        "HF_TOKEN": HF_TOKEN,
        "OPENAI_API_KEY": ENV_API_KEY,
        "HF_ENDPOINT": hub_server.url,
        "HF_HOME": str(tmp_path / "hf"),
        "AGIPLAN_CACHE_DIR": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def test_redact_masks_known_and_token_shaped_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    register_secret(API_KEY)
    register_secret("none")  # placeholders are too short to be secrets: never masked
    text = f"a {HF_TOKEN} b {API_KEY} c Bearer xyz.123 d sk-abcdefghijklmnop e hf_abcdefghijkl none"
    assert redact(text) == f"a {MASK} b {MASK} c Bearer {MASK} d {MASK} e {MASK} none"
    assert redact_strings({"k": [API_KEY, 3, {"x": HF_TOKEN}]}) == {"k": [MASK, 3, {"x": MASK}]}


def test_hub_token_never_shown(env: dict[str, str], hub_server: HubServer, tmp_path: Path) -> None:
    """estimate hf:... on success (JSON and table) and on a gated and a missing repo."""
    from test_hf_source import LLAMA_CONFIG, _llama_repo  # the same tiny repos the Hub tests use

    _llama_repo(hub_server)
    hub_server.add_repo("o/gated", {"config.json": json.dumps(LLAMA_CONFIG).encode()}, behaviour="gated")
    outputs = []
    for args in (
        ["estimate", "hf:meta/tiny-llama", "--format", "json"],
        ["estimate", "hf:meta/tiny-llama"],
        ["estimate", "hf:o/gated"],
        ["estimate", "hf:o/missing-repo"],
    ):
        proc = _cli(*args, env=env)
        outputs.append((args, proc.returncode))
        _assert_clean(f"{args} stdout", proc.stdout)
        _assert_clean(f"{args} stderr", proc.stderr)
    assert [code for _, code in outputs] == [0, 0, 2, 2]
    assert _assert_tree_clean(tmp_path) > 0  # the header cache, the HF cache: written, and clean


def test_endpoint_key_never_shown_or_saved(env: dict[str, str], tmp_path: Path) -> None:
    """bench --endpoint with --api-key (and with OPENAI_API_KEY): the server gets the key; a server that
    echoes it in an error body does not get it into stdout, stderr or the saved result; report of that
    result is clean too."""
    out = tmp_path / "out"
    out.mkdir()
    with OpenAIServer("ok", "http500", echo=API_KEY) as srv:
        proc = _cli("bench", "--endpoint", srv.url, "--model-name", "m", "--concurrency", "1,2", "--gen", "4",
                    "--timeout", "5", "--api-key", API_KEY, "--out", str(out / "bench.json"), env=env)  # fmt: skip
        assert srv.auth_headers[0] == f"Bearer {API_KEY}"  # the key was really used
    assert proc.returncode == 1, proc.stderr
    saved = json.loads((out / "bench.json").read_text())
    assert saved["runs"][1]["error"].startswith(f"HTTP 500: internal error for key {MASK}")
    for stream in (proc.stdout, proc.stderr):
        _assert_clean("bench output", stream)

    with OpenAIServer("http500", echo=ENV_API_KEY) as srv:  # the key from OPENAI_API_KEY, json output
        proc = _cli("bench", "--endpoint", srv.url, "--model-name", "m", "--gen", "4", "--timeout", "5",
                    "--format", "json", "--out", str(out / "bench-env.json"), env=env)  # fmt: skip
        assert srv.auth_headers == [f"Bearer {ENV_API_KEY}"]
    assert proc.returncode == 1
    assert MASK in json.loads(proc.stdout)["runs"][0]["error"]
    _assert_clean("bench json stdout", proc.stdout)
    _assert_clean("bench stderr", proc.stderr)

    bad = _cli("bench", "--endpoint", f"ftp://{API_KEY}@host", "--model-name", "m", "--api-key", API_KEY, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --endpoint must be an http(s) URL")
    _assert_clean("bench error", bad.stderr)

    from test_report_fixtures import agents_plan

    plan = out / "plan.json"
    plan.write_text(json.dumps(agents_plan().model_dump(mode="json")), encoding="utf-8")
    rep = _cli("report", str(plan), str(out / "bench.json"), "--no-margins", "--out", str(out / "report.md"), env=env)
    assert rep.returncode == 0, rep.stderr
    assert "bench.json" in (out / "report.md").read_text()  # the bench result was read into the report
    assert _assert_tree_clean(tmp_path) >= 4


@pytest.mark.slow
def test_other_commands_with_secrets_in_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    """recommend --out, deploy --out (compose, router config), report --format json, catalog, detect and an
    error path: nothing they print or write contains the planted values."""
    work = tmp_path / "work"
    work.mkdir()
    plan = work / "plan.json"
    runs = [
        ["recommend", "--preset", "agents", "--server", "main: 2x rtx-4090, ryzen-9-7950x, 128GiB", "--out", str(plan)],
        ["catalog", "models", "--format", "json"],
        ["detect", "--format", "json"],
        ["estimate", "llama-3-8b", "--gpu", "rtx-4090", "--format", "json"],
        ["estimate", "no-such-model"],
    ]
    for args in runs:
        proc = _cli(*args, env=env)
        assert proc.returncode in (0, 1, 2), (args, proc.stderr[-1000:])
        _assert_clean(f"{args} stdout", proc.stdout)
        _assert_clean(f"{args} stderr", proc.stderr)
    if not plan.exists():
        from test_report_fixtures import agents_plan

        plan.write_text(json.dumps(agents_plan().model_dump(mode="json")), encoding="utf-8")
    server = json.loads(plan.read_text())["options"][0]["servers"][0]["name"]
    for args in (
        ["deploy", str(plan), "--server", server, "--compose", "--out", str(work / "deploy")],
        ["report", str(plan), "--no-margins", "--format", "json", "--out", str(work / "report.json")],
    ):
        proc = _cli(*args, env=env)
        assert proc.returncode == 0, (args, proc.stderr[-1000:])
        _assert_clean(f"{args} stderr", proc.stderr)
    assert (work / "deploy").is_dir() and (work / "report.json").is_file()
    assert _assert_tree_clean(tmp_path) >= 3


# ------------------------------------------------------------------------------- issue 15: inert output


def test_redact_masks_url_credentials() -> None:
    """User info and the values of secret-named query parameters of a URL, wherever it stands in a text;
    the rest stays readable (a catalog source such as https://incpak.com/?p=136649 keeps its query)."""
    text = (
        "GET http://user:pa55word@127.0.0.1:8080/v1/chat?key=s3cret&model=m&X-Amz-Signature=abc&access_token=t "
        "failed; see https://incpak.com/?p=136649"
    )
    assert redact(text) == (
        f"GET http://{MASK}@127.0.0.1:8080/v1/chat?key={MASK}&model=m&X-Amz-Signature={MASK}&access_token={MASK} "
        "failed; see https://incpak.com/?p=136649"
    )
    assert redact(redact(text)) == redact(text)  # masking twice changes nothing


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("planted-key-123\nX-Injected: 1", "a line break at position 16"),
        ("planted-key-123\x1b[2J", "character U+001B at position 16"),
        ("planted key-123", "a space at position 8"),
    ],
)
def test_api_key_that_no_header_can_carry_is_refused_unseen(tmp_path: Path, key: str, what: str) -> None:
    """Issue 15: an API key with a newline was echoed into stderr and the --out JSON (http.client's error
    quotes the header). Now it is refused before any request, in one line naming the position, never the key."""
    out = tmp_path / "bench.json"
    for via_env in (False, True):
        args = ["bench", "--endpoint", "http://127.0.0.1:9", "--model-name", "m", "--out", str(out)]
        env = {"OPENAI_API_KEY": key} if via_env else {}
        proc = _cli(*args, *([] if via_env else ["--api-key", key]), env={"XDG_CONFIG_HOME": str(tmp_path), **env})
        assert proc.returncode == 2
        assert proc.stderr == (
            f"error: --api-key (or $OPENAI_API_KEY) holds {what}, which an HTTP header cannot carry (not shown).\n"
        )
        assert "planted" not in proc.stdout + proc.stderr and not out.exists()


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """`python -m planner ARGS` with stdout and stderr on a pseudo-terminal (rich draws its progress bar only
    on a terminal); returns (exit code, everything it wrote there)."""
    import pty
    import select

    master, slave = pty.openpty()
    full = {**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": "250"}
    full.pop("AGIPLAN_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "planner", *args], stdout=slave, stderr=slave, env=full, cwd=REPO)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=60)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def test_url_credentials_never_reach_the_terminal(tmp_path: Path) -> None:
    """Issue 15: an endpoint URL with `?key=...` or `user:password@` was shown whole in bench's progress bar
    on a terminal. Through a pseudo-terminal against a real loopback server: the bar shows the URL masked."""
    with OpenAIServer("ok") as srv:
        url = srv.url.replace("http://", "http://alice:pa55word-7f3a@") + "/?key=s3cret-query-9c1e"
        out = tmp_path / "bench.json"
        args = ["bench", "--endpoint", url, "--model-name", "m", "--gen", "4", "--timeout", "5", "--out", str(out)]
        code, shown = _run_on_a_terminal(args, {"XDG_CONFIG_HOME": str(tmp_path)})
        assert srv.n_requests >= 1  # the request went out with the URL as given
    assert code in (0, 1), shown
    assert f"m at http://{MASK}@127.0.0.1" in shown  # the progress bar was drawn
    for secret in ("pa55word-7f3a", "s3cret-query-9c1e", "alice"):
        assert secret not in shown and secret not in out.read_text()


def test_control_characters_from_files_never_reach_the_terminal(tmp_path: Path) -> None:
    """Issue 15: ANSI escapes in a server file's hostname reached the terminal through `recommend`. The server
    file is now refused on load (issue 14: hostnames from a strict set), and the one-line error shows the
    hostname escaped, as text (the consoles escape every line too: planner/cli/_output.py)."""
    server = json.loads(_cli("detect", "--format", "json", env={}).stdout)
    server["hostname"] = "evil\x1b[2J\x1b]0;pwned\x07box"
    path = tmp_path / "server.json"
    path.write_text(json.dumps(server))
    stack = tmp_path / "stack.yaml"
    stack.write_text("roles:\n  - name: a\n    models: [gemma-3-270m]\n    quants: [Q8_0]\n    ctx: 2048\n")
    proc = _cli("recommend", str(stack), "--server-file", str(path), env={})
    assert proc.returncode == 2, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "hostname 'evil\\x1b[2J\\x1b]0;pwned" in proc.stderr  # shown, escaped
