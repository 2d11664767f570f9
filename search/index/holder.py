"""IndexHolder: the swappable slot searches read an index through (pure, no Django)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from search.index.types import Hits
    from search.index.vector_index import VectorIndex


class IndexHolder:
    """The index readers search: `swap` publishes a fully built index in one step.

    Readers take `get()` once per request and keep that object for the whole request; an
    old index stays valid until its last reader drops it.
    """

    def __init__(self, index: VectorIndex | None = None) -> None:
        self._lock = threading.Lock()
        self._index = index

    def get(self) -> VectorIndex | None:
        with self._lock:
            return self._index

    def swap(self, index: VectorIndex | None) -> VectorIndex | None:
        """Replace the served index; returns the previous one."""
        with self._lock:
            old, self._index = self._index, index
        return old

    def search(self, queries: np.ndarray, k: int, *, offset: int = 0,
               allow_ids: np.ndarray | None = None, deny_ids: np.ndarray | None = None) -> list[Hits]:
        index = self.get()
        if index is None:
            raise LookupError("no index loaded")
        return index.search(queries, k, offset=offset, allow_ids=allow_ids, deny_ids=deny_ids)
