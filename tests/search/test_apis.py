"""REST endpoints of search: the contract shapes, limits (400 never 500), privacy, 503s."""
from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from embeddings import encoding
from embeddings.models import Caption
from search import registry, tasks
from search.services import index_rebuild
from tests import images as mk
from tests.factories import CollectionFactory
from tests.search.conftest import colour_jpeg, ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(fake_version, collection):
    """Six captioned colour images in the user's collection, encoded and indexed."""
    spec = [((250, 10, 10), "a red car"), ((10, 250, 10), "a green tree"), ((10, 10, 250), "a blue sea"),
            ((200, 60, 60), "a red apple"), ((60, 60, 200), "a blue sky"), ((90, 200, 90), "green grass")]
    images = [ingest(collection, colour_jpeg(rgb), caption=text) for rgb, text in spec]
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    for m in ("image", "caption"):
        index_rebuild(version=fake_version, modality=m)
    return images


def err(resp, status):
    assert resp.status_code == status, resp.content
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    return body["error"]


def test_get_search_has_the_contract_shape_and_pages_by_next_links(api, world, fake_version):
    resp = api.get("/api/v1/search/", {"q": "red", "k": 2, "collection": "mine"})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert {"count", "next", "previous", "results", "model_version"} <= set(body)
    assert body["count"] == 6 and body["model_version"] == fake_version.pk and body["previous"] is None
    first = body["results"][0]
    assert {"image_id", "score", "thumbnail_url", "image_url", "captions"} <= set(first)
    assert first["image_id"] == world[0].pk and first["captions"][0]["text"] == "a red car"
    assert first["thumbnail_url"].startswith("http://testserver/media/thumbs/")
    seen = [r["image_id"] for r in body["results"]]
    url = body["next"]
    while url:
        page = api.get(url).json()
        seen += [r["image_id"] for r in page["results"]]
        assert page["previous"]
        url = page["next"]
    assert sorted(seen) == sorted(i.pk for i in world) and len(seen) == 6


def test_post_terms_json_and_multipart_image_give_the_same_response_shape(api, world):
    resp = api.post("/api/v1/search/", {"terms": [{"text": "blue", "weight": 1.0}, {"text": "green", "weight": 0.5},
                                                  {"image_id": world[0].pk, "weight": -0.5}], "k": 6,
                                        "collection": "mine"}, format="json")
    assert resp.status_code == 200, resp.content
    ranked = [r["image_id"] for r in resp.json()["results"]]
    assert ranked[0] == world[2].pk and ranked[-1] == world[0].pk  # the blue sea first, the red car last
    resp = api.post("/api/v1/search/", {"image": SimpleUploadedFile("q.jpg", colour_jpeg((240, 15, 15), (31, 17))),
                                        "k": 2}, format="multipart")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["results"][0]["image_id"] == world[0].pk and body["count"] == 6
    assert "query=" in body["next"]
    nxt = api.get(body["next"]).json()  # the uploaded image's query goes on as a GET token
    assert len(nxt["results"]) == 2 and nxt["results"][0]["image_id"] not in [r["image_id"] for r in body["results"]]
    terms = json.dumps([{"text": "green", "weight": 0.5}])
    resp = api.post("/api/v1/search/", {"image": SimpleUploadedFile("q.jpg", colour_jpeg((10, 10, 240))),
                                        "terms": terms}, format="multipart")
    assert resp.status_code == 200, resp.content


@pytest.mark.parametrize("params,field", [
    ({"q": "red", "k": 0}, "k"), ({"q": "red", "k": 10**9}, "k"), ({"q": "red", "k": 101}, "k"),
    ({"q": "red", "page": -1}, "page"), ({"q": "red", "page": 0}, "page"), ({"q": ""}, "q"), ({}, "q"),
    ({"q": "x" * 100_000}, "q"), ({"q": "a\x00b"}, "q"), ({"q": "red", "model_version": 987654}, "model_version"),
    ({"q": "red", "k": "ten"}, "k"), ({"q": "red", "margin": "nan"}, "margin"),
    ({"q": "red", "split": "nope"}, "split"),
    ({"q": "red", "collection": "not-there"}, "collection"), ({"query": "forged.token"}, "query"),
])
def test_bad_query_parameters_are_400_with_the_field_named(api, world, params, field):
    error = err(api.get("/api/v1/search/", params), 400)
    assert field in error.get("fields", {}), error


