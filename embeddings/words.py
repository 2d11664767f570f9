"""word2vec per collection: train on its captions (gensim), then nearest words and analogies.

Vectors live in MODEL_DIR/word2vec/collection-<id>.safetensors (atomic write, checksum checked
on load by embeddings/ml/word2vec_io). Training runs in a Celery task; the page and API only read.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from embeddings.ml.word2vec import UnknownWord, Word2Vec, Word2VecConfig, analogies_in_vocabulary, train_word2vec
from embeddings.ml.word2vec_io import CheckpointError, load_word2vec, save_word2vec
from embeddings.models import Caption, Collection, WordVectorsRun
from project import queueing
from project.caching import BoundedCache
from project.exceptions import ApplicationError, Conflict, NotFound

logger = logging.getLogger(__name__)
_cache: BoundedCache[Word2Vec] = BoundedCache(16)  # (collection, file mtime) -> loaded vectors
MIN_CAPTIONS = 20
RUN_STALE_AFTER = timedelta(hours=1)  # a queued run older than this was lost (worker died): no longer blocks
_OPEN = (WordVectorsRun.Status.QUEUED, WordVectorsRun.Status.RUNNING)


class OutOfVocabulary(ApplicationError):
    """A word the collection's word vectors do not know (the pure error is word2vec.UnknownWord)."""

    code = "unknown_word"


def word2vec_path(collection: Collection) -> Path:
    return Path(settings.MODEL_DIR) / "word2vec" / f"collection-{collection.pk}.safetensors"


def _training_captions(collection: Collection) -> QuerySet[Caption]:
    """What word vectors learn from: the collection's human and imported captions."""
    return Caption.objects.filter(image__collection=collection).exclude(source=Caption.Source.GENERATED)


def _check_enough(collection: Collection, n_texts: int) -> None:
    if n_texts < MIN_CAPTIONS:
        raise ApplicationError(f"Need at least {MIN_CAPTIONS} human or imported captions to learn word vectors; "
                               f"{collection.name!r} has {n_texts}.", code="too_few_captions",
                               fields={"collection": [f"Has {n_texts} captions; at least {MIN_CAPTIONS} needed."]})


def word2vec_train(*, collection: Collection, config: Word2VecConfig | None = None) -> int:
    """Train on the collection's human and imported captions; return the vocabulary size."""
    texts = list(_training_captions(collection).values_list("text", flat=True))
    _check_enough(collection, len(texts))
    cfg = config or Word2VecConfig(min_count=2 if len(texts) < 2000 else 5)
    model = train_word2vec(texts, cfg)
    path = word2vec_path(collection)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_word2vec(model, path)
    logger.info("word2vec for %s: %d words from %d captions", collection.name, len(model), len(texts))
    return len(model)


def word2vec_enqueue(*, collection: Collection, user: Any = None) -> WordVectorsRun:
    """Check there is enough to learn from (400 with the reason, nothing queued), record the
    request and queue the training after commit. One request at a time per collection (409)."""
    n_texts = _training_captions(collection).count()
    _check_enough(collection, n_texts)
    with transaction.atomic():
        Collection.objects.select_for_update().filter(pk=collection.pk).first()  # one request at a time
        busy = WordVectorsRun.objects.filter(collection=collection, status__in=_OPEN,
                                             created_at__gte=timezone.now() - RUN_STALE_AFTER).exists()
        if busy:
            raise Conflict(f"Word vectors for {collection.name!r} are already being learned.", code="already_running")
        run = WordVectorsRun.objects.create(collection=collection,
                                            requested_by=user if getattr(user, "is_authenticated", False) else None)
        queueing.enqueue("embeddings.tasks.train_word2vec", collection.pk, run.pk)
    return run


def word2vec_run(*, collection_id: int, run_id: int | None = None) -> int:
    """The task's body: train, and record how it went on the run the page is watching."""
    collection = Collection.objects.get(pk=collection_id)
    runs = WordVectorsRun.objects.filter(pk=run_id) if run_id is not None else WordVectorsRun.objects.none()
    runs.update(status=WordVectorsRun.Status.RUNNING)
    try:
        size = word2vec_train(collection=collection)
    except Exception as exc:
        reason = exc.message if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {exc}"
        runs.update(status=WordVectorsRun.Status.FAILED, reason=reason[:2000], finished_at=timezone.now())
        raise
    runs.update(status=WordVectorsRun.Status.SUCCEEDED, vocabulary=size, finished_at=timezone.now(),
                reason=f"Learned {size} words.")
    return size


def word2vec_last_run(*, collection: Collection) -> WordVectorsRun | None:
    return WordVectorsRun.objects.filter(collection=collection).first()


def word2vec_get(*, collection: Collection) -> Word2Vec:
    path = word2vec_path(collection)
    if not path.exists():
        raise NotFound(f"No word vectors for {collection.name!r} yet; train them first.")
    key = (collection.pk, path.stat().st_mtime)
    return _cache.get_or_make(key, lambda: load_word2vec(path))


def _clean(word: str) -> str:
    return (word or "").strip().lower()[:50]


def words_nearest(*, collection: Collection, word: str, k: int = 10) -> list[tuple[str, float]]:
    model = word2vec_get(collection=collection)
    try:
        return model.nearest(_clean(word), k)
    except UnknownWord as exc:
        raise OutOfVocabulary(str(exc), fields={"word": [str(exc)]}) from exc


def words_analogy(*, collection: Collection, a: str, b: str, c: str, k: int = 10) -> list[tuple[str, float]]:
    """a is to b as c is to ?  (vector b - a + c)."""
    model = word2vec_get(collection=collection)
    try:
        return model.analogy(_clean(a), _clean(b), _clean(c), k)
    except UnknownWord as exc:
        raise OutOfVocabulary(str(exc), fields={"word": [str(exc)]}) from exc


def words_demo_analogies(*, collection: Collection) -> list[tuple[str, str, str, str]]:
    """The classic analogies (word2vec.CLASSIC_ANALOGIES) whose four words this collection's
    vectors all know, for the words page to offer; [] when there are no usable vectors."""
    try:
        return analogies_in_vocabulary(word2vec_get(collection=collection))
    except NotFound:
        return []
    except CheckpointError:
        logger.warning("word vectors of %s cannot be loaded", collection.name, exc_info=True)
        return []
