"""The collections page and API: create, rename, describe, make public or private, delete, with
image counts and indexing state. Issue 16, item 3."""
import pytest
from django.core.files.storage import default_storage
from django.test import Client

from embeddings.models import Caption, Collection, Image, ImageEmbedding
from tests.factories import CollectionFactory, make_image

pytestmark = pytest.mark.django_db



def test_the_page_lists_ones_own_collections_with_counts_and_indexing_state(signed_in, user, other_user, conse_v0):
    mine = CollectionFactory(owner=user, name="holiday")
    encoded = make_image(mine, seed=1, caption="a beach", status=Image.Status.READY)
    make_image(mine, seed=2, status=Image.Status.PENDING)
    make_image(mine, seed=3, status=Image.Status.FAILED)
    ImageEmbedding.objects.create(image=encoded, model_version=conse_v0, vector=b"\0" * 16)
    CollectionFactory(owner=other_user, name="theirs-secret")
    resp = signed_in.get("/collections/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "holiday" in html and "theirs-secret" not in html
    row = resp.context["rows"][0][0]
    assert (row.n_images, row.n_encoded, row.n_waiting, row.n_failed) == (3, 1, 1, 1)
    assert "Indexing: 1 of 3 encoded, 1 waiting" in html


def test_signed_out_visitors_are_sent_to_log_in():
    resp = Client().get("/collections/")
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]


def test_creating_from_the_page_makes_a_private_collection_and_a_taken_name_is_a_400_keeping_the_form(signed_in, user):
    resp = signed_in.post("/collections/", {"name": "  walks ", "description": "dogs"})
    assert resp.status_code == 302
    made = Collection.objects.get(owner=user)
    assert (made.name, made.description, made.is_public) == ("walks", "dogs", False)
    again = signed_in.post("/collections/", {"name": "walks", "description": "kept"})
    assert again.status_code == 400 and "already have a collection" in again.content.decode()
    assert 'value="walks"' in again.content.decode() and Collection.objects.filter(owner=user).count() == 1


def test_rename_and_publish_from_the_page_and_a_clash_changes_nothing(signed_in, user, other_user):
    mine = CollectionFactory(owner=user, name="old")
    resp = signed_in.post(f"/collections/{mine.pk}/edit/", {f"c{mine.pk}-name": "new", f"c{mine.pk}-is_public": "on"})
    assert resp.status_code == 302
    mine.refresh_from_db()
    assert (mine.name, mine.is_public) == ("new", True)
    CollectionFactory(owner=other_user, name="taken", is_public=True)
    resp = signed_in.post(f"/collections/{mine.pk}/edit/", {f"c{mine.pk}-name": "taken", f"c{mine.pk}-is_public": "on"},
                        follow=True)
    assert "Not saved" in resp.content.decode() and "public collection named" in resp.content.decode()
    mine.refresh_from_db()
    assert (mine.name, mine.is_public) == ("new", True)
    signed_in.post(f"/collections/{mine.pk}/edit/", {f"c{mine.pk}-name": "new"})  # unticked: private again
    mine.refresh_from_db()
    assert mine.is_public is False


def test_delete_removes_images_captions_vectors_and_files_and_nothing_else(signed_in, user, conse_v0,
                                                                          django_capture_on_commit_callbacks):
    doomed, kept = CollectionFactory(owner=user, name="doomed"), CollectionFactory(owner=user, name="kept")
    gone = make_image(doomed, seed=4, caption="going")
    ImageEmbedding.objects.create(image=gone, model_version=conse_v0, vector=b"\0" * 16)
    stays = make_image(kept, seed=5, caption="staying")
    files = [gone.file.name, gone.thumbnail.name]
    assert all(default_storage.exists(n) for n in files)
    with django_capture_on_commit_callbacks(execute=True):
        resp = signed_in.post(f"/collections/{doomed.pk}/delete/", follow=True)
    assert resp.status_code == 200 and "deleted" in resp.content.decode()
    assert not Collection.objects.filter(pk=doomed.pk).exists()
    assert list(Image.objects.values_list("pk", flat=True)) == [stays.pk]
    assert list(Caption.objects.values_list("text", flat=True)) == ["staying"]
    assert not ImageEmbedding.objects.exists()
    assert not any(default_storage.exists(n) for n in files)
    assert default_storage.exists(stays.file.name)


def test_another_users_collection_cannot_be_edited_or_deleted_from_the_page(signed_in, other_user):
    theirs = CollectionFactory(owner=other_user, name="theirs", is_public=True)
    assert signed_in.post(f"/collections/{theirs.pk}/edit/", {f"c{theirs.pk}-name": "mine now"}).status_code == 404
    assert signed_in.post(f"/collections/{theirs.pk}/delete/").status_code == 404
    assert Collection.objects.get(pk=theirs.pk).name == "theirs"


def test_staff_manage_every_collection(staff, other_user):
    theirs = CollectionFactory(owner=other_user, name="theirs")
    client = Client()
    client.force_login(staff)
    assert "theirs" in client.get("/collections/").content.decode()
    assert client.post(f"/collections/{theirs.pk}/edit/", {f"c{theirs.pk}-name": "renamed"}).status_code == 302
    assert Collection.objects.get(pk=theirs.pk).name == "renamed"


def test_api_patch_and_delete(api, user, other_user, anon_api):
    mine = CollectionFactory(owner=user, name="api-one")
    resp = api.patch(f"/api/v1/collections/{mine.pk}/", {"name": "api-two", "is_public": True}, format="json")
    assert resp.status_code == 200 and resp.json()["name"] == "api-two" and resp.json()["is_public"] is True
    bad = api.patch(f"/api/v1/collections/{mine.pk}/", {"name": "  "}, format="json")
    assert bad.status_code == 400
    assert Collection.objects.get(pk=mine.pk).name == "api-two"
    theirs_public = CollectionFactory(owner=other_user, name="pub", is_public=True)
    theirs_private = CollectionFactory(owner=other_user, name="priv")
    assert api.get(f"/api/v1/collections/{theirs_public.pk}/").status_code == 200
    assert api.patch(f"/api/v1/collections/{theirs_public.pk}/", {"name": "x"}, format="json").status_code == 403
    assert api.delete(f"/api/v1/collections/{theirs_private.pk}/").status_code == 404  # never revealed
    assert anon_api.delete(f"/api/v1/collections/{mine.pk}/").status_code == 401
    assert api.delete(f"/api/v1/collections/{mine.pk}/").status_code == 204
    assert not Collection.objects.filter(pk=mine.pk).exists()
    assert Collection.objects.filter(pk__in=[theirs_public.pk, theirs_private.pk]).count() == 2
