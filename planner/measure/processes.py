"""Child processes agiplan starts (llama-server, llama-batched-bench, a deployment's scripts): each runs in its
own process group (`start_new_session=True`), so stopping it stops everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM the process group of `proc` and wait up to `grace_s`, then SIGKILL it (at once when `grace_s`
    is 0); returns when `proc` has been reaped. A group already gone is not an error."""
    if grace_s > 0 and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    if proc.poll() is None or grace_s == 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
