"""Reindex missing: encode what the active version lacks, drop what was deleted, report coverage."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from embeddings import encoding, runtime
from embeddings.models import ModelVersion
from search import receivers, selectors
from search.selectors import MODALITIES
from search.services.indexes import index_sync

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _encode_images(version: ModelVersion, batch_size: int, progress: Progress | None) -> tuple[int, int]:
    ids = list(selectors.images_without_vectors(version=version).order_by("pk").values_list("pk", flat=True))
    done = failed = 0
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        try:
            done += encoding.images_encode(image_ids=chunk, version=version)
        except runtime.ImagesUnreadable as exc:  # the readable ones of the chunk were stored
            logger.error("%s", exc.message)
            done += len(exc.keys)
            failed += len(exc.failed)
        except Exception as exc:  # one unreadable file must not stop the rest: retry one by one
            logger.warning("encoding %d images failed (%s); retrying one by one", len(chunk), exc)
            for image_id in chunk:
                try:
                    done += encoding.images_encode(image_ids=[image_id], version=version)
                except Exception as one_exc:
                    failed += 1
                    logger.error("image %s cannot be encoded: %s", image_id, one_exc)
        if progress:
            progress("images", min(start + batch_size, len(ids)), len(ids))
    return done, failed


def _encode_captions(version: ModelVersion, batch_size: int, progress: Progress | None) -> int:
    captions = list(selectors.captions_without_vectors(version=version).order_by("pk"))
    done = 0
    for start in range(0, len(captions), batch_size):
        done += len(encoding.captions_encode(captions=captions[start:start + batch_size], version=version,
                                             notify=False))
        if progress:
            progress("captions", min(start + batch_size, len(captions)), len(captions))
    return done


def reindex_missing(*, version: ModelVersion | None = None, batch_size: int = 64,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Encode images and captions without vectors for `version` (default: active), then sync
    both indexes with the database (which also drops vectors of deleted items).

    Images marked failed are not retried (they count as missing in the coverage).
    Returns the coverage report plus what was done.
    """
    if version is None:
        version = runtime.active_version(ModelVersion.Kind.EMBEDDING)
        if version is None:
            raise runtime.ModelUnavailable("No active embedding model.")
    with receivers.suppressed():  # the syncs below index everything at once
        images, failed = _encode_images(version, batch_size, progress)
        captions = _encode_captions(version, max(batch_size, 256), progress)
    synced = {m: index_sync(version=version, modality=m) for m in MODALITIES}
    report = selectors.coverage(version=version)
    report.update({"encoded_images": images, "failed_images": failed, "encoded_captions": captions, "synced": synced})
    return report