def test_emoji_query_and_a_page_past_the_end_are_fine(api, world):
    assert api.get("/api/v1/search/", {"q": "🐶 red 🚗"}).status_code == 200
    body = api.get("/api/v1/search/", {"q": "red", "page": 10**9}).json()
    assert body["results"] == [] and body["count"] == 6 and body["next"] is None


@pytest.mark.parametrize("payload", [
    {"terms": []}, {"terms": [{"text": "a", "image_id": 1}]}, {"terms": [{"weight": 1}]},
    {"terms": [{"text": "red", "weight": 11}]}, {"terms": [{"text": "red"}] * 11}, {"terms": "red"},
    {"terms": [{"text": "red"}, {"text": "red", "weight": -1}]}, {"k": 5},
])
def test_bad_post_bodies_are_400(api, world, payload):
    err(api.post("/api/v1/search/", payload, format="json"), 400)


def test_bad_multipart_uploads_are_400(api, world):
    err(api.post("/api/v1/search/", {"image": SimpleUploadedFile("x.jpg", b"not an image")}, format="multipart"), 400)
    err(api.post("/api/v1/search/", {"image": SimpleUploadedFile("x.jpg", colour_jpeg((1, 2, 3))), "terms": "[oops"},
                 format="multipart"), 400)


@pytest.mark.parametrize("size", [(1, 60_000), (60_000, 1)])
def test_search_by_an_uploaded_one_pixel_strip_is_400_bad_aspect_ratio(api, world, size):
    """321 bytes under every byte and pixel cap; encoding it as a query took 13 GB in the web process."""
    strip = mk.image_bytes("PNG", size)
    for url in ("/api/v1/search/", "/api/v1/search/captions/"):
        error = err(api.post(url, {"image": SimpleUploadedFile("s.png", strip)}, format="multipart"), 400)
        assert error["code"] == "bad_aspect_ratio" and "20:1" in error["message"]


def test_another_users_private_images_stay_invisible_through_every_endpoint(api, world, other_user, fake_version):
    theirs = CollectionFactory(owner=other_user, name="secret")
    hidden = ingest(theirs, colour_jpeg((255, 0, 0), (50, 50)), caption="a red secret")
    encoding.images_encode(image_ids=[hidden.pk], version=fake_version)
    for m in ("image", "caption"):
        index_rebuild(version=fake_version, modality=m)
    body = api.get("/api/v1/search/", {"q": "red", "k": 100}).json()
    assert hidden.pk not in [r["image_id"] for r in body["results"]] and body["count"] == 6
    caps = api.get("/api/v1/search/captions/", {"q": "a red secret", "k": 100}).json()
    assert "a red secret" not in [r["text"] for r in caps["results"]] and caps["count"] == 6
    for path in ("labels", "similar", "explain"):
        err(api.get(f"/api/v1/images/{hidden.pk}/{path}/", {"q": "red"}), 404)
        err(api.get(f"/api/v1/images/{10**9}/{path}/", {"q": "red"}), 404)
    e1 = err(api.post("/api/v1/search/", {"terms": [{"image_id": hidden.pk}]}, format="json"), 400)
    e2 = err(api.post("/api/v1/search/", {"terms": [{"image_id": 10**9}]}, format="json"), 400)
    assert e1["fields"] == e2["fields"]
    other = APIClient()
    other.force_authenticate(other_user)
    assert other.get("/api/v1/search/", {"q": "red"}).json()["results"][0]["image_id"] == hidden.pk


