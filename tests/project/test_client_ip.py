"""project/client_ip.py: X-Forwarded-For is believed only as far as LOUPE_TRUSTED_PROXIES, and the
throttles and django-axes key on that same address (issue 19, finding 3)."""
from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from project.client_ip import client_ip, is_local
from tests.factories import UserFactory

REMOTE = "203.0.113.9"  # a client on the internet (TEST-NET-3)


def _request(remote: str = REMOTE, forwarded: str | None = None):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **extra)


def test_without_trusted_proxies_the_forwarded_header_is_ignored(settings):
    settings.LOUPE_TRUSTED_PROXIES = 0
    assert client_ip(_request(forwarded="198.51.100.1")) == REMOTE
    assert client_ip(_request(forwarded="198.51.100.1, 10.0.0.1")) == REMOTE


def test_behind_n_proxies_the_nth_address_from_the_right_is_the_client(settings):
    settings.LOUPE_TRUSTED_PROXIES = 1
    assert client_ip(_request("127.0.0.1", "spoofed, 198.51.100.7")) == "198.51.100.7"
    assert client_ip(_request("127.0.0.1", " 198.51.100.7 ")) == "198.51.100.7"
    assert client_ip(_request("127.0.0.1")) == "127.0.0.1"  # no header: the peer itself
    settings.LOUPE_TRUSTED_PROXIES = 2
    assert client_ip(_request("10.0.0.2", "1.1.1.1, 198.51.100.7, 10.0.0.1")) == "198.51.100.7"
    assert client_ip(_request("10.0.0.2", "198.51.100.7")) == "198.51.100.7"  # fewer hops than proxies


def test_a_forwarded_entry_that_is_not_an_address_is_not_believed(settings):
    settings.LOUPE_TRUSTED_PROXIES = 1
    assert client_ip(_request("127.0.0.1", "1.2.3.4, not-an-ip")) == "127.0.0.1"


def test_local_means_a_loopback_client_and_no_undeclared_proxy(settings):
    settings.LOUPE_TRUSTED_PROXIES = 0
    assert is_local(_request("127.0.0.1")) and is_local(_request("::1"))
    assert not is_local(_request(REMOTE))
    assert not is_local(_request(REMOTE, "127.0.0.1"))  # a header cannot make a remote client local
    # nginx in front but LOUPE_TRUSTED_PROXIES left at 0: the peer is loopback for everyone
    assert not is_local(_request("127.0.0.1", REMOTE))
    settings.LOUPE_TRUSTED_PROXIES = 1
    assert is_local(_request("127.0.0.1", "127.0.0.1"))
    assert not is_local(_request("127.0.0.1", f"127.0.0.1, {REMOTE}"))


# --- the throttles --------------------------------------------------------------------------
@pytest.fixture
def search_4_per_min(settings, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "search": "4/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)


def _first_429(remote: str, forwarded, n: int = 7) -> int | None:
    """Index of the first 429 among n anonymous searches from `remote`; forwarded(i) -> header or None."""
    api = APIClient()
    for i in range(n):
        value = forwarded(i)
        extra = {"HTTP_X_FORWARDED_FOR": value} if value is not None else {}
        if api.get("/api/v1/search/", {"q": "dog"}, REMOTE_ADDR=remote, **extra).status_code == 429:
            return i
    return None


@pytest.mark.django_db
def test_rotating_forwarded_for_does_not_escape_the_anonymous_search_throttle(search_4_per_min):
    """The finding: 2,000 of 2,000 searches got 200 with a fresh X-Forwarded-For each."""
    plain = _first_429("203.0.113.10", lambda i: None)
    rotating = _first_429("203.0.113.11", lambda i: f"198.51.100.{i}")
    assert plain == 4 and rotating == plain


@pytest.mark.django_db
def test_behind_one_proxy_the_forwarded_client_is_throttled_not_the_proxy(search_4_per_min, settings):
    settings.LOUPE_TRUSTED_PROXIES = 1
    # the client rotates what it writes itself; the proxy appended the real address last
    assert _first_429("127.0.0.1", lambda i: f"10.9.9.{i}, 198.51.100.20") == 4
    # another client behind the same proxy has its own budget
    assert _first_429("127.0.0.1", lambda i: "198.51.100.21") == 4


# --- django-axes ----------------------------------------------------------------------------
def _login(password: str, remote: str, forwarded: str | None = None) -> int:
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return Client().post("/admin/login/?next=/admin/", {"username": "boss", "password": password},
                         REMOTE_ADDR=remote, **extra).status_code


@pytest.mark.django_db
def test_axes_lockout_is_not_escaped_by_rotating_forwarded_for(settings):
    UserFactory(username="boss", is_staff=True, is_superuser=True, password="right-password")
    for i in range(settings.AXES_FAILURE_LIMIT):
        _login("wrong", REMOTE, f"198.51.100.{i}")
    assert _login("right-password", REMOTE, "198.51.100.250") == 429


@pytest.mark.django_db
def test_behind_one_proxy_axes_locks_out_the_forwarded_client_only(settings):
    """Behind nginx every request comes from 127.0.0.1: axes must key on the forwarded client,
    as the throttles do, or one attacker locks every user of the proxy out."""
    from axes.models import AccessAttempt

    settings.LOUPE_TRUSTED_PROXIES = 1
    UserFactory(username="boss", is_staff=True, is_superuser=True, password="right-password")
    for i in range(settings.AXES_FAILURE_LIMIT):
        _login("wrong", "127.0.0.1", f"10.0.0.{i}, {REMOTE}")
    assert _login("right-password", "127.0.0.1", f"10.1.1.1, {REMOTE}") == 429  # rotating its own part: still locked
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {REMOTE}
    assert _login("right-password", "127.0.0.1", "198.51.100.30") == 302  # the real admin elsewhere logs in


def test_the_shipped_nginx_overwrites_forwarded_for_and_the_env_trusts_that_one_proxy():
    """deploy/nginx.conf is the first hop, so it must set the header itself (not pass the client's
    on, not append to it), and deploy/loupe.env.example must count it."""
    from pathlib import Path

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    nginx = [line.split("#")[0].split() for line in (deploy / "nginx.conf").read_text().splitlines()]
    forwarded = [words for words in nginx if words[:2] == ["proxy_set_header", "X-Forwarded-For"]]
    assert forwarded == [["proxy_set_header", "X-Forwarded-For", "$remote_addr;"]]
    env = [line.strip() for line in (deploy / "loupe.env.example").read_text().splitlines()]
    assert "LOUPE_TRUSTED_PROXIES=1" in env
