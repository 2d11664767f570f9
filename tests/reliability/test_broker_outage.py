"""Broker down during an upload (issue 7, case 19).

Redis on this machine is shared with other test runs, so it is never stopped here: the web
process is pointed at a port where nothing listens for the upload, then back at the live broker.
"""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from embeddings.models import Image
from embeddings.tasks import sweep_pending
from tests import images as mk
from tests.conftest import wait_for
from tests.factories import CollectionFactory, UserFactory
from tests.reliability.conftest import broker_url, step_runs

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once


def test_upload_with_the_broker_down_is_saved_pending_and_the_sweeper_enqueues_it_once_back(
        fault_worker, fault_dir, no_active_models, live_broker):
    """The upload answers 201 within seconds with status "pending" (publishing fails fast and is
    not retried in the request). Once the broker is back, the periodic `sweep_pending` task
    (sent through the broker, as beat does) finds the pending image and it gets processed."""
    user = UserFactory()
    CollectionFactory(owner=user, name="mine")
    client = APIClient()
    client.force_authenticate(user)
    with broker_url(DEAD_BROKER):
        started = time.monotonic()
        resp = client.post("/api/v1/images/", {"file": SimpleUploadedFile("a.jpg", mk.unique_jpeg(5)),
                                               "collection": "mine"}, format="multipart")
        elapsed = time.monotonic() - started
    assert resp.status_code == 201, resp.content
    assert elapsed < 10, f"upload took {elapsed:.1f}s with the broker down"
    image_id = resp.json()["id"]
    assert resp.json()["status"] == "pending"
    assert live_broker.llen("default") == 0  # nothing reached the live broker either

    fault_worker()  # the broker is back and a worker listens; still nothing happens on its own
    time.sleep(1)
    assert Image.objects.get(pk=image_id).status == Image.Status.PENDING and not step_runs(fault_dir)
    # The sweeper skips images younger than 30 s (they may still be in flight): age this one.
    Image.objects.filter(pk=image_id).update(created_at=timezone.now() - timedelta(minutes=2))
    sweep_pending.delay()
    wait_for(lambda: Image.objects.get(pk=image_id).status == Image.Status.READY, timeout=90, interval=0.3)
    assert Image.objects.get(pk=image_id).attempts == 1
    assert [ids for _, _, ids in step_runs(fault_dir)] == [[image_id]]
