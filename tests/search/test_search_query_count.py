"""Round trips of one search request (issue 6), pinned, with privacy still exact.

`GET /api/v1/search/` reads the database twice: (1) the model version (active or requested,
with a stamp of its row) together with the ids the user must not get (hidden collections'
items, deleted ids) and (2) the page's images joined with their collection and captions.
"""
from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext

from embeddings import encoding
from embeddings.models import Caption, Collection, ModelVersion
from search import selectors
from search.services import index_rebuild
from tests.factories import CollectionFactory
from tests.search.conftest import colour_jpeg, ingest

pytestmark = pytest.mark.django_db

SEARCH_QUERIES = 2  # version + deny-list, then the page's images with captions


@pytest.fixture
def world(fake_version, collection, other_user):
    """Mine (private to `user`): 3 captioned reds/greens/blues; theirs: a private red and a public red."""
    mine = [ingest(collection, colour_jpeg(rgb), caption=text)
            for rgb, text in [((250, 10, 10), "a red car"), ((10, 250, 10), "a green tree"),
                              ((10, 10, 250), "a blue sea")]]
    Caption.objects.create(image=mine[0], text="a second red caption", source=Caption.Source.HUMAN)
    private = CollectionFactory(owner=other_user, name="theirs-private")
    public = CollectionFactory(owner=other_user, name="theirs-public", is_public=True)
    secret = ingest(private, colour_jpeg((240, 20, 20)), caption="a secret red thing")
    shown = ingest(public, colour_jpeg((230, 30, 30)))  # no caption at all
    images = mine + [secret, shown]
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    return {"mine": mine, "secret": secret, "shown": shown, "private": private, "public": public}


def _get(client, **params):
    with CaptureQueriesContext(connection) as ctx:
        resp = client.get("/api/v1/search/", {"q": "red", **params})
    assert resp.status_code == 200, resp.content
    return resp.json(), ctx.captured_queries


def _ids(body):
    return [r["image_id"] for r in body["results"]]


def test_one_api_search_costs_two_queries_with_captions_and_collections(api, world, fake_version):
    _get(api)  # the first request of a process also reads the version row itself
    body, queries = _get(api)
    assert len(queries) == SEARCH_QUERIES, [q["sql"][:200] for q in queries]
    assert body["model_version"] == fake_version.pk and body["count"] == 4
    by_id = {r["image_id"]: r for r in body["results"]}
    red = by_id[world["mine"][0].pk]
    assert [c["text"] for c in red["captions"]] == ["a red car", "a second red caption"]
    assert red["collection"] == "mine" and red["thumbnail_url"].startswith("http://testserver/media/")
    assert by_id[world["shown"].pk]["captions"] == [] and by_id[world["shown"].pk]["collection"] == "theirs-public"
    assert world["secret"].pk not in by_id


def test_paging_by_token_and_anonymous_search_cost_the_same(api, anon_api, world):
    _get(api)
    first, _ = _get(api, k=2)
    with CaptureQueriesContext(connection) as ctx:
        page = api.get(first["next"]).json()
    assert len(ctx.captured_queries) == SEARCH_QUERIES and page["previous"]
    body, queries = _get(anon_api)
    assert len(queries) == SEARCH_QUERIES and _ids(body) == [world["shown"].pk] and body["count"] == 1


def test_a_private_collections_image_never_reaches_another_user(api, anon_api, other_user, world):
    assert world["secret"].pk not in _ids(_get(api, k=100)[0])
    assert world["secret"].pk not in _ids(_get(anon_api, k=100)[0])
    from rest_framework.test import APIClient

    owner = APIClient()
    owner.force_authenticate(other_user)
    body, _ = _get(owner, k=100)
    assert world["secret"].pk in _ids(body) and body["count"] == 2  # theirs only: mine is private


def test_a_collection_made_private_disappears_at_the_next_search(api, anon_api, world):
    assert world["shown"].pk in _ids(_get(anon_api)[0]) and _get(api)[0]["count"] == 4
    Collection.objects.filter(pk=world["public"].pk).update(is_public=False)  # no signal: nothing to invalidate
    body, queries = _get(api, k=100)
    assert world["shown"].pk not in _ids(body) and body["count"] == 3 and len(queries) == SEARCH_QUERIES
    anon, _ = _get(anon_api)
    assert anon["count"] == 0 and anon["results"] == []


def test_a_changed_version_row_is_read_again_and_a_new_active_version_is_used(api, world, fake_version):
    _get(api)
    ModelVersion.objects.filter(pk=fake_version.pk).update(name="renamed")  # e.g. an admin edit
    _, queries = _get(api)
    assert len(queries) == SEARCH_QUERIES + 1  # the stamp changed: the row is read once more
    assert selectors.version_resolve(model_version_id=None).name == "renamed"
    _, queries = _get(api)
    assert len(queries) == SEARCH_QUERIES
    ModelVersion.objects.filter(pk=fake_version.pk).update(status=ModelVersion.Status.RETIRED)
    resp = api.get("/api/v1/search/", {"q": "red"})
    assert resp.status_code == 503  # no active version any more: seen by the next request


def test_images_in_order_loads_collection_and_captions_in_one_query(world, user):
    ids = [world["shown"].pk, world["secret"].pk, world["mine"][0].pk, 10**9]
    with CaptureQueriesContext(connection) as ctx:
        got = selectors.images_in_order(user=user, ids=ids)
        texts = [[c.text for c in caps] for _, caps in got]
        names = [img.collection.name for img, _ in got]
    assert len(ctx.captured_queries) == 1
    assert [i.pk for i, _ in got] == [world["shown"].pk, world["mine"][0].pk]  # order kept, secret dropped
    assert texts == [[], ["a red car", "a second red caption"]] and names == ["theirs-public", "mine"]
    assert [i.pk for i, _ in selectors.images_in_order(user=AnonymousUser(), ids=ids)] == [world["shown"].pk]
    assert selectors.images_in_order(user=user, ids=[]) == []


def test_hydrated_images_equal_the_orms(world, user):
    """The compiled-once query gives the same field values as a plain ORM read (types included),
    and each image's captions as (id, text, source) in id order."""
    from embeddings.models import Image

    ids = [world["mine"][0].pk, world["shown"].pk]
    for _ in range(2):  # compiled, then reused
        got = selectors.images_in_order(user=user, ids=ids)
        for img, captions in got:
            ref = Image.objects.select_related("collection").get(pk=img.pk)
            for f in Image._meta.concrete_fields:
                assert getattr(img, f.attname) == getattr(ref, f.attname), f.name
                assert type(getattr(img, f.attname)) is type(getattr(ref, f.attname)), f.name
            for f in ref.collection._meta.concrete_fields:
                assert getattr(img.collection, f.attname) == getattr(ref.collection, f.attname), f.name
            assert [tuple(c) for c in captions] == list(ref.captions.order_by("id").values_list("id", "text", "source"))
            assert all(type(c.id) is int and type(c.text) is str for c in captions)
    assert [i.pk for i, _ in selectors.images_in_order(user=user, ids=[ids[1], ids[0], ids[1]])] == [ids[1], ids[0]]
