"""One place that turns expected errors into a one-line message and an exit code (AGIPLAN_DEBUG=1: traceback)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

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


SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143, what a shell reports for a process ended by SIGTERM
_terminated = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (systemd stop, `kill`, a CI timeout) ends agiplan the way Ctrl-C does: as KeyboardInterrupt,
    so every cleanup that Ctrl-C runs (temp files removed, worker processes ended, partial results saved)
    runs for it too; the exit code is 143 instead of 130."""
    _terminated.set()
    raise KeyboardInterrupt


def interrupted_exit_code() -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return SIGTERM_EXIT_CODE if _terminated.is_set() else 130


def run(app: Callable[[], object]) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
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
            _leave_now(interrupted_exit_code())
        sys.exit(interrupted_exit_code())
    except SystemExit as exc:  # typer turns Ctrl-C into a silent Exit(130)
        code = SIGTERM_EXIT_CODE if exc.code == 130 and _terminated.is_set() else exc.code
        if _searching():
            if not (code is None or isinstance(code, int)):  # sys.exit("message"): Python would print it
                sys.stderr.write(f"{code}\n")
            _leave_now(code if isinstance(code, int) else 0 if code is None else 1)
        if code != exc.code:
            raise SystemExit(code) from None
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
