"""Writes for the FAISS indexes: build, incremental add/remove, sync, and what readers get.

The database rows (ImageEmbedding / CaptionEmbedding) are the truth; an index file is a cache
rebuilt from them at any time. One writer per (version, modality) at a time, enforced by the
database: every write holds a row lock on its SearchIndex record (select_for_update). A write
saves the file atomically (search/index/container.py) and publishes the new index to this process;
other processes pick the file up through search/registry.py.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from embeddings.models import ModelVersion
from project import queueing
from project.exceptions import ServiceUnavailable
from search import index as si
from search import registry, selectors
from search.models import PendingIndexItem, RemovedItem, SearchIndex
from search.selectors import CAPTION, IMAGE, MODALITIES

logger = logging.getLogger(__name__)


class IndexRebuilding(ServiceUnavailable):
    code = "index_rebuilding"


def index_config() -> si.IndexConfig:
    """IndexConfig from settings.SEARCH_INDEX_CONFIG (a dict; unknown keys are an error)."""
    return si.IndexConfig.from_dict(dict(settings.SEARCH_INDEX_CONFIG or {}))


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")


# --- readers ----------------------------------------------------------------------------------
def index_for_search(*, version: ModelVersion, modality: str) -> si.VectorIndex:
    """The index to search for this request: current, or the last good one while rebuilding.

    A missing, corrupt or mismatched file enqueues a rebuild. With nothing good in memory the
    answer is 503 (IndexRebuilding), never an error page and never a silently empty result;
    the only empty index served is the one of a version that has no vectors at all.
    """
    _check_modality(modality)
    dim = selectors.version_dim(version)
    found = registry.lookup(version.pk, modality, dim)
    if found.problem is not None:
        if found.problem != registry.MISSING or found.index is not None or selectors.has_vectors(
                version_id=version.pk, modality=modality):
            logger.warning("%s index of version %s: %s (%s)", modality, version.pk, found.problem, found.detail)
            if registry.should_request_rebuild(version.pk, modality):
                enqueue_index_rebuild(version.pk, modality)
        elif found.index is None:
            return si.build_index(np.zeros((0, dim), np.float32), np.zeros(0, np.int64),
                                  model_version_id=str(version.pk), modality=modality, config=index_config())
    if found.index is None:
        raise IndexRebuilding("The search index is being rebuilt; try again in a moment.")
    if found.index.dim != dim:  # defensive: a served index always passed the manifest check
        raise IndexRebuilding("The search index does not match the model; it is being rebuilt.")
    return found.index


# --- the one writer ---------------------------------------------------------------------------
@contextmanager
def _writer(version: ModelVersion, modality: str) -> Iterator[SearchIndex]:
    """Hold the SearchIndex row lock of (version, modality) for one write."""
    try:
        SearchIndex.objects.get_or_create(model_version=version, modality=modality)
    except IntegrityError:  # a concurrent writer created it first
        pass
    with transaction.atomic():
        yield SearchIndex.objects.select_for_update().get(model_version=version, modality=modality)


def _record(record: SearchIndex, index: si.VectorIndex, manifest: si.Manifest, path: str) -> None:
    record.path = path
    record.index_type = index.index_type
    record.count = index.count
    record.recall_at_10 = manifest.recall if manifest.recall_k == 10 else None
    record.status = SearchIndex.Status.READY
    record.error = ""
    record.built_at = timezone.now()
    record.save()


def _save_and_publish(record: SearchIndex, index: si.VectorIndex, version: ModelVersion, modality: str) -> None:
    path = registry.index_path(version.pk, modality)
    manifest = index.save(path)
    registry.publish(version.pk, modality, index, registry.file_signature(path))
    _record(record, index, manifest, str(path))
    # Deleted ids this saved index no longer holds need no hiding any more (they never return).
    removed_forget(version_id=version.pk, modality=modality, index_ids=index.ids())


def _build(version: ModelVersion, modality: str) -> si.VectorIndex:
    dim = selectors.version_dim(version)
    ids, vectors = selectors.stored_vectors(version_id=version.pk, modality=modality, dim=dim)
    config = index_config()
    tune = None
    if len(ids) > config.flat_max:  # approximate index: tune on real cross-modal queries
        other = CAPTION if modality == IMAGE else IMAGE
        tune = selectors.vectors_sample(version_id=version.pk, modality=other, dim=dim, limit=config.tune_queries)
    return si.build_index(vectors, ids, model_version_id=str(version.pk), modality=modality,
                          config=config, tune_queries=tune)


def _failed(version: ModelVersion, modality: str, exc: BaseException) -> None:
    SearchIndex.objects.filter(model_version=version, modality=modality).update(
        status=SearchIndex.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])


def index_rebuild(*, version: ModelVersion, modality: str, only_if_broken: bool = False) -> SearchIndex:
    """Build the index of (version, modality) from the stored vectors, save it, serve it.

    `only_if_broken`: skip when the file on disk loads cleanly (repeated rebuild requests
    from many readers then cost one verification each).
    """
    _check_modality(modality)
    try:
        with _writer(version, modality) as record:
            if only_if_broken and _loads_cleanly(version, modality) is not None:
                return record
            index = _build(version, modality)
            _save_and_publish(record, index, version, modality)
            logger.info("rebuilt %s index of version %s: %d vectors (%s)", modality, version.pk, index.count,
                        index.index_type)
            return record
    except Exception as exc:
        _failed(version, modality, exc)
        raise


def _loads_cleanly(version: ModelVersion, modality: str) -> si.VectorIndex | None:
    """The index this writer may modify: the served one if it matches the file, else the file's."""
    path = registry.index_path(version.pk, modality)
    sig = registry.file_signature(path)
    if sig is None:
        return None
    current, current_sig = registry.served(version.pk, modality)
    if current is not None and current_sig == sig:
        return current
    try:
        loaded = registry.load_file(path, version_id=version.pk, modality=modality, dim=selectors.version_dim(version))
    except (si.IndexFileError, OSError, ValueError) as exc:
        logger.warning("index file %s unusable (%s): rebuilding from stored vectors", path, exc)
        return None
    registry.publish(version.pk, modality, loaded, sig)
    return loaded


