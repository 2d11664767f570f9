"""The one search service behind the API and the pages.

text -> image, image -> image, image -> text, text -> text and weighted query arithmetic all
come down to: one unit query vector of one model version (taken once per request), one index
of that version, an allow-list of ids the user may see (filters applied inside the search, so
pages stay full and private ids never surface), then a page of ranks.

Adaptive cutoff (docs/api.md): with best = the top score of this query over the allowed set,
a result is kept when score >= max(best - margin, ratio * best [only if best > 0], min_score)
for whichever of margin / ratio / min_score are given; `count` is the number kept.
Keyword boost: allowed images with a caption containing the keyword get `keyword_boost` added
to their score; the two groups are merged exactly, so pagination stays consistent.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from django.conf import settings

from embeddings.models import Caption, Image
from project.exceptions import ApplicationError
from search import index as si
from search import selectors
from search.selectors import CAPTION, IMAGE, CaptionRow, SearchFilters
from search.services.indexes import IndexRebuilding, index_for_search
from search.services.queries import Query, QueryTerm, query_check, query_encode, token_checked

MAX_K = 100


@dataclass(frozen=True)
class Cutoff:
    margin: float | None = None  # keep score >= best - margin
    ratio: float | None = None  # keep score >= ratio * best (applied only when best > 0)
    min_score: float | None = None  # keep score >= min_score

    def threshold(self, best: float) -> float | None:
        parts = []
        if self.margin is not None:
            parts.append(best - self.margin)
        if self.ratio is not None and best > 0:
            parts.append(best * self.ratio)
        if self.min_score is not None:
            parts.append(self.min_score)
        return max(parts) if parts else None

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.margin, self.ratio, self.min_score))


@dataclass(frozen=True)
class ImageHit:
    image: Image  # with its collection loaded
    score: float
    keyword_match: bool | None = None
    captions: Sequence[CaptionRow] = ()  # the image's captions (id, text, source), by id


@dataclass(frozen=True)
class CaptionHit:
    caption: Caption
    score: float


@dataclass(frozen=True)
class SearchPage:
    model_version_id: int
    count: int
    page: int
    k: int
    results: list[Any] = field(default_factory=list)  # ImageHit | CaptionHit, best first
    query_token: str = ""
    threshold: float | None = None

    @property
    def has_next(self) -> bool:
        return self.page * self.k < self.count

    @property
    def has_previous(self) -> bool:
        return self.page > 1


@dataclass(frozen=True)
class _Allowed:
    """The ids one search may return, in one of two shapes:

    - `ids` (sorted, unique, all in the index): an explicit allow-list, when a filter narrows
      the set (collection, split, ...);
    - `ids is None`: every live id of the index except `deny` (sorted, unique: the ids the
      user may not see, plus excluded ones; `denied` of them are in the index now). The common
      unfiltered search then costs nothing per indexed image: no allow-list is read or
      intersected, and with nothing denied the index searches unmasked. The whole deny-list
      goes to the index, so an id added to the index after `denied` was counted stays hidden.
    """

    index: si.VectorIndex
    ids: np.ndarray | None
    deny: np.ndarray
    denied: int = 0

    @classmethod
    def build(cls, index: si.VectorIndex, narrowed: np.ndarray | None, hidden: np.ndarray,
              exclude: Sequence[int] | np.ndarray = ()) -> _Allowed:
        """index ids ∩ `narrowed` (None = no narrowing) minus `hidden` and `exclude` (sorted ids)."""
        deny = _union(hidden, np.asarray(list(exclude), dtype=np.int64))
        if narrowed is None:
            return cls(index, None, deny, len(_sorted_in(deny, index.ids())))
        ids = _visible_in_index(index, narrowed)
        if len(deny):
            ids = np.setdiff1d(ids, deny, assume_unique=True)
        return cls(index, ids, _EMPTY)

    @property
    def count(self) -> int:
        return len(self.ids) if self.ids is not None else max(self.index.count - self.denied, 0)

    def only(self, keep: np.ndarray) -> _Allowed:
        """The allowed ids that are also in the sorted array `keep` (always the explicit shape)."""
        if self.ids is not None:
            return _Allowed(self.index, np.intersect1d(self.ids, keep, assume_unique=True), _EMPTY)
        inside = _sorted_in(keep, self.index.ids())
        return _Allowed(self.index, np.setdiff1d(inside, self.deny, assume_unique=True), _EMPTY)

    def minus(self, drop: np.ndarray) -> _Allowed:
        """The allowed ids that are not in the sorted array `drop` (a subset of the allowed ids)."""
        if self.ids is not None:
            return _Allowed(self.index, np.setdiff1d(self.ids, drop, assume_unique=True), _EMPTY)
        return _Allowed(self.index, None, _union(self.deny, drop), self.denied + len(drop))

    def search(self, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float64 scores) of ranks [0, n) among the allowed ids; vector (1, D)."""
        if self.ids is not None and len(self.ids) == self.index.count:
            hits = self.index.search(vector, n)[0]  # every live vector allowed: no mask at all
        elif self.ids is not None:
            hits = self.index.search(vector, n, allow_ids=self.ids)[0]
        else:
            hits = self.index.search(vector, n, deny_ids=self.deny if len(self.deny) else None)[0]
        return hits.ids, hits.scores.astype(np.float64)


