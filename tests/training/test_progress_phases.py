"""Progress from the first second (issue 15, item 6): feature preparation and scoring the active
version report counts, rate and ETA in the run's row, the admin page and the API, before any epoch."""
import threading

import pytest
from rest_framework.test import APIClient

from training import services
from training.models import TrainingRun
from training.services import fitting
from tests.factories import UserFactory
from tests.training.conftest import TINY_EMBEDDING

pytestmark = pytest.mark.django_db(transaction=True)


def test_phase_progress_reports_rate_and_eta_from_its_first_call(monkeypatch):
    events = []
    clock = iter([100.0, 100.0, 110.0, 120.0])
    monkeypatch.setattr(fitting.time, "monotonic", lambda: next(clock))
    report = fitting.phase_progress(lambda name, p: events.append((name, p)))("train image features")
    report(200, 1000)  # 200 were cached: they do not count towards the rate
    report(300, 1000)
    report(1000, 1000)
    assert [e[0] for e in events] == ["prepare"] * 3
    first, mid, last = (p for _, p in events)
    assert (first["done"], first["rate"], first["eta_s"]) == (200, None, None)
    assert (mid["rate"], mid["eta_s"]) == (10.0, 70.0)
    assert last["eta_s"] == 0.0


def test_a_run_shows_its_feature_preparation_while_it_happens(tiny_collection, fake_encoders, monkeypatch, conse_v0):
    """The run's row (and so the admin page and the API) names the phase with counts while the
    image features are being prepared, before the first epoch."""
    from tests.training import fakes

    inside, release = threading.Event(), threading.Event()
    original = fakes.FakeEncoders.image_features

    def slow(self, image_ids, fields, progress=None):
        if progress is not None:
            progress(0, len(image_ids))
        inside.set()
        release.wait(30)
        return original(self, image_ids, fields, progress)

    monkeypatch.setattr(fakes.FakeEncoders, "image_features", slow)
    run = services.training_run_start(kind="embedding", collections=[tiny_collection],
                                      config_overrides=TINY_EMBEDDING, user=None, enqueue=False)
    def execute() -> None:
        from django.db import connection

        try:
            services.training_run_execute(run.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=execute)
    worker.start()
    try:
        assert inside.wait(30)
        row = TrainingRun.objects.get(pk=run.pk)
        assert row.status == "running" and row.last_event["phase"]["phase"] == "train image features"
        assert row.last_event["phase"]["done"] == 0 and row.last_event["phase"]["total"] > 0
        assert "train image features: 0 of" in row.log_tail
        staff = APIClient()
        staff.force_authenticate(UserFactory(is_staff=True))
        progress = staff.get(f"/api/v1/training-runs/{run.pk}/").json()["progress"]
        assert progress["phase"]["phase"] == "train image features"
        from django.test import Client

        admin = Client()
        admin.force_login(UserFactory(is_staff=True, is_superuser=True))
        live = admin.get(f"/admin/training/trainingrun/{run.pk}/live/").content.decode()
        assert "Preparing: <strong>train image features</strong>" in live
    finally:
        release.set()
        worker.join(60)
    done = TrainingRun.objects.get(pk=run.pk)
    assert done.status == "succeeded", done.error
    assert "train image features: all" in done.log_tail and "dev caption vectors" in done.log_tail
    assert "scoring the active version" in done.log_tail
    assert staff.get(f"/api/v1/training-runs/{run.pk}/").json()["progress"]["phase"] is None


def test_a_switch_reports_its_rate_and_eta_in_the_api_and_the_admin(conse_v0):
    from datetime import timedelta

    from django.test import Client
    from django.utils import timezone

    from training.models import ModelSwitch
    from training.selectors import switch_progress
    from tests.factories import ModelVersionFactory

    target = ModelVersionFactory(directory="x")
    switch = ModelSwitch.objects.create(kind="embedding", version=target, status="encoding", total=1000, done=250)
    ModelSwitch.objects.filter(pk=switch.pk).update(created_at=timezone.now() - timedelta(seconds=50))
    switch.refresh_from_db()
    p = switch_progress(switch, now=switch.created_at + timedelta(seconds=50))
    assert (p["done"], p["total"], round(p["rate"], 1), round(p["eta_s"])) == (250, 1000, 5.0, 150)  # 250 in 50 s
    staff = APIClient()
    staff.force_authenticate(UserFactory(is_staff=True))
    body = staff.get(f"/api/v1/model-switches/{switch.pk}/").json()
    assert body["progress"]["total"] == 1000 and body["progress"]["rate"] > 0 and body["progress"]["eta_s"] > 0
    admin = Client()
    admin.force_login(UserFactory(is_staff=True, is_superuser=True))
    listing = admin.get("/admin/embeddings/modelversion/").content.decode()
    assert "250/1000" in listing and "images/s" in listing and "ETA" in listing
    ModelSwitch.objects.filter(pk=switch.pk).update(status="succeeded", done=1000)
    switch.refresh_from_db()
    assert switch_progress(switch)["eta_s"] is None
