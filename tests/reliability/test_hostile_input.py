"""Hostile uploads (issue 7, cases 3, 9, 10): polyglots, file names, EXIF, retries.

The other bad-input cases (bombs, formats, truncation, sizes, missing fields) are covered in
tests/embeddings/test_apis.py and tests/embeddings/test_imaging.py; docs/security.md maps them.
"""
from __future__ import annotations

import io
import re
import threading
import unicodedata
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image as PILImage

from embeddings import encoding, runtime
from embeddings.models import Image, ImageEmbedding, ModelVersion
from embeddings.services import image_ingest, processing
from tests import images as mk
from tests.factories import CollectionFactory, UserFactory
from tests.reliability.faultapp.apps import FakeEmbedder, _fake_features

STORED_NAME = re.compile(r"^(images|thumbs)/\d+/[0-9a-f]{2}/[0-9a-f]{32}\.(jpg|png|webp)$")


def _upload(client, data: bytes, name: str, caption: str | None = None, content_type: str = "image/jpeg"):
    payload = {"file": SimpleUploadedFile(name, data, content_type=content_type), "collection": "mine"}
    if caption is not None:
        payload["caption"] = caption
    return client.post("/api/v1/images/", payload, format="multipart")


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- case 9: hostile file names ---------------------------------------------------------------
HOSTILE_NAMES = [
    "../../x.jpg",
    "..\\..\\windows\\x.jpg",
    "a" * 300 + ".jpg",
    "nul\x00byte.jpg",
    "invoice\u202egpj.exe",  # right-to-left override: shows as "invoiceexe.jpg"
    "\u200fmark\u200e.jpg",  # RTL / LTR marks
    "<img src=x onerror=alert(1)>.jpg",
]


@pytest.mark.django_db
def test_hostile_file_names_are_stored_under_generated_names_and_shown_cleaned_and_escaped(api, user, collection):
    for seed, name in enumerate(HOSTILE_NAMES):
        resp = _upload(api, mk.unique_jpeg(seed), name)
        assert resp.status_code == 201, (name, resp.content)
        image = Image.objects.get(pk=resp.json()["id"])
        assert STORED_NAME.match(image.file.name) and STORED_NAME.match(image.thumbnail.name), image.file.name
        shown = image.source_name
        assert len(shown) <= 255 and "/" not in shown and "\\" not in shown
        assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in shown), repr(shown)
    media = Path(image.file.storage.location)
    stored = sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())
    assert len(stored) == 2 * len(HOSTILE_NAMES) and all(STORED_NAME.match(p) for p in stored)
    # Where a name is shown (the gallery's alt text) it is escaped.
    html = _browser(user).get("/").content.decode()
    assert "<img src=x onerror" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html


# --- case 9: hostile EXIF and captions --------------------------------------------------------
@pytest.mark.django_db
def test_hostile_exif_is_stripped_from_everything_stored_and_scripts_in_captions_are_escaped(api, user, collection):
    resp = _upload(api, mk.jpeg_with_exif("<script>alert('exif')</script>"), "gps.jpg",
                   caption="<script>alert('caption')</script>")
    assert resp.status_code == 201, resp.content
    image = Image.objects.get(pk=resp.json()["id"])
    browser = _browser(user)
    for field in (image.file, image.thumbnail):
        served = browser.get(f"/media/{field.name}")
        assert served.status_code == 200
        data = b"".join(served.streaming_content)
        assert b"alert" not in data and b"GPS" not in data and b"Exif" not in data
        assert not PILImage.open(io.BytesIO(data)).getexif()
    for path in (f"/images/{image.pk}/", "/"):
        html = browser.get(path).content.decode()
        assert "<script>alert(" not in html and "alert('exif')" not in html
    page = browser.get(f"/images/{image.pk}/").content.decode()
    assert "&lt;script&gt;alert(&#x27;caption&#x27;)&lt;/script&gt;" in page


# --- case 3: polyglots and what /media/ serves ------------------------------------------------
@pytest.mark.django_db
def test_png_followed_by_html_is_served_only_as_our_clean_png_with_nosniff_and_a_sandbox(api, user, collection):
    resp = _upload(api, mk.png_then_html(), "poly.png", content_type="image/png")
    assert resp.status_code == 201
    image = Image.objects.get(pk=resp.json()["id"])
    served = _browser(user).get(f"/media/{image.file.name}")
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served["Content-Security-Policy"] and "default-src 'none'" in served["Content-Security-Policy"]
    body = b"".join(served.streaming_content)
    assert b"<html" not in body and b"<script" not in body
    assert PILImage.open(io.BytesIO(body)).format == "PNG"


@pytest.mark.django_db
def test_html_named_jpg_is_rejected_and_files_without_an_image_row_are_never_served(api, user, collection, settings):
    assert _upload(api, mk.HTML, "page.jpg").status_code == 400
    # Files placed in MEDIA_ROOT by anything but the ingest service are not served at all.
    media = Path(settings.MEDIA_ROOT) / "images"
    media.mkdir(parents=True, exist_ok=True)
    (media / "planted.jpg").write_bytes(mk.HTML)
    (media / "planted.html").write_bytes(mk.HTML)
    browser = _browser(user)
    for name in ("images/planted.jpg", "images/planted.html", "images/../images/planted.jpg"):
        assert browser.get(f"/media/{name}").status_code == 404, name
    assert not str(settings.MEDIA_ROOT).startswith(str(settings.STATIC_ROOT))  # never under whitenoise


