"""Raw reads of the stored vectors: the database is the indexes' source of truth."""
from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from django.db.models import Model, QuerySet

from embeddings.models import CaptionEmbedding, ImageEmbedding
from search.selectors.filters import CAPTION, IMAGE

logger = logging.getLogger(__name__)
_CHUNK = 2000


def ids_of(qs: QuerySet, field: str = "pk") -> np.ndarray:
    """Sorted unique (N,) int64 values of one column, streamed."""
    return np.unique(np.fromiter(qs.values_list(field, flat=True).iterator(chunk_size=_CHUNK), dtype=np.int64))


def _vector_model(modality: str) -> tuple[type[Model], str]:
    if modality == IMAGE:
        return ImageEmbedding, "image_id"
    if modality == CAPTION:
        return CaptionEmbedding, "caption_id"
    raise ValueError(f"unknown modality {modality!r}")


def stored_vector_ids(*, version_id: int, modality: str) -> np.ndarray:
    """Sorted (N,) int64 keys that have a stored vector for this version."""
    model, key = _vector_model(modality)
    ids = model.objects.filter(model_version_id=version_id).values_list(key, flat=True)
    return np.sort(np.fromiter(ids.iterator(chunk_size=_CHUNK), dtype=np.int64))


def stored_vectors(*, version_id: int, modality: str, dim: int,
                   ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,) int64, vectors (N, dim) float32) from the database, the index's source of truth.

    Rows whose byte length does not match `dim` are skipped and logged (never indexed).
    """
    model, key = _vector_model(modality)
    qs = model.objects.filter(model_version_id=version_id)
    if ids is not None:
        qs = qs.filter(**{f"{key}__in": list(ids)})
    keys: list[int] = []
    rows: list[np.ndarray] = []
    bad = 0
    for pk, blob in qs.values_list(key, "vector").iterator(chunk_size=_CHUNK):
        vec = np.frombuffer(bytes(blob), dtype="<f4")
        if vec.shape[0] != dim or not np.isfinite(vec).all() or not vec.any():
            bad += 1
            continue
        keys.append(pk)
        rows.append(vec)
    if bad:
        logger.error("skipped %d stored %s vectors of version %s with a wrong size or values",
                     bad, modality, version_id)
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return np.asarray(keys, dtype=np.int64), vectors


def vectors_sample(*, version_id: int, modality: str, dim: int, limit: int = 500) -> np.ndarray | None:
    """Up to `limit` stored vectors (e.g. caption vectors to tune an image index on real queries)."""
    model, key = _vector_model(modality)
    pks = list(model.objects.filter(model_version_id=version_id).order_by("?").values_list(key, flat=True)[:limit])
    if not pks:
        return None
    return stored_vectors(version_id=version_id, modality=modality, dim=dim, ids=pks)[1]


def image_vector(*, version_id: int, image_id: int) -> np.ndarray | None:
    blob = ImageEmbedding.objects.filter(model_version_id=version_id, image_id=image_id).values_list(
        "vector", flat=True).first()
    return None if blob is None else np.frombuffer(bytes(blob), dtype="<f4").copy()


def has_vectors(*, version_id: int, modality: str) -> bool:
    model, _ = _vector_model(modality)
    return model.objects.filter(model_version_id=version_id).exists()
