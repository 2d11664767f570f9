"""Keep indexes in step with the database: new vectors are added, deleted items removed.

Connected in SearchConfig.ready. Both act after commit (adds wait in PendingIndexItem for one
debounced flush; removals are one task per transaction); a lost message
(broker down) is repaired by the periodic `search.tasks.index_sync`, and until then search
results are filtered by the database allow-list anyway, so a deleted image never shows.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import transaction

from search.selectors import CAPTION, IMAGE

logger = logging.getLogger(__name__)
_state = threading.local()


@contextmanager
def suppressed() -> Iterator[None]:
    """Enqueue nothing from this thread (a bulk job syncs the indexes itself at the end)."""
    before = getattr(_state, "suppressed", False)
    _state.suppressed = True
    try:
        yield
    finally:
        _state.suppressed = before


def _is_suppressed() -> bool:
    return getattr(_state, "suppressed", False)


def on_vectors_stored(sender: Any, *, model_version_id: int, image_ids: Sequence[int] = (),
                      caption_ids: Sequence[int] = (), **kwargs: Any) -> None:
    """embeddings.encoding.vectors_stored: queue the new vectors for the version's indexes (one
    debounced, batched flush applies everything that waits; see search.models.PendingIndexItem)."""
    if _is_suppressed():
        return
    from search.services.indexes import index_queue

    for modality, ids in ((IMAGE, list(image_ids)), (CAPTION, list(caption_ids))):
        if ids:
            transaction.on_commit(lambda m=modality, i=ids: index_queue(version_id=model_version_id, modality=m,
                                                                         ids=i))


def _pending() -> dict[str, set[int]]:
    if not hasattr(_state, "pending"):
        _state.pending = defaultdict(set)
    return _state.pending


def _flush_removals() -> None:
    """Enqueue one removal per (version with an index, modality) for everything deleted.

    Called on commit; several callbacks of one transaction share the buffer, so the first
    sends everything and the rest find it empty. Ids left over from a rolled-back transaction
    are harmless: removal re-checks the database and keeps ids that still have vectors.
    """
    from search.selectors import index_records
    from search.services.indexes import enqueue_index_removal

    pending = _pending()
    batches = {m: sorted(ids) for m, ids in pending.items() if ids}
    pending.clear()
    for modality, ids in batches.items():
        versions = set(index_records(modality=modality).values_list("model_version_id", flat=True))
        for version_id in versions:
            enqueue_index_removal(version_id, modality, ids)


def _queue_removal(modality: str, pk: int | None) -> None:
    if pk is None or _is_suppressed():
        return
    _pending()[modality].add(int(pk))
    transaction.on_commit(_flush_removals)


def on_image_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _queue_removal(IMAGE, instance.pk)


def on_caption_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _queue_removal(CAPTION, instance.pk)


def connect() -> None:
    from django.db.models.signals import post_delete

    from embeddings.encoding import vectors_stored
    from embeddings.models import Caption, Image

    vectors_stored.connect(on_vectors_stored, dispatch_uid="search.on_vectors_stored")
    post_delete.connect(on_image_deleted, sender=Image, dispatch_uid="search.on_image_deleted")
    post_delete.connect(on_caption_deleted, sender=Caption, dispatch_uid="search.on_caption_deleted")
