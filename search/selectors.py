"""Reads for search: model versions, stored vectors, and the allow-lists of visible ids.

Every id a search may return comes from `searchable_image_ids` / `searchable_caption_ids`,
which start from `embeddings.selectors` visibility rules: a private collection's images,
captions, ids and counts never reach a user who may not see them.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Value

from embeddings import selectors as emb_selectors
from embeddings.models import Caption, CaptionEmbedding, Collection, Image, ImageEmbedding, ModelVersion
from embeddings.runtime import ModelUnavailable
from project.exceptions import ApplicationError
from search.models import RemovedItem, SearchIndex

logger = logging.getLogger(__name__)

IMAGE, CAPTION = SearchIndex.Modality.IMAGE.value, SearchIndex.Modality.CAPTION.value
MODALITIES = (IMAGE, CAPTION)
HUMAN_SOURCES = (Caption.Source.HUMAN, Caption.Source.IMPORTED)
_CHUNK = 2000


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied inside the search (as an allow-list), never after it."""

    collections: tuple[str, ...] = ()  # collection names; empty = every visible collection
    split: str | None = None  # train | dev | test | none
    has_human_caption: bool | None = None  # human or imported caption present / absent
    owner: str | None = None  # username of the collections' owner
    keyword: str = ""  # caption substring (case-insensitive); see keyword_mode
    keyword_mode: str = "filter"  # filter: only matching images; boost: matching ones rank higher
    keyword_boost: float = 0.1  # added to the cosine score of matching images in boost mode


# --- model versions -------------------------------------------------------------------------
def version_resolve(*, model_version_id: int | None) -> ModelVersion:
    """The requested embedding version, or the active one; 400 for unknown, 503 for none."""
    if model_version_id is None:
        version = emb_selectors.model_version_active(kind=ModelVersion.Kind.EMBEDDING)
        if version is None:
            raise ModelUnavailable("No active embedding model.")
        return version
    version = ModelVersion.objects.filter(pk=model_version_id, kind=ModelVersion.Kind.EMBEDDING).first()
    if version is None:
        raise ApplicationError(f"Unknown model version {model_version_id}.",
                               fields={"model_version": ["Unknown embedding model version."]})
    return version


def version_dim(version: ModelVersion) -> int:
    """Vector size of a version: its recorded dim, else the size of one stored vector."""
    if version.dim:
        return int(version.dim)
    for model in (ImageEmbedding, CaptionEmbedding):
        row = model.objects.filter(model_version=version).values_list("vector", flat=True).first()
        if row is not None:
            return len(bytes(row)) // 4
    raise ModelUnavailable(f"Model version {version.pk} has no recorded dimension and no vectors.")


def index_records(*, modality: str | None = None) -> QuerySet[SearchIndex]:
    qs = SearchIndex.objects.select_related("model_version")
    return qs.filter(modality=modality) if modality else qs


# --- stored vectors ---------------------------------------------------------------------------
def _vector_model(modality: str) -> tuple[type, str]:
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
        logger.error("skipped %d stored %s vectors of version %s with a wrong size or values", bad, modality, version_id)
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


# --- allow-lists ------------------------------------------------------------------------------
def _unknown_collections(user: Any, names: Sequence[str]) -> list[str]:
    visible = set(emb_selectors.collection_list(user=user).filter(name__in=names).values_list("name", flat=True))
    return [n for n in names if n not in visible]


def searchable_images(*, user: Any, filters: SearchFilters) -> QuerySet[Image]:
    """Visible images passing the filters (keyword filter included, keyword boost not)."""
    qs = emb_selectors.visible_image_ids(user=user)
    if filters.collections:
        unknown = _unknown_collections(user, filters.collections)
        if unknown:  # a private collection and a missing one look the same
            raise ApplicationError(f"No such collection: {unknown[0]}.", fields={"collection": ["No such collection."]})
        qs = qs.filter(collection__name__in=filters.collections)
    if filters.split:
        qs = qs.filter(split=filters.split)
    if filters.owner:
        owner = get_user_model().objects.filter(username=filters.owner).first()
        qs = qs.filter(collection__owner=owner) if owner else qs.none()
    if filters.has_human_caption is not None:
        human = Caption.objects.filter(image=OuterRef("pk"), source__in=HUMAN_SOURCES)
        qs = qs.filter(Exists(human)) if filters.has_human_caption else qs.exclude(Exists(human))
    if filters.keyword and filters.keyword_mode == "filter":
        qs = qs.filter(Exists(Caption.objects.filter(image=OuterRef("pk"), text__icontains=filters.keyword)))
    return qs


