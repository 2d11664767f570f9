"""/api/v1/images/ and /api/v1/collections/: uploads, listing, access, the one error shape."""
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from embeddings.models import Caption, Image
from tests import images as mk
from tests.factories import CollectionFactory, make_image

pytestmark = pytest.mark.django_db


def upload(client, data: bytes, name="photo.jpg", collection="mine", content_type="image/jpeg", **extra):
    payload = {"file": SimpleUploadedFile(name, data, content_type=content_type), "collection": collection, **extra}
    return client.post("/api/v1/images/", payload, format="multipart")


def assert_error_shape(resp, status, field=None):
    assert resp.status_code == status, resp.content
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    if field:
        assert field in body["error"]["fields"], body


def test_upload_stores_image_caption_and_thumbnail(api, collection):
    resp = upload(api, mk.image_bytes("JPEG", (80, 60)), caption="  a red   square ")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["collection"] == "mine" and body["width"] == 80 and body["status"] == "pending"
    assert [c["text"] for c in body["captions"]] == ["a red square"]
    image = Image.objects.get(pk=body["id"])
    assert image.file.storage.exists(image.file.name) and image.thumbnail.storage.exists(image.thumbnail.name)


def test_same_bytes_twice_give_one_image_and_the_same_body(api, collection):
    data = mk.image_bytes("PNG")
    first = upload(api, data, name="a.png", caption="x")
    second = upload(api, data, name="b.png", caption="x")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    assert Image.objects.count() == 1 and Caption.objects.count() == 1


def test_stored_under_generated_name_not_the_clients(api, collection):
    resp = upload(api, mk.image_bytes("JPEG"), name="../../etc/passwd\u202e.jpg")
    assert resp.status_code == 201
    image = Image.objects.get(pk=resp.json()["id"])
    assert ".." not in image.file.name and "passwd" not in image.file.name
    assert image.file.name.startswith("images/")


@pytest.mark.parametrize("data,name,ctype", [
    (b"", "empty.jpg", "image/jpeg"),
    (b"hello world", "notes.txt", "text/plain"),
    (mk.HTML, "evil.jpg", "image/jpeg"),
    (mk.SVG, "vector.svg", "image/svg+xml"),
    (mk.EPS, "ghost.png", "image/png"),
    (mk.PDF, "doc.png", "image/png"),
    (mk.tiff_bytes(), "scan.png", "image/png"),
    (mk.psd_bytes(), "layers.png", "image/png"),
    (mk.truncated_jpeg(), "cut.jpg", "image/jpeg"),
    (mk.bitflipped_png(), "flip.png", "image/png"),
])
def test_bad_files_get_400_with_a_file_error_and_nothing_is_stored(api, collection, data, name, ctype):
    resp = upload(api, data, name=name, content_type=ctype)
    assert_error_shape(resp, 400, "file")
    assert Image.objects.count() == 0


def test_decompression_bomb_gets_400_image_too_large(api, collection, settings):
    settings.LOUPE_MAX_IMAGE_PIXELS = 1_000_000
    resp = upload(api, mk.png_declaring(40_000, 40_000), name="bomb.png", content_type="image/png")
    assert_error_shape(resp, 400, "file")
    assert "too large" in resp.json()["error"]["message"].lower()


def stored_files(settings) -> list:
    return [p for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()] if settings.MEDIA_ROOT.exists() else []


@pytest.mark.parametrize("size", [(1, 60_000), (60_000, 1)])
def test_one_pixel_strip_gets_400_bad_aspect_ratio_and_nothing_is_stored(api, collection, settings, size):
    """A 321-byte 1x60000 PNG: under the pixel cap, but encoding it took 13 GB."""
    resp = upload(api, mk.image_bytes("PNG", size), name="strip.png", content_type="image/png")
    assert_error_shape(resp, 400, "file")
    error = resp.json()["error"]
    assert error["code"] == "bad_aspect_ratio" and "20:1" in error["message"]
    assert Image.objects.count() == 0 and stored_files(settings) == []


