"""Collection names: unique per owner (private names never discoverable), resolved the same way
everywhere (the user's own first, then the public one), normalised and free of control and
text-direction characters. Issue 19, findings 7 and 8."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from embeddings import selectors, services
from embeddings.models import Collection, Image
from project.exceptions import ApplicationError, Conflict
from tests import images as mk
from tests.factories import CollectionFactory, make_image

pytestmark = pytest.mark.django_db


def create(client, name, **extra):
    return client.post("/api/v1/collections/", {"name": name, **extra}, format="json")


def test_a_name_another_user_keeps_private_can_be_taken_and_its_existence_is_not_revealed(api, user, other_user):
    CollectionFactory(owner=other_user, name="holiday 2026", is_public=False)
    resp = create(api, "holiday 2026")
    assert resp.status_code == 201, resp.content  # was 409 "already exists"
    assert resp.json()["owner"] == user.username
    assert Collection.objects.filter(name="holiday 2026").count() == 2


def test_a_name_of_ones_own_is_a_409_and_a_public_name_is_unique_among_public_collections(api, other_user):
    assert create(api, "mine").status_code == 201
    again = create(api, "mine")
    assert again.status_code == 409 and "You already have" in again.json()["error"]["message"]
    CollectionFactory(owner=other_user, name="shared", is_public=True)
    assert create(api, "shared").status_code == 201  # a private one of that name: fine
    public = create(api, "shared too", is_public=True)
    assert public.status_code == 201
    clash = create(api, "public one", is_public=True)
    assert clash.status_code == 201
    CollectionFactory(owner=other_user, name="theirs public", is_public=True)
    taken = create(api, "theirs public", is_public=True)
    assert taken.status_code == 409 and "public collection" in taken.json()["error"]["message"]


def test_a_name_resolves_to_ones_own_collection_before_a_public_one_everywhere(api, user, other_user):
    theirs = CollectionFactory(owner=other_user, name="cats", is_public=True)
    make_image(theirs, seed=1)
    mine = CollectionFactory(owner=user, name="cats", is_public=False)
    assert selectors.collection_get_visible(user=user, name="cats") == mine
    assert selectors.collection_get_visible(user=other_user, name="cats") == theirs
    from django.contrib.auth.models import AnonymousUser

    assert selectors.collection_get_visible(user=AnonymousUser(), name="cats") == theirs
    # an upload by name goes to the user's own
    data = mk.image_bytes("PNG", (40, 30))
    resp = api.post("/api/v1/images/", {"file": SimpleUploadedFile("a.png", data, content_type="image/png"),
                                        "collection": "cats"}, format="multipart")
    assert resp.status_code == 201, resp.content
    assert Image.objects.get(pk=resp.json()["id"]).collection == mine
    # and listing by name shows that collection only, not both
    listed = api.get("/api/v1/images/", {"collection": "cats"}).json()["results"]
    assert [i["id"] for i in listed] == [resp.json()["id"]]


def test_import_dataset_collections_without_owner_keep_one_per_name():
    first, made = services.collection_get_or_create(name="flickr", owner=None, is_public=True)
    again, made_again = services.collection_get_or_create(name="flickr", owner=None, is_public=True)
    assert made and not made_again and first == again


@pytest.mark.parametrize("name", ["bad\x1b[31mred", "evil\u202egpj.exe", "isolate\u2066x", "two\nlines",
                                  "mark\u200fx", "tab\there"])
def test_control_and_text_direction_characters_are_a_400_and_nothing_is_made(api, name):
    resp = create(api, name)
    assert resp.status_code == 400, resp.content
    error = resp.json()["error"]
    assert error["code"] == "invalid_name" and "name" in error["fields"] and "U+" in error["message"]
    assert not Collection.objects.exists()


def test_names_are_nfc_normalised_so_look_alike_spellings_are_one_name(api):
    decomposed = "cafe\u0301"  # e + combining acute
    resp = create(api, decomposed)
    assert resp.status_code == 201 and resp.json()["name"] == "caf\u00e9"
    assert create(api, "caf\u00e9").status_code == 409
    emoji = create(api, "family \U0001f468\u200d\U0001f469\u200d\U0001f467")  # a zero-width joiner is not a control
    assert emoji.status_code == 201


def test_the_service_refuses_the_same_cases_for_every_entry_point(user):
    with pytest.raises(ApplicationError, match="text-direction"):
        services.collection_get_or_create(name="x\u202ey", owner=None)
    services.collection_create(name="  spaced  ", owner=user)
    with pytest.raises(Conflict):
        services.collection_create(name="spaced", owner=user)
