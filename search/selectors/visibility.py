"""Allow-lists: the ids a search may return for a user. Every id a search returns comes from
`searchable_image_ids` / `searchable_caption_ids`, which start from `embeddings.selectors`
visibility rules: a private collection's images, captions, ids and counts never reach a user who
may not see them."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, Max, OuterRef, Q, QuerySet

from embeddings import selectors as emb_selectors
from embeddings.models import Caption, Collection, Image
from project.caching import BoundedCache
from project.exceptions import ApplicationError
from search.selectors.filters import HUMAN_SOURCES, IMAGE, SearchFilters
from search.selectors.vectors import ids_of


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
        qs = qs.filter(emb_selectors.collection_named_q(user=user, names=filters.collections))
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


def who(user: Any) -> tuple:
    """Everything about the user that the visibility rules (collection_visibility_q) read: the
    key of every per-process memo of a user's view."""
    if user is None or not user.is_authenticated:
        return ("anon",)
    return ("user", user.pk, bool(user.is_staff), bool(getattr(user, "is_superuser", False)))


def hidden_items(user: Any, modality: str) -> QuerySet:
    """The images (or captions) in collections this user may NOT see."""
    hidden = _hidden_collections(user).order_by().values("pk")
    if modality == IMAGE:
        return Image.objects.filter(collection_id__in=hidden)
    return Caption.objects.filter(image__collection_id__in=hidden)


def _visibility_fingerprint() -> tuple:
    """Changes whenever the set of images, or who may see which collection, changes.

    Two cheap queries (an aggregate over images, the few collection rows) instead of reading
    every visible id on every search; a stale entry can therefore never show a private image.
    """
    agg = Image.objects.aggregate(n=Count("pk"), top=Max("pk"))
    collections = tuple(Collection.objects.order_by("pk").values_list("pk", "is_public", "owner_id"))
    return agg["n"], agg["top"], hash(collections)


_ID_CACHE: BoundedCache[np.ndarray] = BoundedCache(256)  # (who, filters, fingerprint) -> ids


def searchable_image_ids(*, user: Any, filters: SearchFilters) -> np.ndarray:
    """Sorted unique (N,) ids of the images this user may get from this search.

    Cached per process by (who is asking, filters, visibility fingerprint): at 100k images the
    id list took ~1 s to read on every request (docs/design/search-latency.md).
    """
    if filters.keyword or filters.has_human_caption is not None:  # caption edits do not move the fingerprint
        return ids_of(searchable_images(user=user, filters=filters))
    key = (who(user), repr(filters), _visibility_fingerprint())

    def read() -> np.ndarray:
        ids = ids_of(searchable_images(user=user, filters=filters))
        ids.setflags(write=False)
        return ids

    return _ID_CACHE.get_or_make(key, read)


def keyword_image_ids(*, user: Any, filters: SearchFilters) -> np.ndarray:
    """Searchable images with a caption containing the keyword (for boost mode)."""
    qs = searchable_images(user=user, filters=filters).filter(
        Exists(Caption.objects.filter(image=OuterRef("pk"), text__icontains=filters.keyword)))
    return ids_of(qs)


def searchable_caption_ids(*, user: Any, filters: SearchFilters) -> np.ndarray:
    """Captions of searchable images; the keyword (any mode) filters the caption text itself."""
    images = searchable_images(user=user, filters=SearchFilters(
        collections=filters.collections, split=filters.split, owner=filters.owner,
        has_human_caption=filters.has_human_caption))
    qs = Caption.objects.filter(image__in=images)
    if filters.keyword:
        qs = qs.filter(text__icontains=filters.keyword)
    return ids_of(qs)


def image_caption_ids(*, image_id: int) -> np.ndarray:
    return ids_of(Caption.objects.filter(image_id=image_id))
