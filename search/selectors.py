"""Reads for search: model versions, stored vectors, and the allow-lists of visible ids.

Every id a search may return comes from `searchable_image_ids` / `searchable_caption_ids`,
which start from `embeddings.selectors` visibility rules: a private collection's images,
captions, ids and counts never reach a user who may not see them.
"""
from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import Exists, Func, OuterRef, Q, QuerySet, Subquery, TextField, Value
from django.db.models.functions import Cast, Coalesce

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


# --- the per-request read: model version + deny-list in one round trip ------------------------
_VERSION_STAMP_FIELDS = ("status", "kind", "family", "name", "directory", "dim", "config", "encoders", "files",
                         "created_at", "promoted_at", "parent_id")
_VERSIONS: dict[int, tuple[str, ModelVersion]] = {}  # pk -> (stamp, row): per process, checked per request
_VERSIONS_LOCK = threading.Lock()
_T_VERSION, _T_REMOVED, _T_HIDDEN = 0, 1, 2


def _version_rows(model_version_id: int | None) -> QuerySet[ModelVersion]:
    kind = ModelVersion.Kind.EMBEDDING
    if model_version_id is None:  # at most one row: one active version per kind (unique constraint)
        return ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE)
    return ModelVersion.objects.filter(pk=model_version_id, kind=kind)


class _Joined(Func):
    """a || b || c as one flat expression (Concat nests one pair per argument, which overflows
    SQLite's parser stack for a dozen columns); PostgreSQL and SQLite both spell it `||`."""

    arg_joiner = " || "
    template = "(%(expressions)s)"
    output_field = TextField()


def _version_stamp() -> _Joined:
    """Every column of a version row as one text: any change to the row changes it."""
    parts: list[Any] = []
    for name in _VERSION_STAMP_FIELDS:
        parts += [Coalesce(Cast(name, TextField()), Value("~", output_field=TextField()), output_field=TextField()),
                  Value("|", output_field=TextField())]
    return _Joined(*parts)


def _hidden_items(user: Any, modality: str) -> QuerySet:
    hidden = _hidden_collections(user).order_by().values("pk")
    if modality == IMAGE:
        return Image.objects.filter(collection_id__in=hidden)
    return Caption.objects.filter(image__collection_id__in=hidden)


def search_context(*, user: Any, model_version_id: int | None, modality: str) -> tuple[ModelVersion, np.ndarray]:
    """(embedding version, sorted ids a search of its `modality` index must never return), read
    fresh in ONE round trip: the requested (or active) version's id and a stamp of its row, the
    ids deleted from the database that the index may still hold (logged by database triggers
    in the deleting transaction, search.models.RemovedItem; emptied as index writes catch up),
    and the items of the collections the user may NOT see. Hiding those from the whole index
    instead of reading every visible id makes the cost grow with the hidden items (usually a
    few private collections), not with the corpus, and it is exact at the moment of the
    request (a collection turning private, an image moved into a private collection by an
    admin: both apply to the next search). The version object is kept per process
    and reused while the stamp of its row is unchanged (promotion, retirement or any edit of the
    row is seen by the next request, in every process); a miss costs one more query.

    400 for an unknown version id, 503 when no embedding version is active.
    """
    key = (_who(user), model_version_id, modality)
    with _VERSIONS_LOCK:
        compiled = _CONTEXT_SQL.get(key)
    if compiled is None:
        compiled = _context_query(user, model_version_id, modality)
        with _VERSIONS_LOCK:
            if len(_CONTEXT_SQL) > 1024:
                _CONTEXT_SQL.clear()
            _CONTEXT_SQL[key] = compiled
    db, sql, params = compiled
    with connections[db].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    found: tuple[int, str] | None = None
    ids: list[int] = []
    for tag, pk, stamp in rows:
        if tag == _T_VERSION:
            found = (pk, stamp)
        else:
            ids.append(pk)
    if found is None:
        if model_version_id is None:
            raise ModelUnavailable("No active embedding model.")
        raise ApplicationError(f"Unknown model version {model_version_id}.",
                               fields={"model_version": ["Unknown embedding model version."]})
    return _version_cached(*found), np.unique(np.asarray(ids, dtype=np.int64))


def _who(user: Any) -> tuple:
    """Everything about the user that the visibility rules (collection_visibility_q) read."""
    if user is None or not user.is_authenticated:
        return ("anon",)
    return ("user", user.pk, bool(user.is_staff), bool(getattr(user, "is_superuser", False)))


# (who, version id, modality) -> (db alias, SQL, params) of search_context's query. The SQL depends
# on nothing else (no data: subqueries only), so it is compiled once per key instead of per
# request (the ORM spent ~3 ms building it, against ~0.1 ms for the round trip on a quiet core).
_CONTEXT_SQL: dict[tuple, tuple[str, str, tuple]] = {}


def _context_query(user: Any, model_version_id: int | None, modality: str) -> tuple[str, str, tuple]:
    versions = _version_rows(model_version_id).order_by()
    if model_version_id is None:
        version_key: Any = Subquery(versions.values("pk")[:1])
    else:
        version_key = model_version_id
    tagged = (
        versions.annotate(tag=Value(_T_VERSION), stamp=_version_stamp()).values_list("tag", "pk", "stamp")
        .union(RemovedItem.objects.filter(model_version_id=version_key, modality=modality).order_by()
               .annotate(tag=Value(_T_REMOVED), stamp=Value("", output_field=TextField())).values_list("tag", "item_id", "stamp"),
               _hidden_items(user, modality).order_by().annotate(tag=Value(_T_HIDDEN), stamp=Value("", output_field=TextField()))
               .values_list("tag", "pk", "stamp"), all=True))
    sql, params = tagged.query.sql_with_params()
    return tagged.db, sql, tuple(params)


