"""planner/measure/processes.py: stopping a child stops its whole process group (real processes)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from planner.measure.processes import stop_group


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(script: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    time.sleep(0.3)  # let the shell start its children
    return proc


@pytest.mark.parametrize(
    ("script", "grace_s", "returncode"),
    [
        ("sleep 60 & sleep 60", 5.0, -15),  # SIGTERM is enough: the shell and its background child go
        ("trap '' TERM; sleep 60 & sleep 60", 0.5, -9),  # ignores SIGTERM: SIGKILL after the grace
        ("sleep 60 & sleep 60", 0.0, -9),  # no grace: SIGKILL at once
    ],
    ids=["term", "ignores-term", "kill-now"],
)
def test_the_whole_group_is_stopped(script: str, grace_s: float, returncode: int) -> None:
    proc = _start(script)
    stop_group(proc, grace_s)
    assert proc.returncode == returncode
    deadline = time.monotonic() + 5  # the orphaned background sleep is reaped by init, not by us
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(proc.pid)


def test_a_finished_process_is_not_an_error() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    stop_group(proc, 1.0)
    stop_group(proc, 0)
    assert proc.returncode == 0
