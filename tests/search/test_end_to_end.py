"""End to end with the REAL ConSE model and a real Celery worker process:
upload -> worker encodes (EfficientNet-Lite0 + MiniLM) -> vectors_stored -> index_add task ->
index file -> the web process loads it -> text search finds the image; delete -> removed.

With the Flickr8k folder present the images are real photos (a dog and a mountain scene) and
the ranking is checked too; without it, synthetic images check the pipeline alone.
"""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from embeddings.models import Image, ImageEmbedding
from search.models import SearchIndex
from tests.conftest import FLICKR8K, wait_for
from tests.factories import CollectionFactory, UserFactory
from tests.search.conftest import colour_jpeg

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _flickr_pair() -> list[tuple[bytes, str]] | None:
    """(bytes, name) of one photo all of whose captions mention a dog and one of a mountain."""
    token = FLICKR8K / "Flickr8k.token.txt"
    if not token.is_file():
        return None
    captions: dict[str, list[str]] = {}
    for line in token.read_text().splitlines():
        name, _, text = line.partition("\t")
        captions.setdefault(name.split("#")[0], []).append(f" {text.lower()} ")
    dev = (FLICKR8K / "Flickr_8k.devImages.txt").read_text().split()
    dog = next(n for n in dev if all(" dog " in c for c in captions.get(n, [""])))
    mountain = next(n for n in dev if all(" mountain" in c and " dog" not in c for c in captions.get(n, [""])))
    return [((FLICKR8K / "images" / n).read_bytes(), n) for n in (dog, mountain)]


def test_upload_is_encoded_by_the_worker_indexed_and_found_by_text_search(conse_v0, celery_worker_proc):
    conse = conse_v0
    assert conse.family == "conse"
    user = UserFactory()
    CollectionFactory(owner=user, name="mine")
    client = APIClient()
    client.force_authenticate(user)
    real = _flickr_pair()
    photos = real or [(colour_jpeg((200, 40, 40), (224, 224)), "red.jpg"),
                                (colour_jpeg((40, 40, 200), (224, 224)), "blue.jpg")]
    ids = []
    for data, name in photos:
        resp = client.post("/api/v1/images/", {"file": SimpleUploadedFile(name, data), "collection": "mine"},
                           format="multipart")
        assert resp.status_code == 201, resp.content
        ids.append(resp.json()["id"])
    log = celery_worker_proc.output
    try:
        wait_for(lambda: set(Image.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"ready"},
                 timeout=300)
    except AssertionError:
        raise AssertionError(f"images not processed; worker log:\n{log()[-4000:]}") from None
    assert ImageEmbedding.objects.filter(image_id__in=ids, model_version=conse).count() == 2, log()[-4000:]
    wait_for(lambda: SearchIndex.objects.filter(model_version=conse, modality="image", count=2).exists(), timeout=120)

    resp = client.get("/api/v1/search/", {"q": "a dog running on the grass", "k": 5})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["model_version"] == conse.pk and body["count"] == 2
    assert sorted(r["image_id"] for r in body["results"]) == sorted(ids)
    assert all(-1.0 <= r["score"] <= 1.0 for r in body["results"])
    if real:
        assert body["results"][0]["image_id"] == ids[0], body  # the dog photo ranks first
        mountain = client.get("/api/v1/search/", {"q": "a snowy mountain", "k": 1}).json()
        assert mountain["results"][0]["image_id"] == ids[1], mountain

    assert client.delete(f"/api/v1/images/{ids[0]}/").status_code == 204
    wait_for(lambda: SearchIndex.objects.filter(model_version=conse, modality="image", count=1).exists(), timeout=120)
    after = client.get("/api/v1/search/", {"q": "a dog running on the grass"}).json()
    assert [r["image_id"] for r in after["results"]] == [ids[1]] and after["count"] == 1
