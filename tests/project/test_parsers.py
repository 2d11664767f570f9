"""project/parsers.py: JSON nesting depth is bounded before anything recurses (issue 19, finding 4).

A body of 1,000 nested arrays raised RecursionError inside json.loads: a 500 (and Django's debug
page under `make run`) on every endpoint that reads JSON, the anonymous token endpoint included.
"""
from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from project.parsers import MAX_JSON_DEPTH, JSONTooDeep, json_depth_exceeds, loads_bounded
from tests.search.conftest import colour_jpeg

pytestmark = pytest.mark.django_db

DEEP = "[" * 1000 + "]" * 1000


def test_depth_is_counted_outside_strings_and_without_recursion():
    assert not json_depth_exceeds("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert json_depth_exceeds("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert json_depth_exceeds('{"a": ' * 40 + "1" + "}" * 40)
    in_strings = json.dumps({"text": "[" * 5000, "quoted": '\\"[[[[' * 100, "nested": [["{{{{"]]})
    assert not json_depth_exceeds(in_strings)
    assert loads_bounded(in_strings)["text"] == "[" * 5000
    with pytest.raises(JSONTooDeep):
        loads_bounded("[" * 200_000)  # no RecursionError, even unclosed
    with pytest.raises(ValueError):
        loads_bounded('{"x": NaN}')  # DRF's strict JSON: no NaN / Infinity


@pytest.mark.parametrize("text", ['["' + '\\"' * 200_000 + "[" * 40, '"\\' * 200_000 + "[" * 40,
                                  "[" * 40 + '"' + "a" * 200_000 + "\\", "[" + "[]," * 200_000 + "[]]"])
def test_the_depth_scan_stays_linear_on_unterminated_strings(text):
    """An unterminated string must not make the scan restart at every later quote (quadratic:
    minutes for these 400 kB; linear: milliseconds)."""
    started = time.perf_counter()
    json_depth_exceeds(text)
    assert time.perf_counter() - started < 5


@pytest.fixture
def staff_api(staff) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.mark.parametrize("method,path", [
    ("post", "/api/v1/search/"), ("post", "/api/v1/search/captions/"), ("post", "/api/v1/captions/"),
    ("post", "/api/v1/collections/"), ("patch", "/api/v1/captions/1/"), ("post", "/api/v1/auth/token/"),
    ("post", "/api/v1/training-runs/"), ("post", "/api/v1/words/train/"),
])
def test_a_1000_deep_json_body_is_a_400_on_every_endpoint_that_reads_json(staff_api, method, path):
    for body in (DEEP, '{"terms": ' + DEEP + "}", '{"username": ' + DEEP + ', "password": "x"}'):
        resp = getattr(staff_api, method)(path, body, content_type="application/json")
        assert resp.status_code == 400, (path, resp.status_code, resp.content[:200])
        error = resp.json()["error"]
        assert error["code"] == "parse_error" and f"deeper than {MAX_JSON_DEPTH}" in error["message"]


def test_deep_json_inside_form_fields_is_a_400(staff_api, collection):
    """Multipart search `terms` and a training run's `config` are JSON text parsed by the view."""
    resp = staff_api.post("/api/v1/search/", {"terms": "[" * 10_000 + "]" * 10_000,
                                              "image": SimpleUploadedFile("q.jpg", colour_jpeg((9, 9, 9)))},
                          format="multipart")
    assert resp.status_code == 400 and "terms" in resp.json()["error"]["fields"], resp.content[:300]
    resp = staff_api.post("/api/v1/training-runs/", {"kind": "embedding", "collections": [collection.name],
                                                     "config": "[" * 5000 + "]" * 5000}, format="multipart")
    assert resp.status_code == 400 and "config" in resp.json()["error"]["fields"], resp.content[:300]


def test_ordinary_json_bodies_still_parse(staff_api):
    resp = staff_api.post("/api/v1/collections/", {"name": "holiday", "description": "[not json] {either}"},
                          format="json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["description"] == "[not json] {either}"
