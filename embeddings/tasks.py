"""Celery tasks for images: thin, take ids, call one service."""
from __future__ import annotations

from celery import shared_task

from embeddings.services import processing


@shared_task(name="embeddings.tasks.process_images", acks_late=True, reject_on_worker_lost=True)
def process_images(image_ids: list[int]) -> dict[str, int]:
    """Follow-up work for freshly ingested images (encoding, captioning once models exist)."""
    return processing.images_process(image_ids=image_ids)


@shared_task(name="embeddings.tasks.sweep_pending")
def sweep_pending() -> int:
    """Periodic: re-enqueue images left pending (e.g. the broker was down at upload time)."""
    return processing.pending_images_requeue()


@shared_task(name="embeddings.tasks.train_word2vec")
def train_word2vec(collection_id: int, run_id: int | None = None) -> int:
    """Learn the collection's word vectors for the word explorer (the outcome goes on the run)."""
    from embeddings import words

    return words.word2vec_run(collection_id=collection_id, run_id=run_id)
