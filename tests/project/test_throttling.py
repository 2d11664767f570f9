"""project/throttling.py: sliding-window counters, on the local-memory cache and on real Redis."""
from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from project import throttling


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _redis() -> RedisCache:
    return RedisCache("redis://127.0.0.1:6379/11", {"KEY_PREFIX": f"t{uuid.uuid4().hex}"})


@pytest.fixture(params=["locmem", "redis"])
def cache_factory(request):
    """Each test on the local-memory cache and on real Redis (the deployment's cache)."""
    if request.param == "redis":
        request.getfixturevalue("redis_server")
        return _redis
    return lambda: LocMemCache(f"throttle-{uuid.uuid4()}", {})


def make(cache_factory, rate: str = "4/min", start: float = 6000.0):
    """A scoped throttle at `rate` on its own cache, with a settable clock (6000 s = a window start)."""
    cache, clock = cache_factory(), Clock(start)

    def throttle():
        t = throttling.ScopedRateThrottle()
        t.THROTTLE_RATES = {"search": rate}
        t.cache, t.timer = cache, clock
        return t

    view = SimpleNamespace(throttle_scope="search")
    request = SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=7), META={"REMOTE_ADDR": "127.0.0.1"})

    def ask():
        t = throttle()
        return t.allow_request(request, view), t

    return ask, clock, cache


def test_the_rate_holds_and_refused_requests_are_not_counted(cache_factory):
    ask, clock, _ = make(cache_factory)
    assert [ask()[0] for _ in range(4)] == [True] * 4
    for _ in range(10):  # hammering while refused does not push the next allowance further away
        ok, t = ask()
        assert not ok
    wait = t.wait()
    assert 60 < wait <= 120  # the next window, once this one's 4 weigh 3 or less: 75 s
    start = clock.t
    clock.t = start + wait - 1
    assert ask()[0] is False  # a second early: still refused (and not counted)
    clock.t = start + wait + 0.01  # after the promised wait: one more goes through
    assert ask()[0] is True


def test_the_previous_window_weighs_less_as_it_slides_out(cache_factory):
    ask, clock, _ = make(cache_factory)  # 4/min
    clock.t += 30
    assert [ask()[0] for _ in range(4)] == [True] * 4  # all 4 in the second half of window 100
    clock.t += 40  # 10 s into window 101: previous weighs 5/6 -> 4 * 5/6 = 3.3, room for 0 more
    assert ask()[0] is False
    clock.t += 20  # 30 s in: previous weighs 1/2 -> 2, room for 2
    assert [ask()[0] for _ in range(3)] == [True, True, False]
    clock.t += 120  # two windows on: nothing counts any more
    assert [ask()[0] for _ in range(5)] == [True] * 4 + [False]


def test_no_burst_of_twice_the_rate_at_a_window_edge(cache_factory):
    """A plain fixed window lets 4 through at 0:59 and 4 more at 1:00; the sliding one does not."""
    ask, clock, _ = make(cache_factory)
    clock.t += 59
    assert [ask()[0] for _ in range(4)] == [True] * 4
    clock.t += 2  # 1 s into the next window
    assert sum(ask()[0] for _ in range(4)) == 0


def test_counts_are_shared_by_processes_through_the_cache(cache_factory):
    """Two throttles (two workers) on one cache see one budget; no lost update."""
    ask, clock, cache = make(cache_factory, rate="6/min")
    other = make(lambda: cache, rate="6/min", start=clock.t)[0]
    assert sum(ask()[0] + other()[0] for _ in range(3)) == 6
    assert ask()[0] is False and other()[0] is False


def test_redis_counter_is_one_key_per_window_with_an_expiry(redis_server):
    ask, clock, cache = make(_redis)
    ask()
    _, t = ask()
    key = f"{t.key}:w{int(clock.t // 60)}"
    assert cache.get(key) == 2
    client = cache._cache.get_client(cache.make_and_validate_key(key))
    assert 60 < client.ttl(cache.make_and_validate_key(key)) <= 121


def test_an_unscoped_view_is_not_throttled_by_the_scoped_throttle():
    assert throttling.ScopedRateThrottle().allow_request(SimpleNamespace(), SimpleNamespace()) is True


def test_the_default_cache_is_used_through_its_backend_not_the_proxy(redis_server, settings):
    """DRF throttles hold django.core.cache.cache, a proxy: the Redis one-round-trip path must
    still be taken (counter in Redis, one INCR), not Django's generic EXISTS + INCR."""
    from django.core.cache import caches

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:6379/11", "KEY_PREFIX": f"t{uuid.uuid4().hex}"}}
    backend = caches["default"]
    t = throttling.ScopedRateThrottle()
    t.THROTTLE_RATES, t.timer = {"search": "4/min"}, Clock(6000.0)
    request = SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=8), META={}, headers={})
    calls = []
    client = throttling._redis_client(backend)
    real = client.execute_command
    client.execute_command = lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    try:
        assert t.allow_request(request, SimpleNamespace(throttle_scope="search")) is True
    finally:
        del client.execute_command
    assert backend.get(f"{t.key}:w100") == 1
    assert calls[:2] == ["INCRBY", "EXPIRE"] and "EXISTS" not in calls
