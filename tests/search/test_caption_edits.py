"""Caption edits and their vectors: the stored vector is always the encoding of the stored text.

Issue 19, finding 2: after 20 parallel PATCHes to one caption its text was edit #2 but its
vector edit #3, so a search for one text returned the caption of another with score 1.0.
"""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from django.db import connection
from rest_framework.test import APIClient

from embeddings import encoding, runtime
from embeddings.models import Caption, CaptionEmbedding
from embeddings.services.captions import caption_accept
from search.services import index_for_search, index_rebuild
from tests.search.conftest import FakeEmbedder, colour_jpeg, ingest


def _stored_vector(caption: Caption, version) -> np.ndarray:
    row = CaptionEmbedding.objects.get(caption=caption, model_version=version)
    return np.frombuffer(bytes(row.vector), dtype="<f4")


def _assert_in_step(caption: Caption, version) -> None:
    caption.refresh_from_db()
    expected = FakeEmbedder().encode_texts([caption.text])[0]
    assert np.allclose(_stored_vector(caption, version), expected, atol=1e-6), caption.text


@pytest.mark.django_db
def test_an_edit_committed_while_an_older_edit_encodes_keeps_text_and_vector_in_step(fake_version, collection,
                                                                                      monkeypatch):
    img = ingest(collection, colour_jpeg((255, 0, 0)), caption="red")
    encoding.images_encode(image_ids=[img.pk], version=fake_version)
    caption = Caption.objects.get(image=img)
    embedder = runtime.embedder_for(fake_version)
    plain = embedder.encode_texts
    raced = []

    def encode_while_another_edit_lands(texts):
        vectors = plain(texts)  # edit 1 ("green") has been saved and encoded, not yet stored...
        if texts == ["green"] and not raced:
            raced.append(True)  # ...when edit 2 saves, encodes and stores "blue" in full
            caption_accept(user=collection.owner, caption_id=caption.pk, text="blue")
        return vectors

    monkeypatch.setattr(embedder, "encode_texts", encode_while_another_edit_lands)
    caption_accept(user=collection.owner, caption_id=caption.pk, text="green")
    assert raced
    caption.refresh_from_db()
    assert caption.text == "blue"
    _assert_in_step(caption, fake_version)  # edit 1's "green" vector was discarded as stale
    # and the index (rebuilt from the stored vectors) finds it by its own text only
    index_rebuild(version=fake_version, modality="caption")
    index = index_for_search(version=fake_version, modality="caption")
    hit = index.search(plain(["blue"]), 1)[0]
    assert hit.ids.tolist() == [caption.pk] and hit.scores[0] > 0.99
    assert index.search(plain(["green"]), 1)[0].scores[0] < 0.99


@pytest.mark.django_db
def test_a_caption_deleted_while_it_encodes_is_skipped_not_an_error(fake_version, collection, monkeypatch):
    img = ingest(collection, colour_jpeg((255, 0, 0)), caption="red")
    caption = Caption.objects.get(image=img)
    embedder = runtime.embedder_for(fake_version)
    plain = embedder.encode_texts

    def encode_then_delete(texts):
        vectors = plain(texts)
        Caption.objects.filter(pk=caption.pk).delete()
        return vectors

    monkeypatch.setattr(embedder, "encode_texts", encode_then_delete)
    assert encoding.captions_encode(captions=[caption], version=fake_version) == []
    assert not CaptionEmbedding.objects.filter(caption_id=caption.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_patches_leave_the_vector_of_the_text_that_was_stored(fake_version, collection, user,
                                                                               monkeypatch):
    """Real PostgreSQL, one connection per thread, encodes of random length so commits interleave."""
    img = ingest(collection, colour_jpeg((255, 0, 0)), caption="red")
    encoding.images_encode(image_ids=[img.pk], version=fake_version)
    caption = Caption.objects.get(image=img)
    embedder = runtime.embedder_for(fake_version)
    plain = embedder.encode_texts
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.4) for _ in range(20)]  # longer than the saves take to interleave

    def slow_encode(texts):
        if texts and texts[0].startswith("edit"):
            time.sleep(delays[int(texts[0].split()[1])])
        return plain(texts)

    monkeypatch.setattr(embedder, "encode_texts", slow_encode)
    words = ["red", "green", "blue", "car", "sea", "tree", "dog", "cat", "sky", "sun"]
    start = threading.Barrier(20)
    statuses: list[int] = []

    def patch(i: int) -> None:
        client = APIClient()
        client.force_authenticate(user)
        try:
            start.wait()
            resp = client.patch(f"/api/v1/captions/{caption.pk}/", {"text": f"edit {i} {words[i % 10]}"},
                                format="json")
            statuses.append(resp.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 20
    _assert_in_step(caption, fake_version)
