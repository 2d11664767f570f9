"""project.exceptions: every error class of the product answers in the one JSON shape."""
from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from rest_framework import exceptions as drf

from embeddings.runtime import ModelUnavailable
from embeddings.services import InvalidImage
from embeddings.words import OutOfVocabulary
from project.exceptions import (ApplicationError, Conflict, NotFound, PermissionDenied, ServiceUnavailable,
                                exception_handler)
from search.services import IndexRebuilding
from embeddings.services.captions import CaptionPermissionDenied


@pytest.mark.parametrize("exc,status,code", [
    (ApplicationError("bad"), 400, "invalid"),
    (InvalidImage("bad"), 400, "invalid_image"),
    (OutOfVocabulary("bad"), 400, "unknown_word"),
    (PermissionDenied("bad"), 403, "permission_denied"),
    (CaptionPermissionDenied("bad"), 403, "permission_denied"),
    (NotFound("bad"), 404, "not_found"),
    (Conflict("bad"), 409, "conflict"),
    (ServiceUnavailable("bad"), 503, "unavailable"),
    (ModelUnavailable("bad"), 503, "model_unavailable"),
    (IndexRebuilding("bad"), 503, "index_rebuilding"),
])
def test_application_errors_answer_their_status_and_code(exc, status, code):
    resp = exception_handler(exc, {})
    assert resp.status_code == status
    assert resp.data == {"error": {"code": code, "message": "bad"}}


def test_djangos_and_drfs_permission_denied_answer_like_ours():
    ours = exception_handler(PermissionDenied("You do not have permission to perform this action."), {})
    for exc in (DjangoPermissionDenied(), drf.PermissionDenied()):
        resp = exception_handler(exc, {})
        assert (resp.status_code, resp.data) == (ours.status_code, ours.data)


def test_drfs_not_found_answers_like_ours():
    resp = exception_handler(drf.NotFound("gone"), {})
    ours = exception_handler(NotFound("gone"), {})
    assert (resp.status_code, resp.data) == (ours.status_code, ours.data)
