"""One place that turns expected errors into a one-line message and an exit code (AGIPLAN_DEBUG=1: traceback)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from planner.errors import PlannerError, shown
from planner.redact import redact


def debug_enabled() -> bool:
    return os.environ.get("AGIPLAN_DEBUG", "") not in ("", "0", "false", "no")


def error_text(exc: BaseException) -> str:
    """The message as printed: secrets masked, control characters escaped (text from files and servers
    may carry terminal escapes), one line unless the error lists several problems one per line."""
    lines = redact(str(exc)).strip().split("\n")
    return "\n".join(shown(line, limit=4000) for line in lines)


def run(app: Callable[[], object]) -> None:
    try:
        app()
    except PlannerError as exc:
        if debug_enabled():
            raise
        sys.stderr.write(f"error: {error_text(exc)}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # `agiplan ... | head`: the reader went away; not an error worth a traceback.
        sys.exit(141)
    except OSError as exc:
        # the file system said no (an --out under a file, a full disk, no permission): the user's to fix
        if debug_enabled():
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"error: {error_text(OSError(f'{where}{exc.strerror or exc}'))}\n")
        sys.exit(2)
