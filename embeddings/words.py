"""word2vec per collection: train on its captions, then nearest words and analogies.

Vectors live in MODEL_DIR/word2vec/collection-<id>.safetensors (atomic write, checksum checked
on load by embeddings/ml/word2vec_io). Training runs in a Celery task; the page and API only read.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from django.conf import settings

from embeddings.ml.word2vec import UnknownWord, Word2Vec, Word2VecConfig, train_word2vec
from embeddings.ml.word2vec_io import load_word2vec, save_word2vec
from embeddings.models import Caption, Collection
from project.exceptions import ApplicationError, NotFound

logger = logging.getLogger(__name__)
_cache: dict[tuple[int, float], Word2Vec] = {}
_lock = threading.Lock()
MIN_CAPTIONS = 20


class UnknownWordError(ApplicationError):
    code = "unknown_word"


def word2vec_path(collection: Collection) -> Path:
    return Path(settings.MODEL_DIR) / "word2vec" / f"collection-{collection.pk}.safetensors"


def word2vec_train(*, collection: Collection, config: Word2VecConfig | None = None) -> int:
    """Train on the collection's human and imported captions; return the vocabulary size."""
    texts = list(Caption.objects.filter(image__collection=collection)
                 .exclude(source=Caption.Source.GENERATED).values_list("text", flat=True))
    if len(texts) < MIN_CAPTIONS:
        raise ApplicationError(f"Need at least {MIN_CAPTIONS} captions to learn word vectors; "
                               f"{collection.name!r} has {len(texts)}.")
    cfg = config or Word2VecConfig(min_count=2 if len(texts) < 2000 else 5)
    model = train_word2vec(texts, cfg)
    path = word2vec_path(collection)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_word2vec(model, path)
    logger.info("word2vec for %s: %d words from %d captions", collection.name, len(model), len(texts))
    return len(model)


def word2vec_get(*, collection: Collection) -> Word2Vec:
    path = word2vec_path(collection)
    if not path.exists():
        raise NotFound(f"No word vectors for {collection.name!r} yet; train them first.")
    key = (collection.pk, path.stat().st_mtime)
    with _lock:
        if key not in _cache:
            _cache[key] = load_word2vec(path)
        return _cache[key]


def _clean(word: str) -> str:
    return (word or "").strip().lower()[:50]


def words_nearest(*, collection: Collection, word: str, k: int = 10) -> list[tuple[str, float]]:
    model = word2vec_get(collection=collection)
    try:
        return model.nearest(_clean(word), k)
    except UnknownWord as exc:
        raise UnknownWordError(str(exc), fields={"word": [str(exc)]}) from exc


def words_analogy(*, collection: Collection, a: str, b: str, c: str, k: int = 10) -> list[tuple[str, float]]:
    """a is to b as c is to ?  (vector b - a + c)."""
    model = word2vec_get(collection=collection)
    try:
        return model.analogy(_clean(a), _clean(b), _clean(c), k)
    except UnknownWord as exc:
        raise UnknownWordError(str(exc), fields={"word": [str(exc)]}) from exc


def word2vec_enqueue(*, collection: Collection) -> None:
    from django.db import transaction

    from embeddings.tasks import train_word2vec

    transaction.on_commit(lambda: train_word2vec.delay(collection.pk))