def index_apply(*, version_id: int, modality: str, ids: Sequence[int]) -> dict[str, Any]:
    """Bring these ids of the index in line with the database: upsert stored vectors, drop the rest.

    Used for incremental adds (new vectors) and removals (deleted images / captions) alike.
    A missing or broken file, or an index that should change type, is rebuilt instead.
    """
    _check_modality(modality)
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        return {"skipped": "model version deleted"}
    keys = np.unique(np.asarray(list(ids), dtype=np.int64))
    try:
        with _writer(version, modality) as record:
            index = _loads_cleanly(version, modality)
            if index is None:
                index = _build(version, modality)
                _save_and_publish(record, index, version, modality)
                return {"rebuilt": index.count}
            found, vectors = selectors.stored_vectors(version_id=version.pk, modality=modality, dim=index.dim, ids=keys)
            gone = np.setdiff1d(keys, found)
            if len(found):
                index.add(found, vectors)
            removed = index.remove(gone) if len(gone) else 0
            if index.needs_rebuild:
                index = _build(version, modality)
            _save_and_publish(record, index, version, modality)
            return {"added": int(len(found)), "removed": removed, "count": index.count}
    except Exception as exc:
        _failed(version, modality, exc)
        raise


def index_sync(*, version: ModelVersion, modality: str) -> dict[str, Any]:
    """Reconcile the whole index with the database (missed adds, vectors of deleted items)."""
    _check_modality(modality)
    with _writer(version, modality) as record:
        index = _loads_cleanly(version, modality)
        if index is None:
            index = _build(version, modality)
            _save_and_publish(record, index, version, modality)
            return {"rebuilt": index.count}
        in_db = selectors.stored_vector_ids(version_id=version.pk, modality=modality)
        in_index = np.sort(index.ids())
        missing, extra = np.setdiff1d(in_db, in_index), np.setdiff1d(in_index, in_db)
        if len(missing) == 0 and len(extra) == 0 and record.status == SearchIndex.Status.READY:
            return {"added": 0, "removed": 0, "count": index.count}
        if len(missing):
            found, vectors = selectors.stored_vectors(version_id=version.pk, modality=modality, dim=index.dim,
                                                      ids=missing)
            index.add(found, vectors)
        if len(extra):
            index.remove(extra)
        if index.needs_rebuild:
            index = _build(version, modality)
        _save_and_publish(record, index, version, modality)
        return {"added": int(len(missing)), "removed": int(len(extra)), "count": index.count}


