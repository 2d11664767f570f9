"""Coalesce concurrent small encode calls into one batched call (dynamic batching). Pure: no Django.

A search request encodes one short text. One MiniLM forward over 4-8 texts costs about 2x one
text on a CPU core (the per-layer overhead is paid once), so when several request threads of a
process encode at the same time, running their texts as one batch raises throughput. Nothing
waits for company: a call made while no batch is running runs at once, alone, in its own
thread (no hand-off, so one-request-at-a-time servers pay nothing); calls that arrive while a
batch is running queue up, and when that batch ends, the first of them runs the whole queue as
the next batch for everyone in it ("natural" batching, no timer, no extra thread).

    batcher = MicroBatcher(embedder.encode_texts, max_batch=16)
    rows = batcher(["a dog on a beach"])   # (1, D): the rows of this call's texts, in order

Each call's texts stay together in one batch and get back exactly their own rows. If a batch
fails, each call in it is retried alone, so one bad input fails only its own caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["MicroBatcher"]


class _Call:
    __slots__ = ("texts", "done", "lead", "result", "error")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.done = threading.Event()  # set when answered, or when handed the lead
        self.lead = False  # the previous leader asked this call's thread to run the next batch
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Runs `fn(texts) -> (len(texts), D) array` over the texts of concurrent calls at once."""

    def __init__(self, fn: Callable[[list[str]], np.ndarray], *, max_batch: int = 16,
                 wait_timeout: float = 120.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn, self.max_batch, self._timeout = fn, max_batch, wait_timeout
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._busy = False  # a thread is running a batch
        self.batches = 0  # calls of fn made for batches so far (for tests and stats)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        call = _Call(list(texts))
        if not call.texts:
            return np.asarray(self._fn([]))
        with self._lock:
            self._queue.append(call)
            lead = not self._busy
            self._busy = True
        while not lead:
            if not call.done.wait(self._timeout) and self._give_up(call):
                raise TimeoutError(f"text encoding did not finish within {self._timeout:.0f} s")
            if not call.done.is_set():
                continue  # taken into a running batch just as the wait timed out: it will be answered
            if not call.lead:
                break  # answered by another thread's batch
            call.done.clear()
            call.lead, lead = False, True
        if lead:
            self._lead()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _give_up(self, call: _Call) -> bool:
        """After a timed-out wait: leave the queue if still only waiting there (never strand a
        handed-over lead: a call given the lead, or already in a batch, keeps going)."""
        with self._lock:
            if call.done.is_set() or call not in self._queue:
                return False
            self._queue.remove(call)
            return True

    def _lead(self) -> None:
        """Run the queue's next batch (it holds this thread's own call), then pass the lead on."""
        with self._lock:
            batch: list[_Call] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
                batch.append(self._queue.pop(0))
                size += len(batch[-1].texts)
        try:
            self._run(batch)
        except BaseException as exc:  # e.g. KeyboardInterrupt: nobody in the batch is left waiting
            for call in batch:
                if call.result is None and call.error is None:
                    call.error = exc
            raise
        finally:
            with self._lock:
                if self._queue:  # calls that came in meanwhile: the first one runs them next
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.done.set()
                else:
                    self._busy = False
            for call in batch:  # answer the others (the leader's own call is in the batch too)
                call.done.set()

    def _run(self, batch: list[_Call]) -> None:
        self.batches += 1
        texts = [t for call in batch for t in call.texts]
        try:
            rows = np.asarray(self._fn(texts))
            if len(rows) != len(texts):
                raise ValueError(f"encoder returned {len(rows)} rows for {len(texts)} texts")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for call in batch:  # each call alone, so one bad input fails only its caller
                try:
                    call.result = np.asarray(self._fn(call.texts))
                except Exception as exc:
                    call.error = exc
            return
        start = 0
        for call in batch:
            call.result = rows[start:start + len(call.texts)]
            start += len(call.texts)
