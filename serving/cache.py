"""A bounded LRU cache of recent results, keyed by user, request options and the model /
index versions; an event for a user retires that user's entries."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class ResultCache:
    """Thread-safe LRU. Entries carry the user's generation, which `invalidate` bumps, so
    a user's stale results are never returned and age out of the LRU on their own."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._generation: dict[int, int] = {}
        self._lock = threading.Lock()

    def _key(self, user_id: int, options: Hashable) -> Hashable:
        return (user_id, self._generation.get(user_id, 0), options)

    def get(self, user_id: int, options: Hashable) -> Any | None:
        """The cached value, or None."""
        if self.size <= 0:
            return None
        with self._lock:
            key = self._key(user_id, options)
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, user_id: int, options: Hashable, value: Any) -> None:
        """Store a value, dropping the least recently used entry when full."""
        if self.size <= 0:
            return
        with self._lock:
            self._entries[self._key(user_id, options)] = value
            self._entries.move_to_end(self._key(user_id, options))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def invalidate(self, user_id: int) -> None:
        """Retire everything cached for one user."""
        with self._lock:
            self._generation[user_id] = self._generation.get(user_id, 0) + 1

    def clear(self) -> None:
        """Drop everything (after a model or index swap)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
