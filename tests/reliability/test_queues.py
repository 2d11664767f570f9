"""Queues that never starve (issue 15): real workers laid out as `make run` lays them out, one on
`default` (uploads' processing, index updates) and one on `gpu,bulk` (imports, long jobs)."""
from __future__ import annotations

import io
import time

import pytest

from embeddings.models import Image, ImageEmbedding
from embeddings.services import image_ingest
from embeddings.services.importing import dataset_import
from embeddings.ingest.readers import ImportItem
from search.models import SearchIndex
from tests import images as mk
from tests.conftest import wait_for
from tests.factories import CollectionFactory, UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_an_upload_is_processed_and_indexed_while_a_bulk_import_is_still_encoding(
        fault_worker, worker_fake_version, tmp_path):
    env = {"LOUPE_TEST_FAKE_ENCODER": 1, "LOUPE_TEST_SLOW_NAME": "imported-", "LOUPE_TEST_SLOW_SECONDS": 60}
    fault_worker(queues="default", **env)
    long_worker = fault_worker(queues="gpu,bulk", **env)
    collection = CollectionFactory(owner=UserFactory())
    folder = tmp_path / "import"
    folder.mkdir()
    items = []
    for i in range(3):
        path = folder / f"imported-{i}.jpg"
        path.write_bytes(mk.unique_jpeg(100 + i))
        items.append(ImportItem(path=path, name=path.name))
    dataset_import(items=items, collection=collection)  # one bulk task, asleep for 60 s in the long worker
    imported = list(Image.objects.filter(collection=collection).values_list("pk", flat=True))
    wait_for(lambda: "process_images" in long_worker.output() and "received" in long_worker.output(), timeout=60)

    started = time.monotonic()
    upload = image_ingest(collection=collection, stream=io.BytesIO(mk.unique_jpeg(7)), filename="upload.jpg",
                          user=collection.owner).image  # default queue
    wait_for(lambda: Image.objects.get(pk=upload.pk).status == Image.Status.READY, timeout=30, interval=0.2)
    wait_for(lambda: SearchIndex.objects.filter(model_version=worker_fake_version, modality="image",
                                                count__gte=1).exists(), timeout=30, interval=0.2)
    took = time.monotonic() - started
    assert ImageEmbedding.objects.filter(image=upload).exists()
    # the import is still being encoded: the upload did not wait behind it
    assert set(Image.objects.filter(pk__in=imported).values_list("status", flat=True)) != {Image.Status.READY}
    assert took < 30
