"""The per-request fast path of the search service: hidden ids instead of visible ids, the
deleted-ids log, the query-vector cache, and the caches keyed by the served index.

Every cache here must follow privacy changes, new model versions and index swaps at once.
"""
from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth.models import AnonymousUser

from embeddings import encoding, runtime
from embeddings.models import Caption, Collection, Image, ModelVersion
from search import selectors
from search.models import RemovedItem
from search.selectors import SearchFilters
from search.services import QueryTerm, index_apply, index_for_search, index_rebuild, search_captions, search_images
from search.services import queries as q
from tests.factories import CollectionFactory
from tests.search.conftest import DIM, FakeEmbedder, colour_jpeg, ingest, store_vector, unit

pytestmark = pytest.mark.django_db


def _images(collection, version, n, seed=0):
    rng = np.random.default_rng(seed)
    vectors = unit(rng.standard_normal((n, DIM)))
    images = [ingest(collection, colour_jpeg(((seed * 53) % 256, i % 256, 90), (40 + i % 50, 40 + i // 50)))
              for i in range(n)]
    for img, vec in zip(images, vectors):
        store_vector(img, version, vec)
    return images


def _ids(page):
    return {h.image.pk for h in page.results}


def _red(user, **kw):
    return search_images(user=user, terms=[QueryTerm(text="red")], k=50, **kw)


@pytest.fixture(autouse=True)
def _fresh_text_cache(settings):
    settings.SEARCH_QUERY_CACHE_SIZE = 16
    q.text_cache().clear()
    yield
    q.text_cache().clear()


# --- hidden ids: fresh on every request ----------------------------------------------------------
def test_unfiltered_search_reads_no_visible_id_list(fake_version, collection, other_user, monkeypatch):
    public = CollectionFactory(owner=other_user, name="open", is_public=True)
    shown = _images(public, fake_version, 5, seed=1)
    index_rebuild(version=fake_version, modality="image")
    monkeypatch.setattr(selectors, "searchable_image_ids", lambda **kw: pytest.fail("read every visible id"))
    page = _red(AnonymousUser())
    assert _ids(page) == {i.pk for i in shown} and page.count == 5


def test_a_collection_turning_private_hides_its_images_and_counts_at_once(fake_version, collection, other_user):
    public = CollectionFactory(owner=other_user, name="was-open", is_public=True)
    theirs = _images(public, fake_version, 4, seed=1)
    mine = _images(collection, fake_version, 3, seed=2)
    index_rebuild(version=fake_version, modality="image")
    me = collection.owner
    assert _red(me).count == 7 and _red(AnonymousUser()).count == 4
    Collection.objects.filter(pk=public.pk).update(is_public=False)  # no signal, no save(): still seen
    page = _red(me)
    assert _ids(page) == {i.pk for i in mine} and page.count == 3
    anon = _red(AnonymousUser())
    assert anon.count == 0 and anon.results == []
    assert _ids(_red(other_user)) == {i.pk for i in theirs}


def test_an_image_moved_into_a_private_collection_is_hidden_at_once(fake_version, collection, other_user):
    public = CollectionFactory(owner=other_user, name="open", is_public=True)
    private = CollectionFactory(owner=other_user, name="closed")
    images = _images(public, fake_version, 4, seed=3)
    index_rebuild(version=fake_version, modality="image")
    assert _red(collection.owner).count == 4
    Image.objects.filter(pk=images[0].pk).update(collection=private)  # e.g. an admin edit
    page = _red(collection.owner)
    assert images[0].pk not in _ids(page) and page.count == 3
    # a narrowing filter (cached id list) still never shows it: privacy is re-applied per request
    narrowed = _red(collection.owner, filters=SearchFilters(collections=("open",)))
    assert images[0].pk not in _ids(narrowed) and narrowed.count == 3


def test_staff_see_every_collection_without_a_hidden_list(fake_version, collection, other_user, staff):
    _images(CollectionFactory(owner=other_user, name="closed"), fake_version, 3, seed=4)
    _images(collection, fake_version, 2, seed=5)
    index_rebuild(version=fake_version, modality="image")
    assert len(selectors.search_context(user=staff, model_version_id=fake_version.pk, modality="image")[1]) == 0
    assert _red(staff).count == 5


def test_captions_of_private_images_stay_hidden_on_the_unfiltered_path(fake_version, collection, other_user):
    secret = CollectionFactory(owner=other_user, name="secret")
    for img in _images(secret, fake_version, 3, seed=6):
        Caption.objects.create(image=img, text="red secret thing")
    for img in _images(collection, fake_version, 2, seed=7):
        Caption.objects.create(image=img, text="red plain thing")
    encoding.captions_encode(captions=list(Caption.objects.all()), version=fake_version, notify=False)
    index_rebuild(version=fake_version, modality="caption")
    page = search_captions(user=collection.owner, terms=[QueryTerm(text="red secret thing")], k=50)
    assert page.count == 2 and {h.caption.text for h in page.results} == {"red plain thing"}
    assert search_captions(user=other_user, terms=[QueryTerm(text="red")], k=50).count == 3


# --- deleted ids: logged by a database trigger in the deleting transaction ------------------------
def test_deleting_images_logs_them_per_index_and_an_index_write_forgets_them(fake_version, collection):
    images = _images(collection, fake_version, 5, seed=8)
    index_rebuild(version=fake_version, modality="image")
    Image.objects.filter(pk__in=[images[0].pk, images[1].pk]).delete()  # one bulk statement
    assert sorted(RemovedItem.objects.filter(model_version=fake_version, modality="image")
                  .values_list("item_id", flat=True)) == sorted([images[0].pk, images[1].pk])
    page = _red(collection.owner)
    assert page.count == 3 and _ids(page) == {i.pk for i in images[2:]}
    index_apply(version_id=fake_version.pk, modality="image", ids=[images[0].pk, images[1].pk])
    assert not RemovedItem.objects.filter(model_version=fake_version).exists()
    assert _red(collection.owner).count == 3


def test_search_context_joins_hidden_items_and_deleted_ids_in_one_read(fake_version, collection, other_user):
    secret = _images(CollectionFactory(owner=other_user, name="secret"), fake_version, 2, seed=13)
    mine = _images(collection, fake_version, 3, seed=14)
    index_rebuild(version=fake_version, modality="image")
    Image.objects.filter(pk=mine[0].pk).delete()
    got = selectors.search_context(user=collection.owner, model_version_id=fake_version.pk, modality="image")[1]
    assert got.tolist() == sorted([mine[0].pk] + [i.pk for i in secret])
    theirs = selectors.search_context(user=other_user, model_version_id=fake_version.pk, modality="image")[1]
    assert theirs.tolist() == sorted([mine[0].pk] + [i.pk for i in mine[1:]])


def test_no_index_record_no_log_rows(fake_version, collection):
    images = _images(collection, fake_version, 2, seed=9)
    Image.objects.filter(pk=images[0].pk).delete()
    assert not RemovedItem.objects.exists()


# --- caches keyed by the served index ------------------------------------------------------------
def test_index_ids_are_sorted_shared_and_renewed_after_a_write(fake_version, collection):
    images = _images(collection, fake_version, 6, seed=10)
    index_rebuild(version=fake_version, modality="image")
    index = index_for_search(version=fake_version, modality="image")
    first = index.ids()
    assert first.tolist() == sorted(i.pk for i in images) and index.ids() is first
    assert not first.flags.writeable
    index.remove(np.array([images[0].pk]))
    assert index.ids() is not first and images[0].pk not in index.ids()


def test_narrowed_search_follows_an_index_swap(fake_version, collection):
    filters = SearchFilters(collections=("mine",))
    images = _images(collection, fake_version, 3, seed=11)
    index_rebuild(version=fake_version, modality="image")
    assert _red(collection.owner, filters=filters).count == 3
    extra = ingest(collection, colour_jpeg((1, 2, 3)))
    store_vector(extra, fake_version, np.ones(DIM))
    index_rebuild(version=fake_version, modality="image")  # a new index object is published
    page = _red(collection.owner, filters=filters)
    assert page.count == 4 and extra.pk in _ids(page) and {i.pk for i in images} <= _ids(page)


# --- query-vector cache --------------------------------------------------------------------------
class CountingEmbedder(FakeEmbedder):
    def __init__(self, shift: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.shift = shift

    def encode_texts(self, texts):
        self.calls.append(list(texts))
        return unit(super().encode_texts(texts) + self.shift)


def test_repeated_query_text_is_encoded_once_per_version(fake_version, collection, monkeypatch):
    emb = CountingEmbedder()
    monkeypatch.setattr(runtime, "embedder_for", lambda v: emb)
    _images(collection, fake_version, 4, seed=12)
    index_rebuild(version=fake_version, modality="image")
    first = search_images(user=collection.owner, terms=[QueryTerm(text="red  dog")], k=4)
    again = search_images(user=collection.owner, terms=[QueryTerm(text="red dog")], k=4)  # same cleaned text
    assert emb.calls == [["red dog"]]
    assert [h.image.pk for h in first.results] == [h.image.pk for h in again.results]
    stats = q.text_cache().stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)
    search_images(user=collection.owner, terms=[QueryTerm(text="red dog"), QueryTerm(text="blue", weight=-0.5)], k=4)
    assert emb.calls == [["red dog"], ["blue"]]  # only the new text is encoded


def test_a_new_model_version_or_a_reloaded_model_never_gets_a_stale_vector(fake_version, collection, monkeypatch):
    old, new = CountingEmbedder(), CountingEmbedder(shift=0.3)
    current = {"emb": old}
    monkeypatch.setattr(runtime, "embedder_for", lambda v: current["emb"])
    cache = q.text_cache()
    v1 = q._text_vectors(fake_version, ["red"])[0]
    current["emb"] = new  # the same version's model object replaced (runtime.reset, reload)
    v2 = q._text_vectors(fake_version, ["red"])[0]
    assert len(new.calls) == 1 and not np.allclose(v1, v2)
    other = ModelVersion.objects.create(kind=ModelVersion.Kind.EMBEDDING, name="other", family="fake", dim=DIM)
    q._text_vectors(other, ["red"])  # another version: another key
    assert len(new.calls) == 2 and cache.stats()["hits"] == 0


def test_cache_is_a_bounded_lru_and_size_zero_turns_it_off(fake_version, settings, monkeypatch):
    emb = CountingEmbedder()
    monkeypatch.setattr(runtime, "embedder_for", lambda v: emb)
    settings.SEARCH_QUERY_CACHE_SIZE = 2
    for text in ("a", "b", "a", "c", "b"):  # "b" was evicted by "c" (least recently used)
        q._text_vectors(fake_version, [text])
    assert [c[0] for c in emb.calls] == ["a", "b", "c", "b"]
    assert q.text_cache().stats()["entries"] == 2
    cached = q._text_vectors(fake_version, ["b"])[0]
    with pytest.raises(ValueError):
        cached[0] = 1.0  # shared vectors are read-only
    settings.SEARCH_QUERY_CACHE_SIZE = 0
    emb.calls.clear()
    q._text_vectors(fake_version, ["a"])
    q._text_vectors(fake_version, ["a"])
    assert emb.calls == [["a"], ["a"]]


# --- encode batching across request threads ------------------------------------------------------
class GatedEmbedder(CountingEmbedder):
    """Holds its first encode until released, so the other threads' queries queue behind it."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.gate, self.started = threading.Event(), threading.Event()

    def encode_texts(self, texts):
        if not self.calls:
            self.started.set()
            self.gate.wait(10)
        return super().encode_texts(texts)


@pytest.mark.django_db(transaction=True)
def test_concurrent_searches_encode_in_one_batch_and_get_their_own_results(fake_version, collection, monkeypatch,
                                                                          settings):
    import threading
    import time

    from django.db import connection

    settings.SEARCH_ENCODE_BATCH = 16
    emb = GatedEmbedder()
    monkeypatch.setattr(runtime, "embedder_for", lambda v: emb)
    _images(collection, fake_version, 30, seed=14)
    index_rebuild(version=fake_version, modality="image")
    texts = ["red", "green dog", "blue sky", "red car", "green", "blue"]
    user = collection.owner
    got: dict[str, list[int]] = {}

    def search(text):
        try:
            got[text] = [h.image.pk for h in search_images(user=user, terms=[QueryTerm(text=text)], k=5).results]
        finally:
            connection.close()  # each thread has its own database connection

    first = threading.Thread(target=search, args=(texts[0],))
    first.start()
    assert emb.started.wait(10)
    rest = [threading.Thread(target=search, args=(t,)) for t in texts[1:]]
    for t in rest:
        t.start()
    batcher = q._batchers[fake_version.pk][1]
    deadline = time.monotonic() + 10
    while len(batcher._queue) < len(rest) and time.monotonic() < deadline:
        time.sleep(0.005)
    emb.gate.set()
    for t in [first, *rest]:
        t.join(10)
    assert sorted(map(sorted, emb.calls)) == sorted([[texts[0]], sorted(texts[1:])])  # 6 searches, 2 encodes
    settings.SEARCH_ENCODE_BATCH = 0  # the same searches one by one, unbatched
    q.text_cache().clear()
    for text in texts:
        assert got[text] == [h.image.pk for h in search_images(user=user, terms=[QueryTerm(text=text)], k=5).results]
