"""Concurrency pieces of the pure FAISS wrapper: a readers-writer lock and IndexHolder.

No Django. `IndexHolder` is re-exported by search/index.py; import it from there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from search.index import VectorIndex
    from search.index_types import Hits


class RWLock:
    """Many concurrent searches (faiss releases the GIL) or one writer; writers go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0  # new readers queue behind them, so writers never starve

    def read(self) -> _ReadGuard:
        """`with lock.read():` (a plain object, not a generator: this is on every search)."""
        return _ReadGuard(self)

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0 and self._waiting_writers:  # only a writer waits on readers
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _ReadGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._acquire_read()

    def __exit__(self, *exc: object) -> None:
        self._lock._release_read()


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