@pytest.mark.django_db
def test_media_of_a_private_image_is_404_for_others_and_carries_nosniff_for_the_owner(user, other_user):
    theirs = CollectionFactory(owner=other_user, name="theirs")
    image = image_ingest(collection=theirs, stream=io.BytesIO(mk.unique_jpeg(9)), filename="p.jpg",
                         user=other_user, enqueue=False).image
    for client in (_browser(user), Client()):
        resp = client.get(f"/media/{image.file.name}")
        assert resp.status_code == 404
        assert resp["X-Content-Type-Options"] == "nosniff"
    owner = _browser(other_user).get(f"/media/{image.thumbnail.name}")
    assert owner.status_code == 200 and owner["Content-Type"] == "image/jpeg"
    assert owner["X-Content-Type-Options"] == "nosniff" and owner["Cache-Control"].startswith("private")


# --- case 10: retries -------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_retried_upload_gives_the_same_body_enqueues_nothing_new_and_vectors_stay_one_per_version(
        api, collection, monkeypatch, django_capture_on_commit_callbacks):
    """A client retry after a timeout: the same image back (200, identical body), no second
    processing task, and encoding it again (a redelivered task) upserts: one ImageEmbedding
    per (image, model version)."""
    monkeypatch.setattr(runtime, "embedder_for", lambda version: FakeEmbedder())
    monkeypatch.setattr(encoding, "features_for", _fake_features)
    ModelVersion.objects.filter(status="active").update(status="retired")
    version = ModelVersion.objects.create(kind="embedding", name="fake", family="fake", status="active", dim=16)
    data = mk.unique_jpeg(42)
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = _upload(api, data, "a.jpg", caption="a cat")
    assert first.status_code == 201 and len(first_callbacks) == 1  # one processing task
    image_id = first.json()["id"]
    processing.images_process(image_ids=[image_id])
    vector = ImageEmbedding.objects.get(image_id=image_id).as_array().copy()

    with django_capture_on_commit_callbacks() as retry_callbacks:
        retry = _upload(api, data, "a (1).jpg", caption="a cat")
    assert retry.status_code == 200 and not retry_callbacks
    progress = ("status", "status_reason")  # processing ran in between: only these may differ
    assert {k: v for k, v in retry.json().items() if k not in progress} == \
        {k: v for k, v in first.json().items() if k not in progress}
    encoding.images_encode(image_ids=[image_id], version=version)  # as a redelivered task would
    processing.images_process(image_ids=[image_id])  # ready already: a no-op
    rows = ImageEmbedding.objects.filter(image_id=image_id)
    assert rows.count() == 1 and rows.get().model_version_id == version.pk
    assert (rows.get().as_array() == vector).all()
    assert Image.objects.count() == 1 and Image.objects.get().captions.count() == 1
    assert Image.objects.get().attempts == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_uploads_of_the_same_bytes_make_one_image_and_leave_no_stray_files(monkeypatch, settings):
    """Both requests pass the "already stored?" check before either commits (forced with a
    barrier); the database's unique (collection, sha256) decides, the loser returns the winner's
    image and removes the files it wrote."""
    from embeddings import services

    collection = CollectionFactory(owner=UserFactory(), name="race")
    barrier = threading.Barrier(2, timeout=30)
    real = services.sanitize_bytes

    def racing_sanitize(data):
        barrier.wait()  # both are past the existence check now
        return real(data)

    monkeypatch.setattr(services, "sanitize_bytes", racing_sanitize)
    data, results, errors = mk.unique_jpeg(77), [], []

    def upload():
        from django.db import connection

        try:
            results.append(image_ingest(collection=collection, stream=io.BytesIO(data), filename="r.jpg",
                                        user=collection.owner, enqueue=False))
        except Exception as exc:  # reported below; a thread must not swallow it silently
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors, errors
    assert sorted(r.created for r in results) == [False, True]
    assert len({r.image.pk for r in results}) == 1 and Image.objects.count() == 1
    media = Path(settings.MEDIA_ROOT)
    files = sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())
    image = Image.objects.get()
    assert files == sorted([image.file.name, image.thumbnail.name])


# --- case 5: Ghostscript is never started ----------------------------------------------------
@pytest.mark.django_db
def test_eps_and_pdf_renamed_png_are_400_and_no_external_program_ever_runs(api, collection, monkeypatch):
    """Pillow hands EPS to Ghostscript; the upload path only lets JPEG/PNG/WebP/GIF be parsed, so
    no subprocess is started at all (any attempt fails this test)."""
    import subprocess

    from PIL import EpsImagePlugin

    def forbidden(*args, **kwargs):
        raise AssertionError(f"an external program was started: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", forbidden, raising=False)
    for data, name in ((mk.EPS, "ghost.png"), (mk.PDF, "doc.png"), (mk.EPS, "ghost.eps")):
        resp = _upload(api, data, name, content_type="image/png")
        assert resp.status_code == 400, resp.content
        assert resp.json()["error"]["code"] == "unsupported_format"
    assert Image.objects.count() == 0
