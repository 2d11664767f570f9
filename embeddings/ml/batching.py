"""Coalesce concurrent small encode calls into one batched call (dynamic batching). Pure: no Django.

A search request encodes one short text. One MiniLM forward over 4-8 texts costs about 2x one
text on a CPU core (the per-layer overhead is paid once), so when several request threads of a
process encode at the same time, running their texts as one batch raises throughput. Nothing
waits for company: a call made while the encoder is idle runs at once (alone); calls that
arrive while a batch is running are queued and run together as the next batch ("natural"
batching, no timer). So a lone request pays only a thread hand-off (~0.1 ms), and a loaded
server gets batches exactly when it is busy.

    batcher = MicroBatcher(embedder.encode_texts, max_batch=16)
    rows = batcher(["a dog on a beach"])   # (1, D): the rows of this call's texts, in order

Each call's texts stay together in one batch and get back exactly their own rows. If a batch
fails, each call in it is retried alone, so one bad input fails only its own caller. The worker
thread is started lazily in the process that first calls (gunicorn forks workers before any
request, Celery prefork children likewise) and restarted after a fork.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["MicroBatcher"]


class _Call:
    __slots__ = ("texts", "done", "result", "error")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.done = threading.Event()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Runs `fn(texts) -> (len(texts), D) array` over the texts of concurrent calls at once."""

    def __init__(self, fn: Callable[[list[str]], np.ndarray], *, max_batch: int = 16,
                 wait_timeout: float = 120.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn, self.max_batch, self._timeout = fn, max_batch, wait_timeout
        self._cond = threading.Condition()
        self._queue: list[_Call] = []
        self._pid: int | None = None  # process that owns the worker thread
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # batched calls of fn made so far (for tests and stats)
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        call = _Call(list(texts))
        if not call.texts:
            return np.asarray(self._fn([]))
        with self._cond:
            if self._closed:  # replaced (model reloaded) after the caller picked it up: run inline
                return np.asarray(self._fn(call.texts))
            self._ensure_worker()
            self._queue.append(call)
            self.calls += 1
            self._cond.notify()
        if not call.done.wait(self._timeout):
            raise TimeoutError(f"text encoding did not finish within {self._timeout:.0f} s")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def close(self) -> None:
        """Let the worker thread finish what is queued and exit; later calls run inline."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _ensure_worker(self) -> None:
        """With the lock held: start the worker thread in this process if it has none."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._work, name="encode-batcher", daemon=True)
        self._thread.start()

    def _next_batch(self) -> list[_Call] | None:
        """Wait for queued calls; take whole calls up to max_batch texts (always at least one).
        None once closed and drained."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
                call = self._queue.pop(0)
                batch.append(call)
                size += len(call.texts)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run(batch)
            except BaseException as exc:  # never let the thread die with callers waiting
                logger.exception("encode batcher failed")
                for call in batch:
                    if not call.done.is_set():
                        call.error = exc
                        call.done.set()

    def _run(self, batch: list[_Call]) -> None:
        self.batches += 1
        texts = [t for call in batch for t in call.texts]
        try:
            rows = np.asarray(self._fn(texts))
        except Exception:
            if len(batch) == 1:
                raise
            for call in batch:  # find the culprit: each call alone, so others still get answers
                self._run_alone(call)
            return
        start = 0
        for call in batch:
            call.result = rows[start:start + len(call.texts)]
            start += len(call.texts)
            call.done.set()

    def _run_alone(self, call: _Call) -> None:
        try:
            call.result = np.asarray(self._fn(call.texts))
        except Exception as exc:
            call.error = exc
        call.done.set()
