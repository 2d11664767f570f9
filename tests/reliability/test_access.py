"""Who may do what (issue 7, cases 12-14): anonymous writes, other users' private collections,
staff-only retraining, CSRF, rate limits on search and uploads, admin login brute force."""
from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from embeddings.models import Caption, Collection, Image
from tests import images as mk
from tests.factories import CollectionFactory, UserFactory, make_image
from training.forms import RetrainForm
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _upload(client, collection="mine", seed=0):
    return client.post("/api/v1/images/", {"file": SimpleUploadedFile("a.jpg", mk.unique_jpeg(seed)),
                                           "collection": collection}, format="multipart")


# --- case 12: anonymous writes ----------------------------------------------------------------
def test_anonymous_writes_are_refused_on_every_write_endpoint_and_change_nothing(anon_api, collection):
    image = make_image(collection, seed=1, caption="a caption")
    caption = image.captions.get()
    attempts = [
        ("post", "/api/v1/images/", {"file": SimpleUploadedFile("a.jpg", mk.unique_jpeg(2)), "collection": "mine"},
         "multipart"),
        ("post", "/api/v1/collections/", {"name": "anon"}, "json"),
        ("delete", f"/api/v1/images/{image.pk}/", None, None),
        ("patch", f"/api/v1/captions/{caption.pk}/", {"text": "defaced"}, "json"),
        ("post", "/api/v1/training-runs/", {"kind": "embedding", "collections": ["mine"]}, "json"),
        ("post", "/api/v1/models/1/promote/", None, None),
        ("post", "/api/v1/models/1/rollback/", None, None),
    ]
    for method, path, data, fmt in attempts:
        call = getattr(anon_api, method)
        resp = call(path, data, format=fmt) if data is not None else call(path)
        assert resp.status_code == 401, (method, path, resp.status_code)
        assert resp["WWW-Authenticate"] == "Token", (method, path)
        assert resp.json()["error"]["code"] == "not_authenticated", (method, path)
    assert Image.objects.count() == 1 and Collection.objects.count() == 1
    caption.refresh_from_db()
    assert caption.text == "a caption" and TrainingRun.objects.count() == 0


# --- case 12: another user's private collection -----------------------------------------------
def _strip(resp) -> tuple[int, bytes]:
    """Status and body of a response (the body never carries the request id)."""
    return resp.status_code, resp.content


def test_another_users_private_image_is_indistinguishable_from_a_missing_one_everywhere(api, user, other_user):
    """Every endpoint that takes an image or caption id answers user A exactly as it answers for
    an id that does not exist (same status, same body): no existence oracle, no leaked ids."""
    theirs = CollectionFactory(owner=other_user, name="theirs")
    hidden = make_image(theirs, seed=3, caption="their secret")
    cap = hidden.captions.get()
    missing, missing_cap = hidden.pk + 10**6, cap.pk + 10**6
    browser = Client()
    browser.force_login(user)

    def both(call):
        return call(hidden.pk, cap.pk), call(missing, missing_cap)

    probes = {
        "api detail": lambda i, c: api.get(f"/api/v1/images/{i}/"),
        "api delete": lambda i, c: api.delete(f"/api/v1/images/{i}/"),
        "api labels": lambda i, c: api.get(f"/api/v1/images/{i}/labels/"),
        "api similar": lambda i, c: api.get(f"/api/v1/images/{i}/similar/"),
        "api explain": lambda i, c: api.get(f"/api/v1/images/{i}/explain/", {"q": "red"}),
        "api caption generate": lambda i, c: api.post("/api/v1/captions/", {"image_id": i}, format="json"),
        "api caption accept": lambda i, c: api.patch(f"/api/v1/captions/{c}/", {"text": "mine"}, format="json"),
        "page detail": lambda i, c: browser.get(f"/images/{i}/"),
        "page similar": lambda i, c: browser.get(f"/search/images/{i}/similar/"),
        "page labels": lambda i, c: browser.get(f"/search/images/{i}/labels/"),
        "page captions": lambda i, c: browser.get(f"/search/images/{i}/captions/"),
    }
    for name, call in probes.items():
        seen, absent = both(call)
        assert seen.status_code == 404, (name, seen.status_code, seen.content[:300])
        assert _strip(seen) == _strip(absent), name
    for path in (hidden.file.name, hidden.thumbnail.name):
        assert browser.get(f"/media/{path}").status_code == 404
        assert _client(None).get(f"/media/{path}").status_code == 404
    # Lists, filters and uploads: nothing of theirs, not even a count.
    listing = api.get("/api/v1/images/", {"collection": "theirs"}).json()
    assert listing == api.get("/api/v1/images/", {"collection": "no-such"}).json() and listing["count"] == 0
    assert "theirs" not in json.dumps(api.get("/api/v1/collections/").json())
    page = browser.get("/").content.decode() + browser.get("/", {"collection": "theirs"}).content.decode()
    assert f"/images/{hidden.pk}/" not in page and "their secret" not in page and hidden.thumbnail.name not in page
    assert _upload(api, "theirs").json() == _upload(api, "no-such").json()
    assert Image.objects.filter(collection=theirs).count() == 1
    assert Caption.objects.get(pk=cap.pk).text == "their secret"


# --- case 13: staff-only retraining, CSRF, double click ---------------------------------------
@pytest.fixture
def captioned(db):
    from tests.training.conftest import make_captioned

    collection = CollectionFactory(owner=UserFactory(), name="tiny")
    make_captioned(collection)
    return collection


TINY = {"loop": {"epochs": 1, "batch_size": 4}}


