"""Writes and the search service of the search app (HackSoft `services`), split by topic:

- indexes: build / incremental add & remove / sync of the FAISS indexes; what readers get.
- coverage: reindex missing vectors, coverage report.
- queries: query terms -> one unit vector; signed query tokens for the next pages.
- search: the one search service (text/image -> images or captions, filters, cutoff, pages).
- images: zero-shot labels and query heatmaps of one image.
- warmup: load the active models and indexes when a process starts (`/readyz` says "warming").
(Captions are written by `embeddings.services.captions`.)
"""
from search.selectors import SearchFilters
from search.services.coverage import reindex_missing
from search.services.images import image_explain, image_labels
from search.services.indexes import (IndexRebuilding, enqueue_index_rebuild, enqueue_reindex_missing, index_apply,
                                     index_for_search, index_rebuild, index_sync)
from search.services.queries import Query, QueryTerm, query_check, query_encode, token_loads
from search.services.search import (CaptionHit, Cutoff, ImageHit, SearchPage, duplicate_cutoff, image_duplicates,
                                    image_similar, search_captions, search_images)

__all__ = [
    "CaptionHit", "Cutoff", "ImageHit", "IndexRebuilding", "Query", "QueryTerm",
    "SearchFilters", "SearchPage", "duplicate_cutoff", "enqueue_index_rebuild",
    "enqueue_reindex_missing", "image_duplicates",
    "image_explain", "image_labels", "image_similar", "index_apply", "index_for_search", "index_rebuild",
    "index_sync", "query_check", "query_encode", "reindex_missing", "search_captions", "search_images", "token_loads",
]
