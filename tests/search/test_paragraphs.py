"""Paragraph-vector search in the API and on the image page: shapes, privacy, bad input, no model yet.

The paragraph version is a real (tiny) gensim model trained on the test images' captions and
written with the product's writer; image features for the map are fixed random vectors."""
from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from embeddings import runtime
from embeddings.ml.paragraph import (SOURCE_MAPPED, SOURCE_TRAINED, ParagraphConfig, ParagraphSpace, document_text,
                                     fit_image_map, train_paragraph_vectors)
from embeddings.ml.paragraph_io import ParagraphIndex, save_paragraph
from embeddings.models import Caption, ModelVersion
from tests.factories import CollectionFactory, UserFactory
from tests.search.conftest import colour_jpeg, ingest

pytestmark = pytest.mark.django_db

DESCRIPTIONS = [
    ("a brown dog runs along the sandy beach", "the dog carries a stick by the sea"),
    ("two children build a snowman in the snow", "kids play in deep white snow"),
    ("a man rides a red bike down the street", "a cyclist on a city road"),
    ("a black cat sleeps on a sofa", "the cat naps by the window"),
    ("a surfer rides a big wave in the ocean", "a man surfing on a blue wave"),
    ("a girl jumps on a trampoline in the garden", "the child bounces high outside"),
]


def _image(collection, i: int, texts=()):
    image = ingest(collection, colour_jpeg((40 * i % 255, 90, 200 - 30 * i)), caption=texts[0] if texts else None)
    for text in texts[1:]:
        Caption.objects.create(image=image, text=text, source=Caption.Source.IMPORTED)
    return image


def _train_version(images, collection_ids, name="paragraph-test") -> ModelVersion:
    """Train on the captioned images, map the others, write the folder and activate the version."""
    from django.conf import settings

    docs = {im.pk: document_text(list(Caption.objects.filter(image=im).order_by("pk").values_list("text", flat=True)))
            for im in images}
    trained = [pk for pk, doc in docs.items() if doc]
    pv = train_paragraph_vectors([docs[pk] for pk in trained],
                                 ParagraphConfig(mode="dbow", vector_size=16, min_count=1, sample=0.0, image_dim=8),
                                 epochs=150, seed=0)
    space = ParagraphSpace.of(pv.docvecs())
    rng = np.random.default_rng(0)
    feats = {im.pk: rng.standard_normal(8) for im in images}
    image_map = fit_image_map(np.stack([feats[pk] for pk in trained]), space(pv.docvecs()), ridge=1.0)
    ids = np.asarray([im.pk for im in images], np.int64)
    vectors = np.stack([space(pv.docvecs())[trained.index(pk)] if pk in trained else image_map(feats[pk][None])[0]
                        for pk in ids])
    source = np.asarray([SOURCE_TRAINED if pk in trained else SOURCE_MAPPED for pk in ids], np.uint8)
    directory = settings.MODEL_DIR / "runs" / name / "model"
    files = save_paragraph(directory, ParagraphIndex(pv, space, image_map, ids, vectors, source, mapped_offset=0.1,
                                                     meta={"collection_ids": list(collection_ids)}))
    ModelVersion.objects.filter(kind="paragraph", status="active").update(status="retired")
    return ModelVersion.objects.create(kind="paragraph", family="doc2vec", name=name, status="active", dim=16,
                                       directory=str(directory.relative_to(settings.MODEL_DIR)), files=files)


@pytest.fixture
def world(collection):
    public = CollectionFactory(owner=UserFactory(), name="public", is_public=True)
    images = [_image(public, i, texts) for i, texts in enumerate(DESCRIPTIONS)]
    bare = _image(public, 9)  # no caption: reached through the image map
    private = _image(CollectionFactory(owner=UserFactory(), name="secret"), 7,
                     ("a brown dog runs along the sandy beach", "a private dog on the beach"))
    version = _train_version([*images, bare, private], [public.pk, private.collection_id])
    return {"images": images, "bare": bare, "private": private, "version": version, "public": public}


