"""Follow-up processing of stored images, run in Celery workers.

Each image's attempts are counted in the database before the work starts, so a poison image
that crashes the worker is tried at most LOUPE_MAX_TASK_ATTEMPTS times and then marked failed,
instead of being redelivered forever.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from embeddings import runtime
from embeddings.models import Image

logger = logging.getLogger(__name__)

# Steps run for each image, in order; each takes a list of Image rows and returns a short note.
# Later layers (encoding, captioning) register themselves here from their AppConfig.ready.
STEPS: list[tuple[str, Callable[[list[Image]], str]]] = []


def register_step(name: str, fn: Callable[[list[Image]], str]) -> None:
    if name not in [n for n, _ in STEPS]:
        STEPS.append((name, fn))


def _claim(image_ids: list[int]) -> list[Image]:
    """Count an attempt for each image; fail those over the limit; return the ones to work on."""
    limit = settings.LOUPE_MAX_TASK_ATTEMPTS
    with transaction.atomic():
        open_ = Image.objects.filter(pk__in=image_ids).exclude(status__in=[Image.Status.READY, Image.Status.FAILED])
        # Images that already had `limit` tries (each ended by a crash, or they would not be
        # open) are failed without counting another attempt, so `attempts` is the tries made.
        open_.filter(attempts__gte=limit).update(
            status=Image.Status.FAILED,
            status_reason=f"gave up after {limit} attempts (none finished; the worker died or was killed)"
        )
        open_.filter(attempts__lt=limit).update(attempts=F("attempts") + 1, status=Image.Status.PROCESSING)
    return list(Image.objects.filter(pk__in=image_ids, status=Image.Status.PROCESSING).select_related("collection"))


def _run_steps(images: list[Image]) -> tuple[list[Image], str]:
    """(the images the steps finished, their note). An image whose stored file cannot be read
    (`runtime.ImagesUnreadable`) is failed at once with the reason, alone: the steps run again
    for the others (the encode step finds their features cached and upserts the same vectors)."""
    while images:
        try:
            notes = [f"{name}: {step(images)}" for name, step in STEPS]
        except runtime.ImagesUnreadable as exc:
            _fail_unreadable(images, exc.failed)
            images = [img for img in images if str(img.pk) not in exc.failed]
            continue
        return images, "; ".join(notes) if notes else "no active model"
    return [], ""


def _fail_unreadable(images: list[Image], failed: dict[str, str]) -> None:
    for img in images:
        reason = failed.get(str(img.pk))
        if reason is not None:
            logger.error("image %s cannot be read: %s", img.pk, reason)
            Image.objects.filter(pk=img.pk).update(status=Image.Status.FAILED,
                                                   status_reason=f"unreadable image file: {reason}"[:2000])


def images_process(*, image_ids: list[int]) -> dict[str, int]:
    """Run the registered steps; a failing batch is retried image by image so one bad image
    does not hold back the rest, and its reason is recorded on its row.

    A batch holding an image whose previous try never finished (still `processing`: the worker
    died, perhaps because of that very image) is not run as a batch again: each image gets a
    task of its own, so a poison image that kills workers spends only its own attempts.
    """
    if len(image_ids) > 1 and Image.objects.filter(pk__in=image_ids, status=Image.Status.PROCESSING).exists():
        return _isolate(image_ids)
    images = _claim(image_ids)
    if not images:
        return {"processed": 0, "failed": 0}
    try:
        done, note = _run_steps(images)
    except Exception as exc:
        if len(images) == 1:
            _record_failure(images[0], exc)
            return {"processed": 0, "failed": 1}
        logger.warning("Batch of %d failed (%s); retrying one by one", len(images), exc)
        failed = sum(_process_one(img) for img in images)
        return {"processed": len(images) - failed, "failed": failed}
    Image.objects.filter(pk__in=[i.pk for i in done]).update(status=Image.Status.READY, status_reason=note[:2000])
    return {"processed": len(done), "failed": len(images) - len(done)}


def _isolate(image_ids: list[int]) -> dict[str, int]:
    from embeddings.services.images import enqueue_image_processing

    logger.warning("a previous try of a batch of %d images did not finish; one task per image now", len(image_ids))
    for image_id in image_ids:
        if not enqueue_image_processing([image_id]):
            break  # broker down: the images stay pending/processing and the sweeper re-sends them
    return {"processed": 0, "failed": 0, "isolated": len(image_ids)}


def _process_one(image: Image) -> int:
    try:
        done, note = _run_steps([image])
    except Exception as exc:
        _record_failure(image, exc)
        return 1
    if not done:
        return 1
    Image.objects.filter(pk=image.pk).update(status=Image.Status.READY, status_reason=note[:2000])
    return 0


def _record_failure(image: Image, exc: Exception) -> None:
    logger.error("Processing image %s failed: %s", image.pk, exc, exc_info=exc)
    final = image.attempts >= settings.LOUPE_MAX_TASK_ATTEMPTS
    Image.objects.filter(pk=image.pk).update(
        status=Image.Status.FAILED if final else Image.Status.PENDING,
        status_reason=(f"failed after {image.attempts} attempts: " if final else "error: ") + str(exc)[:1800],
    )


def pending_images_requeue(*, older_than: timedelta = timedelta(seconds=30), batch: int = 256) -> int:
    from embeddings.services.images import enqueue_image_processing

    cutoff = timezone.now() - older_than
    ids = list(
        Image.objects.filter(status__in=[Image.Status.PENDING, Image.Status.PROCESSING], created_at__lt=cutoff)
        .values_list("pk", flat=True)[:10_000]
    )
    for start in range(0, len(ids), batch):
        if not enqueue_image_processing(ids[start:start + batch], bulk=True):
            break
    return len(ids)