def filters_narrow(filters: SearchFilters) -> bool:
    """Whether the filters restrict the set beyond visibility (a keyword boost does not)."""
    return bool(filters.collections or filters.split or filters.owner or filters.has_human_caption is not None
                or (filters.keyword and filters.keyword_mode == "filter"))


def _hidden_collections(user: Any) -> QuerySet[Collection]:
    """Collections this user may NOT see (the collection table is small); none for staff."""
    visible = emb_selectors.collection_visibility_q(user)
    if visible == Q():  # staff see every collection
        return Collection.objects.none()
    return Collection.objects.exclude(visible)


def unsearchable_ids(*, user: Any, version_id: int, modality: str) -> np.ndarray:
    """Sorted ids a search of this (version, modality) index must never return, read fresh:

    - items of the collections the user may NOT see. The search hides them from the whole
      index instead of reading every visible id: the cost grows with the hidden items (usually
      a few private collections), not with the corpus, and it is exact at the moment of the
      request (a collection turning private, an image moved into a private collection by an
      admin: both apply to the next search);
    - items deleted from the database that the index may still hold (`removed_ids`).

    One round trip when nothing is hidden (hidden collection ids and removed ids together),
    a second one for the items of the hidden collections when there are some.
    """
    tagged = _hidden_collections(user).order_by().annotate(tag=Value(0)).values_list("tag", "pk").union(
        RemovedItem.objects.filter(model_version_id=version_id, modality=modality).order_by()
        .annotate(tag=Value(1)).values_list("tag", "item_id"), all=True)
    rows = list(tagged)
    collections = [pk for tag, pk in rows if tag == 0]
    ids = [pk for tag, pk in rows if tag == 1]
    if collections:
        items = (Image.objects.filter(collection_id__in=collections) if modality == IMAGE
                 else Caption.objects.filter(image__collection_id__in=collections))
        ids += list(items.values_list("pk", flat=True))
    return np.unique(np.asarray(ids, dtype=np.int64))


def removed_ids(*, version_id: int, modality: str) -> np.ndarray:
    """Sorted ids deleted from the database that an index of this version may still hold.

    Filled by database triggers in the deleting transaction (search.models.RemovedItem) and
    emptied as index writes catch up, so the table is usually empty.
    """
    items = RemovedItem.objects.filter(model_version_id=version_id, modality=modality)
    return np.unique(np.asarray(list(items.values_list("item_id", flat=True)), dtype=np.int64))


def removed_forget(*, version_id: int, modality: str, index_ids: np.ndarray) -> int:
    """Drop the rows of ids that `index_ids` (sorted: the index just saved) no longer holds."""
    rows = list(RemovedItem.objects.filter(model_version_id=version_id, modality=modality)
                .values_list("pk", "item_id"))
    if not rows:
        return 0
    pks, items = np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64)
    at = np.clip(np.searchsorted(index_ids, items), 0, max(len(index_ids) - 1, 0))
    held = (index_ids[at] == items) if len(index_ids) else np.zeros(len(items), bool)
    gone = pks[~held].tolist()
    if gone:
        RemovedItem.objects.filter(pk__in=gone).delete()
    return len(gone)


def _ids(qs: QuerySet, field: str = "pk") -> np.ndarray:
    return np.unique(np.fromiter(qs.values_list(field, flat=True).iterator(chunk_size=_CHUNK), dtype=np.int64))


def _visibility_fingerprint() -> tuple:
    """Changes whenever the set of images, or who may see which collection, changes.

    Two cheap queries (an aggregate over images, the few collection rows) instead of reading
    every visible id on every search; a stale entry can therefore never show a private image.
    """
    from django.db.models import Count, Max

    agg = Image.objects.aggregate(n=Count("pk"), top=Max("pk"))
    collections = tuple(Collection.objects.order_by("pk").values_list("pk", "is_public", "owner_id"))
    return agg["n"], agg["top"], hash(collections)


_ID_CACHE: dict[tuple, np.ndarray] = {}
_ID_CACHE_LOCK = threading.Lock()


