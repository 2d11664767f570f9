"""Index fixtures, built once per test session (each build tunes on 3,000 vectors)."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from search.index import HNSW, IVFPQ, VectorIndex
from tests.search.index.vectors import IVF_EXACT, build


@pytest.fixture(autouse=True, scope="session")
def _one_faiss_thread():
    # The test machine is shared: OpenMP spin-waiting on busy cores makes tiny jobs crawl.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="session")
def hnsw() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    return build(3000, HNSW)


@pytest.fixture(scope="session")
def ivfpq() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    return build(3000, IVFPQ)


@pytest.fixture(scope="session")
def ivf_exact() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    return build(3000, IVF_EXACT)
