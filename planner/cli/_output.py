"""Output modes shared by the commands: data on stdout (table / json / markdown), chatter on stderr."""

from __future__ import annotations

import enum
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _width() -> int | None:
    """Terminal width, or 120 columns when stdout is not a terminal (pipes, files, tests)."""
    import os

    if "COLUMNS" in os.environ:
        return None  # rich reads COLUMNS itself
    return None if sys.stdout.isatty() else 120


def stdout_console() -> Console:
    from rich.console import Console

    # markup off: names, notes and errors come from files and servers; "[/x]" in one must print, not raise
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=_width(), markup=False)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, markup=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
