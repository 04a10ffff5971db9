"""Write files and folders so a reader sees the old or the new content, never half of it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from followrec.core.faults import crash_point


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `target`; when the block succeeds it becomes `target`
    in one rename, when it fails it is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        crash_point()
        if target.exists():
            shutil.rmtree(target)
            crash_point()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Replace a file's content in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        crash_point()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(staged: str | Path, target: str | Path) -> None:
    """Make a complete staged folder `target` (the old one is removed afterwards)."""
    staged, target = Path(staged), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
        crash_point()
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
