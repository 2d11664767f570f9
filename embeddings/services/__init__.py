"""Writes for embeddings, one module per job:

- `collections`: create / get / update / delete collections (names unique per owner, cleaned);
- `text`: the one way user text is cleaned;
- `images`: ingest (validate, store, record, enqueue), delete, upload features;
- `importing`: datasets and the demo, batched through the same validation;
- `processing`: the worker's follow-up steps for fresh images and the pending sweeper;
- `versions`: model versions the install always has (ConSE v0);
- `captions`: generate captions with the active captioner, save, accept or edit them (the one
  writer of captions besides ingest; import it as `embeddings.services.captions`);
- `features`: a collection's encoder features ahead of training (`manage.py compute_features`).
"""
from embeddings.services.collections import (
    collection_create,
    collection_delete,
    collection_get_or_create,
    collection_name_clean,
    collection_update,
)
from embeddings.services.images import (
    IngestResult,
    InvalidImage,
    enqueue_image_processing,
    image_delete,
    image_ingest,
    raster_features,
    read_upload,
    sanitize_bytes,
    upload_features,
)
from embeddings.services.text import MAX_CAPTION_CHARS, clean_caption_text, safe_source_name, strip_controls
from embeddings.services.versions import conse_version_ensure

__all__ = [
    "IngestResult",
    "InvalidImage",
    "MAX_CAPTION_CHARS",
    "clean_caption_text",
    "collection_create",
    "collection_delete",
    "collection_get_or_create",
    "collection_name_clean",
    "collection_update",
    "conse_version_ensure",
    "enqueue_image_processing",
    "image_delete",
    "image_ingest",
    "raster_features",
    "read_upload",
    "safe_source_name",
    "sanitize_bytes",
    "strip_controls",
    "upload_features",
]
