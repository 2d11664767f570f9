"""Validate untrusted image bytes and re-encode them into a clean raster (pure Pillow, no Django).

Every entry point (browser, REST, CLI importer) goes through `sanitize_image`, so one set of rules
decides what is stored:

* only JPEG, PNG, WebP and GIF (first frame) are even parsed (Pillow's `formats=` allow-list, so
  EPS/PDF/PSD/TIFF/SVG never reach a decoder, and Ghostscript is never invoked);
* the declared size is checked *before* decoding against a pixel cap, a cap on each side and a
  cap on the aspect ratio (a 1x60000 PNG is 320 bytes and 60k pixels, but resizing its short side
  to 224 would make 13 million rows), and Pillow's DecompressionBombWarning is an error;
* the image is fully decoded (truncated or corrupt files are rejected; LOAD_TRUNCATED_IMAGES stays off);
* EXIF orientation is applied and all metadata (EXIF, GPS, ICC, text chunks) is dropped by
  re-encoding into a fresh image, so what is stored and served is a raster made by us.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# Stored format and extension per input format; a GIF's first frame is stored as PNG.
_OUTPUT = {"JPEG": ("JPEG", "jpg"), "PNG": ("PNG", "png"), "WEBP": ("WEBP", "webp"), "GIF": ("PNG", "png")}
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Defaults of the shape caps (the app passes LOUPE_MAX_IMAGE_SIDE / LOUPE_MAX_ASPECT_RATIO).
DEFAULT_MAX_SIDE = 20_000  # pixels, either side
DEFAULT_MAX_ASPECT_RATIO = 20.0  # longer side / shorter side: panoramas pass, 1xN strips do not


class ImageRejected(ValueError):
    """The bytes are not an acceptable image. `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SanitizedImage:
    content: bytes  # the re-encoded raster to store
    thumbnail: bytes  # JPEG thumbnail
    sha256: str  # of the bytes as received
    width: int
    height: int
    format: str  # input format (JPEG, PNG, WEBP, GIF)
    extension: str  # of the stored raster
    size_bytes: int  # as received


def read_limited(stream: BinaryIO, max_bytes: int) -> bytes:
    """Read at most max_bytes; raise ImageRejected if the stream holds more."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"File is larger than {max_bytes} bytes.")
    return data


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            "unsupported_format", "Unsupported or unrecognised image format (allowed: JPEG, PNG, WebP, GIF)."
        ) from exc


def _check_size(img: Image.Image, max_pixels: int, max_side: int, max_aspect: float) -> None:
    """Reject from the declared size alone (the header), before any pixel is decoded."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", "Image has no pixels.")
    if width * height > max_pixels:
        raise ImageRejected(
            "image_too_large", f"Image too large: {width}x{height} exceeds the cap of {max_pixels} pixels."
        )
    long, short = max(width, height), min(width, height)
    if long > max_aspect * short:
        raise ImageRejected(
            "bad_aspect_ratio",
            f"Image aspect ratio too extreme: {width}x{height} is {long / short:,.1f}:1; the longer side "
            f"may be at most {max_aspect:g} times the shorter ({max_aspect:g}:1).",
        )
    if long > max_side:
        raise ImageRejected(
            "image_side_too_large",
            f"Image side too long: {width}x{height}; each side may be at most {max_side} pixels.",
        )


def sanitize_image(
    data: bytes,
    *,
    max_pixels: int,
    max_bytes: int,
    thumb_size: int = 256,
    max_side: int = DEFAULT_MAX_SIDE,
    max_aspect: float = DEFAULT_MAX_ASPECT_RATIO,
) -> SanitizedImage:
    """Validate `data` and return a clean re-encode plus a thumbnail; raise ImageRejected otherwise."""
    if not data:
        raise ImageRejected("empty", "The file is empty.")
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"File is larger than {max_bytes} bytes.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe = _open(data)
            fmt = probe.format or ""
            _check_size(probe, max_pixels, max_side, max_aspect)
            probe.verify()  # structural check (PNG CRCs, chunk order) without decoding
            img = _open(data)
            img.seek(0)  # GIF: first frame only
            img.load()  # the full decode: truncated data raises here
        except ImageRejected:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageRejected("image_too_large", f"Image too large: {exc}") from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
            raise ImageRejected("corrupt", f"Corrupt or truncated image: {exc}") from exc
    if fmt not in _OUTPUT:
        raise ImageRejected("unsupported_format", f"Unsupported image format {fmt!r}.")
    try:
        clean = _clean_raster(img, fmt)
    except (OSError, ValueError) as exc:
        raise ImageRejected("corrupt", f"Corrupt image: {exc}") from exc
    out_fmt, ext = _OUTPUT[fmt]
    content = _encode(clean, out_fmt)
    return SanitizedImage(
        content=content,
        thumbnail=make_thumbnail(clean, thumb_size),
        sha256=hashlib.sha256(data).hexdigest(),
        width=clean.width,
        height=clean.height,
        format=fmt,
        extension=ext,
        size_bytes=len(data),
    )


def _clean_raster(img: Image.Image, fmt: str) -> Image.Image:
    """Apply EXIF orientation, normalise the mode, and drop every metadata block."""
    oriented = ImageOps.exif_transpose(img) or img
    if fmt == "JPEG":
        mode = "RGB" if oriented.mode not in ("RGB", "L") else oriented.mode
    elif oriented.mode in ("RGBA", "LA") or (oriented.mode == "P" and "transparency" in oriented.info):
        mode = "RGBA"
    else:
        mode = "RGB" if oriented.mode not in ("RGB", "L") else oriented.mode
    clean = oriented.convert(mode)
    if clean is oriented:
        clean = oriented.copy()
    clean.info = {}  # EXIF, GPS, ICC, comments, PNG text: none of it is written back
    return clean


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=92, optimize=False)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=92)
    else:
        img.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def make_thumbnail(img: Image.Image, size: int) -> bytes:
    thumb = img.convert("RGB")
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=85)
    return buf.getvalue()
