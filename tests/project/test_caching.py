"""project/caching.py: the bounded per-process cache."""
from __future__ import annotations

import threading

import pytest

from project.caching import BoundedCache


def test_least_recently_used_entries_go_first_once_full():
    cache: BoundedCache[int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2


def test_get_or_make_builds_once_and_put_keeps_the_first_value():
    cache: BoundedCache[str] = BoundedCache(4)
    calls = []
    assert cache.get_or_make("k", lambda: calls.append(1) or "v") == "v"
    assert cache.get_or_make("k", lambda: calls.append(1) or "other") == "v" and calls == [1]
    assert cache.put("k", "late") == "v"
    assert cache.replace("k", "new") == "new" and cache.get("k") == "new"
    cache.pop("k")
    assert cache.get("k", "gone") == "gone"


def test_many_threads_never_exceed_the_bound():
    cache: BoundedCache[int] = BoundedCache(16)

    def work(t: int) -> None:
        for i in range(500):
            cache.get_or_make((t, i % 40), lambda i=i: i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 16


def test_a_bound_below_one_is_refused():
    with pytest.raises(ValueError):
        BoundedCache(0)
