"""One place that turns expected errors into a one-line message and an exit code (AGIPLAN_DEBUG=1: traceback)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
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


def _searching() -> bool:
    """A search thread is still running (Ctrl-C during `recommend`): it may be inside HiGHS (C++), and
    finalizing the interpreter around it aborts the process ("terminate called without an active
    exception", SIGABRT, seen 1 in 3 times)."""
    from planner.plan import SEARCH_THREAD_PREFIX

    return any(t.name.startswith(SEARCH_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())


def _leave_now(code: int) -> None:
    """Exit without finalizing the interpreter (see `_searching`). A search writes no files (--out and
    --report are written after every search thread has ended), so there is nothing to clean up."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
        sys.stdout.flush()
    os._exit(code)


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
        if _searching():
            _leave_now(130)
        sys.exit(130)
    except SystemExit as exc:  # typer turns Ctrl-C into a silent Exit(130)
        if _searching():
            if not (exc.code is None or isinstance(exc.code, int)):  # sys.exit("message"): Python would print it
                sys.stderr.write(f"{exc.code}\n")
            _leave_now(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)
        raise
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
