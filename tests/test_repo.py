"""Consistency of the repository itself: README's commands, CI, and the packaging of the catalog."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_readme_starts_with_the_two_commands() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "pip install . && agiplan estimate" in blocks[0]
    assert "pytest" in blocks[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme_test = _bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_test in ci.splitlines()


def test_core_does_not_import_cli_frameworks() -> None:
    """The library under planner/ (outside planner/cli) never imports typer or rich."""
    offenders = []
    for path in (ROOT / "planner").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "planner").parts[:1]:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(import|from)\s+(typer|rich)\b", text, flags=re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
