"""The per-request read: the model version and the deny-list of a search, in one round trip."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
from django.db import connections
from django.db.models import Func, QuerySet, Subquery, TextField, Value
from django.db.models.functions import Cast, Coalesce

from embeddings.models import ModelVersion
from embeddings.runtime import ModelUnavailable
from project.caching import BoundedCache
from search.models import RemovedItem
from search.selectors.versions import unknown_version
from search.selectors.visibility import hidden_items, who

_VERSION_STAMP_FIELDS = ("status", "kind", "family", "name", "directory", "dim", "config", "encoders", "files",
                         "created_at", "promoted_at", "parent_id")
_VERSIONS: BoundedCache[tuple[str, ModelVersion]] = BoundedCache(64)  # pk -> (stamp, row), checked per request
_T_VERSION, _T_REMOVED, _T_HIDDEN = 0, 1, 2


def _version_rows(model_version_id: int | None) -> QuerySet[ModelVersion]:
    kind = ModelVersion.Kind.EMBEDDING
    if model_version_id is None:  # at most one row: one active version per kind (unique constraint)
        return ModelVersion.objects.active(kind)
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
    db, sql, params = _CONTEXT_SQL.get_or_make((who(user), model_version_id, modality),
                                               lambda: _context_query(user, model_version_id, modality))
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
        raise unknown_version(model_version_id)
    return _version_cached(*found), np.unique(np.asarray(ids, dtype=np.int64))


# (who, version id, modality) -> (db alias, SQL, params) of search_context's query. The SQL depends
# on nothing else (no data: subqueries only), so it is compiled once per key instead of per
# request (the ORM spent ~3 ms building it, against ~0.1 ms for the round trip on a quiet core).
_CONTEXT_SQL: BoundedCache[tuple[str, str, tuple]] = BoundedCache(1024)


def _context_query(user: Any, model_version_id: int | None, modality: str) -> tuple[str, str, tuple]:
    versions = _version_rows(model_version_id).order_by()
    if model_version_id is None:
        version_key: Any = Subquery(versions.values("pk")[:1])
    else:
        version_key = model_version_id
    tagged = (
        versions.annotate(tag=Value(_T_VERSION), stamp=_version_stamp()).values_list("tag", "pk", "stamp")
        .union(RemovedItem.objects.filter(model_version_id=version_key, modality=modality).order_by()
               .annotate(tag=Value(_T_REMOVED), stamp=Value("", output_field=TextField()))
               .values_list("tag", "item_id", "stamp"),
               hidden_items(user, modality).order_by()
               .annotate(tag=Value(_T_HIDDEN), stamp=Value("", output_field=TextField()))
               .values_list("tag", "pk", "stamp"), all=True))
    sql, params = tagged.query.sql_with_params()
    return tagged.db, sql, tuple(params)


def _version_cached(pk: int, stamp: str) -> ModelVersion:
    hit = _VERSIONS.get(pk)
    if hit is None or hit[0] != stamp:
        row = ModelVersion.objects.filter(pk=pk).annotate(stamp=_version_stamp()).first()
        if row is None:  # deleted between the two reads
            raise ModelUnavailable(f"Model version {pk} is gone.")
        hit = _VERSIONS.replace(pk, (row.stamp, row))
    return copy.copy(hit[1])  # callers get their own object; the kept one is never mutated
