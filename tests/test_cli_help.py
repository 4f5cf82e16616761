"""The CLI's command table: `agiplan --help` lists commands from a static table (so it does not build every
command), which must match the commands themselves; every command has help and is in the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from planner.cli import COMMANDS, app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _command(name: str) -> Any:
    group: Any = typer.main.get_command(app)  # typer's own (vendored) click group
    cmd = group.get_command(group.context_class(group), name)
    assert cmd is not None, name
    return cmd


@pytest.mark.parametrize("name", list(COMMANDS))
def test_static_short_help_is_the_commands_own(name: str) -> None:
    own = (_command(name).help or "").strip().splitlines()[0]
    assert COMMANDS[name][1] == own


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_and_a_readme_section(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: agiplan " + name in result.stdout or "Usage: root " + name in result.stdout
    assert f"agiplan {name}" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_root_help_lists_every_command_without_importing_them() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from planner.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); print(r.stdout); "
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('planner.cli.') and m.endswith('_cmd')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    for name in COMMANDS:
        assert f"  {name} " in out
    assert "LOADED []" in out
