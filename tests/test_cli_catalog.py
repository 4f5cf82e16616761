"""`agiplan catalog ...` through typer's CliRunner, and the real entry point for the error path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.catalog import load_catalog_dir
from planner.cli import app
from planner.errors import UnknownIdError

REPO_CATALOG = Path(__file__).resolve().parent.parent / "catalog"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("AGIPLAN_CATALOG_DIR", raising=False)


def test_models_json_lists_every_entry_with_fields() -> None:
    result = runner.invoke(app, ["catalog", "models", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cat = load_catalog_dir(REPO_CATALOG)
    assert [m["id"] for m in data] == list(cat.models)
    by_id = {m["id"]: m for m in data}
    assert by_id["llama-3-70b"]["kv_heads"] == 8 and by_id["llama-3-70b"]["layers"] == 80
    assert by_id["saiga-llama3-8b"]["resolved_base"] == "llama-3-8b"
    assert by_id["qwen2.5-72b"]["quality_rank"] == 1
    assert by_id["gemma-3-270m"]["swa_pattern"] == {"all": False, "every_nth_global": 6, "layers": None}


def test_quants_json_carries_derived_bpw() -> None:
    result = runner.invoke(app, ["catalog", "quants", "--format", "json"])
    assert result.exit_code == 0, result.output
    by_id = {q["id"]: q for q in json.loads(result.stdout)}
    assert by_id["Q6_K"]["bits_per_weight"] == 6.5633  # published, Llama-3.1-8B (quantize README)
    assert by_id["Q4_K"]["bits_per_weight"] == 4.5  # derived: 144 B / 256
    assert by_id["Q4_K"]["bits_per_weight_source"] == "gguf.GGML_QUANT_SIZES"
    assert by_id["Q4_K_M"]["quality_loss"] == 0.031273


def test_hardware_json_shape() -> None:
    result = runner.invoke(app, ["catalog", "hardware", "-f", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"gpus", "cpus", "ram_prices", "disks"}
    gpu = next(g for g in data["gpus"] if g["id"] == "rtx-4090")
    assert (gpu["memory_mib"], gpu["bandwidth_gbs"], gpu["price_usd"]) == (24564, 1008, 1599)
    cpu = next(c for c in data["cpus"] if c["id"] == "ryzen-9-7950x")
    assert cpu["peak_bandwidth_gbs"] == pytest.approx(83.2)


def test_engines_json() -> None:
    result = runner.invoke(app, ["catalog", "engines", "--format", "json"])
    assert result.exit_code == 0, result.output
    by_id = {e["id"]: e for e in json.loads(result.stdout)}
    assert by_id["ollama"]["rules"]["gpu_minimum_memory_mib"]["value"] == 457
    assert by_id["vllm"]["rules"]["gpu_memory_utilization_default"]["value"] == 0.9


@pytest.mark.parametrize(
    ("command", "expect"),
    [
        ("models", "deepseek-coder-6.7b"),
        ("models", "32/32 MHA"),  # deepseek-coder-6.7b / phi-3-mini
        ("hardware", "rx-7900-xtx"),
        ("hardware", "2x DDR5-5200"),  # ryzen-9-7950x
        ("quants", "IQ4_XS"),
        ("engines", "fit_target_mib=1024 MiB per device"),
    ],
)
def test_tables(command: str, expect: str) -> None:
    result = runner.invoke(app, ["catalog", command])
    assert result.exit_code == 0, result.output
    assert expect in result.stdout


def test_markdown_table() -> None:
    result = runner.invoke(app, ["catalog", "quants", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "| Q8_0 | file_type | 8.501 |" in result.stdout


@pytest.mark.parametrize(
    ("given", "kind", "key"),
    [
        ("rtx-4090", "gpu", "id"),
        ("Q4_K_M", "quant", "id"),
        ("mixtral-8x7b", "model", "id"),
        ("vllm", "engine", "id"),
        ("epyc-7742", "cpu", "id"),
    ],
)
def test_show_any_kind_json(given: str, kind: str, key: str) -> None:
    result = runner.invoke(app, ["catalog", "show", given, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == kind and data["entry"][key] == given


def test_show_table_lists_sources() -> None:
    result = runner.invoke(app, ["catalog", "show", "gemma-3-27b"])
    assert result.exit_code == 0, result.output
    assert "https://huggingface.co/google/gemma-3-27b-it/blob/main/config.json" in result.stdout
    assert "every_nth_global: 6" in result.stdout


def test_show_unknown_raises_with_suggestions() -> None:
    result = runner.invoke(app, ["catalog", "show", "lama-3-8b"])
    assert isinstance(result.exception, UnknownIdError)
    assert "llama-3-8b" in result.exception.suggestions


def test_unknown_id_through_the_entry_point_is_one_line_exit_2() -> None:
    """The console script path: planner.cli.main maps the error to one stderr line and exit code 2."""
    env = {**os.environ, "AGIPLAN_DEBUG": "0"}
    env.pop("AGIPLAN_CATALOG_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from planner.cli import main; main()", "catalog", "show", "rtx4090"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: Unknown catalog id 'rtx4090'. Did you mean rtx-4090")


def test_user_catalog_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import yaml

    root = tmp_path / "cat"
    shutil.copytree(REPO_CATALOG, root)
    data = yaml.safe_load((root / "hardware.yaml").read_text())
    data["gpus"][0]["memory_mib"] = 12345
    (root / "hardware.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    monkeypatch.setenv("AGIPLAN_CATALOG_DIR", str(root))
    result = runner.invoke(app, ["catalog", "show", "rtx-4090", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entry"]["memory_mib"] == 12345
