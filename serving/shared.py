"""State the worker processes of one service share through a folder: per-user change
counters (so an event in one worker retires the others' cached results) and a lock that
serializes events' read-modify-write of a user's online row across the workers."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

GENERATION_SLOTS = 1 << 20  # 4 MB of counters; users share a slot modulo this


class Generations:
    """A change counter per user (hashed into slots), which an event raises. In memory for
    one process; with `path`, a file mapped by every worker of a service, so an event that
    one worker handles retires the results the others cached for that user. A lost
    increment between two workers still changes the value, so nothing stale matches."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            self.counts = np.zeros(GENERATION_SLOTS, dtype=np.uint32)
        else:
            path = Path(path)
            mode = "r+" if path.exists() else "w+"
            self.counts = np.memmap(path, dtype=np.uint32, mode=mode, shape=(GENERATION_SLOTS,))

    def of(self, user_id: int) -> int:
        return int(self.counts[user_id % GENERATION_SLOTS])

    def bump(self, user_id: int) -> None:
        self.counts[user_id % GENERATION_SLOTS] += 1


class WorkerLock:
    """A lock held across the threads of this process and, with `path`, across every
    process that opens the same file (flock: released by the kernel if a worker dies)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._threads = threading.Lock()
        self._file = open(path, "a+b") if path is not None else None  # noqa: SIM115 - held

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            if self._file is None:
                yield
                return
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)
