"""embeddings/ingest/imaging.py: what is accepted, what is rejected and why, and what is stored."""
import io

import pytest
from PIL import Image

from embeddings.ingest.imaging import ImageRejected, sanitize_image
from tests import images as mk

CAPS = {"max_pixels": 10_000_000, "max_bytes": 5_000_000}


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "png")])
def test_allowed_formats_are_reencoded(fmt, ext):
    out = sanitize_image(mk.image_bytes(fmt, (40, 30)), **CAPS)
    assert (out.width, out.height, out.format, out.extension) == (40, 30, fmt, ext)
    assert Image.open(io.BytesIO(out.content)).size == (40, 30)
    assert Image.open(io.BytesIO(out.thumbnail)).format == "JPEG"


@pytest.mark.parametrize("data,code", [
    (b"", "empty"),
    (b"just some text\n", "unsupported_format"),
    (mk.HTML, "unsupported_format"),
    (mk.SVG, "unsupported_format"),
    (mk.EPS, "unsupported_format"),
    (mk.PDF, "unsupported_format"),
    (mk.tiff_bytes(), "unsupported_format"),
    (mk.psd_bytes(), "unsupported_format"),
    (mk.truncated_jpeg(), "corrupt"),
    (mk.bitflipped_png(), "corrupt"),
])
def test_bad_bytes_are_rejected_with_a_reason(data, code):
    with pytest.raises(ImageRejected) as err:
        sanitize_image(data, **CAPS)
    assert err.value.code == code
    assert err.value.message


def test_decompression_bomb_is_rejected_before_decoding(monkeypatch):
    def boom(*a, **k):  # a full decode must never happen
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(Image.Image, "load", boom)
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.png_declaring(50_000, 50_000), max_pixels=1_000_000, max_bytes=1_000_000)
    assert err.value.code == "image_too_large"
    assert "too large" in err.value.message.lower()


def test_gif_bomb_is_rejected():
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.gif_declaring(60_000, 60_000), max_pixels=1_000_000, max_bytes=1_000_000)
    assert err.value.code == "image_too_large"


def test_pillow_bomb_warning_range_is_an_error(monkeypatch):
    """Between 1x and 2x MAX_IMAGE_PIXELS Pillow only warns; we reject."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.image_bytes("PNG", (40, 40)), max_pixels=10**9, max_bytes=10**7)  # 1600 px: 1.6x
    assert err.value.code == "image_too_large"


def test_app_pixel_cap_applies_below_pillows():
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.image_bytes("PNG", (100, 100)), max_pixels=9_999, max_bytes=10**7)
    assert err.value.code == "image_too_large"


def test_byte_cap():
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.image_bytes("PNG", (100, 100)), max_pixels=10**9, max_bytes=100)
    assert err.value.code == "too_large"


def test_png_followed_by_html_is_stored_only_as_a_clean_raster():
    out = sanitize_image(mk.png_then_html(), **CAPS)
    assert b"<script>" not in out.content and b"<html>" not in out.content


def test_exif_orientation_applied_and_metadata_stripped():
    out = sanitize_image(mk.jpeg_with_exif(), **CAPS)
    assert (out.width, out.height) == (20, 40)  # orientation 6 rotates the 40x20 image
    stored = Image.open(io.BytesIO(out.content))
    assert not stored.getexif()
    assert b"<script>" not in out.content and b"GPS" not in out.content
    assert b"Exif" not in out.content


def test_sha256_is_of_the_received_bytes():
    import hashlib

    data = mk.image_bytes("PNG")
    assert sanitize_image(data, **CAPS).sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [(1, 60_000), (60_000, 1)])
def test_one_pixel_strip_is_rejected_for_its_aspect_ratio_before_decoding(monkeypatch, size):
    """321 bytes and 60k pixels (under the pixel cap), but encoding would resize it to 224 x 13.4M."""
    data = mk.image_bytes("PNG", size)

    def boom(*a, **k):  # the header alone decides
        raise AssertionError("decoded a strip")

    monkeypatch.setattr(Image.Image, "load", boom)
    with pytest.raises(ImageRejected) as err:
        sanitize_image(data, **CAPS)
    assert err.value.code == "bad_aspect_ratio"
    assert "20:1" in err.value.message and "60000" in err.value.message


def test_aspect_ratio_cap_is_inclusive_and_follows_its_argument():
    assert sanitize_image(mk.image_bytes("PNG", (400, 20)), **CAPS).width == 400  # exactly 20:1
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.image_bytes("PNG", (20, 401)), **CAPS)
    assert err.value.code == "bad_aspect_ratio"
    assert sanitize_image(mk.image_bytes("PNG", (20, 401)), **CAPS, max_aspect=25).height == 401
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.image_bytes("PNG", (64, 40)), **CAPS, max_aspect=1.5)
    assert err.value.code == "bad_aspect_ratio" and "1.5:1" in err.value.message


def test_side_cap_rejects_a_long_side_from_the_header(monkeypatch):
    monkeypatch.setattr(Image.Image, "load", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ImageRejected) as err:
        sanitize_image(mk.png_declaring(3000, 1000), **CAPS, max_side=2000)
    assert err.value.code == "image_side_too_large" and "2000 pixels" in err.value.message
