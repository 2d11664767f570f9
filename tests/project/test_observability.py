"""/healthz, /readyz and /metrics."""
import pytest

from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_dependencies(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_readyz_reports_each_check_and_503_without_an_index(client, redis_server):
    resp = client.get("/readyz")
    body = resp.json()
    assert resp.status_code == 503
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert body["checks"]["model"] == "ok"  # ConSE v0 from the migration
    assert body["checks"]["index"].startswith("error")


def test_readyz_ready_when_everything_is(client, redis_server):
    from embeddings.models import ModelVersion
    from search.models import SearchIndex

    version = ModelVersion.objects.get(kind="embedding", status="active")
    SearchIndex.objects.create(model_version=version, modality="image", status="ready", count=3)
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.json()["status"] == "ready"


def test_readyz_503_when_broker_is_down(client, settings, monkeypatch):
    from project.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    app.pool.force_close_all()
    body = client.get("/readyz").json()
    app.pool.force_close_all()
    assert body["checks"]["broker"].startswith("error")


def test_metrics_exposes_state_and_latency(client, redis_server, collection):
    from project.observability import SEARCH_LATENCY
    from tests.factories import make_image

    make_image(collection, seed=1)
    SEARCH_LATENCY.labels(mode="text").observe(0.02)
    text = client.get("/metrics").content.decode()
    assert 'loupe_images{status="pending"} 1.0' in text
    assert "loupe_search_seconds_bucket" in text
    assert 'loupe_queue_depth{queue="default"}' in text


def test_metrics_token_is_required_when_set(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_request_id_header_round_trips(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc123")["X-Request-ID"] == "abc123"
    assert len(client.get("/healthz")["X-Request-ID"]) == 32


def test_model_version_factory_is_usable():
    assert ModelVersionFactory().status == "candidate"
