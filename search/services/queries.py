"""Query terms -> one unit vector in the joint space of a model version.

A query is a weighted sum of terms (text, a stored image, an uploaded image), each term's
vector L2-normalised first so weights mean what they say, negative weights allowed
("beach - people"), and the sum re-normalised. The result can be carried across pages in a
signed token (the vector itself, float16, plus the model version id), so an uploaded image
never needs to be stored and the next page is a plain GET served by any process.
"""
from __future__ import annotations

import base64
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from django.conf import settings
from django.core import signing

from embeddings import encoding, runtime
from embeddings import selectors as emb_selectors
from embeddings.ml.batching import MicroBatcher
from embeddings.models import ModelVersion
from embeddings.services import raster_features, sanitize_bytes, strip_controls
from project.exceptions import ApplicationError
from search import selectors

MAX_TEXT_CHARS = 1000
MAX_TERMS = 10
MAX_WEIGHT = 10.0
# bandit B105: a signer namespace; the secret is SECRET_KEY
_TOKEN_SALT = "search.query"  # nosec B105


@dataclass(frozen=True)
class QueryTerm:
    """One of: text, image_id (a stored image the user may see), image_bytes (an upload)."""

    weight: float = 1.0
    text: str | None = None
    image_id: int | None = None
    image_bytes: bytes | None = None


@dataclass(frozen=True)
class Query:
    version: ModelVersion
    vector: np.ndarray  # (D,) float32, unit norm
    token: str  # signed; carries version id and vector for the next pages


def clean_text(text: str, field: str = "q") -> str:
    """Strip control characters and fold white space; 400 for empty or over-long text."""
    if "\x00" in text:
        raise ApplicationError("Text may not contain NUL characters.",
                               fields={field: ["Null characters are not allowed."]})
    if len(text) > MAX_TEXT_CHARS:
        raise ApplicationError(f"Text is longer than {MAX_TEXT_CHARS} characters.",
                               fields={field: [f"Ensure this field has no more than {MAX_TEXT_CHARS} characters."]})
    cleaned = strip_controls(text)
    if not cleaned:
        raise ApplicationError("The query text is empty.", fields={field: ["This field may not be blank."]})
    return cleaned


def _check_terms(terms: Sequence[QueryTerm]) -> None:
    if not terms:
        raise ApplicationError("Give a text, an image or at least one term.", fields={"terms": ["No query."]})
    if len(terms) > MAX_TERMS:
        raise ApplicationError(f"At most {MAX_TERMS} terms.", fields={"terms": [f"At most {MAX_TERMS} terms."]})
    for term in terms:
        given = sum(x is not None for x in (term.text, term.image_id, term.image_bytes))
        if given != 1:
            raise ApplicationError("Each term needs exactly one of text, image_id or an image.",
                                   fields={"terms": ["Each term needs exactly one of text, image_id, image."]})
        if not math.isfinite(term.weight) or abs(term.weight) > MAX_WEIGHT:
            raise ApplicationError(f"Weights must be finite numbers in [-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}].",
                                   fields={"terms": ["Invalid weight."]})


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm < 1e-6:
        raise ApplicationError("This query has no direction (the terms cancel out).",
                               fields={"terms": ["The weighted terms cancel out."]})
    return v / norm


def stored_image_vector(*, version: ModelVersion, image_id: int) -> np.ndarray:
    """(D,) vector of a stored image: its stored row, else encoded now from its features."""
    vec = selectors.image_vector(version_id=version.pk, image_id=image_id)
    if vec is not None:
        return vec
    embedder = runtime.embedder_for(version)
    return embedder.encode_features(encoding.features_for([image_id], runtime.image_encoder_name(version)))[0]


def _upload_vector(version: ModelVersion, clean: bytes) -> np.ndarray:
    """(D,) vector of an uploaded image already sanitised by query_check (never stored)."""
    encoder = runtime.image_encoder_name(version)
    return runtime.embedder_for(version).encode_features(raster_features(clean, encoder))[0]


def query_check(*, user: Any, terms: Sequence[QueryTerm]) -> list[QueryTerm]:
    """Validate terms without any model: limits, texts cleaned, stored images visible to the
    user, uploads sanitised like any upload (the clean raster replaces the client's bytes)."""
    _check_terms(terms)
    field = "terms" if len(terms) > 1 else "q"
    checked = []
    for term in terms:
        if term.text is not None:
            term = replace(term, text=clean_text(term.text, field))
        elif term.image_id is not None:
            if emb_selectors.image_visible(user=user, image_id=term.image_id) is None:
                raise ApplicationError(f"No such image: {term.image_id}.", fields={"image_id": ["No such image."]})
        else:
            term = replace(term, image_bytes=sanitize_bytes(term.image_bytes or b"").content)
        checked.append(term)
    return checked


