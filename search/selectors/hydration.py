"""Hydration: the rows behind a page of search hits, in their order, in one query."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from django.db import connections, models

from embeddings import selectors as emb_selectors
from embeddings.models import Caption, Collection, Image
from project.caching import BoundedCache
from search.selectors.visibility import who


def _attnames(model: type[models.Model]) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


_HYDRATION_SQL: BoundedCache[tuple[str, str, tuple, tuple, tuple]] = BoundedCache(1024)


class CaptionRow(NamedTuple):
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
    return _HYDRATION_SQL.get_or_make((who(user), n), lambda: _compile_hydration(user, n))


def _compile_hydration(user: Any, n: int) -> tuple[str, str, tuple, tuple, tuple]:
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
    return qs.db, sql, params, slots, converters


def _converted(row: list, converters: tuple, connection: Any) -> list:
    for at, convs, expr in converters:
        value = row[at]
        for convert in convs:
            value = convert(value, expr, connection)
        row[at] = value
    return row


def images_in_order(*, user: Any, ids: Sequence[int]) -> list[tuple[Image, list[CaptionRow]]]:
    """Visible images for `ids`, in that order, each with its collection loaded and its captions
    as CaptionRows (by id): ONE query (images LEFT JOIN captions, collection joined), one row
    per caption; vanished or no longer visible ids are dropped. `image.collection` needs no
    query. The captions are plain tuples, not Caption objects with a prefetch cache: a page of
    20 images holds ~100 captions, and building their model objects and related managers cost
    more than the query (docs/design/search-latency.md)."""
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
    found: dict[int, tuple[Image, list[CaptionRow]]] = {}
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
            hit[1].append(CaptionRow(*row[ni + nc:]))
    for _, captions in found.values():
        captions.sort()  # by id
    return [found[i] for i in ids if i in found]


def captions_in_order(*, user: Any, ids: Sequence[int]) -> list[Caption]:
    rows = Caption.objects.filter(pk__in=list(ids)).filter(
        emb_selectors.collection_visibility_q(user, "image__collection__")).select_related("image")
    by_id = {c.pk: c for c in rows}
    return [by_id[i] for i in ids if i in by_id]
