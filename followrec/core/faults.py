"""Crash points: the moments where a kill -9 would hurt most (everything staged, nothing yet
published). With $FOLLOWREC_CRASH_AFTER=N a process kills itself with SIGKILL at the N-th
crash point it reaches; tests/integration/test_crash_safety.py uses it to kill every
pipeline task at each of its publishing moments. Unset, a crash point does nothing."""

from __future__ import annotations

import os
import signal

CRASH_ENV = "FOLLOWREC_CRASH_AFTER"
_reached = 0


def crash_point() -> None:
    """Count this point; SIGKILL this process if it is the N-th one and N was asked for."""
    global _reached
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    _reached += 1
    if _reached == int(target):
        os.kill(os.getpid(), signal.SIGKILL)