_EMPTY = np.empty(0, np.int64)
_EMPTY.setflags(write=False)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(b) == 0:
        return a
    return np.union1d(a, b) if len(a) else np.unique(b)


def _sorted_in(keys: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """The sorted unique `keys` that occur in `sorted_ids` (binary search: O(len(keys) log N))."""
    if len(keys) == 0 or len(sorted_ids) == 0:
        return np.empty(0, np.int64)
    at = np.clip(np.searchsorted(sorted_ids, keys), 0, len(sorted_ids) - 1)
    return np.unique(keys[sorted_ids[at] == keys])


class _Ranking:
    """Top-n of one query over the allowed ids; with `boosted`, those ids get `boost` added."""

    def __init__(self, vector: np.ndarray, allowed: _Allowed, boosted: _Allowed | None = None,
                 boost: float = 0.0) -> None:
        self.vector, self.allowed = vector[None, :], allowed  # (1, D)
        self.boosted, self.boost = boosted, boost
        self.rest = None if boosted is None or boosted.ids is None else allowed.minus(boosted.ids)

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, scores, boosted flags) of ranks [0, n)."""
        if n <= 0 or self.allowed.count == 0:
            return np.empty(0, np.int64), np.empty(0), np.empty(0, bool)
        if self.boosted is None or self.rest is None:
            ids, scores = self.allowed.search(self.vector, n)
            return ids, scores, np.zeros(len(ids), bool)
        none = (np.empty(0, np.int64), np.empty(0))
        a_ids, a_scores = self.boosted.search(self.vector, n) if self.boosted.count else none
        b_ids, b_scores = self.rest.search(self.vector, n) if self.rest.count else none
        ids = np.concatenate([a_ids, b_ids])
        scores = np.concatenate([a_scores + self.boost, b_scores])
        flags = np.concatenate([np.ones(len(a_ids), bool), np.zeros(len(b_ids), bool)])
        order = np.lexsort((ids, -scores))[:n]  # by score desc, ties by id: stable across pages
        return ids[order], scores[order], flags[order]

    def count_at_least(self, threshold: float) -> int:
        n = 64
        while True:
            _, scores, _ = self.top(min(n, self.allowed.count))
            if len(scores) < n or scores[-1] < threshold:
                return int((scores >= threshold).sum())
            n *= 4


def _check_page(k: int, page: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ApplicationError(f"k must be between 1 and {MAX_K}.", fields={"k": [f"Must be between 1 and {MAX_K}."]})
    if page < 1:
        raise ApplicationError("page must be 1 or more.", fields={"page": ["Must be 1 or more."]})


@dataclass
class _Request:
    """One request's model version, index, hidden ids and query; the query is encoded only when needed."""

    user: Any
    version: Any
    index: si.VectorIndex
    terms: list[QueryTerm] | None  # validated terms, or None when a token carries the vector
    query: Query | None
    hidden: np.ndarray  # sorted ids never to return (see selectors.search_context)

    def encoded(self) -> Query:
        if self.query is None:
            self.query = query_encode(version=self.version, terms=self.terms or [])
        if self.index.dim != self.query.vector.shape[0]:
            raise IndexRebuilding("The query does not match the index of this model version.")
        return self.query

    def empty(self, page: int, k: int, count: int = 0) -> SearchPage:
        """No allowed ids: answer without loading any model (the terms were still validated)."""
        return SearchPage(self.version.pk, count, page, k, [], self.query.token if self.query else "")


