"""Property-based fuzzing of every REST operation from /api/schema/ (issue 7, case 11).

Schemathesis generates requests from the OpenAPI schema (valid and invalid ones) for every
operation and sends them through the WSGI app, authenticated as a staff user (so the
staff-only operations are reached too), with a few stored, encoded and indexed images and a
fake embedder and captioner (the real models are not the point here). Every response must be
no 5xx and must conform to the schema where the schema documents its status.

The hand-written edge cases (empty and 100k-character text, NUL, emoji, k=0, k=10**9, page=-1,
an unknown model version) are in tests/search/test_apis.py; docs/security.md maps them.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis==4.32.5 (requirements-test.txt) is needed")
from schemathesis.checks import not_a_server_error, response_schema_conformance  # noqa: E402

from embeddings import encoding  # noqa: E402
from embeddings.models import ModelVersion  # noqa: E402
from search import registry  # noqa: E402
from search.services import index_rebuild  # noqa: E402
from tests.factories import CollectionFactory  # noqa: E402
from tests.search.conftest import colour_jpeg, fake_captioner, fake_version, ingest  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
EXAMPLES_PER_OPERATION = 12


def _wsgi_app():
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


# Loaded at collection (schemathesis' lazy from_fixture does not work with pytest 9); serving the
# schema needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", _wsgi_app())


@pytest.fixture
def keep_db_connection():
    """Like Django's test client, keep the WSGI handler from closing the test's database
    connection (and with it the test transaction) at the end of each request."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(keep_db_connection, staff, fake_version, fake_captioner, settings):
    """Images with captions and vectors, their indexes built, generous rate limits."""
    from rest_framework.throttling import ScopedRateThrottle

    settings.SEARCH_RELOAD_CHECK_SECONDS = 0
    registry.reset()
    rates = {"anon": "100000/min", "user": "100000/min", "uploads": "100000/min", "search": "100000/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ScopedRateThrottle.THROTTLE_RATES = rates
    # The fake embedder answers for every version id; a query pinned to another version (e.g. the
    # retired ConSE v0) would then mismatch that version's index. Only the fake version exists.
    ModelVersion.objects.exclude(pk__in=[fake_version.pk, fake_captioner.pk]).delete()
    collection = CollectionFactory(owner=staff, name="mine", is_public=True)
    images = [ingest(collection, colour_jpeg(rgb), caption=text, split=split) for rgb, text, split in
              [((250, 10, 10), "a red car", "train"), ((10, 250, 10), "a green tree", "dev"),
               ((10, 10, 250), "a blue sea", "train")]]
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    for modality in ("image", "caption"):
        index_rebuild(version=fake_version, modality=modality)
    yield {"Authorization": f"Token {Token.objects.create(user=staff).key}"}
    from rest_framework.settings import api_settings

    ScopedRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    registry.reset()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_or_outside_its_schema(case, seeded):
    case.call_and_validate(headers=seeded, checks=[not_a_server_error, response_schema_conformance])
