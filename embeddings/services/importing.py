"""Bulk import service behind `manage.py import_dataset` and the demo collection.

Same validation as single uploads (`embeddings.ingest.imaging.sanitize_image`), but batched: images are
read and re-encoded on a small thread pool (Pillow releases the GIL while decoding), rows and
captions are written with bulk_create in one transaction per chunk, and follow-up work is
enqueued per chunk after commit. Re-running adds nothing: images are matched by sha256 before
any decoding, and captions by exact text.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from embeddings.ingest.readers import ImportItem
from embeddings.models import Caption, Collection, Image
from embeddings.services.images import InvalidImage, enqueue_image_processing, sanitize_bytes, storage_names
from embeddings.services.text import clean_caption_text, safe_source_name

logger = logging.getLogger(__name__)
# Images per transaction and per encode task on the bulk queue: the worker starts on the first
# chunk while the rest is still being validated, and a chunk's vectors go to the index as soon as
# its last image is encoded (64 images: about 4 s of one CPU core at Lite0's speed).
CHUNK = 64


@dataclass
class ImportSummary:
    imported: int = 0
    present: int = 0
    captions_added: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"imported": self.imported, "already_present": self.present,
                "captions_added": self.captions_added, "rejected": len(self.rejected)}


def _prepare(item: ImportItem, known: dict[str, int], collection: Collection) -> tuple[str, Any]:
    """Read, hash and (if new) sanitise and store the files. Runs on the thread pool."""
    try:
        data = item.path.read_bytes()
    except OSError as exc:
        return "rejected", f"cannot read file: {exc.strerror or exc}"
    sha = hashlib.sha256(data).hexdigest()
    if sha in known:
        return "present", sha
    try:
        clean = sanitize_bytes(data)
    except InvalidImage as exc:
        return "rejected", exc.message
    image_name, thumb_name = storage_names(clean, collection)
    names = (default_storage.save(image_name, ContentFile(clean.content)),
             default_storage.save(thumb_name, ContentFile(clean.thumbnail)))
    return "new", (clean, names)


def dataset_import(
    *,
    items: Sequence[ImportItem],
    collection: Collection,
    user: Any = None,
    caption_source: str = Caption.Source.IMPORTED,
    on_progress: Callable[[int], None] | None = None,
    workers: int = 2,
    enqueue: bool = True,
) -> ImportSummary:
    summary = ImportSummary()
    known: dict[str, int] = dict(Image.objects.filter(collection=collection).values_list("sha256", "pk"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            results = list(pool.map(lambda it: _prepare(it, known, collection), chunk))
            new_ids = _write_chunk(chunk, results, collection, user, caption_source, known, summary)
            if enqueue and new_ids:
                transaction.on_commit(lambda ids=new_ids: enqueue_image_processing(ids, bulk=True))
            if on_progress:
                on_progress(len(chunk))
    return summary


def _write_chunk(chunk, results, collection, user, caption_source, known, summary) -> list[int]:
    stored: list[str] = []  # files written for this chunk, removed again if the rows fail
    duplicates: list[str] = []  # files of bytes that appeared twice in this chunk
    try:
        with transaction.atomic():
            rows: list[tuple[ImportItem, Image]] = []
            present: list[tuple[ImportItem, str]] = []
            for item, (kind, payload) in zip(chunk, results):
                if kind == "rejected":
                    summary.rejected.append((item.name, payload))
                    continue
                if kind == "present":
                    present.append((item, payload))
                    continue
                clean, names = payload
                stored.extend(names)
                if clean.sha256 in known:  # the same bytes twice inside this chunk
                    duplicates.extend(names)
                    present.append((item, clean.sha256))
                    continue
                known[clean.sha256] = 0  # reserved; the real pk is set after bulk_create
                rows.append((item, Image(
                    collection=collection, file=names[0], thumbnail=names[1], sha256=clean.sha256,
                    width=clean.width, height=clean.height, format=clean.format, size_bytes=clean.size_bytes,
                    split=item.split, source_name=safe_source_name(item.name), created_by=user,
                )))
            created = Image.objects.bulk_create([img for _, img in rows])
            for img in created:
                known[img.sha256] = img.pk
            targets = [(item, img.pk) for (item, _), img in zip(rows, created)]
            targets += [(item, known[sha]) for item, sha in present]
            summary.imported += len(created)
            summary.present += len(present)
            summary.captions_added += _add_captions(targets, caption_source, user)
    except BaseException:
        for name in stored:
            default_storage.delete(name)
        raise
    for name in duplicates:
        default_storage.delete(name)
    return [img.pk for img in created]


def _add_captions(targets: list[tuple[ImportItem, int]], source: str, user: Any) -> int:
    """Add each item's captions that the image lacks, counting repeats: a dataset may hold the
    same sentence twice for one image (Flickr8k does), and a re-run must add nothing."""
    ids = [pk for _, pk in targets]
    have = Counter(Caption.objects.filter(image_id__in=ids).values_list("image_id", "text"))
    new: list[Caption] = []
    for item, pk in targets:
        wanted = Counter((pk, t) for t in (clean_caption_text(raw[:1000]) for raw in item.captions) if t)
        for key, count in wanted.items():
            for _ in range(count - have[key]):
                new.append(Caption(image_id=pk, text=key[1], source=source, created_by=user))
            have[key] = max(have[key], count)
    Caption.objects.bulk_create(new, batch_size=1000)
    return len(new)
