"""The SearchIndex admin shows vector coverage and queues "reindex missing" (reliability case 22)."""
from __future__ import annotations

from django.test import Client
from django.urls import reverse

from embeddings import encoding
from search import tasks
from search.models import SearchIndex
from search.services import index_rebuild
from tests.search.conftest import colour_jpeg, ingest

CHANGELIST = "admin:search_searchindex_changelist"


def test_coverage_column_and_reindex_missing_action_bring_coverage_to_100(
        fake_version, collection, staff, published, django_capture_on_commit_callbacks):
    done = ingest(collection, colour_jpeg((255, 0, 0)), caption="red")
    encoding.images_encode(image_ids=[done.pk], version=fake_version)
    for i in range(3):
        ingest(collection, colour_jpeg((0, 0, 50 * i + 40)), caption=f"blue {i}")
    index_rebuild(version=fake_version, modality="image")
    client = Client()
    client.force_login(staff)

    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "Vector coverage" in page and "25.0% (1 of 4 images)" in page

    queued = published
    record = SearchIndex.objects.get(model_version=fake_version, modality="image")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse(CHANGELIST), {"action": "reindex_missing", "_selected_action": [record.pk]},
                               follow=True)
    assert response.status_code == 200 and "Reindex missing enqueued for 1 model version" in response.content.decode()
    assert queued == [("reindex_missing", (fake_version.pk,))]  # the version's id, published only after the commit

    tasks.reindex_missing(*queued[0][1])  # what the worker runs
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "100.0% (4 of 4 images)" in page


def test_coverage_of_a_version_with_nothing_to_cover_is_full(fake_version, staff):
    index_rebuild(version=fake_version, modality="caption")
    client = Client()
    client.force_login(staff)
    assert "100.0% (0 of 0 captions)" in client.get(reverse(CHANGELIST)).content.decode()


def test_non_staff_cannot_see_the_index_admin(fake_version, user):
    client = Client()
    client.force_login(user)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302 and "/login/" in response["Location"]
