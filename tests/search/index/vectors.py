"""Synthetic clustered vectors and a brute-force reference for the index tests."""
from __future__ import annotations

import numpy as np

from search.index import FLAT, HNSW, IVFPQ, IndexConfig, VectorIndex, build_index, normalise

DIM = 32
MODEL = "7"


def clustered(n: int, seed: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    """(n, dim) unit vectors around `clusters` centres: neighbours are meaningful, ties rare."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return normalise(x.astype(np.float32))


def keys_for(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * 3 + 1000  # database keys, not positions


def brute(xq: np.ndarray, xb: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = normalise(xq) @ normalise(xb).T  # (Q, N)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return keys[order], np.take_along_axis(scores, order, axis=1)


# The re-ranked IVF shape (4-bit fast-scan codes, exact float32 re-rank): the default above
# hnsw_max. IVFPQ alone here means the compressed shape a memory budget asks for.
IVF_EXACT = "ivfpq-exact"
TYPE_OF = {IVF_EXACT: IVFPQ}


def build(n: int, kind: str, seed: int = 0, **cfg) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    xb, keys = clustered(n, seed), keys_for(n)
    base = {FLAT: {}, HNSW: {"flat_max": 100}, IVFPQ: {"flat_max": 100, "memory_budget_bytes": n * 100,
                                                      "ivf_nlist": 16},
            IVF_EXACT: {"flat_max": 100, "hnsw_max": 100, "ivf_nlist": 16}}[kind]
    config = IndexConfig(**{"tune_queries": 100, **base, **cfg})
    index = build_index(xb, keys, model_version_id=MODEL, modality="image", config=config)
    assert index.index_type == TYPE_OF.get(kind, kind)
    assert (index.params.get("refine") == "flat") == (kind == IVF_EXACT)
    return index, xb, keys


def ids_of(hits) -> list[list[int]]:
    return [h.ids.tolist() for h in hits]
