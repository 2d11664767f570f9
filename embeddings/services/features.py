"""Encoder features of a whole collection, computed ahead of training or evaluation.

`manage.py train` and `manage.py evaluate` read image features and caption sentence vectors
from the product's caches (`embeddings.runtime.image_feature_cache` / `text_vector_cache`) and
compute whatever is missing on the way. Computing them first, with this service, is the same
work with its own progress bar and a summary, and is resumable: a stopped run keeps every chunk
it finished, and a rerun encodes only what is missing.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from embeddings import encoding, runtime
from embeddings.models import Caption, Collection, Image

logger = logging.getLogger(__name__)
CHUNK = 256  # images per cache shard (forwards of LOUPE_ENCODE_BATCH): bounds memory (256 x 49 x 1280 floats)


@dataclass(frozen=True)
class FeatureSummary:
    images: int  # images in the collection
    images_encoded: int  # of them, newly encoded now (the rest were cached)
    captions: int  # distinct caption texts
    captions_encoded: int
    seconds: float
    images_unreadable: int = 0  # stored files that cannot be read (named in the log; not counted as encoded)

    def as_dict(self) -> dict:
        return asdict(self)


def collection_features_compute(*, collection: Collection, captions: bool = True,
                                on_progress: Callable[[int], None] | None = None,
                                encoder: str = runtime.LITE0) -> FeatureSummary:
    """Encode every image of `collection` with `encoder` (and, with `captions`, every caption
    text) that is not in the caches yet. `on_progress(n)` is called after each chunk of n images."""
    started = time.perf_counter()
    ids = list(Image.objects.filter(collection=collection).exclude(file="").order_by("pk")
               .values_list("pk", flat=True))
    with runtime.image_feature_cache(encoder) as cache:
        missing = cache.missing([runtime.image_feature_key(i) for i in ids])
    if on_progress is not None and len(ids) > len(missing):
        on_progress(len(ids) - len(missing))
    unreadable = 0
    for start in range(0, len(missing), CHUNK):
        part = missing[start:start + CHUNK]
        try:  # the same loader and batched encoder as the encode tasks
            runtime.cached_features(part, encoding.stored_image_loader(part), encoder)
        except runtime.ImagesUnreadable as exc:  # the others of the chunk are cached
            logger.error("%s", exc.message)
            unreadable += len(exc.failed)
        if on_progress is not None:
            on_progress(len(part))
    texts: list[str] = []
    encoded_texts = 0
    if captions:
        texts = list(dict.fromkeys(Caption.objects.filter(image__collection=collection).order_by("pk")
                                   .values_list("text", flat=True)))
        encoded_texts = runtime.cached_text_vectors(texts)[1]
    return FeatureSummary(images=len(ids), images_encoded=len(missing) - unreadable, captions=len(texts),
                          captions_encoded=encoded_texts, seconds=round(time.perf_counter() - started, 1),
                          images_unreadable=unreadable)
