"""Property-based fuzzing of every REST operation from /api/schema/ (issue 7, case 11).

Schemathesis generates requests from the OpenAPI schema (valid and invalid ones) for every
operation and sends them through the WSGI app, authenticated as a staff user (so the
staff-only operations are reached too), with a few stored, encoded and indexed images and a
fake embedder and captioner (the real models are not the point here). Every response must be
no 5xx and must conform to the schema where the schema documents its status.

Every response goes through schemathesis' response-conformance checks (issue 19, finding 11):
no 5xx, a status code, content type, headers and body the schema documents. Each operation is
fuzzed as staff and anonymously; then the stateful phase follows the schema's OpenAPI links
(project/schema.py: upload -> get -> delete, search -> labels, caption -> accept, start ->
cancel, promote -> progress) through sequences of calls, under the same checks.

The hand-written edge cases (empty and 100k-character text, NUL, emoji, k=0, k=10**9, page=-1,
an unknown model version) are in tests/search/test_apis.py; docs/security.md maps them.
"""
from __future__ import annotations

import copy

import pytest
import schemathesis  # requirements-test.txt; a missing install fails the run, it never skips
from django.db import transaction
from hypothesis import HealthCheck, Phase, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from embeddings import encoding  # noqa: E402
from embeddings.models import ModelVersion  # noqa: E402
from search import registry  # noqa: E402
from search.services import index_rebuild  # noqa: E402
from tests.factories import CollectionFactory  # noqa: E402
from tests.search.conftest import colour_jpeg, fake_captioner, fake_version, ingest  # noqa: E402, F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
EXAMPLES_PER_OPERATION = 12
STATEFUL_SCENARIOS, STATEFUL_STEPS = 60, 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def _wsgi_app():
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


# Loaded at collection (schemathesis' lazy from_fixture does not work with pytest 9); serving the
# schema needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", _wsgi_app())
# Sequences are built from valid calls (invalid ones are the per-operation test's business): a
# rejected call produces nothing for a link to follow.
schema.config.phases.stateful.generation.update(modes=["positive"])


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
def seeded(keep_db_connection, staff, fake_version, fake_captioner, settings):  # noqa: F811
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


@pytest.fixture(params=["staff", "anonymous"])
def identity(request, seeded):
    return seeded if request.param == "staff" else {}


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_or_outside_its_schema(case, identity):
    case.call_and_validate(headers=identity, checks=CHECKS)


class Workflows(schema.as_state_machine()):
    """Sequences of linked calls, as staff, every response under CHECKS. Each scenario runs in a
    savepoint rolled back at its end, so every one starts from the seeded data (Hypothesis
    refuses a run whose rules behave differently for the same choices: FlakyStrategyDefinition)."""

    headers: dict[str, str] = {}

    def setup(self):
        self._scenario = transaction.atomic()
        self._scenario.__enter__()

    def teardown(self):
        transaction.set_rollback(True)
        self._scenario.__exit__(None, None, None)

    def get_call_kwargs(self, case):
        return {"headers": self.headers}

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(response, checks=CHECKS, headers=self.headers)


def test_linked_call_sequences_answer_no_5xx_and_stay_inside_the_schema(seeded):
    assert Workflows.schema.statistic.transitions.total >= 30  # the links of project/schema.py are there
    Workflows.headers = seeded
    Workflows.run(settings=settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS,
                                    phases=[Phase.generate], deadline=None, derandomize=True,
                                    suppress_health_check=list(HealthCheck)))


def _judged_by(raw: dict, seeded: dict, path: str = "/api/v1/images/{id}/") -> None:
    altered = schemathesis.openapi.from_dict(raw)
    altered.app = schema.app
    altered[path]["GET"].Case(path_parameters={"id": 10**9}).call_and_validate(headers=seeded, checks=CHECKS)


def test_the_checks_fail_on_a_response_the_schema_does_not_document(seeded):
    """The checks above are not vacuous: a 404 passes against the real schema, and fails against
    one without that 404, or with an error shape the body does not have."""
    _judged_by(copy.deepcopy(schema.raw_schema), seeded)
    no_404 = copy.deepcopy(schema.raw_schema)
    del no_404["paths"]["/api/v1/images/{id}/"]["get"]["responses"]["404"]
    with pytest.raises(FailureGroup, match="Undocumented status code"):
        _judged_by(no_404, seeded)
    other_shape = copy.deepcopy(schema.raw_schema)
    other_shape["components"]["schemas"]["ErrorBody"]["required"].append("trace_id")
    with pytest.raises(FailureGroup, match="Response violates schema"):
        _judged_by(other_shape, seeded)
