"""Word explorer: word2vec learned from a collection's captions, served by page and API."""
import pytest

from embeddings import words
from embeddings.ml.word2vec import Word2VecConfig
from embeddings.models import Caption
from tests.factories import CollectionFactory, make_image

pytestmark = pytest.mark.django_db

ANIMALS = ["dog", "puppy", "cat", "kitten"]
PLACES = ["beach", "ocean", "mountain", "snow"]


@pytest.fixture
def trained(user):
    """A collection whose captions pair animals with animals and places with places."""
    collection = CollectionFactory(owner=user, name="topics", is_public=False)
    image = make_image(collection, seed=1)
    texts = []
    for i in range(120):
        a, b = ANIMALS[i % 4], ANIMALS[(i + 1) % 4]
        p, q = PLACES[i % 4], PLACES[(i + 2) % 4]
        texts += [f"the {a} and the {b} play", f"the {p} near the {q}"]
    Caption.objects.bulk_create([Caption(image=image, text=t, source="imported") for t in texts])
    words.word2vec_train(collection=collection, config=Word2VecConfig(min_count=2, epochs=30, dim=16, seed=1,
                                                                      batch_size=256, sample=0))
    return collection


def test_nearest_words_come_from_the_same_topic(trained):
    nearest = [w for w, _ in words.words_nearest(collection=trained, word="dog", k=3)]
    assert set(nearest) <= set(ANIMALS) | {"play", "and", "the"}
    assert set(nearest) & set(ANIMALS)


def test_api_nearest_and_analogy_and_unknown_word(api, trained):
    resp = api.get("/api/v1/words/nearest/", {"collection": "topics", "word": "Beach", "k": 3})
    assert resp.status_code == 200 and len(resp.json()["results"]) == 3
    resp = api.get("/api/v1/words/analogy/", {"collection": "topics", "a": "dog", "b": "puppy", "c": "beach"})
    assert resp.status_code == 200 and resp.json()["results"]
    resp = api.get("/api/v1/words/nearest/", {"collection": "topics", "word": "zebra"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_word"


def test_private_collection_words_are_invisible_to_others(trained, other_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(other_user)
    resp = client.get("/api/v1/words/nearest/", {"collection": "topics", "word": "dog"})
    assert resp.status_code == 400 and "collection" in resp.json()["error"]["fields"]


def test_untrained_collection_is_404_and_too_few_captions_is_400(api, collection):
    assert api.get("/api/v1/words/nearest/", {"collection": "mine", "word": "dog"}).status_code == 404
    from project.exceptions import ApplicationError

    with pytest.raises(ApplicationError, match="at least"):
        words.word2vec_train(collection=collection)


def test_train_endpoint_needs_the_owner(api, anon_api, collection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert api.post("/api/v1/words/train/", {"collection": "mine"}, format="json").status_code == 202
    assert len(callbacks) == 1
    assert anon_api.post("/api/v1/words/train/", {"collection": "mine"}, format="json").status_code in (401, 403)


def test_words_page_and_partial_render(client, user, trained):
    client.force_login(user)
    page = client.get("/words/?collection=topics")
    assert page.status_code == 200 and b"Nearest words" in page.content
    part = client.get("/words/results/", {"collection": "topics", "word": "dog"})
    assert part.status_code == 200 and b"<li>" in part.content
    bad = client.get("/words/results/", {"collection": "topics", "word": "<script>x</script>"})
    assert b"<script>x" not in bad.content and b"role=\"alert\"" in bad.content
