"""Writes for collections, images and captions. Every ingest entry point calls `image_ingest`."""
from __future__ import annotations

import hashlib
import logging
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from embeddings.imaging import ImageRejected, SanitizedImage, read_limited, sanitize_image
from embeddings.models import Caption, Collection, Image, ModelVersion
from project import queueing
from project.exceptions import ApplicationError, Conflict

logger = logging.getLogger(__name__)

MAX_CAPTION_CHARS = 1000


class ImageRejectedError(ApplicationError):
    code = "invalid_image"


@dataclass(frozen=True)
class IngestResult:
    image: Image
    created: bool


# Bidirectional formatting characters: they reorder how a name is shown ("photos\u202egpj.exe"),
# so a name carrying one could pass for another.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def collection_name_clean(name: str | None) -> str:
    """NFC-normalised, stripped; 1 to 100 characters without control or bidi-override characters."""
    name = unicodedata.normalize("NFC", str(name or "")).strip()
    if not name or len(name) > 100:
        raise ApplicationError("A collection name of 1 to 100 characters is required.", fields={"name": ["Invalid name."]})
    bad = sorted({f"U+{ord(ch):04X}" for ch in name
                  if ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Zl", "Zp")})
    if bad:
        raise ApplicationError(
            f"A collection name cannot contain control or text-direction characters ({', '.join(bad)}).",
            fields={"name": ["Control or text-direction characters are not allowed."]}, code="invalid_name")
    return name


def collection_create(*, name: str, owner: Any, is_public: bool = False, description: str = "") -> Collection:
    """Names are unique per owner (and among public collections): a name another user keeps
    private is free to take, so the answer never reveals that it exists."""
    name = collection_name_clean(name)
    owner_q = {"owner": owner} if owner is not None else {"owner__isnull": True}
    if Collection.objects.filter(name=name, **owner_q).exists():
        raise Conflict(f"You already have a collection named {name!r}.", fields={"name": ["Already exists."]})
    if is_public and Collection.objects.filter(name=name, is_public=True).exists():
        raise Conflict(f"A public collection named {name!r} already exists.", fields={"name": ["Already exists."]})
    try:
        with transaction.atomic():
            return Collection.objects.create(name=name, owner=owner, is_public=is_public, description=description)
    except IntegrityError as exc:  # created by a parallel request since the checks
        raise Conflict(f"A collection named {name!r} was just created.", fields={"name": ["Already exists."]}) from exc


def collection_get_or_create(*, name: str, owner: Any, is_public: bool = False) -> tuple[Collection, bool]:
    """The owner's collection of that name (owner None: the owner-less one), made if missing."""
    name = collection_name_clean(name)
    owner_q = {"owner": owner} if owner is not None else {"owner__isnull": True}
    existing = Collection.objects.filter(name=name, **owner_q).first()
    if existing:
        return existing, False
    return collection_create(name=name, owner=owner, is_public=is_public), True


def clean_caption_text(text: str | None) -> str:
    """Strip, fold white space, drop control characters; reject over-long text."""
    if text is None:
        return ""
    text = "".join(ch for ch in str(text) if unicodedata.category(ch)[0] != "C" or ch in " \t\n")
    text = " ".join(text.split())
    if len(text) > MAX_CAPTION_CHARS:
        raise ApplicationError(
            f"Caption is longer than {MAX_CAPTION_CHARS} characters.", fields={"caption": ["Too long."]}
        )
    return text


def safe_source_name(name: str | None) -> str:
    """A display-only version of the client's file name (never used as a path)."""
    if not name:
        return ""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in ("C",))
    return name[:255]


def _storage_names(sanitized: SanitizedImage, collection: Collection) -> tuple[str, str]:
    token = uuid.uuid4().hex
    base = f"{collection.pk}/{sanitized.sha256[:2]}/{token}"
    return f"images/{base}.{sanitized.extension}", f"thumbs/{base}.jpg"


def _read_upload(stream: BinaryIO) -> bytes:
    try:
        return read_limited(stream, settings.LOUPE_MAX_UPLOAD_BYTES)
    except ImageRejected as exc:
        raise ImageRejectedError(exc.message, fields={"file": [exc.message]}, code=exc.code) from exc


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
        raise ImageRejectedError(exc.message, fields={"file": [exc.message]}, code=exc.code) from exc


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
    data = _read_upload(stream)
    existing = Image.objects.filter(collection=collection, sha256=hashlib.sha256(data).hexdigest()).first()
    if existing:  # a retry or a re-import: no decode, no second row, the same image back
        with transaction.atomic():
            _add_caption(existing, text, caption_source, user)
        return IngestResult(existing, False)
    sanitized = sanitize_bytes(data)
    image_name, thumb_name = _storage_names(sanitized, collection)
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


def enqueue_image_processing(image_ids: list[int]) -> bool:
    """Publish follow-up work now; if the broker is down, the images stay pending for the sweeper."""
    return queueing.publish("embeddings.tasks.process_images", [int(i) for i in image_ids])


def image_delete(*, image: Image) -> None:
    names = [image.file.name, image.thumbnail.name]
    with transaction.atomic():
        image.delete()
        transaction.on_commit(lambda: [default_storage.delete(n) for n in names if n])


def caption_add(*, image: Image, text: str, user: Any, source: str = Caption.Source.HUMAN) -> Caption:
    text = clean_caption_text(text)
    if not text:
        raise ApplicationError("Caption text is required.", fields={"text": ["This field may not be blank."]})
    return Caption.objects.create(image=image, text=text, source=source, created_by=user)


def conse_version_ensure() -> ModelVersion:
    """ConSE v0 exists (migration 0002 creates it); it becomes active only if nothing else is."""
    from embeddings.ml.conse import DEFAULT_K, DEFAULT_PROMPTS, DEFAULT_TEMPERATURE

    existing = ModelVersion.objects.filter(kind=ModelVersion.Kind.EMBEDDING, family="conse").first()
    if existing:
        return existing
    with transaction.atomic():
        active = ModelVersion.objects.select_for_update().filter(
            kind=ModelVersion.Kind.EMBEDDING, status=ModelVersion.Status.ACTIVE).exists()
        return ModelVersion.objects.create(
            kind=ModelVersion.Kind.EMBEDDING, name="conse-v0", family="conse", dim=384,
            status=ModelVersion.Status.RETIRED if active else ModelVersion.Status.ACTIVE,
            config={"k": DEFAULT_K, "temperature": DEFAULT_TEMPERATURE, "prompts": list(DEFAULT_PROMPTS)},
            encoders={"image": "efficientnet-lite0 (ImageNet)", "text": "all-MiniLM-L6-v2"},
        )