def searchable_image_ids(*, user: Any, filters: SearchFilters) -> np.ndarray:
    """Sorted unique (N,) ids of the images this user may get from this search.

    Cached per process by (who is asking, filters, visibility fingerprint): at 100k images the
    id list took ~1 s to read on every request (bench/results/search_e2e.md).
    """
    if filters.keyword or filters.has_human_caption is not None:  # caption edits do not move the fingerprint
        return _ids(searchable_images(user=user, filters=filters))
    who = "staff" if getattr(user, "is_staff", False) else (user.pk if getattr(user, "is_authenticated", False) else "anon")
    key = (who, repr(filters), _visibility_fingerprint())
    with _ID_CACHE_LOCK:
        hit = _ID_CACHE.get(key)
    if hit is not None:
        return hit
    ids = _ids(searchable_images(user=user, filters=filters))
    ids.setflags(write=False)
    with _ID_CACHE_LOCK:
        if len(_ID_CACHE) > 256:
            _ID_CACHE.clear()
        _ID_CACHE[key] = ids
    return ids


def keyword_image_ids(*, user: Any, filters: SearchFilters) -> np.ndarray:
    """Searchable images with a caption containing the keyword (for boost mode)."""
    qs = searchable_images(user=user, filters=filters).filter(
        Exists(Caption.objects.filter(image=OuterRef("pk"), text__icontains=filters.keyword)))
    return _ids(qs)


def searchable_caption_ids(*, user: Any, filters: SearchFilters) -> np.ndarray:
    """Captions of searchable images; the keyword (any mode) filters the caption text itself."""
    images = searchable_images(user=user, filters=SearchFilters(
        collections=filters.collections, split=filters.split, owner=filters.owner,
        has_human_caption=filters.has_human_caption))
    qs = Caption.objects.filter(image__in=images)
    if filters.keyword:
        qs = qs.filter(text__icontains=filters.keyword)
    return _ids(qs)


# --- hydration --------------------------------------------------------------------------------
def images_in_order(*, user: Any, ids: Sequence[int]) -> list[Image]:
    """Visible images for `ids`, in that order, captions prefetched; vanished ids are dropped."""
    captions = Prefetch("captions", queryset=Caption.objects.order_by("id"))
    rows = emb_selectors.visible_image_ids(user=user).filter(pk__in=list(ids)).select_related(
        "collection").prefetch_related(captions)
    by_id = {img.pk: img for img in rows}
    return [by_id[i] for i in ids if i in by_id]


def captions_in_order(*, user: Any, ids: Sequence[int]) -> list[Caption]:
    rows = Caption.objects.filter(pk__in=list(ids)).filter(
        emb_selectors.collection_visibility_q(user, "image__collection__")).select_related("image")
    by_id = {c.pk: c for c in rows}
    return [by_id[i] for i in ids if i in by_id]


def image_visible(*, user: Any, image_id: int) -> Image | None:
    return emb_selectors.visible_image_ids(user=user).select_related("collection").filter(pk=image_id).first()


def caption_visible(*, user: Any, caption_id: int) -> Caption | None:
    return Caption.objects.filter(pk=caption_id).filter(
        emb_selectors.collection_visibility_q(user, "image__collection__")).select_related(
        "image", "image__collection").first()


def image_caption_ids(*, image_id: int) -> np.ndarray:
    return _ids(Caption.objects.filter(image_id=image_id))


# --- coverage ---------------------------------------------------------------------------------
def coverage(*, version: ModelVersion) -> dict[str, Any]:
    """How much of the collection has vectors for this version, and what the indexes hold."""
    images = Image.objects.count()
    images_with = ImageEmbedding.objects.filter(model_version=version).count()
    captions = Caption.objects.count()
    captions_with = CaptionEmbedding.objects.filter(model_version=version).count()
    records = {r.modality: r for r in SearchIndex.objects.filter(model_version=version)}
    return {
        "model_version": version.pk,
        "images": images, "images_with_vectors": images_with,
        "image_coverage": images_with / images if images else 1.0,
        "captions": captions, "captions_with_vectors": captions_with,
        "caption_coverage": captions_with / captions if captions else 1.0,
        "indexes": {m: {"count": r.count, "status": r.status, "type": r.index_type, "recall_at_10": r.recall_at_10}
                    for m, r in records.items()},
    }


def images_without_vectors(*, version: ModelVersion) -> QuerySet[Image]:
    return Image.objects.exclude(Q(status=Image.Status.FAILED) | Q(embeddings__model_version=version))


def captions_without_vectors(*, version: ModelVersion) -> QuerySet[Caption]:
    return Caption.objects.exclude(embeddings__model_version=version)