def _version_cached(pk: int, stamp: str) -> ModelVersion:
    with _VERSIONS_LOCK:
        hit = _VERSIONS.get(pk)
    if hit is None or hit[0] != stamp:
        row = ModelVersion.objects.filter(pk=pk).annotate(stamp=_version_stamp()).first()
        if row is None:  # deleted between the two reads
            raise ModelUnavailable(f"Model version {pk} is gone.")
        hit = (row.stamp, row)
        with _VERSIONS_LOCK:
            if len(_VERSIONS) > 64:
                _VERSIONS.clear()
            _VERSIONS[pk] = hit
    return copy.copy(hit[1])  # callers get their own object; the kept one is never mutated


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
def _attnames(model: type) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


_HYDRATION_SQL: dict[tuple, tuple[str, str, tuple, tuple, tuple]] = {}


class CaptionBrief(NamedTuple):
    """What a search result shows of a caption (no model object: a page holds ~100 of them)."""

    id: int
    text: str
    source: str


_BRIEF_FIELDS = ("id", "text", "source")


def _hydration_query(user: Any, n: int) -> tuple[str, str, tuple, tuple, tuple]:
    """(db alias, SQL, params, id slots, the ORM's value converters by column) of images_in_order's
    query for `n` ids, compiled once per (who, n): building this join through the ORM cost more
    than the round trip. The query is compiled with sentinel ids -1..-n; `slots` are
    (param position, index in ids)."""
    key = (_who(user), n)
    with _VERSIONS_LOCK:
        hit = _HYDRATION_SQL.get(key)
    if hit is not None:
        return hit
    image_f, coll_f = _attnames(Image), _attnames(Collection)
    columns = image_f + [f"collection__{f}" for f in coll_f] + [f"captions__{f}" for f in _BRIEF_FIELDS]
    sentinels = [-(j + 1) for j in range(n)]  # never a visibility param (True / a user pk)
    qs = emb_selectors.visible_image_ids(user=user).filter(pk__in=sentinels).order_by().values_list(*columns)
    compiler = qs.query.get_compiler(qs.db)
    sql, params = compiler.as_sql()
    params = tuple(params)
    fields = [col[0] for col in compiler.select[:compiler.col_count]]
    converters = tuple((at, tuple(convs), expr) for at, (convs, expr) in compiler.get_converters(fields).items())
    slots = tuple((at, -p - 1) for at, p in enumerate(params)
                  if type(p) is int and -n <= p <= -1)
    if sorted(j for _, j in slots) != list(range(n)):  # defensive: each id bound exactly once
        raise RuntimeError("unexpected parameters in the hydration query")
    hit = (qs.db, sql, params, slots, converters)
    with _VERSIONS_LOCK:
        if len(_HYDRATION_SQL) > 1024:
            _HYDRATION_SQL.clear()
        _HYDRATION_SQL[key] = hit
    return hit


def _converted(row: list, converters: tuple, connection: Any) -> list:
    for at, convs, expr in converters:
        value = row[at]
        for convert in convs:
            value = convert(value, expr, connection)
        row[at] = value
    return row


def images_in_order(*, user: Any, ids: Sequence[int]) -> list[tuple[Image, list[CaptionBrief]]]:
    """Visible images for `ids`, in that order, each with its collection loaded and its captions
    as CaptionBriefs (by id): ONE query (images LEFT JOIN captions, collection joined), one row
    per caption; vanished or no longer visible ids are dropped. `image.collection` needs no
    query. The captions are plain tuples, not Caption objects with a prefetch cache: a page of
    20 images holds ~100 captions, and building their model objects and related managers cost
    more than the query (bench/results/search_e2e.md)."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    if not ids:
        return []
    image_f, coll_f = _attnames(Image), _attnames(Collection)
    ni, nc = len(image_f), len(coll_f)
    db, sql, template, slots, converters = _hydration_query(user, len(ids))
    params = list(template)
    for at, j in slots:
        params[at] = ids[j]
    connection = connections[db]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if converters:  # what values_list would do: database values -> Python (dates, JSON, booleans)
        rows = [_converted(list(row), converters, connection) for row in rows]
    found: dict[int, tuple[Image, list[CaptionBrief]]] = {}
    collections: dict[int, Collection] = {}
    set_collection = Image.collection.field.set_cached_value
    for row in rows:
        pk = row[0]
        hit = found.get(pk)
        if hit is None:
            img = Image.from_db(db, image_f, row[:ni])
            coll = collections.get(row[ni])
            if coll is None:
                coll = collections[row[ni]] = Collection.from_db(db, coll_f, row[ni:ni + nc])
            set_collection(img, coll)
            hit = found[pk] = (img, [])
        if row[ni + nc] is not None:  # an image without captions gives one row of NULLs
            hit[1].append(CaptionBrief(*row[ni + nc:]))
    for _, captions in found.values():
        captions.sort()  # by id
    return [found[i] for i in ids if i in found]


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