class TextVectorCache:
    """LRU of query text vectors, per process, keyed by (model version id, cleaned text).

    Popular queries repeat, and encoding a text is most of a search's cost. The cache follows
    the embedder object `runtime.embedder_for` returns for a version: when that object changes
    (model reloaded), the version's entries are dropped, and a new model version is another key,
    so a stale vector is never served. Vectors are read-only. Nothing here depends on who asks:
    a vector is a function of the text and the model only; visibility is applied by the search.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._owners: dict[int, Any] = {}  # version id -> the embedder its entries came from
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _own(self, version_id: int, embedder: Any) -> None:
        """Called with the lock held: forget a version's entries made by another embedder."""
        if self._owners.get(version_id) is not embedder:
            for key in [key for key in self._items if key[0] == version_id]:
                del self._items[key]
            self._owners[version_id] = embedder

    def get(self, version_id: int, embedder: Any, text: str) -> np.ndarray | None:
        with self._lock:
            self._own(version_id, embedder)
            vector = self._items.get((version_id, text))
            if vector is None:
                self.misses += 1
                return None
            self._items.move_to_end((version_id, text))
            self.hits += 1
            return vector

    def put(self, version_id: int, embedder: Any, text: str, vector: np.ndarray) -> None:
        if self.size <= 0:
            return
        vector = np.array(vector, dtype=np.float32)  # own copy, read-only
        vector.setflags(write=False)
        with self._lock:
            self._own(version_id, embedder)
            self._items[(version_id, text)] = vector
            self._items.move_to_end((version_id, text))
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._owners.clear()
            self.hits = self.misses = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": self.size, "entries": len(self._items), "hits": self.hits, "misses": self.misses}


_text_cache: TextVectorCache | None = None
_text_cache_lock = threading.Lock()


def text_cache() -> TextVectorCache:
    """This process's cache; settings.SEARCH_QUERY_CACHE_SIZE entries (default 4096, 0 = off)."""
    global _text_cache
    size = int(settings.SEARCH_QUERY_CACHE_SIZE)
    with _text_cache_lock:
        if _text_cache is None or _text_cache.size != size:
            _text_cache = TextVectorCache(size)
        return _text_cache


_batchers: dict[int, tuple[Any, MicroBatcher]] = {}  # version id -> (embedder, its batcher)
_batchers_lock = threading.Lock()


def _encode(version: ModelVersion, embedder: Any, texts: list[str]) -> np.ndarray:
    """embedder.encode_texts(texts), batched with the other request threads of this process that
    encode at the same time (settings.SEARCH_ENCODE_BATCH texts at most; <= 1 turns it off).
    With one request at a time (sync workers) it runs alone in the request's thread, as before."""
    size = int(settings.SEARCH_ENCODE_BATCH)
    if size <= 1:
        return embedder.encode_texts(texts)
    with _batchers_lock:
        held = _batchers.get(version.pk)
        if held is None or held[0] is not embedder or held[1].max_batch != size:  # model reloaded, setting changed
            held = _batchers[version.pk] = (embedder, MicroBatcher(embedder.encode_texts, max_batch=size))
    return held[1](texts)


def _text_vectors(version: ModelVersion, texts: list[str]) -> list[np.ndarray]:
    """(D,) vectors of cleaned texts, from the cache where possible; the rest encoded in one batch."""
    if not texts:
        return []
    embedder = runtime.query_embedder_for(version)  # the online query encoder (LOUPE_QUERY_ENCODER)
    cache = text_cache()
    if cache.size <= 0:
        return list(_encode(version, embedder, texts))
    found = [cache.get(version.pk, embedder, t) for t in texts]
    todo = list(dict.fromkeys(t for t, v in zip(texts, found) if v is None))
    if todo:
        fresh = dict(zip(todo, _encode(version, embedder, todo)))
        for text, vec in fresh.items():
            cache.put(version.pk, embedder, text, vec)
        found = [fresh[t] if v is None else v for t, v in zip(texts, found)]
    return cast("list[np.ndarray]", found)  # every None (a cache miss) was filled just above


def query_encode(*, version: ModelVersion, terms: Sequence[QueryTerm]) -> Query:
    """Combine terms already passed through query_check into one unit vector of `version`."""
    texts = [t.text for t in terms if t.text is not None]
    text_vecs = iter(_text_vectors(version, texts))
    total: np.ndarray | None = None
    for term in terms:
        if term.text is not None:
            vec = next(text_vecs)
        elif term.image_id is not None:
            vec = stored_image_vector(version=version, image_id=term.image_id)
        else:
            vec = _upload_vector(version, term.image_bytes or b"")
        part = term.weight * _unit(vec)
        total = part if total is None else total + part
    if total is None:
        raise ValueError("query_encode needs at least one term (query_check rejects a query without one)")
    # Pages 2+ use the vector from the token (float16): page 1 uses the same rounding, so the
    # ranking is identical on every page and no result is repeated or skipped at a boundary.
    vector = _unit(np.asarray(_unit(total), dtype="<f2"))
    return Query(version=version, vector=vector, token=token_dumps(version.pk, vector))


def token_dumps(version_id: int, vector: np.ndarray) -> str:
    payload = base64.urlsafe_b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")
    return signing.dumps({"v": int(version_id), "q": payload}, salt=_TOKEN_SALT, compress=True)


def token_loads(token: str) -> tuple[int, np.ndarray]:
    """(version id, unit vector) from a query token; 400 if forged, damaged or expired."""
    max_age = int(settings.SEARCH_QUERY_TOKEN_MAX_AGE)
    try:
        data = signing.loads(token, salt=_TOKEN_SALT, max_age=max_age)
        vector = np.frombuffer(base64.urlsafe_b64decode(data["q"]), dtype="<f2").astype(np.float32)
        version_id = int(data["v"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise ApplicationError("The query token is invalid or expired; search again.",
                               fields={"query": ["Invalid or expired query token."]}) from exc
    return version_id, _unit(vector)


def token_checked(*, token: str, model_version_id: int | None = None) -> tuple[int, np.ndarray]:
    """(version id, unit vector) of a query token; 400 when it names another version than asked."""
    version_id, vector = token_loads(token)
    if model_version_id is not None and model_version_id != version_id:
        raise ApplicationError("The query token belongs to another model version.",
                               fields={"model_version": ["Does not match the query token."]})
    return version_id, vector
