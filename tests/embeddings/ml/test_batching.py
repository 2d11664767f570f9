"""embeddings/ml/batching.py: concurrent calls coalesce, each gets its own rows, errors stay local."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from embeddings.ml.batching import MicroBatcher


def rows_of(texts: list[str]) -> np.ndarray:
    """A deterministic 'encoder': one row per text (its length and first letter)."""
    return np.array([[len(t), ord(t[0]) if t else 0] for t in texts], dtype=np.float32)


def test_a_lone_call_runs_at_once_and_gets_its_rows():
    b = MicroBatcher(rows_of)
    assert np.array_equal(b(["ab", "c"]), rows_of(["ab", "c"]))
    assert b.batches == 1 and b(["xyz"]).shape == (1, 2)
    assert b([]).shape[0] == 0


def test_calls_arriving_while_a_batch_runs_are_batched_together():
    gate = threading.Event()
    seen: list[list[str]] = []

    def slow(texts):
        seen.append(list(texts))
        if len(seen) == 1:
            gate.wait(5)  # hold the first batch so the others queue up behind it
        return rows_of(texts)

    b = MicroBatcher(slow, max_batch=16)
    texts = [f"{chr(97 + i)}{'x' * i}" for i in range(9)]
    out: dict[int, np.ndarray] = {}

    def call(i):
        out[i] = b([texts[i]])

    first = threading.Thread(target=call, args=(0,))
    first.start()
    while not seen:
        time.sleep(0.001)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, 9)]
    for t in rest:
        t.start()
    while len(b._queue) < 8:  # all eight queued behind the running batch
        time.sleep(0.001)
    gate.set()
    for t in [first, *rest]:
        t.join(5)
    assert len(seen) == 2 and sorted(seen[1]) == sorted(texts[1:])  # 8 callers, one batch
    for i in range(9):  # every caller got exactly its own row
        assert np.array_equal(out[i], rows_of([texts[i]]))


def test_max_batch_bounds_the_texts_per_batch_but_keeps_calls_whole():
    gate, sizes = threading.Event(), []

    def fn(texts):
        sizes.append(len(texts))
        if len(sizes) == 1:
            gate.wait(5)
        return rows_of(texts)

    b = MicroBatcher(fn, max_batch=4)
    threads = [threading.Thread(target=b, args=(["a"],))]
    threads[0].start()
    while not sizes:
        time.sleep(0.001)
    threads += [threading.Thread(target=b, args=(["b", "c", "d"],)), threading.Thread(target=b, args=(["e", "f"],))]
    for t in threads[1:]:
        t.start()
    while len(b._queue) < 2:
        time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join(5)
    assert sizes == [1, 3, 2]  # 3 + 2 > 4: the two waiting calls ran as two batches, not split


def test_a_failing_text_fails_only_its_own_caller():
    gate, started = threading.Event(), threading.Event()

    def fn(texts):
        if texts == ["hold"]:
            started.set()
            gate.wait(5)
        if "bad" in texts:
            raise ValueError("cannot encode 'bad'")
        return rows_of(texts)

    b = MicroBatcher(fn)
    results: dict[str, object] = {}

    def call(text):
        try:
            results[text] = b([text])
        except ValueError as exc:
            results[text] = exc

    holder = threading.Thread(target=call, args=("hold",))
    holder.start()
    started.wait(5)
    others = [threading.Thread(target=call, args=(t,)) for t in ("good", "bad", "fine")]
    for t in others:
        t.start()
    while len(b._queue) < 3:
        time.sleep(0.001)
    gate.set()
    for t in [holder, *others]:
        t.join(5)
    assert isinstance(results["bad"], ValueError)
    assert np.array_equal(results["good"], rows_of(["good"])) and np.array_equal(results["fine"], rows_of(["fine"]))
    with pytest.raises(ValueError):  # alone, too
        b(["bad"])
    assert np.array_equal(b(["ok"]), rows_of(["ok"]))  # and the worker is still alive


def test_closed_batcher_runs_inline_and_its_thread_exits():
    b = MicroBatcher(rows_of)
    b(["warm"])
    worker = b._thread
    assert worker is not None and worker.is_alive()
    b.close()
    worker.join(2)
    assert not worker.is_alive()
    assert np.array_equal(b(["after"]), rows_of(["after"]))  # still answers, inline


def test_rejects_a_bad_batch_size():
    with pytest.raises(ValueError):
        MicroBatcher(rows_of, max_batch=0)
