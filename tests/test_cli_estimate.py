"""`agiplan estimate` through the real CLI entry point (typer's CliRunner and a subprocess for `main()`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.cli import app

runner = CliRunner()

STABLE_KEYS = {"memory", "devices", "fits", "kv_capacity_tokens", "speed", "sources", "notes", "suggestions"}


def _json(args: list[str]) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["estimate", *args, "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_readme_example_json_keys() -> None:
    data = _json(["llama-3-70b", "--quant", "Q4_K_M", "--ctx", "8192", "--gpu", "rtx-4090", "--gpu", "rtx-4090"])
    assert set(data) >= STABLE_KEYS
    assert set(data["memory"]) == {"weights_bytes", "kv_cache_bytes", "compute_bytes", "overhead_bytes", "total_bytes"}
    assert data["memory"]["total_bytes"] == sum(
        data["memory"][k] for k in ("weights_bytes", "kv_cache_bytes", "compute_bytes", "overhead_bytes")
    )
    assert [d["id"] for d in data["devices"]] == ["rtx-4090", "rtx-4090", "cpu"]
    for d in data["devices"]:
        assert {"id", "kind", "used_bytes", "capacity_bytes", "fits"} <= set(d)
    assert data["fits"] is True
    assert data["memory"]["kv_cache_bytes"] == 80 * 8192 * 8 * 256 * 2  # 2.5 GiB, see tests/test_estimate.py
    assert {"decode_tok_s", "prefill_tok_s"} <= set(data["speed"])
    assert data["sources"]["weights"]["kind"] == "formula"


def test_gguf_path_is_read_exactly(gemma_gguf_path: Path) -> None:
    data = _json([str(gemma_gguf_path), "--ctx", "2048"])
    assert data["weights_exact"] is True
    assert data["quant"] == "Q4_K_M"
    assert data["sources"]["weights"]["kind"] == "file"


def test_does_not_fit_exits_1_with_suggestions() -> None:
    result = runner.invoke(app, ["estimate", "llama-3-70b", "--gpu", "rtx-4080", "--ram", "16"])
    assert result.exit_code == 1
    assert "DOES NOT FIT" in result.stdout
    assert "would fit" in result.stdout


def test_markdown_table() -> None:
    result = runner.invoke(app, ["estimate", "mistral-7b", "--gpu", "rtx-4090", "--format", "markdown"])
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in lines}) == 1  # every row has the header's columns


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lama-3-8b"], "Did you mean llama-3-8b"),
        (["llama-3-8b", "--gpu", "rtx-4099"], "Unknown GPU 'rtx-4099'"),
        (["llama-3-8b", "--quant", "Q4_K_X"], "Unknown quant 'Q4_K_X'"),
        (["llama-3-8b", "--engine", "tgi"], "Unknown engine 'tgi'"),
        (["llama-3-8b", "--ctx", "0"], "positive"),
        (["./missing.gguf"], "no such file"),
        (["llama-2-70b", "--draft", "mistral-7b"], "a draft must share the target's vocabulary"),
        (["llama-3-8b", "--draft", "llama-3.2-3b", "--engine", "ollama"], "Ollama has no speculative decoding"),
        (["llama-3-8b", "--draft", "llama-3.2-3b", "--draft-max", "0"], "must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    """Through the real console entry point: one 'error:' line on stderr, exit 2, no traceback."""
    env = {**os.environ, "AGIPLAN_DEBUG": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "planner", "estimate", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_gguf_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    proc = subprocess.run(
        [sys.executable, "-m", "planner", "estimate", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_debug_shows_traceback() -> None:
    env = {**os.environ, "AGIPLAN_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "planner", "estimate", "lama-3-8b"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_version() -> None:
    from planner import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"agiplan {__version__}"


def test_draft_adds_its_memory_and_speeds_decode_up() -> None:
    """--draft MODEL:QUANT: the JSON's memory is the target's plus the draft's (the same run without --draft), and
    decode is the plain rate × the speculative speed-up the draft block reports."""
    base = ["gemma-3-27b", "--ctx", "8192", "--gpu", "rtx-4090"]
    plain = _json(base)
    sped = _json([*base, "--draft", "gemma-3-270m:Q8_0", "--draft-max", "4"])
    d = sped["draft"]
    assert (d["quant"], d["n_max"], d["acceptance"], d["gpu_layers"]) == ("Q8_0", 4, 0.7, 19)  # 18 layers + output
    assert sped["memory"]["total_bytes"] == plain["memory"]["total_bytes"] + d["memory"]["total_bytes"]
    assert d["tokens_per_step"] == round((1 - 0.7**5) / 0.3, 4)  # Leviathan et al. 2023 at a = 0.7, k = 4
    assert d["decode_tok_s_without"] == plain["speed"]["decode_tok_s"]
    assert sped["speed"]["decode_tok_s"] == pytest.approx(plain["speed"]["decode_tok_s"] * d["speedup"], rel=1e-3)
    assert plain["draft"] is None
