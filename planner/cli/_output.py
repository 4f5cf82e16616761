"""Output modes shared by the commands: data on stdout (table / json / markdown), chatter on stderr."""

from __future__ import annotations

import enum
import json
import sys
from typing import Any

from rich.console import Console


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def stdout_console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
