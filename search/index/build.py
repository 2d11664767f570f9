"""Choosing, creating and tuning the FAISS index behind search/index (pure: no Django).

autofaiss-style: exact Flat while small, then HNSW up to `hnsw_max` (by default none: see
IndexConfig.hnsw_max for the measured reason), then IVF-PQ: 4-bit fast-scan codes re-ranked
exactly against the float32 vectors, or compressed codes (SQ8-refined, or bare) when a memory
budget asks for them. Search parameters (efSearch, nprobe, k_factor) are tuned at build time to the
cheapest setting whose recall@k against exact search meets the target on held-out queries:
a coarse grid first, then a bisection between its last failing and first passing value, and
"meets" means the one-sided 95% lower bound of the mean (mean - 1.645 x standard error of the
per-query recalls), so the target also holds on queries the tuning never saw.
All vectors here are already L2-normalised float32, shape (N, D).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from search.index.types import FLAT, HNSW, IVFPQ, IndexConfig

logger = logging.getLogger(__name__)

HNSW_EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
REFINE_K_FACTORS = (2, 4, 8)
EXACT_K_FACTORS = (2, 4, 8, 16)  # 4-bit codes rank coarser than 8-bit ones: re-rank a deeper list
# IVF shapes by `refine`: exact float32 re-rank over 4-bit fast-scan codes, SQ8 refine over 8-bit
# codes, or bare 8-bit codes. Old manifests stored refine as a bool (True = SQ8).
REFINE_EXACT, REFINE_SQ8, REFINE_NONE = "flat", "sq8", ""
# Coarse quantizer of the re-ranked shape: an HNSW graph over the centroids, searched this wide
# (at least 2 x nprobe): 4,096 centroids scanned exactly cost ~2M multiply-adds a query.
QUANTIZER_EF_MIN = 64
_BOOKKEEPING = 9  # bytes per vector kept by the wrapper: int64 label + alive flag


def bytes_per_vector(index_type: str, dim: int, config: IndexConfig, pq_m: int = 0, refine: str | bool = "") -> float:
    """Estimated RAM per vector (wrapper bookkeeping included)."""
    if index_type == FLAT:
        return 4 * dim + _BOOKKEEPING
    if index_type == HNSW:
        # level 0 keeps 2*M int32 links; upper levels add ~1/M of that again.
        return 4 * dim + 2 * config.hnsw_m * 4 * (1 + 1 / config.hnsw_m) + 8 + _BOOKKEEPING
    # IVF lists keep the code and an int64 id; the exact re-rank keeps the float32 vector
    # (codes are 4-bit), the SQ8 refine one byte per dimension; without refine a direct map
    # (int64) lets filtered searches reconstruct codes.
    if refine == REFINE_EXACT:
        return pq_m / 2 + 8 + 4 * dim + _BOOKKEEPING
    return pq_m + 8 + (dim if refine else 8) + _BOOKKEEPING


def choose_index_type(n: int, dim: int, config: IndexConfig) -> str:
    """Flat up to flat_max; HNSW up to hnsw_max unless the memory budget forces IVF-PQ; IVF-PQ above."""
    if n <= config.flat_max:
        return FLAT
    budget = config.memory_budget_bytes
    if n > config.hnsw_max or (budget is not None and n * bytes_per_vector(HNSW, dim, config) > budget):
        return IVFPQ
    return HNSW


def ivfpq_shape(n: int, dim: int, config: IndexConfig) -> dict[str, Any]:
    """nlist, PQ sub-quantizers and refine choice that fit the budget (largest codes first)."""
    nlist = config.ivf_nlist or int(min(65536, max(16, round(4 * math.sqrt(max(n, 1))))))
    nlist = max(1, min(nlist, max(1, n // 39)))  # faiss wants >= 39 training points per list
    budget = config.memory_budget_bytes or float("inf")
    exact_m = dim // 2 if dim % 2 == 0 and dim >= 4 else 0  # 2 dims per 4-bit code; fast-scan wants an even count
    if exact_m and n * bytes_per_vector(IVFPQ, dim, config, exact_m, REFINE_EXACT) <= budget:
        return {"nlist": nlist, "pq_m": exact_m, "refine": REFINE_EXACT}
    candidates = [m for m in (dim // 4, dim // 8, dim // 16, dim // 32) if m >= 1 and dim % m == 0]
    for refine in (REFINE_SQ8, REFINE_NONE):
        for m in candidates:
            if n * bytes_per_vector(IVFPQ, dim, config, m, refine) <= budget:
                return {"nlist": nlist, "pq_m": m, "refine": refine}
    need = bytes_per_vector(IVFPQ, dim, config, candidates[-1], False) * n
    raise ValueError(f"memory budget {budget} bytes cannot hold {n} vectors (IVF-PQ needs ~{need:.0f})")


def new_index(index_type: str, dim: int, n: int, config: IndexConfig) -> tuple[faiss.Index, dict[str, Any]]:
    """An empty (untrained) faiss index and its build parameters."""
    ip = faiss.METRIC_INNER_PRODUCT
    if index_type == FLAT:
        return faiss.IndexFlatIP(dim), {}
    if index_type == HNSW:
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, ip)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        return index, {"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction, "efSearch": 64}
    if index_type == IVFPQ:
        shape = ivfpq_shape(n, dim, config)
        # index_factory gives objects that own their parts (no Python/C++ double ownership).
        if shape["refine"] == REFINE_EXACT:
            # 4-bit codes scanned with SIMD lookups ("fs"), the candidates re-scored exactly
            # against the float32 vectors (RFlat), lists found through an HNSW graph of the centroids.
            index = faiss.index_factory(dim, f"IVF{shape['nlist']}_HNSW32,PQ{shape['pq_m']}x4fs,RFlat", ip)
            return index, dict(shape, quantizer="hnsw", trained_n=n, nprobe=1, k_factor=1)
        spec = f"IVF{shape['nlist']},PQ{shape['pq_m']}" + (",Refine(SQ8)" if shape["refine"] else "")
        index = faiss.index_factory(dim, spec, ip)
        # Polysemous training (on by default) anneals code orderings for Hamming filtering,
        # which we never use; it costs tens of seconds even on a few thousand vectors.
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
        return index, dict(shape, trained_n=n, nprobe=1, k_factor=1)
    raise ValueError(f"unknown index type {index_type!r}")


def train(index: faiss.Index, index_type: str, xb: np.ndarray, config: IndexConfig) -> None:
    """Train IVF centroids / PQ codebooks on a sample of xb (N, D); Flat and HNSW need none."""
    if index_type != IVFPQ or index.is_trained:
        return
    rng = np.random.default_rng(config.seed)
    take = min(len(xb), config.ivf_train_max)
    sample = xb[np.sort(rng.choice(len(xb), take, replace=False))] if take < len(xb) else xb
    index.train(sample)


def after_add(index: faiss.Index, index_type: str, params: dict[str, Any]) -> None:
    """Plain IVF-PQ keeps a direct map so filtered searches can reconstruct codes."""
    if index_type == IVFPQ and not params.get("refine"):
        ivf = faiss.extract_index_ivf(index)
        if ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.make_direct_map()


def search_params(
    index_type: str, params: dict[str, Any], k: int, sel: Any, scale: float = 1.0
) -> faiss.SearchParameters | None:
    """Per-call parameters (never mutate the shared index: readers run concurrently).

    `scale` widens the tuned efSearch / nprobe: callers pass about (k / tuned k) / selectivity,
    since a filter letting 5% through leaves ~1/20 of the candidates usable.
    """
    if index_type == FLAT:
        return faiss.SearchParameters(sel=sel) if sel is not None else None
    if index_type == HNSW:
        p = faiss.SearchParametersHNSW(efSearch=max(math.ceil(params["efSearch"] * scale), k))
        if sel is not None:
            p.sel = sel
        return p
    nprobe = min(params["nlist"], math.ceil(params["nprobe"] * scale))
    ivf = faiss.SearchParametersIVF(nprobe=nprobe, max_codes=0)
    if params.get("quantizer") == "hnsw":
        coarse = faiss.SearchParametersHNSW(efSearch=max(QUANTIZER_EF_MIN, 2 * nprobe))
        ivf.quantizer_params = coarse
        ivf.__dict__["_coarse"] = coarse  # the C++ side keeps only a pointer
    if sel is not None:
        ivf.sel = sel
    if not params.get("refine"):
        return ivf
    refine = faiss.IndexRefineSearchParameters(k_factor=float(params["k_factor"]), base_index_params=ivf)
    refine.__dict__["_base"] = ivf  # keep the Python wrapper alive as long as the outer one
    return refine


def can_scale(index_type: str, params: dict[str, Any], scale: float, n: int) -> bool:
    """Whether a larger `scale` still widens the search (escalation for short result lists)."""
    if index_type == HNSW:
        return params["efSearch"] * scale < max(2 * n, 4096)
    if index_type == IVFPQ:
        return params["nprobe"] * scale < params["nlist"] * 2
    return False


def ground_truth(xq: np.ndarray, xb: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k positions (Q, k) by inner product, without copying xb into an index."""
    _, gt = faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    return gt