def test_side_and_aspect_caps_follow_the_settings(api, collection, settings):
    settings.LOUPE_MAX_IMAGE_SIDE = 100
    resp = upload(api, mk.image_bytes("PNG", (120, 90)), name="wide.png", content_type="image/png")
    assert_error_shape(resp, 400, "file")
    assert resp.json()["error"]["code"] == "image_side_too_large" and "100 pixels" in resp.json()["error"]["message"]
    settings.LOUPE_MAX_IMAGE_SIDE = 20_000
    settings.LOUPE_MAX_ASPECT_RATIO = 1.25
    resp = upload(api, mk.image_bytes("PNG", (120, 90)), name="wide.png", content_type="image/png")
    assert_error_shape(resp, 400, "file")
    assert resp.json()["error"]["code"] == "bad_aspect_ratio" and "1.25:1" in resp.json()["error"]["message"]
    assert Image.objects.count() == 0 and stored_files(settings) == []
    settings.LOUPE_MAX_ASPECT_RATIO = 1.5
    assert upload(api, mk.image_bytes("PNG", (120, 90)), name="wide.png", content_type="image/png").status_code == 201


def test_missing_or_misnamed_fields_get_field_errors(api, collection):
    resp = api.post("/api/v1/images/", {"collection": "mine"}, format="multipart")
    assert_error_shape(resp, 400, "file")
    resp = api.post("/api/v1/images/", {"image": SimpleUploadedFile("a.jpg", mk.image_bytes())}, format="multipart")
    assert_error_shape(resp, 400, "file")
    assert "collection" in resp.json()["error"]["fields"]


def test_unknown_collection_is_a_field_error(api, collection):
    assert_error_shape(upload(api, mk.image_bytes(), collection="nope"), 400, "collection")


def test_anonymous_upload_is_refused(anon_api, collection):
    resp = upload(anon_api, mk.image_bytes())
    assert resp.status_code == 401
    assert Image.objects.count() == 0


def test_other_users_private_collection_is_invisible(api, other_user):
    theirs = CollectionFactory(owner=other_user, name="theirs")
    image = make_image(theirs, seed=3, caption="secret")
    assert api.get(f"/api/v1/images/{image.pk}/").status_code == 404
    assert api.delete(f"/api/v1/images/{image.pk}/").status_code == 404
    listing = api.get("/api/v1/images/").json()
    assert listing["count"] == 0 and str(image.pk) not in str(listing)
    assert "theirs" not in str(api.get("/api/v1/collections/").json())
    assert_error_shape(upload(api, mk.image_bytes(), collection="theirs"), 400, "collection")
    assert Image.objects.filter(pk=image.pk).exists()


def test_public_collection_is_readable_anonymously_but_not_writable(anon_api, api, other_user):
    public = CollectionFactory(owner=other_user, name="pub", is_public=True)
    image = make_image(public, seed=5)
    assert anon_api.get(f"/api/v1/images/{image.pk}/").status_code == 200
    assert api.delete(f"/api/v1/images/{image.pk}/").status_code == 403
    assert upload(api, mk.image_bytes(), collection="pub").status_code == 403


def test_refusals_answer_the_one_error_shape_with_stable_codes(anon_api, api, collection, other_user):
    """The embeddings APIs raise project.exceptions like the others: the same codes, statuses and shape."""
    public = CollectionFactory(owner=other_user, name="pub", is_public=True)
    image = make_image(public, seed=6)

    def error(resp, status):
        assert_error_shape(resp, status)
        return resp.json()["error"]

    assert error(api.delete(f"/api/v1/images/{image.pk}/"), 403) == {
        "code": "permission_denied", "message": "You cannot delete images of this collection."}
    assert error(upload(api, mk.image_bytes(), collection="pub"), 403)["code"] == "permission_denied"
    assert error(anon_api.get(f"/api/v1/images/{image.pk + 1000}/"), 404)["code"] == "not_found"
    assert error(upload(api, mk.image_bytes(), collection="nope"), 400) == {
        "code": "invalid", "message": "No such collection.", "fields": {"collection": ["No such collection."]}}
    assert error(api.post("/api/v1/words/train/", {"collection": "pub"}, format="json"), 403) == {
        "code": "permission_denied", "message": "Only the collection's owner can train its word vectors."}
    assert error(api.get("/api/v1/words/train/", {"collection": "mine"}), 404) == {
        "code": "not_found", "message": "Word vectors were never requested for this collection."}
    assert error(api.get("/api/v1/words/nearest/", {"collection": "nope", "word": "dog"}), 400)["fields"] == {
        "collection": ["No such collection."]}


