"""A small bounded, thread-safe, per-process cache: the one helper behind the per-process
memos (model-version rows, compiled SQL, allow-lists, loaded models, word vectors).

Least-recently-used entries go first once `max_entries` is reached. `get_or_make` builds a
missing value outside the lock (a slow load never blocks readers of other keys); two threads
missing the same key at once may both build it, and the first stored value wins.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
_MISSING = object()


class BoundedCache(Generic[V]):
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: V | None = None) -> V | None:
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._data.move_to_end(key)
            return value  # type: ignore[return-value]

    def put(self, key: Hashable, value: V) -> V:
        """Store and return `value`; a value already stored for `key` is kept and returned."""
        with self._lock:
            existing = self._data.get(key, _MISSING)
            if existing is not _MISSING:
                self._data.move_to_end(key)
                return existing  # type: ignore[return-value]
            self._data[key] = value
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
            return value

    def replace(self, key: Hashable, value: V) -> V:
        """Store `value` for `key` whatever was there (a changed row's fresh copy)."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
            return value

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        value = self.get(key, _MISSING)  # type: ignore[arg-type]
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        return self.put(key, make())

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data