def err(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.content
    body = resp.json()["error"]
    assert body["message"] and (code is None or body["code"] == code), body
    return body


def test_without_a_paragraph_model_both_endpoints_say_so_with_a_404(anon_api, collection):
    image = _image(collection, 1, DESCRIPTIONS[0])
    body = err(anon_api.get("/api/v1/search/paragraph/", {"q": "a dog on a beach"}), 404, "no_paragraph_model")
    assert "train one from the admin" in body["message"]
    api = APIClient()
    api.force_authenticate(collection.owner)
    err(api.get(f"/api/v1/images/{image.pk}/similar-descriptions/"), 404, "no_paragraph_model")


def test_a_paragraph_finds_the_image_described_like_it_with_the_documented_shape(anon_api, world):
    resp = anon_api.get("/api/v1/search/paragraph/", {"q": "A brown dog runs along the sandy beach. "
                                                            "The dog carries a stick by the sea, zebra.", "k": 3})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert set(body) == {"model_version", "words", "known_words", "results"}
    assert body["model_version"] == world["version"].pk and body["words"] == 17 and body["known_words"] == 16
    first = body["results"][0]
    assert set(first) == {"image_id", "score", "match", "thumbnail_url", "image_url", "collection", "captions"}
    assert first["image_id"] == world["images"][0].pk and first["match"] == "description"
    assert first["collection"] == "public" and [c["text"] for c in first["captions"]] == list(DESCRIPTIONS[0])
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_long_text_goes_in_a_post_body_and_the_collection_filter_applies(anon_api, world):
    paragraph = " ".join(["Two children build a snowman in the snow and kids play in deep white snow."] * 30)
    assert 1000 < len(paragraph) <= 5000
    resp = anon_api.post("/api/v1/search/paragraph/", {"q": paragraph, "k": 2, "collection": ["public"]},
                         format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["results"][0]["image_id"] == world["images"][1].pk
    empty = anon_api.get("/api/v1/search/paragraph/", {"q": "a dog", "collection": "nonexistent"})
    assert empty.status_code == 200 and empty.json()["results"] == []


def test_images_without_captions_are_ranked_through_the_image_map_and_say_so(anon_api, world):
    results = anon_api.get("/api/v1/search/paragraph/", {"q": "a dog on a beach", "k": 50}).json()["results"]
    matches = {r["image_id"]: r["match"] for r in results}
    assert matches[world["bare"].pk] == "image"
    assert {m for i, m in matches.items() if i != world["bare"].pk} == {"description"}


def test_private_images_surface_only_for_who_may_see_them(anon_api, world):
    q = {"q": "a private dog on the beach", "k": 50}
    anon_ids = {r["image_id"] for r in anon_api.get("/api/v1/search/paragraph/", q).json()["results"]}
    assert world["private"].pk not in anon_ids and len(anon_ids) == 7
    owner = APIClient()
    owner.force_authenticate(world["private"].collection.owner)
    owner_ids = [r["image_id"] for r in owner.get("/api/v1/search/paragraph/", q).json()["results"]]
    assert owner_ids[0] == world["private"].pk
    err(anon_api.get(f"/api/v1/images/{world['private'].pk}/similar-descriptions/"), 404, "not_found")


@pytest.mark.parametrize("params, field", [
    ({}, "q"), ({"q": ""}, "q"), ({"q": "x" * 5001}, "q"), ({"q": "a dog", "k": 0}, "k"),
    ({"q": "a dog", "k": 101}, "k"), ({"q": "a dog", "k": "many"}, "k"),
])
def test_bad_input_is_a_400_naming_the_field(anon_api, world, params, field):
    body = err(anon_api.get("/api/v1/search/paragraph/", params), 400)
    assert field in body["fields"]


def test_a_paragraph_of_unknown_words_is_refused_not_ranked(anon_api, world):
    body = err(anon_api.get("/api/v1/search/paragraph/", {"q": "zzyzx qwertyuiop"}), 400, "unknown_words")
    assert body["fields"] == {"q": ["No known words."]}
    err(anon_api.get("/api/v1/search/paragraph/", {"q": "a\x00dog"}), 400)


def test_similar_descriptions_exclude_the_image_itself(anon_api, world):
    dog = world["images"][0]
    resp = anon_api.get(f"/api/v1/images/{dog.pk}/similar-descriptions/", {"k": 4})
    assert resp.status_code == 200, resp.content
    ids = [r["image_id"] for r in resp.json()["results"]]
    assert dog.pk not in ids and len(ids) == 4 and world["private"].pk not in ids
    err(anon_api.get(f"/api/v1/images/{dog.pk}/similar-descriptions/", {"k": 0}), 400)


def test_an_image_added_after_training_is_inferred_from_its_captions_or_refused_without(anon_api, world):
    late = _image(world["public"], 11, ("a brown dog runs on the sandy beach", "a dog by the sea"))
    ids = [r["image_id"] for r in anon_api.get(f"/api/v1/images/{late.pk}/similar-descriptions/").json()["results"]]
    assert ids[0] == world["images"][0].pk and late.pk not in ids
    bare = _image(world["public"], 12)
    body = err(anon_api.get(f"/api/v1/images/{bare.pk}/similar-descriptions/"), 404, "not_indexed")
    assert "retrain" in body["message"]


def test_a_corrupt_model_file_is_a_503_not_a_500(anon_api, world, settings):
    runtime.reset()
    model = settings.MODEL_DIR / world["version"].directory / "doc2vec-dbow.model"
    model.write_bytes(b"not the file the database recorded")
    err(anon_api.get("/api/v1/search/paragraph/", {"q": "a dog"}), 503, "model_unavailable")


def test_the_image_page_has_a_similar_descriptions_section_loaded_by_htmx(client, world):
    dog = world["images"][0]
    page = client.get(reverse("image-detail", args=[dog.pk])).content.decode()
    url = reverse("search-image-similar-descriptions", args=[dog.pk])
    assert "Similar descriptions" in page and f'hx-get="{url}"' in page
    partial = client.get(url, HTTP_HX_REQUEST="true")
    html = partial.content.decode()
    assert partial.status_code == 200 and 'class="similar-descriptions-list"' in html
    neighbours = [pk for pk in (im.pk for im in world["images"][1:]) if reverse("image-detail", args=[pk]) in html]
    assert neighbours and reverse("image-detail", args=[dog.pk]) not in html
    assert reverse("image-detail", args=[world["private"].pk]) not in html


def test_the_image_page_section_says_when_there_is_no_paragraph_model(client, collection):
    collection.is_public = True
    collection.save()
    image = _image(collection, 2, DESCRIPTIONS[2])
    html = client.get(reverse("search-image-similar-descriptions", args=[image.pk])).content.decode()
    assert "No paragraph model yet" in html and "error-box" not in html


def test_the_schema_documents_both_endpoints(anon_api):
    schema = anon_api.get("/api/schema/", {"format": "json"}).json()
    search = schema["paths"]["/api/v1/search/paragraph/"]
    assert search["get"]["operationId"] == "search_paragraph" and "404" in search["get"]["responses"]
    assert "requestBody" in search["post"]
    similar = schema["paths"]["/api/v1/images/{id}/similar-descriptions/"]["get"]
    assert {"200", "400", "404", "503"} <= set(similar["responses"])