def test_file_urls_are_absolute_on_the_request_origin_in_lists_and_details(api, collection, settings):
    settings.ALLOWED_HOSTS = ["testserver", "photos.example.org"]
    image = make_image(collection, seed=11)
    listed = api.get("/api/v1/images/").json()["results"][0]
    detail = api.get(f"/api/v1/images/{image.pk}/", HTTP_HOST="photos.example.org").json()
    assert listed["image_url"] == f"http://testserver{image.file.url}"
    assert listed["thumbnail_url"] == f"http://testserver{image.thumbnail.url}"
    assert detail["image_url"] == f"http://photos.example.org{image.file.url}"


def test_delete_removes_row_and_files(api, collection, django_capture_on_commit_callbacks):
    image = make_image(collection, seed=9)
    storage, names = image.file.storage, [image.file.name, image.thumbnail.name]
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/images/{image.pk}/").status_code == 204
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not any(storage.exists(n) for n in names)


def test_list_filters_and_pagination(api, collection):
    for i in range(5):
        make_image(collection, seed=100 + i, caption="c" if i % 2 == 0 else None, split="train" if i < 3 else "dev")
    assert api.get("/api/v1/images/?split=train").json()["count"] == 3
    assert api.get("/api/v1/images/?has_caption=true").json()["count"] == 3
    assert api.get("/api/v1/images/?collection=mine&page_size=2").json()["next"]
    assert api.get("/api/v1/images/?page=999").status_code == 404


def test_collections_create_and_conflict(api):
    assert api.post("/api/v1/collections/", {"name": "trips"}, format="json").status_code == 201
    assert_error_shape(api.post("/api/v1/collections/", {"name": "trips"}, format="json"), 409)
    assert_error_shape(api.post("/api/v1/collections/", {}, format="json"), 400, "name")


def test_too_many_files_in_one_request_is_400(api, collection, settings):
    files = {f"f{i}": SimpleUploadedFile(f"{i}.jpg", b"x") for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)}
    resp = api.post("/api/v1/images/", {"collection": "mine", **files}, format="multipart")
    assert resp.status_code in (400, 413)
    assert Image.objects.count() == 0


def test_too_many_fields_is_400(api, collection):
    fields = {f"k{i}": "v" for i in range(1001)}
    resp = api.post("/api/v1/images/", {"collection": "mine", **fields}, format="multipart")
    assert resp.status_code in (400, 413)


def test_huge_body_is_413_from_content_length_alone(client, user, settings):
    client.force_login(user)
    resp = client.generic("POST", "/api/v1/images/", b"x" * 10, CONTENT_TYPE="multipart/form-data; boundary=x",
                          CONTENT_LENGTH=str(100 * 1024 * 1024))
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "too_large"


def test_responses_carry_nosniff(anon_api):
    assert anon_api.get("/api/v1/images/")["X-Content-Type-Options"] == "nosniff"


def test_session_post_without_csrf_is_refused(user, collection):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    resp = client.post("/api/v1/collections/", {"name": "x"}, format="json")
    assert resp.status_code == 403


def test_upload_streams_are_read_once(api, collection):
    data = io.BytesIO(mk.image_bytes())
    resp = api.post("/api/v1/images/", {"file": data, "collection": "mine"}, format="multipart")
    assert resp.status_code == 201


def test_token_auth_lets_a_client_upload(user, collection):
    from rest_framework.test import APIClient

    client = APIClient()
    resp = client.post("/api/v1/auth/token/", {"username": user.username, "password": "pw-not-secret"}, format="json")
    assert resp.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {resp.json()['token']}")
    assert upload(client, mk.image_bytes()).status_code == 201
    bad = APIClient().post("/api/v1/auth/token/", {"username": user.username, "password": "wrong"}, format="json")
    assert bad.status_code == 400