def _prepare(user: Any, terms: Sequence[QueryTerm], token: str | None, model_version_id: int | None,
             modality: str) -> _Request:
    """Take the model version once (from the token, the request, or the active one) together with
    the ids this user must not get (one round trip, read fresh), then its index."""
    vector: np.ndarray | None = None
    if token:
        model_version_id, vector = token_checked(token=token, model_version_id=model_version_id)
    version, hidden = selectors.search_context(user=user, model_version_id=model_version_id, modality=modality)
    if token and vector is not None:  # (always both or neither: the vector is the token's)
        query, checked = Query(version=version, vector=vector, token=token), None
    else:
        query, checked = None, query_check(user=user, terms=terms)
    return _Request(user, version, index_for_search(version=version, modality=modality), checked, query, hidden)


_ALLOWED_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # (visible, index ids, allowed)
_ALLOWED_LOCK = threading.Lock()


def _visible_in_index(index: si.VectorIndex, visible: np.ndarray) -> np.ndarray:
    """visible ∩ index ids, cached while both the (cached, immutable) visible array and the
    index's ids stay the same; the cache holds references so ids of dead objects are never reused."""
    index_ids = index.ids()  # sorted, rebuilt (a new object) after every write to the index
    key = (id(visible), id(index_ids))
    with _ALLOWED_LOCK:
        hit = _ALLOWED_CACHE.get(key)
    if hit is not None and hit[0] is visible and hit[1] is index_ids:
        return hit[2]
    allowed = np.intersect1d(visible, index_ids, assume_unique=True)
    allowed.setflags(write=False)
    with _ALLOWED_LOCK:
        if len(_ALLOWED_CACHE) > 64:
            _ALLOWED_CACHE.clear()
        _ALLOWED_CACHE[key] = (visible, index_ids, allowed)
    return allowed


def _page(
    ranking: _Ranking, k: int, page: int, cutoff: Cutoff
) -> tuple[int, float | None, np.ndarray, np.ndarray, np.ndarray]:
    count, threshold = ranking.allowed.count, None
    if cutoff.active and count:
        best = float(ranking.top(1)[1][0])
        threshold = cutoff.threshold(best)
        if threshold is not None:  # None: only a ratio, and best <= 0, where the ratio does not apply
            count = ranking.count_at_least(threshold)
    offset = (page - 1) * k
    if offset >= count:  # past the end: an empty page, without searching
        return count, threshold, np.empty(0, np.int64), np.empty(0), np.empty(0, bool)
    ids, scores, flags = ranking.top(min(offset + k, count))
    return count, threshold, ids[offset:], scores[offset:], flags[offset:]


