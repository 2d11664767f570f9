"""Plain types shared by the pure FAISS wrapper (search/index).

Config, manifest, search hits and the typed load errors. No Django, no FAISS: this module
is imported by the build, file and index modules alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Version of the on-disk container (search/index/container.py). Bump when the layout changes;
# load refuses any other version with IndexMismatch so a stale cache is rebuilt, not misread.
FORMAT_VERSION = 1

FLAT = "flat"  # IndexFlatIP: exact, removal compacts in place
HNSW = "hnsw"  # IndexHNSWFlat: graph, removal by tombstone (faiss HNSW has no remove_ids)
# IVF over product-quantised codes, tombstones too. Three shapes (index_build.ivfpq_shape): 4-bit
# fast-scan codes re-ranked exactly against the float32 vectors (the default above hnsw_max), or
# 8-bit codes refined by SQ8 codes, or bare codes, when a memory budget asks for compression.
IVFPQ = "ivfpq"
INDEX_TYPES = (FLAT, HNSW, IVFPQ)


class IndexFileError(Exception):
    """Base class of the errors raised while loading an index file."""


class IndexMismatch(IndexFileError):
    """The file is intact but built for another model version, dim, modality or format."""


class IndexCorrupt(IndexFileError):
    """The file is truncated, empty, or fails its checksum: rebuild it from stored vectors."""


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`data` if every key is a field of the dataclass `cls`; ValueError naming the others."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return data


@dataclass(frozen=True)
class IndexConfig:
    """How the index type and its parameters are chosen. Stored in the manifest."""

    # Exact search up to this many vectors: a 50k x 512 float32 scan is ~100 MB and a few ms.
    flat_max: int = 50_000
    # HNSW for flat_max < n <= hnsw_max, IVF with exact re-ranking above it. Measured on
    # 100k and 1M (bench/index_bench.py, docs/benchmarks.md): at the same recall@10 the
    # re-ranked IVF (4-bit fast-scan codes, exact float32 re-rank) answered 1.12x (100k) and
    # 1.46x (1M) the one-at-a-time queries of hnswlib and 1.6x / 2.5x its batched ones, where
    # faiss HNSW managed 0.8-0.85x single-query; it built 1M vectors in 64 s vs 118 s and takes a
    # little less memory. So by default HNSW is not chosen (hnsw_max = flat_max); raise hnsw_max
    # for a training-free graph, e.g. a collection expected to grow far beyond the size it was
    # built at (an IVF index asks for a rebuild past ivf_growth_max x its training size).
    hnsw_max: int = 50_000
    # HNSW graph degree (faiss stores 2*M links on level 0); 32 suits d=512 embeddings.
    hnsw_m: int = 32
    # Candidate list while building the graph; higher = better graph, slower build.
    hnsw_ef_construction: int = 80
    # Bytes the index may take in RAM; None = no limit. When HNSW would not fit, IVF-PQ is used.
    memory_budget_bytes: int | None = None
    # Build-time tuning picks the cheapest efSearch / nprobe reaching this recall@k vs exact.
    recall_target: float = 0.95
    recall_k: int = 10
    # The target must hold for the lower bound mean - z * standard error of the per-query
    # recalls on the tuning sample (z = 1.645: one-sided 95%), not just for their mean: a mean
    # exactly at the target over 500 queries gave 0.945 on another 1,000 queries. 0 = mean only.
    recall_confidence_z: float = 1.645
    # An IVF index asks for a rebuild once it holds this many times the vectors its lists were
    # trained for (its nlist and tuned nprobe were chosen for that size).
    ivf_growth_max: float = 4.0
    # Held-out queries used for tuning (sampled from the vectors when none are given).
    tune_queries: int = 500
    # IVF lists; None = about 4*sqrt(n), clamped to [16, 65536].
    ivf_nlist: int | None = None
    # Vectors used to train IVF centroids and PQ codebooks (faiss wants >= 39 per centroid).
    ivf_train_max: int = 200_000
    # needs_rebuild turns True once this share of stored vectors are tombstones.
    max_tombstone_ratio: float = 0.2
    # Allow-lists with at most this many live members are searched exactly over their vectors.
    exact_filter_max: int = 20_000
    # Mirror Flat / IVF-PQ indexes onto all GPUs faiss can see (no-op on CPU-only faiss).
    use_gpu: bool = True
    # Seed of the tuning sample and of training-set sampling.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.flat_max < 0 or self.hnsw_max < 0:
            raise ValueError("flat_max and hnsw_max must be >= 0")
        if self.ivf_growth_max <= 1:
            raise ValueError("ivf_growth_max must be > 1")
        if self.hnsw_m < 4 or self.hnsw_ef_construction < 8:
            raise ValueError("hnsw_m must be >= 4 and hnsw_ef_construction >= 8")
        if not 0.0 < self.recall_target <= 1.0:
            raise ValueError("recall_target must be in (0, 1]")
        if self.recall_confidence_z < 0:
            raise ValueError("recall_confidence_z must be >= 0")
        if self.recall_k < 1 or self.tune_queries < 1:
            raise ValueError("recall_k and tune_queries must be >= 1")
        if not 0.0 < self.max_tombstone_ratio <= 1.0:
            raise ValueError("max_tombstone_ratio must be in (0, 1]")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes <= 0:
            raise ValueError("memory_budget_bytes must be positive or None")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexConfig:
        return cls(**_known_fields(cls, data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Manifest:
    """What an index file says about itself (JSON in the file header)."""

    format_version: int
    model_version_id: str
    modality: str
    dim: int
    count: int  # live vectors
    index_type: str
    params: dict[str, Any]  # e.g. {"M": 32, "efConstruction": 80, "efSearch": 64}
    recall: float | None  # recall@recall_k vs exact measured at build time
    recall_k: int
    config: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the payload (faiss bytes + labels + alive flags)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """The one rule of every from_dict here: unknown keys are an error (a typo, or a file of
        another format), except the container's own layout keys, which describe the file."""
        return cls(**_known_fields(cls, {k: v for k, v in data.items() if k not in CONTAINER_KEYS}))


CONTAINER_KEYS = frozenset({"sections", "payload_bytes"})  # written by container.write_container


@dataclass(frozen=True)
class Hits:
    """Results of one query, best first; padding already dropped, so len may be < k."""

    ids: np.ndarray  # (n,) int64 database keys
    scores: np.ndarray  # (n,) float32 cosine similarities

    def __len__(self) -> int:
        return int(self.ids.shape[0])