# --- enqueueing (after commit; a dead broker never fails the caller) --------------------------
# --- the deletion log -------------------------------------------------------------------------
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


# (the periodic index sync repairs anything a dead broker did not take)
def flush_delay() -> float:
    return float(settings.SEARCH_INDEX_FLUSH_SECONDS)


def _publish_flush(version_id: int, modality: str) -> bool:
    return queueing.publish("search.tasks.index_flush", int(version_id), modality, countdown=flush_delay())


def index_queue(*, version_id: int, modality: str, ids: Sequence[int]) -> bool:
    """Queue freshly stored vectors for their index (the debounced, batched flush).

    The first ids to wait schedule one `index_flush` SEARCH_INDEX_FLUSH_SECONDS later; ids that
    arrive while rows already wait ride along with it. True if a flush was scheduled now."""
    _check_modality(modality)
    keys = sorted({int(i) for i in ids})
    if not keys:
        return False
    waiting = PendingIndexItem.objects.filter(model_version_id=version_id, modality=modality).exists()
    PendingIndexItem.objects.bulk_create(
        [PendingIndexItem(model_version_id=version_id, modality=modality, item_id=i) for i in keys],
        ignore_conflicts=True, batch_size=1000)
    if waiting:
        return False
    return _publish_flush(version_id, modality)


FLUSH_MAX_IDS = 50_000  # ids applied per flush; more wait for the next one (scheduled at once)


def index_flush(*, version_id: int, modality: str) -> dict[str, Any]:
    """Apply every waiting id of (version, modality) in one index write, then drop those rows.

    A failure leaves the rows for the next flush (or the periodic sync). Ids queued while this
    ran are not lost: if any wait when it ends, another flush is scheduled."""
    _check_modality(modality)
    pending = PendingIndexItem.objects.filter(model_version_id=version_id, modality=modality)
    taken = list(pending.order_by("pk").values_list("pk", "item_id")[:FLUSH_MAX_IDS])
    if not taken:
        return {"flushed": 0}
    result = index_apply(version_id=version_id, modality=modality, ids=[item for _, item in taken])
    PendingIndexItem.objects.filter(pk__in=[pk for pk, _ in taken]).delete()
    if pending.exists():
        _publish_flush(version_id, modality)
    return {"flushed": len(taken), **result}


def index_flush_all() -> dict[str, Any]:
    """Flush whatever waits for any (version, modality): the periodic repair of lost flushes."""
    pairs = PendingIndexItem.objects.values_list("model_version_id", "modality").distinct()
    return {f"{v}:{m}": index_flush(version_id=v, modality=m) for v, m in sorted(set(pairs))}


def enqueue_index_removal(version_id: int, modality: str, ids: Sequence[int]) -> bool:
    return queueing.publish("search.tasks.index_remove", int(version_id), modality, [int(i) for i in ids])


def enqueue_reindex_missing(version_id: int) -> bool:
    """Queue "reindex missing" for a version (gpu queue: it may encode thousands of images)."""
    return queueing.publish("search.tasks.reindex_missing", int(version_id))


def enqueue_index_rebuild(version_id: int, modality: str) -> bool:
    return queueing.publish("search.tasks.index_rebuild", int(version_id), modality, True)
