"""Follow-up work runs in a real Celery worker process (Redis broker), enqueued after commit."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from embeddings.models import Image
from tests import images as mk
from tests.conftest import wait_for
from tests.factories import CollectionFactory, UserFactory, make_image

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_upload_is_processed_by_a_real_worker(celery_worker_proc):
    user = UserFactory()
    CollectionFactory(owner=user, name="mine")
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    resp = client.post("/api/v1/images/", {"file": SimpleUploadedFile("a.jpg", mk.image_bytes()), "collection": "mine"},
                       format="multipart")
    assert resp.status_code == 201
    image_id = resp.json()["id"]
    wait_for(lambda: Image.objects.get(pk=image_id).status == Image.Status.READY, timeout=60)
    assert Image.objects.get(pk=image_id).attempts == 1


def test_task_enqueued_in_a_rolled_back_transaction_never_runs(celery_worker_proc, purge_broker):
    collection = CollectionFactory(owner=UserFactory(), name="c")
    try:
        with transaction.atomic():
            image = make_image(collection, seed=1, enqueue=True)
            image_id = image.pk
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert not Image.objects.filter(pk=image_id).exists()
    assert purge_broker.llen("default") == 0  # nothing was published

# Broker down during upload (issue 7, case 19): tests/reliability/test_broker_outage.py.