def test_non_staff_users_cannot_retrain_or_switch_models(api, user, captioned):
    for method, path in (("get", "/api/v1/training-runs/"), ("post", "/api/v1/training-runs/"),
                         ("get", "/api/v1/models/"), ("post", "/api/v1/models/1/promote/"),
                         ("post", "/api/v1/models/1/rollback/")):
        resp = getattr(api, method)(path, {"kind": "embedding", "collections": ["tiny"], "config": TINY}, format="json")
        assert resp.status_code == 403, (path, resp.status_code)
        assert resp.json()["error"]["code"] == "permission_denied"
    browser = Client()
    browser.force_login(user)
    resp = browser.post("/admin/training/trainingrun/retrain/", {"collections": [captioned.pk]})
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]  # the admin sends non-staff to log in
    assert TrainingRun.objects.count() == 0


def test_retrain_clicked_twice_starts_one_run_and_the_second_gets_409_already_running(staff, captioned):
    client = _client(staff)
    first = client.post("/api/v1/training-runs/", {"kind": "embedding", "collections": ["tiny"], "config": TINY},
                        format="json")
    assert first.status_code == 202, first.content
    second = client.post("/api/v1/training-runs/", {"kind": "embedding", "collections": ["tiny"], "config": TINY},
                         format="json")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "already_running" and "already" in second.json()["error"]["message"]
    # The admin's Retrain button says the same in a message and starts nothing either.
    browser = Client()
    browser.force_login(staff)
    form = RetrainForm(kind="embedding")
    data = {name: field.initial for name, field in form.fields.items()
            if field.initial is not None and field.initial is not False}
    page = browser.post("/admin/training/trainingrun/retrain/?kind=embedding",
                        {**data, "collections": [captioned.pk], "loop__batch_size": 4}, follow=True)
    assert "already running" in page.content.decode(), page.context["form"].errors
    assert TrainingRun.objects.filter(kind="embedding").count() == 1


@pytest.mark.parametrize("path,data", [
    ("/api/v1/collections/", {"name": "csrf"}),
    ("/api/v1/training-runs/", {"kind": "embedding", "collections": ["tiny"]}),
    ("/admin/training/trainingrun/retrain/", {"collections": ["1"]}),
    ("/accounts/logout/", {}),
])
def test_session_posts_without_a_csrf_token_are_403(staff, captioned, path, data):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)
    resp = browser.post(path, data)
    assert resp.status_code == 403, (path, resp.status_code)
    assert TrainingRun.objects.count() == 0 and not Collection.objects.filter(name="csrf").exists()


def test_csrf_token_from_the_page_makes_the_same_session_post_work(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get("/upload/")
    token = browser.cookies["csrftoken"].value
    resp = browser.post("/api/v1/collections/", {"name": "ok"}, HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == 201, resp.content


# --- case 14: rate limits ---------------------------------------------------------------------
@pytest.fixture
def low_rates(settings, monkeypatch):
    """Search 4/min, uploads 2/min (DRF reads rates into a class attribute at import)."""
    from rest_framework.throttling import ScopedRateThrottle

    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "search": "4/min", "uploads": "2/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)
    return rates


def _assert_throttled(resp):
    assert resp.status_code == 429, resp.content
    assert int(resp["Retry-After"]) > 0
    assert resp.json()["error"]["code"] == "throttled"


def test_upload_burst_gets_429_with_retry_after_and_stores_nothing_more(api, collection, low_rates):
    assert [_upload(api, seed=s).status_code for s in range(2)] == [201, 201]
    _assert_throttled(_upload(api, seed=2))
    assert Image.objects.count() == 2
    assert api.get("/api/v1/images/").status_code == 200  # reads are not counted as uploads


def test_search_burst_gets_429_with_retry_after(api, anon_api, low_rates):
    codes = [api.get("/api/v1/search/", {"q": "dog"}).status_code for _ in range(4)]
    assert 429 not in codes
    _assert_throttled(api.get("/api/v1/search/", {"q": "dog"}))
    _assert_throttled(api.get("/api/v1/images/1/labels/"))  # the other search endpoints share the budget
    assert anon_api.get("/api/v1/search/", {"q": "dog"}).status_code != 429  # counted per client


def test_upload_rate_is_tighter_than_the_search_rate_by_default():
    from django.conf import settings
    from rest_framework.throttling import SimpleRateThrottle

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    def per_second(rate: str) -> float:
        n, seconds = SimpleRateThrottle.parse_rate(None, rate)  # (requests, seconds); needs no instance
        return n / seconds

    assert per_second(rates["uploads"]) < per_second(rates["search"])


def test_admin_login_brute_force_is_locked_out_even_for_the_right_password(settings):
    """django-axes: after AXES_FAILURE_LIMIT wrong passwords for (username, IP) the right one
    is refused too, with 429, and the attempts are recorded."""
    from axes.models import AccessAttempt

    UserFactory(username="boss", is_staff=True, is_superuser=True, password="right-password")
    browser = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        resp = browser.post("/admin/login/?next=/admin/", {"username": "boss", "password": "wrong"})
        assert resp.status_code in (200, 429)
    locked = browser.post("/admin/login/?next=/admin/", {"username": "boss", "password": "right-password"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in browser.session
    assert AccessAttempt.objects.get(username="boss").failures_since_start >= settings.AXES_FAILURE_LIMIT
    # Another account from the same address is not locked out (the lock is per username and IP).
    UserFactory(username="clerk", is_staff=True, password="clerk-password")
    ok = Client().post("/admin/login/?next=/admin/", {"username": "clerk", "password": "clerk-password"})
    assert ok.status_code == 302
