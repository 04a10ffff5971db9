"""Blocked and removed accounts: filters every candidates response applies. A small SQLite
file beside the run, so blocks survive restarts and several workers share them."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

REMOVED_TTL = 5.0  # seconds a worker reuses its copy of the removed-accounts set


class Moderation:
    """Per-user blocks and platform-wide removals."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS blocks (user_id INTEGER, account_id INTEGER, "
            "PRIMARY KEY (user_id, account_id))"
        )
        self._conn.execute("CREATE TABLE IF NOT EXISTS removed (account_id INTEGER PRIMARY KEY)")
        self._lock = threading.Lock()
        self._removed: frozenset[int] = frozenset()
        self._removed_read = 0.0

    def blocked(self, user_id: int) -> set[int]:
        """Accounts this user blocked."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT account_id FROM blocks WHERE user_id = ?", (user_id,)
            ).fetchall()
        return {r[0] for r in rows}

    def set_blocked(self, user_id: int, account_id: int, blocked: bool) -> None:
        """Block or unblock one account for one user."""
        sql = (
            "INSERT OR IGNORE INTO blocks VALUES (?, ?)"
            if blocked
            else "DELETE FROM blocks WHERE user_id = ? AND account_id = ?"
        )
        with self._lock:
            self._conn.execute(sql, (user_id, account_id))

    def removed(self) -> frozenset[int]:
        """Accounts removed from the platform (cached for a few seconds)."""
        now = time.monotonic()
        if now - self._removed_read > REMOVED_TTL:
            with self._lock:
                rows = self._conn.execute("SELECT account_id FROM removed").fetchall()
            self._removed = frozenset(r[0] for r in rows)
            self._removed_read = now
        return self._removed

    def set_removed(self, account_id: int, removed: bool) -> None:
        """Remove an account from every response, or restore it."""
        sql = (
            "INSERT OR IGNORE INTO removed VALUES (?)"
            if removed
            else "DELETE FROM removed WHERE account_id = ?"
        )
        with self._lock:
            self._conn.execute(sql, (account_id,))
        self._removed_read = 0.0
