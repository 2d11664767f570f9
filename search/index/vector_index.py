"""Pure FAISS wrapper: ids are int64 database keys, inner product on L2-normalised vectors.

No Django here: the search service passes vectors, ids, paths and a model version id.

- `build_index(vectors, ids, ...)` picks Flat / HNSW / IVF-PQ by size and memory budget and
  tunes efSearch / nprobe (and the re-rank depth) to the recall target (search/index/build.py).
- `VectorIndex.add` upserts, `remove` deletes, `search` returns ranks [offset, offset + k)
  per query with an optional id allow-list, pages stay full, -1 padding never escapes.
- Removal: Flat compacts in place. faiss HNSW has no remove_ids, so HNSW (and IVF-PQ, for one
  code path) keep a tombstone flag per stored vector, filtered at search through an
  IDSelectorBitmap; `needs_rebuild` turns True past `max_tombstone_ratio` and the service
  rebuilds from the stored vectors (the FAISS file is only a cache).
- `save` / `load` go through one checksummed file (search/index/container.py); `IndexHolder`
  (search/index_holder.py, re-exported here) publishes a new index with one reference swap.
- Thread-safety: searches run concurrently (faiss releases the GIL); add / remove take a
  writer lock, so in-place updates never race a search. Per-call SearchParameters, never
  index-wide settings. faiss's OpenMP pool is process-wide: set its size once per process.

Internally faiss sees positions 0..P-1 (P = vectors ever stored since the last rebuild);
`_labels[p]` is the database key and `_alive[p]` whether it is still live.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from search.index import build as ib
from search.index.container import write_container
from search.index.rwlock import RWLock
from search.index.types import FLAT, FORMAT_VERSION, HNSW, INDEX_TYPES, IVFPQ, Hits, IndexConfig, Manifest

logger = logging.getLogger(__name__)
GPU_MAX_K = 2048  # faiss GPU search refuses larger k


def normalise(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Float32 C-contiguous copy of (N, D) (or (D,)) vectors with unit L2 norm."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[0] == 1 and x.ndim == 2 and (dim is None or x.shape[1] == dim):  # one query: the web path
        sq = float(np.dot(x[0], x[0]))
        if not math.isfinite(sq):
            raise ValueError("vectors contain NaN or inf (or overflow float32)")
        if sq == 0:
            raise ValueError("cannot normalise a zero vector")
        return np.ascontiguousarray(x / math.sqrt(sq))  # always a new array
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise ValueError(f"expected vectors of shape (N, {dim}), got {np.shape(vectors)}")
    sq = np.einsum("nd,nd->n", x, x)  # (N,) squared norms; NaN / inf anywhere shows up here
    if not np.isfinite(sq).all():
        raise ValueError("vectors contain NaN or inf (or overflow float32)")
    if (sq == 0).any():
        raise ValueError("cannot normalise a zero vector")
    return np.ascontiguousarray(x / np.sqrt(sq)[:, None])  # always a new array


class VectorIndex:
    """A FAISS index keyed by database ids. Build with `build_index`, open with `load`."""

    def __init__(self, *, index: faiss.Index, index_type: str, params: dict[str, Any], dim: int,
                 model_version_id: str, modality: str, labels: np.ndarray, alive: np.ndarray,
                 recall: float | None, config: IndexConfig) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}")
        self._index, self._type, self._params = index, index_type, dict(params)
        self._dim, self._model_version_id, self._modality = dim, str(model_version_id), modality
        self._labels = labels.astype(np.int64, copy=False)  # (P,) database keys
        self._alive = alive.astype(bool, copy=False)  # (P,) False = tombstone
        self._n_live = int(self._alive.sum())  # kept by _changed: summing per query cost ~30 us at 100k, ~300 us at 1M
        self._recall, self._config = recall, config
        self._lock = RWLock()
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # sorted live keys, positions
        self._alive_bits: np.ndarray | None = None
        self._gpu: Any = None
        self._param_cache: dict[tuple[int, float], Any] = {}

    # ---- read-only properties -------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def count(self) -> int:
        """Live vectors."""
        return self._n_live

    @property
    def index_type(self) -> str:
        return self._type

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def recall(self) -> float | None:
        """recall@config.recall_k vs exact, measured when the index was built."""
        return self._recall

    @property
    def model_version_id(self) -> str:
        return self._model_version_id

    @property
    def modality(self) -> str:
        return self._modality

    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def tombstones(self) -> int:
        return len(self._alive) - self._n_live

    @property
    def needs_rebuild(self) -> bool:
        """Too many tombstones, the size now calls for another index type, or an IVF index has
        outgrown the size its lists were trained and tuned for."""
        stored = max(len(self._alive), 1)
        if self.tombstones / stored > self._config.max_tombstone_ratio:
            return True
        trained = self._params.get("trained_n")
        if self._type == IVFPQ and trained and self.count > self._config.ivf_growth_max * trained:
            return True
        return ib.choose_index_type(self.count, self._dim, self._config) != self._type

    def manifest(self) -> Manifest:
        return Manifest(format_version=FORMAT_VERSION, model_version_id=self._model_version_id,
                        modality=self._modality, dim=self._dim, count=self.count,
                        index_type=self._type, params=self.params, recall=self._recall,
                        recall_k=self._config.recall_k, config=self._config.to_dict())

    def ids(self) -> np.ndarray:
        """Live database keys, sorted ascending; a read-only array shared until the next write.

        The search service intersects allow-lists with it on every request, so it is built
        once per index state (the sorted-key lookup that add/remove use), not per call.
        """
        with self._lock.read():
            return self._sorted_lookup()[0]

    # ---- writes ---------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (N,) keys with (N, D) vectors; a key already present is replaced (upsert)."""
        keys = _as_keys(ids)
        xb = normalise(vectors, self._dim)
        if len(keys) != len(xb):
            raise ValueError(f"{len(keys)} ids for {len(xb)} vectors")
        if len(np.unique(keys)) != len(keys):
            raise ValueError("duplicate ids in one add")
        if len(keys) == 0:
            return
        with self._lock.write():
            self._remove_positions(self._positions(keys))
            self._index.add(xb)
            ib.after_add(self._index, self._type, self._params)
            self._labels = np.concatenate([self._labels, keys])
            self._alive = np.concatenate([self._alive, np.ones(len(keys), dtype=bool)])
            self._changed()

    def remove(self, ids: np.ndarray) -> int:
        """Remove keys (unknown ones are ignored); returns how many were live."""
        keys = _as_keys(ids)
        with self._lock.write():
            pos = self._positions(keys)
            self._remove_positions(pos)
            self._changed()
        return int(len(pos))

    def _remove_positions(self, pos: np.ndarray) -> None:
        if len(pos) == 0:
            return
        if self._type == FLAT:  # IndexFlat compacts in order, so labels shift the same way
            self._index.remove_ids(faiss.IDSelectorBatch(pos.astype(np.int64)))
            self._labels = np.delete(self._labels, pos)
            self._alive = np.delete(self._alive, pos)
        else:  # faiss HNSW cannot remove: tombstone, filtered at search time
            self._alive = self._alive.copy()
            self._alive[pos] = False

    def _changed(self) -> None:
        """After every write to `_alive` / `_labels` (under the write lock)."""
        self._lookup, self._alive_bits, self._gpu = None, None, None
        self._n_live = int(self._alive.sum())

    def _sorted_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted live keys (L,), their positions (L,)), both read-only; rebuilt after a write.

        Two concurrent readers may both build it (same result); writers hold the write lock.
        """
        lookup = self._lookup
        if lookup is None:
            live = np.flatnonzero(self._alive)
            order = np.argsort(self._labels[live], kind="stable")
            keys, pos = self._labels[live][order], live[order]
            keys.setflags(write=False)
            pos.setflags(write=False)
            lookup = self._lookup = (keys, pos)
        return lookup

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """Positions (sorted) of the live vectors whose keys are in `keys`."""
        sorted_keys, sorted_pos = self._sorted_lookup()
        if len(sorted_keys) == 0 or len(keys) == 0:
            return np.empty(0, dtype=np.int64)
        at = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
        return np.sort(sorted_pos[at[sorted_keys[at] == keys]])

    # ---- search ---------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, *, offset: int = 0,
               allow_ids: np.ndarray | None = None, deny_ids: np.ndarray | None = None) -> list[Hits]:
        """Ranks [offset, offset + k) for each of the (Q, D) queries, best first.

        `allow_ids` restricts results to those keys, `deny_ids` excludes keys (cost grows with
        the deny-list, not the index: the cheap way to hide a few ids from a large index);
        pages are filled from the allowed set (a short page means the allowed set is
        exhausted, never that the filter ate hits).
        """
        if k < 0 or offset < 0:
            raise ValueError("k and offset must be >= 0")
        xq = normalise(queries, self._dim)  # (Q, D)
        with self._lock.read():
            mask = self._mask(allow_ids, deny_ids)  # (P,) bool or None = every stored vector is allowed
            n_allowed = self._allowed_count(mask)
            want = min(offset + k, n_allowed)
            if want == 0:
                return [_empty_hits() for _ in range(len(xq))]
            if mask is not None and n_allowed <= self._config.exact_filter_max:
                scores, pos = self._exact_subset(xq, mask, want)
            else:
                scores, pos = self._approx(xq, want, mask)
            return [self._hits(s[offset:], p[offset:]) for s, p in zip(scores, pos)]

    def _mask(self, allow_ids: np.ndarray | None, deny_ids: np.ndarray | None = None) -> np.ndarray | None:
        if allow_ids is None:
            mask = None if self.tombstones == 0 else self._alive
        else:
            mask = np.zeros(len(self._alive), dtype=bool)
            mask[self._positions(_as_keys(allow_ids))] = True
        if deny_ids is not None and len(deny_ids):
            deny = self._positions(_as_keys(deny_ids))
            if len(deny):
                mask = np.ones(len(self._alive), dtype=bool) if mask is None else mask.copy()  # never edit _alive
                mask[deny] = False
        return mask

    def _hits(self, scores: np.ndarray, pos: np.ndarray) -> Hits:
        if len(pos) and pos[-1] >= 0:  # full list (faiss pads short ones with -1 at the end)
            return Hits(ids=self._labels[pos], scores=np.array(scores, dtype=np.float32))
        keep = pos >= 0
        return Hits(ids=self._labels[pos[keep]], scores=scores[keep].astype(np.float32))

    def _exact_subset(self, xq: np.ndarray, mask: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the allowed vectors (exact for Flat/HNSW, PQ/SQ8 codes for IVF-PQ)."""
        pos = np.flatnonzero(mask).astype(np.int64)  # (A,)
        xb = self._index.reconstruct_batch(pos)  # (A, D)
        scores, local = faiss.knn(xq, xb, want, metric=faiss.METRIC_INNER_PRODUCT)  # (Q, want)
        return scores, np.where(local >= 0, pos[np.maximum(local, 0)], -1)

    def _approx(self, xq: np.ndarray, want: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if mask is None and (hit := self._gpu_search(xq, want)) is not None:
            return hit
        sel, bits = None, None
        if mask is not None:
            bits = self._alive_bitmap() if mask is self._alive else np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        scale = self._initial_scale(want, mask)
        while True:
            params = self._search_params(want, sel, scale)
            scores, pos = self._index.search(xq, want, params=params)  # (Q, want)
            # faiss pads a short list with -1 at its end; one query (the web path) needs no reduction
            full = bool(pos[0, -1] >= 0) if len(pos) == 1 else bool((pos[:, -1] >= 0).all())
            if full or not ib.can_scale(self._type, self._params, scale, len(self._alive)):
                break
            scale *= 2  # a short list: widen efSearch / nprobe until the page is full
        if not full:  # still short (rare): exact over the allowed set
            scores, pos = self._exact_subset(xq, self._alive if mask is None else mask, want)
        del bits  # the selector reads it until here
        return scores, pos

    def _search_params(self, want: int, sel: Any, scale: float) -> Any:
        if sel is not None:  # selectors change per call; building params costs ~10 us anyway
            return ib.search_params(self._type, self._params, want, sel, scale)
        key = (want, scale)
        params = self._param_cache.get(key)
        if params is None:  # read-only once built, so readers can share it
            if len(self._param_cache) > 256:
                self._param_cache.clear()
            params = self._param_cache[key] = ib.search_params(self._type, self._params, want, None, scale)
        return params

    def _initial_scale(self, want: int, mask: np.ndarray | None) -> float:
        """Widen the tuned search for pages deeper than the tuned k and for selective filters."""
        allowed = self._allowed_count(mask)
        return max(1.0, want / self._config.recall_k) * len(self._alive) / max(allowed, 1)

    def _allowed_count(self, mask: np.ndarray | None) -> int:
        """Vectors `mask` lets through (None = all stored ones, only used without tombstones)."""
        if mask is None:
            return len(self._alive)
        return self._n_live if mask is self._alive else int(mask.sum())

    def _alive_bitmap(self) -> np.ndarray:
        if self._alive_bits is None:
            self._alive_bits = np.packbits(self._alive, bitorder="little")
        return self._alive_bits

    def _gpu_search(self, xq: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Unfiltered Flat / plain IVF-PQ search on a lazily made GPU mirror, if any."""
        if (not self._config.use_gpu or want > GPU_MAX_K or self._type == HNSW
                or self._params.get("refine") or not _gpus_available()):
            return None
        gpu = self._gpu
        if gpu is None:
            # Several GPUs: shard the vectors over them (faiss IndexShards), so each holds 1/n of
            # the index and a query fans out to all; one GPU: a plain copy.
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            gpu = faiss.index_cpu_to_all_gpus(self._index, co=options)
            if self._type == IVFPQ:
                faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", self._params["nprobe"])
            self._gpu = gpu  # a benign race: two readers may both build one
        scores, pos = gpu.search(xq, want)
        return (scores, pos) if (pos[:, -1] >= 0).all() else None

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Manifest:
        """Write atomically (`<path>.part`, fsync, os.replace); returns the written manifest."""
        with self._lock.read():
            manifest = self.manifest().to_dict()
            sections = [("faiss", faiss.serialize_index(self._index)),
                        ("labels", self._labels), ("alive", self._alive.astype(np.uint8))]
            written = write_container(path, manifest, sections)
        return Manifest.from_dict(written)

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N,), vectors (N, D)) as stored; for a rebuild prefer the database's vectors."""
        with self._lock.read():
            pos = np.flatnonzero(self._alive).astype(np.int64)
            return self._labels[pos].copy(), self._index.reconstruct_batch(pos)


@functools.lru_cache(maxsize=1)
def _gpus_available() -> bool:
    return hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0


def _as_keys(ids: Any) -> np.ndarray:
    keys = np.asarray(ids)
    if keys.ndim != 1 or (keys.size and not np.issubdtype(keys.dtype, np.integer)):
        raise ValueError("ids must be a 1-D integer array")
    return keys.astype(np.int64)


def _empty_hits() -> Hits:
    return Hits(ids=np.empty(0, dtype=np.int64), scores=np.empty(0, dtype=np.float32))
