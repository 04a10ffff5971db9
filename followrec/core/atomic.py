"""Write files and folders so a reader sees the old or the new content, never half of it."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

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
    _drop_leftovers(target)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Replace a file's content in one rename."""
    with atomic_file(path) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file beside `path` to write; when the block succeeds it replaces
    `path` in one rename, when it fails it is removed. Writers stream into it, so a large
    file is never held whole in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        crash_point()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _drop_leftovers(path)


def _drop_leftovers(target: Path) -> None:
    """Remove what writers of `target` killed before their rename left beside it (one
    writer per target: the DAGs run one at a time)."""
    for stale in target.parent.glob(f".{target.name}.*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def publish_snapshot(staged: str | Path, root: str | Path, names: tuple[str, ...]) -> bool:
    """Publish the folders staged/<name> together as root/<name>, so that a reader sees all
    of them from the old snapshot or all from the new one, never a mix and never none.

    They are hard-linked into a complete version folder root/.snapshots/<id>; the one link
    root/snapshot is then swapped to it by a single rename, and each root/<name> is a fixed
    link through it. The staged folder goes last, in one rename, so a re-run after a kill
    at any point publishes the same snapshot again; with nothing staged it does nothing and
    returns False. The previous version is kept for readers still on it."""
    staged, root = Path(staged), Path(root)
    if not staged.exists():
        return False
    versions = root / ".snapshots"
    version = versions / uuid.uuid4().hex[:12]
    with atomic_dir(version) as tmp:  # complete or absent
        for name in names:
            shutil.copytree(staged / name, tmp / name, copy_function=os.link)
    link = root / ".snapshot.link"
    link.unlink(missing_ok=True)
    link.symlink_to(version.relative_to(root))
    crash_point()
    previous = (root / "snapshot").resolve() if (root / "snapshot").is_symlink() else None
    os.replace(link, root / "snapshot")  # the one step a reader can observe
    for name in names:
        target = root / name
        if target.is_symlink():
            continue
        if target.exists():  # a run folder from before snapshots: its real folder goes
            aside = root / f".{name}.old"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(target, aside)
            shutil.rmtree(aside)
        target.symlink_to(Path("snapshot") / name)
    crash_point()
    trash = root / ".staged.trash"
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(staged, trash)
    shutil.rmtree(trash)
    for old in versions.iterdir():
        if old.resolve() not in (version.resolve(), previous):
            shutil.rmtree(old, ignore_errors=True)
    return True
