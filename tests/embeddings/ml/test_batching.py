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


def wait_until(cond, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Gated:
    """An encoder whose first call blocks until `gate` is set, so later calls queue behind it."""

    def __init__(self) -> None:
        self.gate, self.batches, self.threads = threading.Event(), [], []

    def __call__(self, texts):
        self.batches.append(list(texts))
        self.threads.append(threading.get_ident())
        if len(self.batches) == 1:
            self.gate.wait(5)
        if "bad" in texts:
            raise ValueError("cannot encode 'bad'")
        return rows_of(texts)


def start(fn, *args):
    t = threading.Thread(target=fn, args=args)
    t.start()
    return t


def test_a_lone_call_runs_at_once_in_the_callers_own_thread():
    seen = []
    b = MicroBatcher(lambda texts: (seen.append(threading.get_ident()), rows_of(texts))[1])
    assert np.array_equal(b(["ab", "c"]), rows_of(["ab", "c"]))
    assert seen == [threading.get_ident()] and b.batches == 1  # no hand-off to another thread
    assert b(["xyz"]).shape == (1, 2) and b([]).shape[0] == 0
    assert not b._busy and not b._queue


def test_calls_arriving_while_a_batch_runs_are_batched_together():
    enc = Gated()
    b = MicroBatcher(enc, max_batch=16)
    texts = [f"{chr(97 + i)}{'x' * i}" for i in range(9)]
    out: dict[int, np.ndarray] = {}
    threads = [start(lambda i=0: out.__setitem__(i, b([texts[i]])))]
    wait_until(lambda: enc.batches)
    threads += [start(lambda i=i: out.__setitem__(i, b([texts[i]]))) for i in range(1, 9)]
    wait_until(lambda: len(b._queue) == 8)  # all eight queued behind the running batch
    enc.gate.set()
    for t in threads:
        t.join(5)
    assert len(enc.batches) == 2 and sorted(enc.batches[1]) == sorted(texts[1:])  # 9 callers, 2 batches
    for i in range(9):  # every caller got exactly its own row
        assert np.array_equal(out[i], rows_of([texts[i]]))
    assert not b._busy and not b._queue


def test_max_batch_bounds_the_texts_per_batch_but_keeps_calls_whole():
    enc = Gated()
    b = MicroBatcher(enc, max_batch=4)
    threads = [start(b, ["a"])]
    wait_until(lambda: enc.batches)
    threads.append(start(b, ["b", "c", "d"]))
    wait_until(lambda: len(b._queue) == 1)
    threads.append(start(b, ["e", "f"]))
    wait_until(lambda: len(b._queue) == 2)
    enc.gate.set()
    for t in threads:
        t.join(5)
    assert [len(x) for x in enc.batches] == [1, 3, 2]  # 3 + 2 > 4: two batches, no call split


def test_a_failing_text_fails_only_its_own_caller():
    enc = Gated()
    b = MicroBatcher(enc)
    results: dict[str, object] = {}

    def call(text):
        try:
            results[text] = b([text])
        except ValueError as exc:
            results[text] = exc

    threads = [start(call, "hold")]
    wait_until(lambda: enc.batches)
    threads += [start(call, t) for t in ("good", "bad", "fine")]
    wait_until(lambda: len(b._queue) == 3)
    enc.gate.set()
    for t in threads:
        t.join(5)
    assert isinstance(results["bad"], ValueError)
    assert np.array_equal(results["good"], rows_of(["good"])) and np.array_equal(results["fine"], rows_of(["fine"]))
    with pytest.raises(ValueError):  # alone, too
        b(["bad"])
    assert np.array_equal(b(["ok"]), rows_of(["ok"])) and not b._busy  # nothing left stuck


def test_a_call_that_times_out_in_the_queue_leaves_it_and_strands_nobody():
    enc = Gated()
    b = MicroBatcher(enc, wait_timeout=0.2)
    first = start(b, ["slow"])
    wait_until(lambda: enc.batches)
    with pytest.raises(TimeoutError):
        b(["late"])  # waits 0.2 s behind the held batch, then gives up
    assert not b._queue
    enc.gate.set()
    first.join(5)
    assert not b._busy and np.array_equal(b(["next"]), rows_of(["next"]))


def test_rejects_a_bad_batch_size():
    with pytest.raises(ValueError):
        MicroBatcher(rows_of, max_batch=0)
