"""Executables under test as child processes that can say where they hang.

Each child writes to a log file (a pipe nobody reads can block it), unbuffered, with faulthandler on:
a child still running when it should have exited is sent SIGABRT, and the stacks of all its Python
threads at that moment land in its log, which the test failure then shows (a hang seen in CI once left
an empty log and a bare TimeoutExpired).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["kill_group", "start_logged", "wait_or_dump"]


def start_logged(log: Path, *argv: str) -> subprocess.Popen:
    """``python argv...`` in a process group of its own (the tests signal the group, as a terminal's
    Ctrl-C does), stdout and stderr to ``log``."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL ``process``'s group if it still runs, and reap it (a test's clean-up)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_or_dump(process: subprocess.Popen, timeout: float, what: str, logs: Callable[[], str]) -> int:
    """``process``'s exit status; if it is still running after ``timeout`` s, fail with the stacks of
    its threads at that moment (``logs()`` is read after the dump), its group killed."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        kill_group(process)
        pytest.fail(f"{what} did not exit within {timeout} s; its threads then:\n{logs()}")
