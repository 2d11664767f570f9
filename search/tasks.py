"""Celery tasks for the search indexes: thin, take ids, call one service."""
from __future__ import annotations

from typing import Any

from celery import shared_task

from embeddings.models import ModelVersion


@shared_task(name="search.tasks.index_add", acks_late=True, reject_on_worker_lost=True)
def index_add(model_version_id: int, modality: str, ids: list[int]) -> dict[str, Any]:
    """Add (upsert) freshly stored vectors to the index of (version, modality)."""
    from search.services.indexes import index_apply

    return index_apply(version_id=model_version_id, modality=modality, ids=ids)


@shared_task(name="search.tasks.index_flush", acks_late=True, reject_on_worker_lost=True)
def index_flush(model_version_id: int, modality: str) -> dict[str, Any]:
    """Apply every vector waiting for the index of (version, modality) in one write."""
    from search.services.indexes import index_flush as flush

    return flush(version_id=model_version_id, modality=modality)


@shared_task(name="search.tasks.index_remove", acks_late=True, reject_on_worker_lost=True)
def index_remove(model_version_id: int, modality: str, ids: list[int]) -> dict[str, Any]:
    """Drop ids whose vectors are gone from the database (deleted images or captions)."""
    from search.services.indexes import index_apply

    return index_apply(version_id=model_version_id, modality=modality, ids=ids)


@shared_task(name="search.tasks.index_rebuild", acks_late=True, reject_on_worker_lost=True)
def index_rebuild(model_version_id: int, modality: str, only_if_broken: bool = False) -> dict[str, Any]:
    """Rebuild one index from the stored vectors (a corrupt or missing file, a manual request)."""
    from search.services.indexes import index_rebuild as rebuild

    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        return {"skipped": "model version deleted"}
    record = rebuild(version=version, modality=modality, only_if_broken=only_if_broken)
    return {"count": record.count, "status": record.status}


@shared_task(name="search.tasks.index_sync")
def index_sync() -> dict[str, Any]:
    """Periodic: flush vectors whose flush message was lost, then reconcile the active version's
    indexes with the database (lost messages)."""
    from search.selectors import MODALITIES
    from search.services.indexes import index_flush_all
    from search.services.indexes import index_sync as sync

    flushed = index_flush_all()
    version = ModelVersion.objects.active(ModelVersion.Kind.EMBEDDING).first()
    if version is None:
        return {"flushed": flushed}
    return {"flushed": flushed, **{m: sync(version=version, modality=m) for m in MODALITIES}}


@shared_task(name="search.tasks.reindex_missing", acks_late=True, reject_on_worker_lost=True)
def reindex_missing(model_version_id: int | None = None) -> dict[str, Any]:
    """Encode what the version lacks, then sync its indexes; returns the coverage report."""
    from search.services.coverage import reindex_missing as run

    version = ModelVersion.objects.filter(pk=model_version_id).first() if model_version_id else None
    return run(version=version)