def test_anonymous_users_search_public_collections_only(anon_api, world, other_user, fake_version):
    public = CollectionFactory(owner=other_user, name="open", is_public=True)
    shown = ingest(public, colour_jpeg((255, 0, 0), (33, 33)))
    encoding.images_encode(image_ids=[shown.pk], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    body = anon_api.get("/api/v1/search/", {"q": "red"}).json()
    assert [r["image_id"] for r in body["results"]] == [shown.pk] and body["count"] == 1
    assert anon_api.post("/api/v1/search/", {"q": "red"}, format="json").status_code == 200


def test_corrupt_index_with_no_good_copy_is_a_503_and_a_rebuild_is_enqueued(api, world, fake_version, published):
    sent = published
    path = registry.index_path(fake_version.pk, "image")
    path.write_bytes(path.read_bytes()[:100])
    registry.reset()
    error = err(api.get("/api/v1/search/", {"q": "red"}), 503)
    assert error["code"] == "index_rebuilding" and "rebuilt" in error["message"]
    assert sent == [("index_rebuild", (fake_version.pk, "image", True))]


def test_caption_search_by_image_id_and_by_uploaded_image(api, world):
    body = api.post("/api/v1/search/captions/", {"image_id": world[2].pk, "k": 2}, format="json").json()
    assert [r["text"] for r in body["results"]][0] == "a blue sea"
    assert {"caption_id", "text", "source", "score", "image_id"} <= set(body["results"][0])
    up = api.post("/api/v1/search/captions/", {"image": SimpleUploadedFile("g.jpg", colour_jpeg((5, 250, 5)))},
                  format="multipart").json()
    assert up["results"][0]["text"] in ("a green tree", "green grass")


def test_labels_similar_and_explain_endpoints(api, world, fake_version):
    labels = api.get(f"/api/v1/images/{world[0].pk}/labels/", {"k": 2}).json()
    assert labels["imagenet"][0]["label"] == "tench" and len(labels["imagenet"]) == 2
    assert "red" in [w["word"] for w in labels["words"][:3]] and labels["model_version"] == fake_version.pk
    similar = api.get(f"/api/v1/images/{world[0].pk}/similar/", {"k": 2}).json()
    assert similar["results"][0]["image_id"] == world[3].pk and similar["count"] == 5
    dupes = api.get(f"/api/v1/images/{world[0].pk}/similar/", {"duplicates": "true", "threshold": 0.999}).json()
    assert dupes["count"] == 0 and dupes["results"] == []
    explain = api.get(f"/api/v1/images/{world[0].pk}/explain/", {"q": "red"}).json()
    assert explain["rows"] == explain["cols"] == 7 and len(explain["grid"]) == 7 and explain["score"] > 0.9
    err(api.get(f"/api/v1/images/{world[0].pk}/explain/"), 400)


def test_near_duplicates_through_the_api_are_the_duplicates_service_and_next_links_keep_the_floor(api, user, world):
    """duplicates=true answers what services.image_duplicates answers (the one near-duplicate
    rule), and its next pages stay above the same floor."""
    from search.services import image_duplicates, image_similar

    scores = [h.score for h in image_similar(user=user, image_id=world[0].pk, k=5).results]
    threshold = (scores[2] + scores[3]) / 2  # three near-duplicates
    want = image_duplicates(user=user, image_id=world[0].pk, threshold=threshold, k=5)
    assert want.count == 3
    body = api.get(f"/api/v1/images/{world[0].pk}/similar/", {"duplicates": "true", "threshold": threshold,
                                                            "k": 2}).json()
    assert body["count"] == want.count and body["threshold"] == pytest.approx(threshold)
    seen = [r["image_id"] for r in body["results"]]
    assert body["next"] and f"min_score={threshold}" in body["next"]
    rest = api.get(body["next"]).json()
    assert rest["count"] == want.count and rest["next"] is None
    seen += [r["image_id"] for r in rest["results"]]
    assert seen == [h.image.pk for h in want.results]
    # A min_score above the threshold is the floor; filters apply to near-duplicates too.
    higher = api.get(f"/api/v1/images/{world[0].pk}/similar/", {"duplicates": "true", "threshold": threshold,
                                                              "min_score": scores[0] - 1e-6}).json()
    assert higher["count"] == 1 and higher["results"][0]["image_id"] == want.results[0].image.pk
    none = api.get(f"/api/v1/images/{world[0].pk}/similar/", {"duplicates": "true", "threshold": threshold,
                                                            "split": "train"}).json()
    assert none["count"] == 0 and none["results"] == []  # the world's images have no split


def test_generate_caption_without_an_active_captioner_is_a_clear_503(api, world):
    error = err(api.post("/api/v1/captions/", {"image_id": world[0].pk}, format="json"), 503)
    assert "captioning model" in error["message"]


def test_generated_caption_is_saved_and_becomes_searchable(api, world, fake_version, fake_captioner,
                                                          published, django_capture_on_commit_callbacks):
    sent = published
    bare = ingest(world[0].collection, colour_jpeg((10, 10, 240), (41, 41)))
    with django_capture_on_commit_callbacks(execute=True):
        resp = api.post("/api/v1/captions/", {"image_id": bare.pk, "beam": 3, "n": 2}, format="json")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["saved"] and body["model_version"] == fake_captioner.pk and len(body["captions"]) == 2
    assert body["captions"][0]["text"] == "a blue thing number 0"
    caption = Caption.objects.get(pk=body["captions"][0]["id"])
    assert (caption.source, caption.model_version_id, caption.image_id) == ("generated", fake_captioner.pk, bare.pk)
    assert sent == [("index_flush", (fake_version.pk, "caption"))]  # its vector waits for one batched write
    tasks.index_flush(*sent[0][1])
    found = api.get("/api/v1/search/captions/", {"q": "blue thing number", "k": 1}).json()
    assert found["results"][0]["caption_id"] == caption.pk

    patched = api.patch(f"/api/v1/captions/{caption.pk}/", {"text": "  a  blue   square "}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["source"] == "human" and patched.json()["text"] == "a blue square"


def test_caption_of_an_upload_is_not_saved_and_others_cannot_accept(api, world, fake_captioner, other_user):
    resp = api.post("/api/v1/captions/", {"image": SimpleUploadedFile("r.jpg", colour_jpeg((250, 5, 5)))},
                    format="multipart")
    assert resp.status_code == 200 and not resp.json()["saved"] and resp.json()["image_id"] is None
    caption = world[0].captions.get()
    other = APIClient()
    other.force_authenticate(other_user)
    err(other.patch(f"/api/v1/captions/{caption.pk}/", {"text": "mine now"}, format="json"), 404)
    assert APIClient().patch(f"/api/v1/captions/{caption.pk}/", {}, format="json").status_code == 401
    for bad in ({"image_id": world[0].pk, "beam": 0}, {"image_id": world[0].pk, "n": 6}, {}):
        err(api.post("/api/v1/captions/", bad, format="json"), 400)


@pytest.mark.parametrize("size", [(1, 60_000), (60_000, 1)])
def test_caption_of_an_uploaded_one_pixel_strip_is_400_bad_aspect_ratio(api, world, fake_captioner, size):
    resp = api.post("/api/v1/captions/", {"image": SimpleUploadedFile("s.png", mk.image_bytes("PNG", size))},
                    format="multipart")
    error = err(resp, 400)
    assert error["code"] == "bad_aspect_ratio" and "20:1" in error["message"]
    assert fake_captioner.generator.beam_sizes == []  # never reached the captioner
    assert Caption.objects.filter(source="generated").count() == 0


def test_schema_documents_every_search_endpoint(api):
    resp = api.get("/api/schema/", {"format": "json"})
    assert resp.status_code == 200
    paths = json.loads(resp.content)["paths"]
    for path in ("/api/v1/search/", "/api/v1/search/captions/", "/api/v1/captions/", "/api/v1/captions/{id}/",
                 "/api/v1/images/{id}/labels/", "/api/v1/images/{id}/similar/", "/api/v1/images/{id}/explain/"):
        assert path in paths, path
    assert {"get", "post"} <= set(paths["/api/v1/search/"])


def test_caption_api_serves_the_captioners_tuned_decoding_unless_a_beam_is_given(api, world, fake_version,
                                                                               fake_captioner):
    image = world[0]
    assert api.post("/api/v1/captions/", {"image_id": image.pk}, format="json").status_code == 200
    assert api.post("/api/v1/captions/", {"image_id": image.pk, "beam": 1}, format="json").status_code == 200
    assert fake_captioner.generator.beam_sizes == [None, 1]  # None: beam, length penalty, no-repeat as tuned


TOO_BIG = 2**63  # past a bigint; on SQLite (make run) it was an OverflowError 500: tests/search/test_apis_sqlite.py


@pytest.mark.parametrize("path", ["/api/v1/search/", "/api/v1/search/captions/", "/api/v1/images/{pk}/similar/",
                                  "/api/v1/images/{pk}/labels/", "/api/v1/images/{pk}/explain/"])
def test_model_version_past_the_id_range_is_refused_by_validation(api, world, path):
    """The range is checked by the serializer (the field error names the bound), not left to the database."""
    url = path.format(pk=world[0].pk)
    for params in ({"q": "red", "model_version": TOO_BIG}, {"q": "red", "model_version": 2**63 - 1}):
        error = err(api.get(url, params), 400)
        assert "model_version" in error["fields"], error
    error = err(api.get(url, {"q": "red", "model_version": TOO_BIG}), 400)
    assert "less than or equal to 9223372036854775807" in error["fields"]["model_version"][0]
    if not path.startswith("/api/v1/images/"):
        error = err(api.post(url, {"q": "red", "model_version": TOO_BIG}, format="json"), 400)
        assert "less than or equal to" in error["fields"]["model_version"][0]


@pytest.mark.parametrize("path,body,field", [
    ("/api/v1/search/", {"terms": [{"image_id": TOO_BIG}]}, "terms"),
    ("/api/v1/search/", {"image_id": TOO_BIG}, "image_id"), ("/api/v1/search/", {"q": "red", "page": TOO_BIG}, "page"),
    ("/api/v1/search/captions/", {"image_id": TOO_BIG}, "image_id"),
    ("/api/v1/captions/", {"image_id": TOO_BIG}, "image_id"),
])
def test_ids_and_pages_past_their_range_are_400(api, world, path, body, field):
    error = err(api.post(path, body, format="json"), 400)
    assert field in error["fields"], error


@pytest.mark.parametrize("body,field", [
    ({"terms": [{"text": "red", "weight": True}]}, "terms"), ({"terms": [{"text": "red", "weight": False}]}, "terms"),
    ({"q": "red", "image_id": 1, "image_weight": True}, "image_weight"), ({"q": "red", "keyword_boost": True},
                                                                         "keyword_boost"),
    ({"q": "red", "min_score": False}, "min_score"),
])
def test_json_booleans_are_not_numbers(api, world, body, field):
    """`weight: true` was taken as 1.0 (float(True)); every number field refuses booleans."""
    error = err(api.post("/api/v1/search/", body, format="json"), 400)
    assert field in error["fields"], error
    ok = api.post("/api/v1/search/", {"terms": [{"text": "red", "weight": 1}]}, format="json")
    assert ok.status_code == 200, ok.content


def test_api_boost_without_a_keyword_boosts_captions_containing_the_query(api, fake_version, collection):
    """Issue 16: keyword_mode=boost with no keyword changed nothing in the API; the query text is
    now the keyword, as on the page (search.selectors.boost_keyword)."""
    sea = ingest(collection, colour_jpeg((10, 10, 250)), caption="the sea")
    kite = ingest(collection, colour_jpeg((10, 80, 250)), caption="a blue kite")
    encoding.images_encode(image_ids=[sea.pk, kite.pk], version=fake_version)
    index_rebuild(version=fake_version, modality="image")

    def order(**params):
        resp = api.get("/api/v1/search/", {"q": "blue", **params})
        assert resp.status_code == 200, resp.content
        return [r["image_id"] for r in resp.json()["results"]], [r["keyword_match"] for r in resp.json()["results"]]

    assert order()[0] == [sea.pk, kite.pk]
    assert order(keyword_mode="boost") == ([kite.pk, sea.pk], [True, False])
    assert order(keyword_mode="boost", keyword="sea")[0] == [sea.pk, kite.pk]


def test_n_best_captions_need_a_beam_and_greedy_says_it_gives_one(api, world, fake_version, fake_captioner):
    """Issue 14, item 5: "greedy" returned three different captions for one image."""
    image = world[0]
    resp = api.post("/api/v1/captions/", {"image_id": image.pk, "beam": 1, "n": 3}, format="json")
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "n_exceeds_beam" and "greedy decoding gives one" in err["message"] and "n" in err["fields"]
    assert fake_captioner.generator.beam_sizes == []  # refused before decoding
    ok = api.post("/api/v1/captions/", {"image_id": image.pk, "beam": 3, "n": 3}, format="json").json()
    assert ok["beam"] == 3 and len(ok["captions"]) == 3
    one = api.post("/api/v1/captions/", {"image_id": image.pk, "beam": 1}, format="json").json()
    assert one["beam"] == 1 and len(one["captions"]) == 1