def search_images(*, user: Any, terms: Sequence[QueryTerm] = (), query_token: str | None = None, k: int = 20,
                  page: int = 1, filters: SearchFilters = SearchFilters(), cutoff: Cutoff = Cutoff(),
                  model_version_id: int | None = None, exclude_ids: Sequence[int] = ()) -> SearchPage:
    """Images nearest to the query, visible to `user` and passing `filters`; one page."""
    _check_page(k, page)
    req = _prepare(user, terms, query_token, model_version_id, IMAGE)
    narrowed = selectors.searchable_image_ids(user=user, filters=filters) if selectors.filters_narrow(filters) else None
    allowed = _Allowed.build(req.index, narrowed, req.hidden, exclude_ids)
    if allowed.count == 0:
        return req.empty(page, k)
    query = req.encoded()
    boosted = None
    if filters.keyword and filters.keyword_mode == "boost":
        boosted = allowed.only(selectors.keyword_image_ids(user=user, filters=filters))
    ranking = _Ranking(query.vector, allowed, boosted, filters.keyword_boost)
    count, threshold, ids, scores, flags = _page(ranking, k, page, cutoff)
    by_id = {img.pk: (img, caps) for img, caps in selectors.images_in_order(user=user, ids=ids.tolist())}
    results = [ImageHit(by_id[i][0], float(s), bool(f) if boosted is not None else None, by_id[i][1])
               for i, s, f in zip(ids.tolist(), scores, flags) if i in by_id]
    return SearchPage(query.version.pk, count, page, k, results, query.token, threshold)


def search_captions(*, user: Any, terms: Sequence[QueryTerm] = (), query_token: str | None = None, k: int = 20,
                    page: int = 1, filters: SearchFilters = SearchFilters(), cutoff: Cutoff = Cutoff(),
                    model_version_id: int | None = None, exclude_image_ids: Sequence[int] = ()) -> SearchPage:
    """Captions nearest to the query (image -> text, text -> text), of images the user may see."""
    _check_page(k, page)
    req = _prepare(user, terms, query_token, model_version_id, CAPTION)
    exclude = np.concatenate([selectors.image_caption_ids(image_id=i) for i in exclude_image_ids]) \
        if exclude_image_ids else ()
    narrowed = selectors.searchable_caption_ids(user=user, filters=filters) if (
        selectors.filters_narrow(filters) or filters.keyword) else None  # any keyword filters caption text
    allowed = _Allowed.build(req.index, narrowed, req.hidden, exclude)
    if allowed.count == 0:
        return req.empty(page, k)
    query = req.encoded()
    count, threshold, ids, scores, _ = _page(_Ranking(query.vector, allowed), k, page, cutoff)
    by_id = {c.pk: c for c in selectors.captions_in_order(user=user, ids=ids.tolist())}
    results = [CaptionHit(by_id[i], float(s)) for i, s in zip(ids.tolist(), scores) if i in by_id]
    return SearchPage(query.version.pk, count, page, k, results, query.token, threshold)


def image_similar(*, user: Any, image_id: int, k: int = 20, page: int = 1, filters: SearchFilters = SearchFilters(),
                  cutoff: Cutoff = Cutoff(), model_version_id: int | None = None) -> SearchPage:
    """Images nearest to a stored image (itself excluded)."""
    return search_images(user=user, terms=[QueryTerm(image_id=image_id)], k=k, page=page, filters=filters,
                         cutoff=cutoff, model_version_id=model_version_id, exclude_ids=[image_id])


def duplicate_threshold() -> float:
    return float(settings.SEARCH_DUPLICATE_THRESHOLD)


def duplicate_cutoff(cutoff: Cutoff = Cutoff(), threshold: float | None = None) -> Cutoff:
    """`cutoff` with its min_score raised to the near-duplicate `threshold` (default
    SEARCH_DUPLICATE_THRESHOLD); a higher min_score already given stays."""
    limit = duplicate_threshold() if threshold is None else threshold
    floor = limit if cutoff.min_score is None else max(limit, cutoff.min_score)
    return replace(cutoff, min_score=floor)


def image_duplicates(*, user: Any, image_id: int, threshold: float | None = None, k: int = 20, page: int = 1,
                     filters: SearchFilters = SearchFilters(), cutoff: Cutoff = Cutoff(),
                     model_version_id: int | None = None) -> SearchPage:
    """Near-duplicates: similar images whose cosine score is at least `threshold` (see
    duplicate_cutoff), under `filters` and any other `cutoff` given."""
    return image_similar(user=user, image_id=image_id, k=k, page=page, filters=filters,
                         cutoff=duplicate_cutoff(cutoff, threshold), model_version_id=model_version_id)
