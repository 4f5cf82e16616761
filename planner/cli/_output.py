"""Output modes shared by the commands: data on stdout (table / json / markdown), chatter on stderr.

Every console here is inert: text from files and servers (a hostname, a model name, an error body) cannot
move the cursor, recolour the terminal or ring its bell, and no secret is shown. `_InertConsole.render`
is the one place that escapes control characters (ESC, C1, DEL, ...; as in planner.errors.shown) and
masks secrets and URL credentials (planner.redact) in what is written, after the commands have built
their tables and bars; rich's own styling and cursor control are left as they are.
"""

from __future__ import annotations

import enum
import json
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from planner.redact import redact, redact_strings

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


def inert(text: str) -> str:
    """`text` as it may reach a terminal: secrets masked, control characters other than a newline or a tab
    written as escapes (ESC -> \\x1b), so they show instead of acting."""
    text = redact(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else repr(ch)[1:-1] for ch in text)


_rendering = threading.local()  # inside an outer render call (rich renders nested renderables through it)


def _console(**kwargs: Any) -> Console:
    from rich.console import Console
    from rich.segment import Segment

    class _InertConsole(Console):
        def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
            if getattr(_rendering, "active", False):  # a nested call: the outer one cleans its segments
                yield from super().render(renderable, options)
                return
            _rendering.active = True
            try:
                for seg in super().render(renderable, options):
                    # control segments are rich's own cursor moves (progress bars); text segments are content
                    yield seg if seg.control else Segment(inert(seg.text), seg.style, seg.control)
            finally:
                _rendering.active = False

    return _InertConsole(**kwargs)


def stdout_console() -> Console:
    # markup off: names, notes and errors come from files and servers; "[/x]" in one must print, not raise
    return _console(file=sys.stdout, highlight=False, soft_wrap=False, width=_width(), markup=False)


def stderr_console() -> Console:
    return _console(file=sys.stderr, highlight=False, markup=False)


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout, every string through planner.redact (JSON escapes control
    characters itself)."""
    sys.stdout.write(json.dumps(redact_strings(data), indent=2, sort_keys=False, default=str) + "\n")
