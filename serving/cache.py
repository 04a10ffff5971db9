"""A bounded LRU cache of recent results, keyed by user, request options and the model /
index versions; an event for a user retires that user's entries, in every worker process."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from followrec.serving.shared import Generations


class ResultCache:
    """Thread-safe LRU. Each user's keys are indexed so `invalidate` drops exactly that
    user's entries; the index holds only keys still cached, so nothing grows past `size`."""

    def __init__(self, size: int, generations: Generations | None = None) -> None:
        self.size = size
        self.generations = generations or Generations()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._by_user: dict[int, set[Hashable]] = {}
        self._lock = threading.Lock()

    def generation(self, user_id: int) -> int:
        """The user's change counter: read it before computing a result to `put`."""
        return self.generations.of(user_id)

    def get(self, user_id: int, options: Hashable) -> Any | None:
        """The cached value, or None (also when an event for the user came since)."""
        if self.size <= 0:
            return None
        with self._lock:
            key = (user_id, options)
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] != self.generations.of(user_id):
                del self._entries[key]
                self._forget(key)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(
        self, user_id: int, options: Hashable, value: Any, generation: int | None = None
    ) -> None:
        """Store a value computed from the user's state at `generation` (default: now),
        dropping the least recently used entry when full."""
        if self.size <= 0:
            return
        if generation is None:
            generation = self.generations.of(user_id)
        with self._lock:
            key = (user_id, options)
            self._entries[key] = (generation, value)
            self._entries.move_to_end(key)
            self._by_user.setdefault(user_id, set()).add(key)
            while len(self._entries) > self.size:
                old, _ = self._entries.popitem(last=False)
                self._forget(old)

    def _forget(self, key: Hashable) -> None:
        keys = self._by_user.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[key[0]]

    def invalidate(self, user_id: int) -> None:
        """Retire everything cached for one user, here and in the other workers."""
        self.generations.bump(user_id)
        with self._lock:
            for key in self._by_user.pop(user_id, ()):
                self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop everything (after a model or index swap)."""
        with self._lock:
            self._entries.clear()
            self._by_user.clear()

    def users(self) -> int:
        """How many users have cached entries (bounded by `size`)."""
        return len(self._by_user)

    def __len__(self) -> int:
        return len(self._entries)