def recalls_per_query(found: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """|found[:k] & truth[:k]| / k per query (Q,); found (Q, >=k), truth (Q, >=k)."""
    return np.array([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)])


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |found[:k] & truth[:k]| / k over queries; found (Q, >=k), truth (Q, >=k)."""
    per_query = recalls_per_query(found, truth, k)
    return float(per_query.mean()) if len(per_query) else 1.0


def held_out(n: int, config: IndexConfig) -> np.ndarray:
    """Sorted positions (Q,) of the vectors kept out of the index while tuning.

    Queries that are already in the graph find themselves and their own links, which
    flatters recall (0.97 measured vs 0.91 on fresh queries at 20k in bench/index_bench.py),
    so build_index adds these only after tuning.
    """
    rng = np.random.default_rng(config.seed + 1)
    take = min(config.tune_queries, max(n - 1, 0))
    return np.sort(rng.choice(n, take, replace=False)) if take > 0 else np.empty(0, np.int64)


def tune(index: faiss.Index, index_type: str, params: dict[str, Any], xb: np.ndarray,
         config: IndexConfig, queries: np.ndarray) -> tuple[dict[str, Any], float]:
    """Cheapest search parameters reaching config.recall_target; returns (params, recall).

    `xb` (N, D) is exactly what `index` holds (same order); `queries` (Q, D) are not in it.
    """
    k = min(config.recall_k, len(xb))
    if k < 1 or len(queries) == 0:
        return params, 1.0
    truth = ground_truth(queries, xb, k)  # (Q, k)

    def measure(candidate: dict[str, Any]) -> tuple[bool, float]:
        """(reaches the target with the configured confidence, mean recall)."""
        _, found = index.search(queries, k, params=search_params(index_type, candidate, k, None))
        per_query = recalls_per_query(found, truth, k)
        mean = float(per_query.mean())
        spread = float(per_query.std(ddof=1)) / np.sqrt(len(per_query)) if len(per_query) > 1 else 0.0
        return mean - config.recall_confidence_z * spread >= config.recall_target - 1e-12, mean

    best: tuple[dict[str, Any], float] | None = None
    failed: list[dict[str, Any]] = []
    for candidate in _candidates(index_type, params):
        ok, r = measure(candidate)
        if best is None or r > best[1]:
            best = (candidate, r)
        if ok:
            candidate, r = _bisect(index_type, candidate, r, failed, measure)
            logger.info("tuned %s to %s: recall@%d=%.4f", index_type, candidate, k, r)
            return candidate, r
        failed.append(candidate)
    if best is None:
        raise ValueError(f"no candidate parameters for index type {index_type!r}")
    logger.warning("%s cannot reach recall %.3f; best %s gives %.4f",
                   index_type, config.recall_target, best[0], best[1])
    return best


def _bisect(index_type: str, passed: dict[str, Any], recall: float, failed: list[dict[str, Any]],
            measure: Callable[[dict[str, Any]], tuple[bool, float]]) -> tuple[dict[str, Any], float]:
    """Narrow the coarse grid's first passing efSearch / nprobe down toward the last failing one.

    The grid doubles (or grows by half) per step, so its first passing value can cost up to
    ~1.5-2x the search work the target needs (efSearch 48 where 36 would do). Recall grows
    with the knob, so a bisection between the two (about log2 of the gap, 4-5 measurements of
    the tuning queries) finds the smallest value that still reaches the target on them.
    """
    key = {HNSW: "efSearch", IVFPQ: "nprobe"}.get(index_type)
    if key is None:
        return passed, recall
    same = [c for c in failed if all(c.get(x) == passed.get(x) for x in passed if x != key) and c[key] < passed[key]]
    if not same:
        return passed, recall
    lo, hi = max(c[key] for c in same), passed[key]  # lo fails, hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, r = measure(dict(passed, **{key: mid}))
        if ok:
            hi, recall = mid, r
        else:
            lo = mid
    return dict(passed, **{key: hi}), recall


def _candidates(index_type: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    if index_type == FLAT:
        return [params]
    if index_type == HNSW:
        return [dict(params, efSearch=ef) for ef in HNSW_EF_GRID]
    probes = [2**i for i in range(int(math.log2(params["nlist"])) + 1)] + [params["nlist"]]
    refine = params.get("refine")
    factors = EXACT_K_FACTORS if refine == REFINE_EXACT else REFINE_K_FACTORS if refine else (1,)
    return [dict(params, nprobe=p, k_factor=f) for p in sorted(set(probes)) for f in factors]
