"""search/index/build.py and factory.build_index: index type by size, tuning to a recall target."""
from __future__ import annotations


import faiss
import numpy as np
import pytest

from search.index import (FLAT, HNSW, IVFPQ, IndexConfig, build_index, normalise)
from search.index.build import choose_index_type, ivfpq_shape, recall_at_k
from tests.search.index.vectors import IVF_EXACT, MODEL, brute, build, clustered, ids_of, keys_for


def test_reranked_ivf_scores_are_exact_and_it_is_the_default_above_hnsw_max(ivf_exact):
    index, xb, keys = ivf_exact
    xq = clustered(50, seed=12)
    exact = {k: v for k, v in zip(keys.tolist(), xb)}
    for row, h in zip(xq, index.search(xq, 10)):  # re-ranked against the float32 vectors
        np.testing.assert_allclose(h.scores, [row @ exact[i] for i in h.ids.tolist()], rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(h.scores) <= 1e-6)
    assert index.params["quantizer"] == "hnsw" and index.params["trained_n"] == 3000
    default = IndexConfig()
    assert choose_index_type(default.flat_max + 1, 512, default) == IVFPQ
    assert ivfpq_shape(1_000_000, 512, default)["refine"] == "flat"


def test_index_type_follows_size_and_memory_budget():
    cfg = IndexConfig(flat_max=1000, hnsw_max=5000)
    assert choose_index_type(1000, 512, cfg) == FLAT
    assert choose_index_type(1001, 512, cfg) == HNSW
    assert choose_index_type(5000, 512, cfg) == HNSW
    assert choose_index_type(5001, 512, cfg) == IVFPQ
    tight = IndexConfig(flat_max=1000, hnsw_max=10**7, memory_budget_bytes=1_000_000 * 1000)
    assert choose_index_type(1_000_000, 512, tight) == IVFPQ
    assert ivfpq_shape(1_000_000, 512, tight)["refine"] == "sq8"  # 2 KB of float32 per vector do not fit
    assert choose_index_type(1_000_000, 512, IndexConfig(hnsw_max=10**7, memory_budget_bytes=10**12)) == HNSW
    assert choose_index_type(1_000_000, 512, IndexConfig(memory_budget_bytes=10**12)) == IVFPQ
    assert ivfpq_shape(1_000_000, 512, IndexConfig(memory_budget_bytes=10**12))["refine"] == "flat"


def test_ivf_asks_for_a_rebuild_once_it_outgrows_its_training(ivf_exact):
    _, xb, keys = ivf_exact
    index, _, _ = build(400, IVF_EXACT, ivf_growth_max=2.0)
    assert not index.needs_rebuild
    index.add(keys[400:800] + 1, xb[400:800])  # 800 = 2x the 400 it was trained on
    assert not index.needs_rebuild
    index.add(keys[800:801] + 1, xb[800:801])
    assert index.needs_rebuild


def test_config_from_dict_rejects_unknown_keys():
    assert IndexConfig.from_dict({"flat_max": 10}).flat_max == 10
    with pytest.raises(ValueError):
        IndexConfig.from_dict({"flat_maxx": 10})


def test_build_rejects_duplicate_ids_and_mismatched_lengths():
    with pytest.raises(ValueError):
        build_index(clustered(3, 0), np.array([1, 1, 2]), model_version_id=MODEL, modality="image")
    with pytest.raises(ValueError):
        build_index(clustered(3, 0), np.array([1, 2]), model_version_id=MODEL, modality="image")


def test_explicit_tuning_queries_are_used_and_recall_recorded():
    xb, keys = clustered(1500, seed=30), keys_for(1500)
    xq = clustered(80, seed=31)  # e.g. caption embeddings tuning an image index
    config = IndexConfig(flat_max=100, recall_target=0.99)
    index = build_index(xb, keys, model_version_id=MODEL, modality="image", config=config, tune_queries=xq)
    hits = index.search(xq, 10)
    measured = recall_at_k(np.array(ids_of(hits)), brute(xq, xb, keys, 10)[0], 10)
    assert index.recall is not None and abs(measured - index.recall) < 1e-9
    assert index.recall >= 0.99 or index.params["efSearch"] == 2048


def test_tuning_bisects_to_the_smallest_passing_ef_between_grid_points():
    from search.index.build import recalls_per_query

    xb, keys = clustered(1500, seed=32), keys_for(1500)
    xq = clustered(80, seed=33)
    config = IndexConfig(flat_max=100, recall_target=0.99)
    index = build_index(xb, keys, model_version_id=MODEL, modality="image", config=config, tune_queries=xq)
    ef = index.params["efSearch"]
    truth = brute(xq, xb, keys, 10)[0]

    def lower_bound(e: int) -> float:  # the rule tune() applies: mean - z * standard error >= target
        params = faiss.SearchParametersHNSW(efSearch=e)
        pos = index._index.search(normalise(xq), 10, params=params)[1]
        r = recalls_per_query(index._labels[pos], truth, 10)
        return r.mean() - config.recall_confidence_z * r.std(ddof=1) / np.sqrt(len(r))

    assert lower_bound(ef) >= 0.99 - 1e-12  # the chosen value reaches the target ...
    if ef > 16:  # ... and one less does not (the coarse grid alone would stop at 24, 32, 48, ...)
        assert lower_bound(ef - 1) < 0.99


def test_tuning_asks_for_confidence_not_just_a_mean_at_the_target():
    xb, keys = clustered(3000, seed=34), keys_for(3000)
    xq = clustered(200, seed=35)
    plain = build_index(xb, keys, model_version_id=MODEL, modality="image", tune_queries=xq,
                        config=IndexConfig(flat_max=100, recall_target=0.995, recall_confidence_z=0.0))
    sure = build_index(xb, keys, model_version_id=MODEL, modality="image", tune_queries=xq,
                       config=IndexConfig(flat_max=100, recall_target=0.995))
    # a mean just at the target is not enough: the bound needs a wider search (here 16 -> 17)
    assert sure.params["efSearch"] > plain.params["efSearch"] and sure.recall > plain.recall >= 0.995


def test_bisect_finds_the_smallest_passing_value_of_a_monotone_recall():
    from search.index.build import _bisect

    calls = []

    def measure(c):
        calls.append(c["efSearch"])
        r = min(1.0, c["efSearch"] / 40)
        return r >= 0.95, r

    params, r = _bisect(HNSW, {"M": 32, "efSearch": 48}, 1.0, [{"M": 32, "efSearch": 32}], measure)
    assert params == {"M": 32, "efSearch": 38} and r == 38 / 40
    assert len(calls) <= 4  # log2(48 - 32) measurements
    # no failing grid point below (the first grid value already passed): nothing to narrow
    assert _bisect(HNSW, {"efSearch": 16}, 0.97, [], measure) == ({"efSearch": 16}, 0.97)
    # IVF-PQ narrows nprobe only against failures with the same k_factor
    ivf, _ = _bisect(IVFPQ, {"nprobe": 16, "k_factor": 2}, 1.0,
                     [{"nprobe": 8, "k_factor": 4}], lambda c: (True, 1.0))
    assert ivf == {"nprobe": 16, "k_factor": 2}
