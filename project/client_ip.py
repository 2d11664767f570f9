"""The client's address: one rule for every per-client decision (throttles, django-axes, /metrics).

X-Forwarded-For is written by whoever sends the request, so it is believed only as far as the
proxies the deployment declares (settings.LOUPE_TRUSTED_PROXIES). With 0, the default and what
`make run` is, the client is the TCP peer (REMOTE_ADDR) and the header is ignored. Behind N
proxies that each append the address they got the request from (the first one, nginx in
deploy/nginx.conf, overwrites the header instead), the client is the N-th address from the
right: everything further left was written by the client itself.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings


def _parsed(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def trusted_proxies() -> int:
    return max(int(settings.LOUPE_TRUSTED_PROXIES), 0)


def client_ip(request: Any) -> str:
    """The client's address of a Django (or DRF) request, by the rule above.

    A forwarded entry that is not an IP address (a misconfigured proxy) is not believed: the
    peer address is used, so the result always fits an IP address column (django-axes).
    """
    remote = request.META.get("REMOTE_ADDR") or ""
    proxies = trusted_proxies()
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies == 0 or not forwarded:
        return remote
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    if not hops:
        return remote
    # Fewer entries than proxies: the request skipped a hop; the leftmost was still written by one.
    candidate = _parsed(hops[-min(proxies, len(hops))])
    return str(candidate) if candidate is not None else remote


def is_loopback(address: str) -> bool:
    ip = _parsed(address)
    if ip is None:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def is_local(request: Any) -> bool:
    """The request comes from this machine, by the client-address rule.

    With no trusted proxy declared, a loopback peer that forwards an X-Forwarded-For is a proxy
    nobody declared (nginx in front, LOUPE_TRUSTED_PROXIES left at 0): every remote client would
    look local through it, so such a request is not local.
    """
    if trusted_proxies() == 0 and request.META.get("HTTP_X_FORWARDED_FOR"):
        return False
    return is_loopback(client_ip(request))
