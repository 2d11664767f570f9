"""DRF throttles that keep O(1) state per client: a sliding-window counter in the cache.

DRF's SimpleRateThrottle keeps the time of every request of the window in one cache value that
each request reads, prunes, pickles and writes back whole: at 1,200 searches/min that is a list
of up to 1,200 floats per client, and with Redis (the deployment's cache) the search API paid
~2.4 ms a request for it (docs/benchmarks.md, "End-to-end search"). Two workers reading the same
list at once also lose one of the two writes, so a burst across workers was under-counted.

Here a client has one integer counter per fixed window of the rate's duration, incremented
atomically (one Redis round trip: INCR; the window's first request also sets the expiry), and
a request is judged on the sliding-window estimate

    estimate = current + previous * (1 - elapsed / duration)

(the previous window's count, weighted by how much of it the sliding window still covers),
which has no burst of 2x the rate at a window edge the way a plain fixed window has. A refused
request is taken back out of the count (a client that keeps retrying while refused is not
punished further); the previous window's count no longer changes once its window is over, so
each process reads it once per client and window. Retry-After is the time until the estimate
lets one more request through if the client sends nothing meanwhile.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from rest_framework import throttling

from project.caching import BoundedCache
from project.client_ip import client_ip


# The cache's write client per cache object (a process has one or two caches; 8 is plenty).
_clients: BoundedCache[tuple[RedisCache, object]] = BoundedCache(8)


def _redis_client(cache: RedisCache):
    """The cache's write client, made once per process: Django builds a new redis.Redis object
    per cache call (0.19 ms, more than the round trip itself). redis-py clients are thread-safe
    and their connection pool starts afresh in a forked child."""
    hit = _clients.get(id(cache))
    if hit is None or hit[0] is not cache:  # new, or another object now has the same id
        _clients.pop(id(cache))
        hit = _clients.put(id(cache), (cache, cache._cache.get_client(None, write=True)))
    return hit[1]


def _incr(cache, key: str, timeout: int) -> int:
    """Add 1 to the counter `key` (created at 1, expiring after `timeout` s); the new value."""
    if isinstance(cache, RedisCache):  # one round trip instead of Django's EXISTS + INCR
        full = cache.make_and_validate_key(key)
        client = _redis_client(cache)  # (a pipeline object costs more to build than a round trip)
        value = int(client.incr(full))
        if value == 1:  # the window's first request starts the counter's clock
            client.expire(full, timeout)
        return value
    try:
        return cache.incr(key)
    except ValueError:  # no counter yet in this window
        if cache.add(key, 1, timeout):
            return 1
        return cache.incr(key)  # another request created it just now


class _Finished:
    """Counts of windows that are over, per process: (cache, key of a window) -> count (bounded LRU)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size, self._lock = size, threading.Lock()
        self._items: OrderedDict[tuple[int, str], tuple[Any, int]] = OrderedDict()  # slot -> (cache, count)

    def get(self, cache, key: str) -> int:
        slot = (id(cache), key)
        with self._lock:
            hit = self._items.get(slot)
            if hit is not None and hit[0] is cache:  # the entry holds its cache: an id is never reused
                self._items.move_to_end(slot)
                return hit[1]
        value = int(cache.get(key) or 0)
        with self._lock:
            self._items[slot] = (cache, value)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


_finished = _Finished()


class SlidingWindowThrottle(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's allow_request / wait, on window counters. Listed after DRF's own
    subclass (Anon, User, Scoped), which keeps its get_cache_key and, for Scoped, the rate read
    from the view before calling super().allow_request()."""

    def get_ident(self, request) -> str:
        """The anonymous client's key: project.client_ip, the rule django-axes uses too (DRF's
        own reads X-Forwarded-For wholesale unless NUM_PROXIES is set, so any header value
        was a fresh budget)."""
        return client_ip(request)

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        cache = self.cache if isinstance(self.cache, BaseCache) else caches[DEFAULT_CACHE_ALIAS]  # not the proxy
        now = self.timer()
        window, into = divmod(now, self.duration)
        window = int(window)
        self.elapsed = into / self.duration  # fraction of the current window gone, [0, 1)
        current_key = f"{self.key}:w{window}"
        self.current = _incr(cache, current_key, timeout=2 * int(self.duration) + 1)
        self.previous = _finished.get(cache, f"{self.key}:w{window - 1}")
        if self.current + self.previous * (1.0 - self.elapsed) <= self.num_requests:
            return True
        cache.decr(current_key)  # (not delete at 1: a request counted meanwhile would be lost)
        self.current -= 1
        return False

    def wait(self) -> float:
        """Seconds until one more request would be let through, if none is sent meanwhile."""
        limit, cur, prev, t = self.num_requests, self.current, self.previous, self.elapsed
        if cur + 1 <= limit:  # this window has room once the previous one weighs little enough
            need = 1.0 - (limit - cur - 1) / prev if prev else 0.0
            return max((need - t) * self.duration, 0.001)
        # wait for the next window, where this one's count becomes the weighted previous one
        need_next = max(1.0 - (limit - 1) / cur, 0.0) if cur else 0.0
        return max((1.0 - t + need_next) * self.duration, 0.001)


class AnonRateThrottle(throttling.AnonRateThrottle, SlidingWindowThrottle):
    pass


class UserRateThrottle(throttling.UserRateThrottle, SlidingWindowThrottle):
    pass


class ScopedRateThrottle(throttling.ScopedRateThrottle, SlidingWindowThrottle):
    pass
