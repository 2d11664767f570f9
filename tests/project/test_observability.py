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


def test_readyz_503_with_the_reason_when_the_index_file_does_not_load_after_a_restart(
        client, anon_api, redis_server, settings, monkeypatch, collection):
    """Issue 19 finding 5: the index file truncated, the process restarted: search answers 503
    "index rebuilding", so /readyz must too, saying why, until the rebuild has run."""
    from embeddings import runtime
    from embeddings.models import ModelVersion
    from project.celery import app
    from search import registry, tasks
    from search.services import index_rebuild
    from tests.factories import make_image
    from tests.search.conftest import DIM, FakeEmbedder, store_vector

    settings.SEARCH_RELOAD_CHECK_SECONDS = 0
    ModelVersion.objects.filter(kind="embedding", status="active").update(status="retired")
    version = ModelVersion.objects.create(kind="embedding", name="fake", family="fake", status="active", dim=DIM)
    monkeypatch.setattr(runtime, "embedder_for", lambda v: FakeEmbedder())
    requested = []  # what reaches the broker (Task.apply_async sends through app.send_task too)
    monkeypatch.setattr(app, "send_task", lambda name, args=None, kwargs=None, **kw: requested.append((name, *args)))
    for seed in range(3):
        store_vector(make_image(collection, seed=seed), version, [1.0 + seed] + [0.5] * (DIM - 1))
    index_rebuild(version=version, modality="image")
    registry.reset()
    assert client.get("/readyz").status_code == 200

    path = registry.index_path(version.pk, "image")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    registry.reset()  # a restarted process: nothing good in memory
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.json()["status"] == "not ready"
    reason = resp.json()["checks"]["index"]
    assert reason.startswith("error: image index of version") and "corrupt" in reason, reason
    assert anon_api.get("/api/v1/search/", {"q": "red"}).status_code == 503  # what serving does meanwhile
    assert ("search.tasks.index_rebuild", version.pk, "image", True) in requested

    tasks.index_rebuild(version.pk, "image", True)  # what the worker runs
    registry.reset()
    assert client.get("/readyz").status_code == 200


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


def test_metrics_token_is_required_when_set_even_from_this_machine(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401  # the test client is 127.0.0.1
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret0").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_metrics_without_a_token_answer_only_this_machine(client, settings):
    """Issue 19 finding 9: the counts include private collections, so with no METRICS_TOKEN the
    page is for a scraper on this machine only, by the throttles' client-address rule."""
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    # a forwarded header cannot make a remote client local ...
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 403
    # ... nor can an undeclared proxy on this machine (nginx with LOUPE_TRUSTED_PROXIES=0) pass everyone
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    settings.LOUPE_TRUSTED_PROXIES = 1  # behind deploy/nginx.conf, which sets the header itself
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200


def test_request_id_header_round_trips(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc123")["X-Request-ID"] == "abc123"
    assert len(client.get("/healthz")["X-Request-ID"]) == 32


def test_model_version_factory_is_usable():
    assert ModelVersionFactory().status == "candidate"
