"""The API token page and the API's authentication answers. Issue 16, item 2."""
import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db



def test_the_token_page_makes_shows_and_regenerates_a_token_that_the_api_accepts(signed_in, user):
    page = signed_in.get("/accounts/token/")
    assert page.status_code == 200 and "no API token yet" in page.content.decode()
    assert not Token.objects.exists()  # a GET makes nothing
    assert "no-store" in page["Cache-Control"]
    assert signed_in.post("/accounts/token/").status_code == 302
    first = Token.objects.get(user=user).key
    assert first in signed_in.get("/accounts/token/").content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert api.post("/api/v1/collections/", {"name": "by token"}, format="json").status_code == 201
    signed_in.post("/accounts/token/")
    second = Token.objects.get(user=user).key
    assert second != first
    old = api.get("/api/v1/collections/")
    assert old.status_code == 401 and old["WWW-Authenticate"] == "Token"  # the old key stopped working
    assert old.json()["error"]["code"] == "authentication_failed"


def test_the_token_page_needs_a_login_and_refuses_other_methods(user):
    resp = Client().get("/accounts/token/")
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]
    client = Client()
    client.force_login(user)
    assert client.delete("/accounts/token/").status_code == 405


def test_missing_credentials_on_a_write_are_401_with_a_token_challenge():
    resp = APIClient().post("/api/v1/collections/", {"name": "x"}, format="json")
    assert resp.status_code == 401
    assert resp["WWW-Authenticate"] == "Token"
    assert resp.json()["error"]["code"] == "not_authenticated"


def test_a_bad_token_is_401_even_on_a_public_read():
    resp = APIClient().get("/api/v1/collections/", HTTP_AUTHORIZATION="Token not-a-real-token")
    assert resp.status_code == 401 and resp["WWW-Authenticate"] == "Token"


def test_a_signed_in_user_who_is_not_allowed_still_gets_403(api):
    resp = api.get("/api/v1/models/")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "permission_denied"
