"""Reads for search, one module per job:

- `filters`: what a search asks for (modalities, SearchFilters);
- `versions`: which embedding version a request reads;
- `context`: the per-request read (version + deny-list) in one round trip;
- `vectors`: raw reads of the stored vectors;
- `visibility`: the allow-lists of ids a user's search may return;
- `hydration`: the rows behind a page of hits;
- `coverage`: vectors per version and what the indexes hold.

Callers import the names from here (`from search import selectors; selectors.search_context`).
"""
from search.selectors.context import search_context
from search.selectors.coverage import captions_without_vectors, coverage, images_without_vectors
from search.selectors.filters import CAPTION, HUMAN_SOURCES, IMAGE, MODALITIES, SearchFilters, boost_keyword
from search.selectors.hydration import CaptionRow, captions_in_order, images_in_order
from search.selectors.vectors import (
    has_vectors,
    ids_of,
    image_vector,
    stored_vector_ids,
    stored_vectors,
    vectors_sample,
)
from search.selectors.versions import index_records, version_dim, version_resolve
from search.selectors.visibility import (
    filters_narrow,
    hidden_items,
    image_caption_ids,
    keyword_image_ids,
    searchable_caption_ids,
    searchable_image_ids,
    searchable_images,
    who,
)

__all__ = [
    "CAPTION", "HUMAN_SOURCES", "IMAGE", "MODALITIES", "CaptionRow", "SearchFilters", "boost_keyword",
    "captions_in_order", "captions_without_vectors", "coverage", "filters_narrow", "has_vectors", "hidden_items",
    "ids_of",
    "image_caption_ids", "image_vector", "images_in_order", "images_without_vectors", "index_records",
    "keyword_image_ids", "search_context", "searchable_caption_ids", "searchable_image_ids", "searchable_images",
    "stored_vector_ids", "stored_vectors", "vectors_sample", "version_dim", "version_resolve", "who",
]
