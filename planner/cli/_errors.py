"""One place that turns expected errors into a one-line message and an exit code (AGIPLAN_DEBUG=1: traceback)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from planner.errors import PlannerError


def debug_enabled() -> bool:
    return os.environ.get("AGIPLAN_DEBUG", "") not in ("", "0", "false", "no")


def run(app: Callable[[], object]) -> None:
    try:
        app()
    except PlannerError as exc:
        if debug_enabled():
            raise
        message = " ".join(str(exc).split("\n")) if "\n" not in str(exc).strip() else str(exc).strip()
        sys.stderr.write(f"error: {message}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # `agiplan ... | head`: the reader went away; not an error worth a traceback.
        sys.exit(141)
