"""The API's contract outside the views (issue 19, finding 11): unknown /api/ paths answer the
JSON error shape, the token endpoint's lockout is a 429, and the schema documents every error
response (project/schema.py). The schemathesis run over all of it is
tests/reliability/test_schema_fuzz.py."""
from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from project.schema import LINKS
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def _json_404(resp) -> dict:
    assert resp.status_code == 404, (resp.status_code, resp.content[:200])
    assert resp["Content-Type"] == "application/json", resp["Content-Type"]
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == "not_found" and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("path", ["/api/v1/nope/", "/api/v1/images/abc/", "/api/v1/images/-1/", "/api/v2/search/",
                                  "/api/", "/api/v1/images/%0A/", "/api/v1/captions/%C3%BA%0A/"])
def test_unknown_api_paths_answer_the_json_404(user, path):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)  # a session cookie without a CSRF token: still the 404, not Django's CSRF page
    for method in ("get", "post", "patch", "delete"):
        _json_404(getattr(browser, method)(path))
        _json_404(getattr(Client(), method)(path))


def test_a_missing_trailing_slash_still_redirects_a_get_and_other_pages_keep_their_html_404(anon_api):
    resp = anon_api.get("/api/v1/search", {"q": "red"})
    assert resp.status_code == 301 and resp["Location"] == "/api/v1/search/?q=red"
    assert "end with a slash" in _json_404(anon_api.post("/api/v1/search", {"q": "red"}, format="json"))["message"]
    page = Client().get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_token_login_locked_out_by_axes_is_a_429_with_retry_after(settings):
    """django-axes marks DRF's Request, not Django's, so its middleware never answered; the view does."""
    UserFactory(username="boss", password="right-password")
    client = APIClient()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        resp = client.post("/api/v1/auth/token/", {"username": "boss", "password": "wrong"}, format="json")
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid"
    for password in ("wrong", "right-password"):  # the last failure locks; then even the right password is refused
        resp = client.post("/api/v1/auth/token/", {"username": "boss", "password": password}, format="json")
        assert resp.status_code == 429, resp.content
        assert resp.json()["error"]["code"] == "locked_out"
        assert resp["Retry-After"] == str(int(settings.AXES_COOLOFF_TIME * 3600))
    UserFactory(username="clerk", password="clerk-password")  # the lock is per (username, address)
    resp = client.post("/api/v1/auth/token/", {"username": "clerk", "password": "clerk-password"}, format="json")
    assert resp.status_code == 200 and resp.json()["token"]


@pytest.fixture
def openapi(anon_api) -> dict:
    resp = anon_api.get("/api/schema/", {"format": "json"})
    assert resp.status_code == 200
    return json.loads(resp.content)


def _operations(openapi: dict):
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_every_operation_documents_its_error_responses_in_the_one_shape(openapi):
    error = openapi["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(openapi["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message"}
    count = 0
    for path, method, op in _operations(openapi):
        count += 1
        responses, where = op["responses"], f"{method.upper()} {path}"
        expected = {"401", "403", "429"}
        if "requestBody" in op:
            expected |= {"400", "413", "415"}
        if any(p["in"] == "query" for p in op.get("parameters", [])):
            expected.add("400")
        if "{" in path:
            expected.add("404")
        assert expected <= set(responses), (where, sorted(responses))
        for code, response in responses.items():
            if code >= "400":
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, \
                    (where, code)
        assert responses["429"]["headers"]["Retry-After"]["required"] is True, where
    assert count >= 28
    paths = openapi["paths"]
    for path, method in [("/api/v1/search/", "get"), ("/api/v1/search/", "post"), ("/api/v1/search/captions/", "get"),
                         ("/api/v1/captions/", "post"), ("/api/v1/images/{id}/labels/", "get"),
                         ("/api/v1/images/{id}/similar/", "get"), ("/api/v1/images/{id}/explain/", "get")]:
        assert "503" in paths[path][method]["responses"], (method, path)  # no model, or an index rebuilding
    assert "409" in paths["/api/v1/collections/"]["post"]["responses"]
    assert "404" in paths["/api/v1/captions/"]["post"]["responses"]  # an image_id you cannot see
    assert "404" in paths["/api/v1/images/"]["get"]["responses"]  # a page past the end of a paginated list


def test_promoting_a_version_without_files_is_a_documented_400(openapi, staff):
    client = APIClient()
    client.force_authenticate(staff)
    resp = client.post(f"/api/v1/models/{ModelVersionFactory(files={}).pk}/promote/")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid", resp.content
    assert "400" in openapi["paths"]["/api/v1/models/{id}/promote/"]["post"]["responses"]


def test_id_producing_responses_link_to_the_operations_that_take_the_id(openapi):
    by_id = {op["operationId"]: op for _, _, op in _operations(openapi)}
    for source, code, name, target, parameters in LINKS:
        link = by_id[source]["responses"][code]["links"][name]
        assert link == {"operationId": target, "parameters": parameters}
        wanted = {p["name"] for p in by_id[target].get("parameters", [])}
        assert set(parameters) <= wanted, (source, target, parameters)
