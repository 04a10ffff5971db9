"""Versioned index folders with manifests, published atomically; rollback to the previous."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from followrec.core.atomic import atomic_dir, atomic_write
from followrec.core.errors import InputError
from followrec.indexing.hnsw_graph import FILE as HNSW_FILE
from followrec.indexing.hnsw_graph import HnswGraph

INDEX_FILE = "index.faiss"
IDS_FILE = "account_ids.npy"
MANIFEST = "manifest.json"
POINTER = "CURRENT.json"
INDEX_FILES = (INDEX_FILE, HNSW_FILE)
# The whole name, so no version read from a registry tag or a pointer file can name a path.
_VERSION_NAME = re.compile(r"model-v(\d{1,12})(?:-refresh-[A-Za-z0-9]{1,32})?")


def version_name(model_version: str, refresh: str | None = None) -> str:
    """The index version built for a model version: model-v<N> at promotion,
    model-v<N>-refresh-<stamp> when the index-refresh DAG re-embeds the producers."""
    return checked_name(f"model-v{model_version}" + (f"-refresh-{refresh}" if refresh else ""))


def model_version_of(index_version: str) -> str | None:
    """The model version an index version was built for (None for other names)."""
    found = _VERSION_NAME.fullmatch(index_version)
    return found.group(1) if found else None


def checked_name(version: str) -> str:
    """The version name, if it is one (model-v<N>[-refresh-<letters and digits>])."""
    if not isinstance(version, str) or _VERSION_NAME.fullmatch(version) is None:
        raise InputError(
            "not an index version name (model-v<N>[-refresh-<stamp>])",
            field="index_version",
            value=str(version)[:80],
        )
    return version


def folder_of(root: str | Path, version: str) -> Path:
    """root/<version>, refused unless the name is a version name and the folder resolves
    inside root (no link leads out of it)."""
    root = Path(root).resolve()
    folder = (root / checked_name(version)).resolve()
    if not folder.is_relative_to(root):
        raise InputError("index folder resolves outside the index root", path=str(folder))
    return folder


def sha256(path: Path) -> str:
    """Hex digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_version(
    root: str | Path,
    version: str,
    index: faiss.Index,
    account_ids: np.ndarray,
    manifest: dict[str, Any],
) -> Path:
    """Write root/<version>/ (index, ids, manifest with checksum) in one rename."""
    target = folder_of(root, version)
    file = HNSW_FILE if isinstance(index, HnswGraph) else INDEX_FILE
    with atomic_dir(target) as tmp:
        if isinstance(index, HnswGraph):
            index.save(tmp / file)
        else:
            faiss.write_index(index, str(tmp / file))
        np.save(tmp / IDS_FILE, np.asarray(account_ids, dtype=np.int64))
        full = {
            **manifest,
            "version": version,
            "file": file,
            "count": int(index.ntotal),
            "dimension": int(index.d),
            "sha256": sha256(tmp / file),
            "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2))
    return target


def _write_pointer(root: Path, pointer: dict[str, Any]) -> None:
    # Readers see the old or the new pointer, never half of one.
    atomic_write(root / POINTER, json.dumps(pointer, indent=2))


def read_pointer(root: str | Path) -> dict[str, Any] | None:
    """The published pointer ({"current", "history"}), or None before any publish; every
    version it names is checked to be a version name."""
    path = Path(root) / POINTER
    if not path.exists():
        return None
    pointer = json.loads(path.read_text())
    for version in [pointer.get("current"), *pointer.get("history", [])]:
        if version is not None:
            checked_name(version)
    return pointer


def publish(root: str | Path, version: str) -> dict[str, Any]:
    """Make root/<version> the published index; the previous one stays for rollback."""
    root = Path(root)
    manifest = read_manifest(root, version)
    pointer = read_pointer(root) or {"current": None, "history": []}
    history = [v for v in pointer["history"] if v != version]
    if pointer["current"] and pointer["current"] != version:
        history.append(pointer["current"])
    _write_pointer(root, {"current": version, "history": history})
    return manifest


def rollback(root: str | Path) -> str:
    """Publish the previous index again; returns its version."""
    root = Path(root)
    pointer = read_pointer(root)
    if not pointer or not pointer["history"]:
        raise InputError("no previous index to roll back to", path=str(root))
    previous = pointer["history"][-1]
    _write_pointer(root, {"current": previous, "history": pointer["history"][:-1]})
    return previous


def read_manifest(root: str | Path, version: str) -> dict[str, Any]:
    """A version's manifest; fails if the folder is missing."""
    path = folder_of(root, version) / MANIFEST
    if not path.exists():
        raise InputError("index version not found", path=str(path.parent))
    return json.loads(path.read_text())


def load_version(root: str | Path, version: str) -> tuple[faiss.Index, np.ndarray, dict[str, Any]]:
    """An index version, its account ids and manifest; the checksum is verified."""
    folder = folder_of(root, version)
    manifest = read_manifest(root, version)
    if manifest.get("file", INDEX_FILE) not in INDEX_FILES:
        raise InputError(
            f"unknown index file; expected one of {', '.join(INDEX_FILES)}",
            path=str(folder / MANIFEST),
            field="file",
            value=str(manifest.get("file"))[:80],
        )
    path = folder / manifest.get("file", INDEX_FILE)
    if sha256(path) != manifest["sha256"]:
        raise InputError("index file does not match its manifest checksum", path=str(path))
    if path.name == HNSW_FILE:
        index = HnswGraph.load(path, manifest["dimension"])
        if "ef_search" in manifest.get("params", {}):
            index.set_ef(manifest["params"]["ef_search"])
    else:
        index = faiss.read_index(str(path))
    return (index, np.load(folder / IDS_FILE), manifest)


def load_published(root: str | Path) -> tuple[faiss.Index, np.ndarray, dict[str, Any]]:
    """The published index, its account ids and manifest; the checksum is verified."""
    pointer = read_pointer(root)
    if not pointer or not pointer["current"]:
        raise InputError("no index has been published", path=str(root))
    return load_version(root, pointer["current"])
