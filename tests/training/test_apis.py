"""REST API of retraining: staff only, 202 with the run's URL, 409 while a run of that kind is active."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from embeddings.models import ModelVersion
from tests.factories import UserFactory
from tests.training.conftest import TINY_EMBEDDING
from training import services
from training.models import ModelSwitch, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_api(transactional_db) -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True))
    return client


def body(kind="embedding", config=TINY_EMBEDDING):
    return {"kind": kind, "collections": ["tiny"], "config": config}


def test_start_returns_202_with_the_run_url_then_409_for_a_second(staff_api, tiny_collection, fake_encoders):
    resp = staff_api.post("/api/v1/training-runs/", body(), format="json")
    assert resp.status_code == 202, resp.content
    data = resp.json()
    run = TrainingRun.objects.get()
    assert data["id"] == run.pk and data["status"] == "queued" and data["collections"] == ["tiny"]
    assert data["url"].endswith(f"/api/v1/training-runs/{run.pk}/") and resp["Location"] == data["url"]
    assert run.config["loop"]["epochs"] == 3 and run.config["model"]["dim"] == 16
    again = staff_api.post("/api/v1/training-runs/", body(), format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_running"
    detail = staff_api.get(data["url"])
    assert detail.status_code == 200 and detail.json()["progress"]["total_epochs"] == 3


def test_non_staff_get_403_and_anonymous_401(tiny_collection):
    user_api = APIClient()
    user_api.force_authenticate(UserFactory())
    for method, url in [("post", "/api/v1/training-runs/"), ("get", "/api/v1/models/"),
                        ("post", "/api/v1/models/1/promote/"), ("post", "/api/v1/models/1/rollback/")]:
        resp = getattr(user_api, method)(url, body(), format="json")
        assert resp.status_code == 403, (url, resp.status_code)
        assert resp.json()["error"]["code"] == "permission_denied"
        assert getattr(APIClient(), method)(url, body(), format="json").status_code == 401
    assert not TrainingRun.objects.exists()


def test_unknown_config_keys_and_unknown_collections_are_400(staff_api, tiny_collection, fake_encoders):
    resp = staff_api.post("/api/v1/training-runs/", body(config={"loop": {"learning_rate": 1}}), format="json")
    assert resp.status_code == 400 and "learning_rate" in resp.json()["error"]["message"]
    resp = staff_api.post("/api/v1/training-runs/", {**body(), "collections": ["nope"]}, format="json")
    assert resp.status_code == 400 and "collections" in resp.json()["error"]["fields"]
    assert not TrainingRun.objects.exists()


def test_models_list_promote_and_rollback(staff_api, tiny_collection, fake_encoders, conse_v0):
    run = services.training_run_start(kind="embedding", collections=[tiny_collection],
                                      config_overrides=TINY_EMBEDDING, user=None, enqueue=False)
    version = services.training_run_execute(run.pk).model_version
    listed = staff_api.get("/api/v1/models/").json()
    assert {m["id"] for m in listed} == {conse_v0.pk, version.pk}
    assert next(m for m in listed if m["id"] == version.pk)["metrics"]["dev"]["rsum"] > 0
    asked = staff_api.post(f"/api/v1/models/{version.pk}/promote/")  # measured on the tiny set's 2 dev images
    assert asked.status_code == 409 and asked.json()["error"]["code"] == "needs_confirmation"
    assert not ModelSwitch.objects.exists()
    resp = staff_api.post(f"/api/v1/models/{version.pk}/promote/", {"force": True}, format="json")
    assert resp.status_code == 202 and resp.json()["status"] == "queued" and resp.json()["version"] == version.pk
    polled = staff_api.get(f"/api/v1/model-switches/{resp.json()['id']}/")
    assert polled.status_code == 200 and polled.json()["total"] == 0 and polled.json()["action"] == "promote"
    again = staff_api.post(f"/api/v1/models/{version.pk}/promote/", {"force": True}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "switch_in_progress"  # one at a time
    ModelSwitch.objects.all().delete()
    ModelVersion.objects.filter(pk=conse_v0.pk).update(status="retired")
    ModelVersion.objects.filter(pk=version.pk).update(status="active")
    resp = staff_api.post(f"/api/v1/models/{version.pk}/rollback/")
    assert resp.status_code == 202 and resp.json()["action"] == "rollback" and resp.json()["version"] == conse_v0.pk
    assert staff_api.post(f"/api/v1/models/{conse_v0.pk}/rollback/").status_code == 409
    assert staff_api.post("/api/v1/models/999999/promote/").status_code == 404


def test_cancel_endpoint(staff_api, tiny_collection, fake_encoders):
    run = services.training_run_start(kind="embedding", collections=[tiny_collection],
                                      config_overrides=TINY_EMBEDDING, user=None, enqueue=False)
    resp = staff_api.post(f"/api/v1/training-runs/{run.pk}/cancel/")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    assert staff_api.post(f"/api/v1/training-runs/{run.pk}/cancel/").status_code == 409


def test_collection_names_with_nul_or_shared_by_two_owners_are_answered_not_500(staff_api, tiny_collection):
    """Found by the schema fuzz: a NUL byte in a collection name reached PostgreSQL (500), and a
    name two users both use matched two rows. Names resolve as everywhere else."""
    from tests.factories import CollectionFactory

    bad = staff_api.post("/api/v1/training-runs/", {**body(), "collections": ["ti\x00ny"]}, format="json")
    assert bad.status_code == 400 and "collections" in bad.json()["error"]["fields"]
    CollectionFactory(owner=UserFactory(), name="tiny")  # a second "tiny", another owner's
    again = staff_api.post("/api/v1/training-runs/", body(), format="json")
    assert again.status_code == 202, again.content
    assert TrainingRun.objects.get().collections.get() == tiny_collection  # the older one, as selectors resolve
