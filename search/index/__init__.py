"""The vector index (pure FAISS + numpy: no Django; import-linter holds it to that).

- `vector_index`: VectorIndex (ids are database keys, inner product on L2-normalised vectors,
  add / remove / search / save);
- `factory`: `build_index` (built and tuned from vectors), `load` and `read_manifest` (from a file);
- `build`: which index type a size gets and how its parameters are tuned to a recall target;
- `container`: the index file (one file, manifest + sections, checksummed, written atomically);
- `types`: the constants, IndexConfig, Hits, Manifest and the typed load errors;
- `holder`, `rwlock`: the swappable holder searches read through, and its readers-writer lock.
"""
from search.index.holder import IndexHolder
from search.index.rwlock import RWLock
from search.index.types import (
    FLAT,
    FORMAT_VERSION,
    HNSW,
    INDEX_TYPES,
    IVFPQ,
    Hits,
    IndexConfig,
    IndexCorrupt,
    IndexFileError,
    IndexMismatch,
    Manifest,
)
from search.index.factory import build_index, load, read_manifest
from search.index.vector_index import VectorIndex, normalise

__all__ = ["FLAT", "FORMAT_VERSION", "HNSW", "INDEX_TYPES", "IVFPQ", "Hits", "IndexConfig", "IndexCorrupt",
           "IndexFileError", "IndexHolder", "IndexMismatch", "Manifest", "RWLock", "VectorIndex", "build_index",
           "load", "normalise", "read_manifest"]
