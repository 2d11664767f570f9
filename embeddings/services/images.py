"""Images: every ingest entry point (upload, import, demo) stores through `image_ingest`."""
from __future__ import annotations

import hashlib
import io
import logging
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from PIL import Image as PILImage

from embeddings import runtime
from embeddings.ingest.imaging import ImageRejected, SanitizedImage, read_limited, sanitize_image
from embeddings.models import Caption, Collection, Image
from embeddings.services.text import clean_caption_text, safe_source_name
from project import queueing
from project.exceptions import ApplicationError

logger = logging.getLogger(__name__)


class InvalidImage(ApplicationError):
    """Bytes that are not an image we accept (format, size, pixel or shape caps): a 400."""

    code = "invalid_image"


@dataclass(frozen=True)
class IngestResult:
    image: Image
    created: bool


def storage_names(sanitized: SanitizedImage, collection: Collection) -> tuple[str, str]:
    token = uuid.uuid4().hex
    base = f"{collection.pk}/{sanitized.sha256[:2]}/{token}"
    return f"images/{base}.{sanitized.extension}", f"thumbs/{base}.jpg"


def read_upload(stream: BinaryIO, *, field: str = "file") -> bytes:
    """The bytes of an upload, refused (400, the error under `field`) past LOUPE_MAX_UPLOAD_BYTES
    without reading the rest."""
    try:
        return read_limited(stream, settings.LOUPE_MAX_UPLOAD_BYTES)
    except ImageRejected as exc:
        raise InvalidImage(exc.message, fields={field: [exc.message]}, code=exc.code) from exc


def sanitize_bytes(data: bytes) -> SanitizedImage:
    try:
        return sanitize_image(
            data,
            max_pixels=settings.LOUPE_MAX_IMAGE_PIXELS,
            max_bytes=settings.LOUPE_MAX_UPLOAD_BYTES,
            thumb_size=settings.LOUPE_THUMBNAIL_SIZE,
            max_side=settings.LOUPE_MAX_IMAGE_SIDE,
            max_aspect=settings.LOUPE_MAX_ASPECT_RATIO,
        )
    except ImageRejected as exc:
        raise InvalidImage(exc.message, fields={"file": [exc.message]}, code=exc.code) from exc


def raster_features(clean: bytes, encoder: str = runtime.LITE0) -> dict[str, np.ndarray]:
    """Encoder features of a raster `sanitize_bytes` already produced (its `.content`), from
    `encoder` (the model version's own: `runtime.image_encoder_name(version)`)."""
    with PILImage.open(io.BytesIO(clean)) as img:
        img.load()
        return runtime.image_features([img.convert("RGB")], encoder)


def upload_features(data: bytes) -> dict[str, np.ndarray]:
    """Encoder features of an uploaded image (search by image, caption an upload): validated
    like a stored upload (formats, pixel and shape caps), never stored."""
    return raster_features(sanitize_bytes(data).content)


def _add_caption(image: Image, text: str, source: str, user: Any) -> None:
    if text and not image.captions.filter(text=text).exists():
        Caption.objects.create(image=image, text=text, source=source, created_by=user)


def image_ingest(
    *,
    collection: Collection,
    stream: BinaryIO,
    filename: str = "",
    caption: str | None = None,
    user: Any = None,
    split: str = Image.Split.NONE,
    caption_source: str = Caption.Source.HUMAN,
    enqueue: bool = True,
) -> IngestResult:
    """Validate, store and record one image; idempotent on the bytes' sha256 within a collection.

    Files are written before the row, and removed again if the row cannot be written, so a
    failure leaves nothing half-stored. Follow-up work is enqueued only after commit.
    """
    text = clean_caption_text(caption)
    data = read_upload(stream)
    existing = Image.objects.filter(collection=collection, sha256=hashlib.sha256(data).hexdigest()).first()
    if existing:  # a retry or a re-import: no decode, no second row, the same image back
        with transaction.atomic():
            _add_caption(existing, text, caption_source, user)
        return IngestResult(existing, False)
    sanitized = sanitize_bytes(data)
    image_name, thumb_name = storage_names(sanitized, collection)
    stored = [default_storage.save(image_name, ContentFile(sanitized.content))]
    stored.append(default_storage.save(thumb_name, ContentFile(sanitized.thumbnail)))
    try:
        with transaction.atomic():
            image = Image.objects.create(
                collection=collection, file=stored[0], thumbnail=stored[1], sha256=sanitized.sha256,
                width=sanitized.width, height=sanitized.height, format=sanitized.format,
                size_bytes=sanitized.size_bytes, split=split, source_name=safe_source_name(filename),
                created_by=user if getattr(user, "is_authenticated", False) else None,
            )
            _add_caption(image, text, caption_source, user if getattr(user, "is_authenticated", False) else None)
            if enqueue:
                transaction.on_commit(lambda: enqueue_image_processing([image.pk]))
    except IntegrityError:
        # A concurrent upload of the same bytes won the race: return its row.
        for name in stored:
            default_storage.delete(name)
        existing = Image.objects.get(collection=collection, sha256=sanitized.sha256)
        return IngestResult(existing, False)
    except BaseException:
        for name in stored:
            default_storage.delete(name)
        raise
    return IngestResult(image, True)


def enqueue_image_processing(image_ids: list[int], *, bulk: bool = False) -> bool:
    """Publish follow-up work now; if the broker is down, the images stay pending for the sweeper.

    `bulk` (imports, the sweeper's batches) goes to the `bulk` queue, which the long-jobs worker
    takes, so a big import never delays the processing of an upload or an index update on the
    `default` queue (docs/deploy.md, "Queues")."""
    return queueing.publish("embeddings.tasks.process_images", [int(i) for i in image_ids],
                            queue="bulk" if bulk else None)


def image_delete(*, image: Image) -> None:
    names = [image.file.name, image.thumbnail.name]
    with transaction.atomic():
        image.delete()
        transaction.on_commit(lambda: [default_storage.delete(n) for n in names if n])
