"""The search service: every query mode against brute force, filters, privacy, pages, cutoff."""
from __future__ import annotations

import numpy as np
import pytest

from embeddings import encoding
from embeddings.models import Caption, CaptionEmbedding, ModelVersion
from project.exceptions import ApplicationError, NotFound
from search.selectors import SearchFilters
from search.services import (Cutoff, QueryTerm, image_duplicates, image_explain, image_labels, image_similar,
                             index_rebuild, search_captions, search_images)
from tests.factories import CollectionFactory
from tests.search.conftest import DIM, FakeEmbedder, colour_jpeg, ingest, store_vector, unit

pytestmark = pytest.mark.django_db
EMB = FakeEmbedder()


def _setup(collection, version, n, seed=0, **fields):
    rng = np.random.default_rng(seed)
    vectors = unit(rng.standard_normal((n, DIM)))
    # distinct sizes: distinct bytes, so ingest never de-duplicates two of them
    images = [ingest(collection, colour_jpeg(((seed * 53) % 256, i % 256, 90), (40 + i % 50, 40 + i // 50)), **fields)
              for i in range(n)]
    for img, vec in zip(images, vectors):
        store_vector(img, version, vec)
    return images, vectors


def _brute(images, vectors, q, n=None):
    q = unit(np.asarray(unit(q), dtype="<f2"))  # the service rounds query vectors like its page tokens
    scores = vectors @ q
    order = sorted(range(len(images)), key=lambda i: (-scores[i], images[i].pk))
    return [images[i].pk for i in order[:n]], scores


def _ids(page):
    return [h.image.pk for h in page.results]


def _text(q):
    return EMB.encode_texts([q])[0]


def _rebuild(version):
    for m in ("image", "caption"):
        index_rebuild(version=version, modality=m)


def test_text_to_image_matches_brute_force_with_scores(fake_version, collection):
    images, vectors = _setup(collection, fake_version, 40)
    _rebuild(fake_version)
    page = search_images(user=collection.owner, terms=[QueryTerm(text="green dog")], k=10)
    expected, scores = _brute(images, vectors, _text("green dog"), 10)
    assert _ids(page) == expected and page.count == 40 and page.model_version_id == fake_version.pk
    np.testing.assert_allclose([h.score for h in page.results], sorted(scores, reverse=True)[:10], atol=2e-3)


def test_image_to_image_by_id_and_similar_excludes_the_image_itself(fake_version, collection):
    images, vectors = _setup(collection, fake_version, 20)
    _rebuild(fake_version)
    page = search_images(user=collection.owner, terms=[QueryTerm(image_id=images[3].pk)], k=5)
    assert _ids(page) == _brute(images, vectors, vectors[3], 5)[0] and _ids(page)[0] == images[3].pk
    similar = image_similar(user=collection.owner, image_id=images[3].pk, k=5)
    assert _ids(similar) == _brute(images, vectors, vectors[3], 6)[0][1:] and similar.count == 19


def test_uploaded_image_query_finds_the_matching_colour_and_is_not_stored(fake_version, collection):
    red = ingest(collection, colour_jpeg((240, 20, 20)))
    blue = ingest(collection, colour_jpeg((20, 20, 240)))
    encoding.images_encode(image_ids=[red.pk, blue.pk], version=fake_version)
    _rebuild(fake_version)
    upload = QueryTerm(image_bytes=colour_jpeg((200, 40, 30), (99, 77)))
    page = search_images(user=collection.owner, terms=[upload], k=2)
    assert _ids(page) == [red.pk, blue.pk]
    assert collection.images.count() == 2


def test_uploaded_garbage_is_a_400_not_a_500(fake_version, collection):
    _setup(collection, fake_version, 2)
    _rebuild(fake_version)
    with pytest.raises(ApplicationError) as err:
        search_images(user=collection.owner, terms=[QueryTerm(image_bytes=b"<html>not an image")])
    assert err.value.status_code == 400


def _captioned(collection, version):
    texts = ["red car", "blue sea", "green tree", "red apple", "blue sky", "a dog"]
    images = [ingest(collection, colour_jpeg((i * 40, 0, 0)), caption=t) for i, t in enumerate(texts)]
    encoding.images_encode(image_ids=[i.pk for i in images], version=version)
    _rebuild(version)
    captions = list(Caption.objects.filter(image__in=images).order_by("pk"))
    vecs = np.stack([CaptionEmbedding.objects.get(caption=c, model_version=version).as_array() for c in captions])
    return images, captions, vecs


def test_text_to_text_and_image_to_text_match_brute_force(fake_version, collection):
    images, captions, vecs = _captioned(collection, fake_version)
    page = search_captions(user=collection.owner, terms=[QueryTerm(text="red")], k=3)
    expected = _brute(captions, vecs, _text("red"), 3)[0]
    assert [h.caption.pk for h in page.results] == expected
    assert {h.caption.text for h in page.results[:2]} == {"red car", "red apple"}
    img_vec = encoding.features_for([images[1].pk])
    q = EMB.encode_features(img_vec)[0]
    page = search_captions(user=collection.owner, terms=[QueryTerm(image_id=images[1].pk)], k=6)
    assert [h.caption.pk for h in page.results] == _brute(captions, vecs, q)[0]


def test_weighted_query_arithmetic_combines_unit_vectors_and_renormalises(fake_version, collection):
    images, vectors = _setup(collection, fake_version, 50, seed=3)
    _rebuild(fake_version)
    terms = [QueryTerm(text="red", weight=1.0), QueryTerm(image_id=images[7].pk, weight=-0.5),
             QueryTerm(text="green", weight=0.25)]
    page = search_images(user=collection.owner, terms=terms, k=15)
    q = unit(_text("red")) - 0.5 * unit(vectors[7]) + 0.25 * unit(_text("green"))
    assert _ids(page) == _brute(images, vectors, q, 15)[0]
    with pytest.raises(ApplicationError, match="cancel"):
        search_images(user=collection.owner, terms=[QueryTerm(text="red"), QueryTerm(text="red", weight=-1)])


def test_pagination_goes_well_beyond_100_without_repeats_or_gaps(fake_version, collection):
    images, vectors = _setup(collection, fake_version, 260, seed=9)
    _rebuild(fake_version)
    seen = []
    first = search_images(user=collection.owner, terms=[QueryTerm(text="blue boat")], k=100)
    seen += _ids(first)
    for page in (2, 3):
        seen += _ids(search_images(user=collection.owner, query_token=first.query_token, k=100, page=page))
    assert seen == _brute(images, vectors, _text("blue boat"))[0] and len(set(seen)) == 260
    assert search_images(user=collection.owner, query_token=first.query_token, k=100, page=4).results == []
    far = search_images(user=collection.owner, query_token=first.query_token, k=100, page=10**9)
    assert far.results == [] and far.count == 260


@pytest.mark.parametrize("k,page", [(0, 1), (101, 1), (10**9, 1), (10, 0), (10, -1)])
def test_out_of_range_k_or_page_is_a_400(fake_version, collection, k, page):
    with pytest.raises(ApplicationError) as err:
        search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=k, page=page)
    assert err.value.status_code == 400


@pytest.mark.parametrize("text", ["", "   ", "x" * 100_000, "a\x00b"])
def test_bad_query_text_is_a_400(fake_version, collection, text):
    with pytest.raises(ApplicationError) as err:
        search_images(user=collection.owner, terms=[QueryTerm(text=text)])
    assert err.value.status_code == 400


def test_filters_apply_inside_the_search_so_pages_stay_full(fake_version, collection, user):
    images, vectors = _setup(collection, fake_version, 30)
    other = CollectionFactory(owner=user, name="second")
    more, more_vecs = _setup(other, fake_version, 30, seed=4, split="dev")
    _rebuild(fake_version)
    q = _text("red")
    page = search_images(user=user, terms=[QueryTerm(text="red")], k=10, filters=SearchFilters(collections=("second",)))
    assert _ids(page) == _brute(more, more_vecs, q, 10)[0] and page.count == 30
    page = search_images(user=user, terms=[QueryTerm(text="red")], k=10, filters=SearchFilters(split="dev"))
    assert _ids(page) == _brute(more, more_vecs, q, 10)[0]
    both = search_images(user=user, terms=[QueryTerm(text="red")], k=60,
                         filters=SearchFilters(collections=("mine", "second")))
    assert both.count == 60
    owner = search_images(user=user, terms=[QueryTerm(text="red")], k=5, filters=SearchFilters(owner="nobody-here"))
    assert owner.count == 0 and owner.results == []


def test_has_human_caption_and_keyword_filter(fake_version, collection):
    images, _, _ = _captioned(collection, fake_version)
    bare = ingest(collection, colour_jpeg((1, 99, 1)))
    encoding.images_encode(image_ids=[bare.pk], version=fake_version)
    _rebuild(fake_version)
    user = collection.owner
    without = search_images(user=user, terms=[QueryTerm(text="red")], filters=SearchFilters(has_human_caption=False))
    assert _ids(without) == [bare.pk]
    withc = search_images(user=user, terms=[QueryTerm(text="red")], filters=SearchFilters(has_human_caption=True))
    assert withc.count == 6
    kw = search_images(user=user, terms=[QueryTerm(text="tree")], filters=SearchFilters(keyword="RED"))
    assert set(_ids(kw)) == {images[0].pk, images[3].pk} and kw.count == 2


def test_keyword_boost_merges_both_groups_exactly(fake_version, collection):
    images, captions, _ = _captioned(collection, fake_version)
    user = collection.owner
    filters = SearchFilters(keyword="blue", keyword_mode="boost", keyword_boost=0.5)
    page = search_images(user=user, terms=[QueryTerm(text="red")], k=3, filters=filters)
    plain = search_images(user=user, terms=[QueryTerm(text="red")], k=6)
    boosted = {images[1].pk, images[4].pk}
    expected = sorted(((h.score + (0.5 if h.image.pk in boosted else 0.0), h.image.pk) for h in plain.results),
                      key=lambda t: (-t[0], t[1]))
    assert _ids(page) == [pk for _, pk in expected[:3]] and page.count == 6
    assert [h.keyword_match for h in page.results] == [pk in boosted for _, pk in expected[:3]]
    page2 = search_images(user=user, query_token=page.query_token, k=3, page=2, filters=filters)
    assert _ids(page2) == [pk for _, pk in expected[3:]]


def test_private_images_never_leak_ids_counts_or_existence(fake_version, collection, other_user):
    theirs = CollectionFactory(owner=other_user, name="secret")
    hidden, _ = _setup(theirs, fake_version, 8, seed=2)
    for img in hidden:
        Caption.objects.create(image=img, text="red secret thing")
    mine, _ = _setup(collection, fake_version, 4)
    encoding.captions_encode(captions=list(Caption.objects.all()), version=fake_version, notify=False)
    _rebuild(fake_version)
    me = collection.owner
    page = search_images(user=me, terms=[QueryTerm(text="red")], k=50)
    assert set(_ids(page)) == {i.pk for i in mine} and page.count == 4
    caps = search_captions(user=me, terms=[QueryTerm(text="red secret thing")], k=50)
    assert caps.count == 0 and caps.results == []
    messages = []
    for pk in (hidden[0].pk, 10**9):  # private and non-existent look the same
        with pytest.raises(ApplicationError) as err:
            search_images(user=me, terms=[QueryTerm(image_id=pk)])
        messages.append(err.value.message.replace(str(pk), "N"))
    assert messages[0] == messages[1]
    for name in ("secret", "no-such-collection"):
        with pytest.raises(ApplicationError, match="No such collection"):
            search_images(user=me, terms=[QueryTerm(text="red")], filters=SearchFilters(collections=(name,)))
    with pytest.raises(NotFound):
        image_labels(user=me, image_id=hidden[0].pk)
    theirs_page = search_images(user=other_user, terms=[QueryTerm(text="red")], k=50)
    assert set(_ids(theirs_page)) == {i.pk for i in hidden}


def test_public_collections_are_searchable_anonymously(fake_version, collection, other_user):
    from django.contrib.auth.models import AnonymousUser

    public = CollectionFactory(owner=other_user, name="open", is_public=True)
    shown, _ = _setup(public, fake_version, 3, seed=6)
    _setup(collection, fake_version, 3)
    _rebuild(fake_version)
    page = search_images(user=AnonymousUser(), terms=[QueryTerm(text="red")], k=10)
    assert set(_ids(page)) == {i.pk for i in shown}


@pytest.mark.parametrize("cutoff", [Cutoff(margin=0.3), Cutoff(ratio=0.6), Cutoff(min_score=0.2),
                                    Cutoff(margin=0.5, min_score=0.3)])
def test_adaptive_cutoff_keeps_exactly_the_results_the_documented_rule_keeps(fake_version, collection, cutoff):
    images, vectors = _setup(collection, fake_version, 120, seed=11)
    _rebuild(fake_version)
    q = _text("green")
    order, scores = _brute(images, vectors, q)
    best = float(np.max(scores))
    threshold = max([x for x in (best - cutoff.margin if cutoff.margin is not None else None,
                                 best * cutoff.ratio if cutoff.ratio is not None else None,
                                 cutoff.min_score) if x is not None])
    sure = int((scores >= threshold + 1e-5).sum())  # float rounding may decide items this close
    maybe = int((scores >= threshold - 1e-5).sum())
    page = search_images(user=collection.owner, terms=[QueryTerm(text="green")], k=100, cutoff=cutoff)
    assert sure <= page.count <= maybe and page.count < 120 and page.threshold == pytest.approx(threshold, abs=1e-5)
    assert _ids(page) == order[:page.count][:100] and all(h.score >= page.threshold for h in page.results)


def test_a_ratio_cutoff_keeps_every_result_when_the_best_score_is_not_positive(fake_version, collection):
    # The ratio applies only when best > 0; with nothing else set there is no threshold, and the
    # page used to fail comparing scores with None.
    q = _text("green")
    rng = np.random.default_rng(5)
    vectors = unit(-unit(q)[None, :] + 0.2 * rng.standard_normal((6, DIM)))  # all pointing away from q
    images = [ingest(collection, colour_jpeg((10, 20 * i, 30), (40 + i, 40))) for i in range(6)]
    for img, vec in zip(images, vectors):
        store_vector(img, fake_version, vec)
    _rebuild(fake_version)
    order, scores = _brute(images, vectors, q)
    assert scores.max() < 0
    page = search_images(user=collection.owner, terms=[QueryTerm(text="green")], k=10, cutoff=Cutoff(ratio=0.6))
    assert page.count == 6 and page.threshold is None and _ids(page) == order


def test_query_token_pins_the_model_version_even_after_a_promotion(fake_version, collection):
    images, vectors = _setup(collection, fake_version, 12)
    _rebuild(fake_version)
    first = search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=5)
    ModelVersion.objects.filter(pk=fake_version.pk).update(status="retired")
    newer = ModelVersion.objects.create(kind="embedding", name="newer", family="fake", dim=DIM, status="active")
    second = search_images(user=collection.owner, query_token=first.query_token, k=5, page=2)
    assert second.model_version_id == fake_version.pk
    assert _ids(first) + _ids(second) == _brute(images, vectors, _text("red"), 10)[0]
    with pytest.raises(ApplicationError, match="another model version"):
        search_images(user=collection.owner, query_token=first.query_token, model_version_id=newer.pk)
    with pytest.raises(ApplicationError, match="invalid or expired"):
        search_images(user=collection.owner, query_token=first.query_token[:-3] + "abc")
    with pytest.raises(ApplicationError, match="Unknown model version"):
        search_images(user=collection.owner, terms=[QueryTerm(text="red")], model_version_id=10**9)


def test_near_duplicates_are_the_similar_images_above_the_threshold(fake_version, collection):
    images, vectors = _setup(collection, fake_version, 10)
    twin = ingest(collection, colour_jpeg((5, 5, 5)))
    store_vector(twin, fake_version, vectors[0] + 0.05 * unit(np.ones(DIM)))
    _rebuild(fake_version)
    dupes = image_duplicates(user=collection.owner, image_id=images[0].pk, threshold=0.95)
    assert _ids(dupes) == [twin.pk] and dupes.count == 1 and dupes.results[0].score >= 0.95


def test_labels_give_imagenet_classes_from_logits_and_words_of_other_images_captions(fake_version, collection):
    images, _, _ = _captioned(collection, fake_version)
    red = ingest(collection, colour_jpeg((250, 5, 5)), caption="my own words")
    encoding.images_encode(image_ids=[red.pk], version=fake_version)
    _rebuild(fake_version)
    labels = image_labels(user=collection.owner, image_id=red.pk, k=3)
    assert labels["imagenet"][0]["label"] == "tench" and len(labels["imagenet"]) == 3
    assert labels["imagenet"][0]["score"] > labels["imagenet"][1]["score"]
    words = [w["word"] for w in labels["words"]]
    assert "red" in words[:2] and "own" not in words and "words" not in words
    assert labels["model_version"] == fake_version.pk


def test_explain_heatmap_lights_the_region_that_matches_the_text(fake_version, collection):
    img = ingest(collection, colour_jpeg((250, 0, 0), (70, 70), split_rgb=(0, 0, 250)))  # left red, right blue
    encoding.images_encode(image_ids=[img.pk], version=fake_version)
    out = image_explain(user=collection.owner, image_id=img.pk, text="red")
    grid = np.array(out["grid"])
    assert grid.shape == (7, 7) and out["model_version"] == fake_version.pk
    assert grid[:, :3].mean() > 0.9 and grid[:, 4:].mean() < 0.2
    blue = np.array(image_explain(user=collection.owner, image_id=img.pk, text="blue")["grid"])
    assert blue[:, 4:].mean() > blue[:, :3].mean()


def test_nothing_visible_answers_empty_without_loading_a_model_but_still_validates(fake_version, collection,
                                                                                   monkeypatch):
    from embeddings import runtime

    monkeypatch.setattr(runtime, "embedder_for", lambda v: pytest.fail("a model was loaded"))
    page = search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=5)
    assert (page.count, page.results, page.model_version_id) == (0, [], fake_version.pk)
    with pytest.raises(ApplicationError):
        search_images(user=collection.owner, terms=[QueryTerm(text="a\x00")])
    with pytest.raises(ApplicationError, match="No such image"):
        search_images(user=collection.owner, terms=[QueryTerm(image_id=10**9)])


def test_cached_visible_ids_follow_a_collection_turning_private(db, other_user, user):
    """The per-process id cache is keyed by a visibility fingerprint: privacy changes apply at once."""
    from embeddings.models import Collection
    from search.selectors import SearchFilters, searchable_image_ids
    from tests.factories import CollectionFactory, make_image

    public = CollectionFactory(owner=other_user, name="was-public", is_public=True)
    image = make_image(public, seed=77)
    assert image.pk in searchable_image_ids(user=user, filters=SearchFilters())
    Collection.objects.filter(pk=public.pk).update(is_public=False)
    assert image.pk not in searchable_image_ids(user=user, filters=SearchFilters())
    make_image(CollectionFactory(owner=user, name="mine2"), seed=78)
    assert len(searchable_image_ids(user=user, filters=SearchFilters())) == 1
