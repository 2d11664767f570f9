"""Security headers and the production configuration (issue 7, "Also").

In-process tests check the headers every response carries; subprocess tests load
project.settings with a production environment (DEBUG=false, TLS behind a proxy) and run
`manage.py check --deploy --fail-level WARNING` and a request through it.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.test import Client

from tests.conftest import REPO

pytestmark = pytest.mark.django_db


def _csp(value: str) -> dict[str, list[str]]:
    directives = [d.strip().split() for d in value.split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


@pytest.mark.parametrize("path", ["/", "/upload/", "/search/", "/api/v1/images/", "/admin/login/", "/accounts/login/",
                                  "/api/docs/", "/images/999999/"])
def test_every_response_carries_csp_nosniff_referrer_policy_and_frame_denial(user, path):
    client = Client()
    client.force_login(user)
    resp = client.get(path)
    assert resp.status_code in (200, 404), (path, resp.status_code)
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert resp["Referrer-Policy"] == "same-origin"
    assert resp["X-Frame-Options"] == "DENY"
    csp = _csp(resp["Content-Security-Policy"])
    assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'self'"]
    for directive in ("script-src", "style-src"):  # no inline code, no eval, no CDN
        assert csp[directive] == ["'self'"], (directive, csp[directive])


def test_pages_have_no_inline_scripts_or_styles_the_csp_would_block(user):
    import re

    client = Client()
    client.force_login(user)
    for path in ("/", "/upload/", "/search/", "/caption/", "/accounts/login/"):
        html = client.get(path).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path  # every script is a file
        assert not re.search(r"\son[a-z]+\s*=", html), path  # no inline event handlers
        assert not re.search(r"\sstyle\s*=", html) and "<style" not in html, path


def test_session_cookie_is_httponly_and_both_cookies_are_samesite(settings):
    assert settings.SESSION_COOKIE_HTTPONLY is True
    assert settings.SESSION_COOKIE_SAMESITE in ("Lax", "Strict") and settings.CSRF_COOKIE_SAMESITE in ("Lax", "Strict")


# --- production settings (subprocess) ---------------------------------------------------------
def production_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "DJANGO_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "loupe.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://loupe.example.org",
        "SECURE_SSL_REDIRECT": "true",
        "DATABASE_URL": "postgres://loupe@127.0.0.1:5432/loupe",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "LOUPE_VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def test_manage_py_check_deploy_passes_at_warning_level_with_production_settings(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=REPO,
                            env=production_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


PROBE = r"""
import json, django
django.setup()
from django.conf import settings
from django.test import Client
c = Client(HTTP_HOST="loupe.example.org")
plain = c.get("/healthz")
tls = c.get("/healthz", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({
    "hsts_seconds": settings.SECURE_HSTS_SECONDS, "session_secure": settings.SESSION_COOKIE_SECURE,
    "csrf_secure": settings.CSRF_COOKIE_SECURE, "ssl_redirect": settings.SECURE_SSL_REDIRECT,
    "debug": settings.DEBUG, "static_backend": settings.STORAGES["staticfiles"]["BACKEND"],
    "media_under_static": str(settings.MEDIA_ROOT).startswith(str(settings.STATIC_ROOT)),
    "plain": [plain.status_code, plain.get("Location")],
    "tls": [tls.status_code, tls.get("Strict-Transport-Security"), tls.get("X-Content-Type-Options"),
            tls.get("Referrer-Policy"), tls.get("Content-Security-Policy")],
    "evil_host": c.get("/healthz", HTTP_HOST="evil.example.com", HTTP_X_FORWARDED_PROTO="https").status_code,
}))
"""


def test_production_settings_redirect_to_https_send_hsts_and_mark_cookies_secure(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=production_env(tmp_path),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["debug"] is False and got["ssl_redirect"] is True
    assert got["session_secure"] is True and got["csrf_secure"] is True
    assert got["hsts_seconds"] >= 31536000
    assert got["plain"] == [301, "https://loupe.example.org/healthz"]
    status, hsts, nosniff, referrer, csp = got["tls"]
    assert status == 200 and "max-age=31536000" in hsts and "includeSubDomains" in hsts and "preload" in hsts
    assert nosniff == "nosniff" and referrer == "same-origin" and "default-src 'self'" in csp
    assert got["evil_host"] == 400  # ALLOWED_HOSTS
    assert got["media_under_static"] is False  # uploads are never served by whitenoise
