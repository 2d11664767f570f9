"""search/index/vector_index.py against brute force `xq @ xb.T`, on small synthetic clustered vectors."""
from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from search.index import (FLAT, HNSW, IVFPQ, IndexConfig, IndexHolder, build_index, normalise)
from search.index.build import recall_at_k
from tests.search.index.vectors import DIM, IVF_EXACT, MODEL, brute, build, clustered, ids_of, keys_for


def test_flat_search_equals_brute_force():
    index, xb, keys = build(500, FLAT)
    xq = clustered(20, seed=9)
    want_ids, want_scores = brute(xq, xb, keys, 10)
    hits = index.search(xq * 5.0, 10)  # unnormalised queries: normalised on the way in
    assert ids_of(hits) == want_ids.tolist()
    np.testing.assert_allclose([h.scores for h in hits], want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [HNSW, IVFPQ, IVF_EXACT])
def test_approximate_index_reaches_recall_target_against_brute_force(kind, hnsw, ivfpq, ivf_exact):
    index, xb, keys = {HNSW: hnsw, IVFPQ: ivfpq, IVF_EXACT: ivf_exact}[kind]
    xq = clustered(200, seed=11)  # fresh queries, not the tuning sample
    want_ids, _ = brute(xq, xb, keys, 10)
    hits = index.search(xq, 10)
    assert recall_at_k(np.array(ids_of(hits)), want_ids, 10) >= 0.9
    assert index.recall is not None and index.recall >= 0.95
    exact = {k: v for k, v in zip(keys.tolist(), xb)}
    for row, h in zip(xq, hits):  # HNSW scores are exact; IVF-PQ scores come from SQ8 codes
        np.testing.assert_allclose(h.scores, [row @ exact[i] for i in h.ids.tolist()], atol=0.02)


@pytest.mark.parametrize("kind", [FLAT, HNSW, IVFPQ, IVF_EXACT])
def test_search_drops_padding_ids(kind, hnsw, ivfpq, ivf_exact):
    index = {FLAT: build(50, FLAT)[0], HNSW: hnsw[0], IVFPQ: ivfpq[0], IVF_EXACT: ivf_exact[0]}[kind]
    hits = index.search(clustered(3, seed=5), index.count + 25)
    for h in hits:
        assert len(h) == index.count and -1 not in h.ids.tolist()
        assert set(h.ids.tolist()) == set(index.ids().tolist())


@pytest.mark.parametrize("widen", [True, False])
def test_short_first_pass_is_widened_until_pages_are_full(ivfpq, monkeypatch, widen):
    index, xb, keys = ivfpq
    # Start at nprobe=1 whatever the filter: one IVF list cannot hold 40 of the allowed keys,
    # so faiss pads with -1 and the index must widen nprobe or, failing that, go exact.
    monkeypatch.setattr(index, "_initial_scale", lambda want, mask: 1.0 / index.params["nprobe"])
    monkeypatch.setattr(index, "_config", IndexConfig(**{**index.config.to_dict(), "exact_filter_max": 0}))
    if widen:  # widening alone must fill the pages
        monkeypatch.setattr(index, "_exact_subset", lambda *a: pytest.fail("fell back to exact"))
    else:  # no widening allowed: the exact fallback must fill them
        monkeypatch.setattr("search.index.build.can_scale", lambda *a: False)
    allowed = keys[::5]
    for h in index.search(clustered(10, seed=12), 40, allow_ids=allowed):
        assert len(h) == 40 and -1 not in h.ids.tolist() and set(h.ids.tolist()) <= set(allowed.tolist())


def test_flat_remove_matches_brute_force_over_the_rest():
    index, xb, keys = build(400, FLAT)
    gone = keys[::4]
    assert index.remove(np.append(gone, 999_999)) == len(gone)  # unknown keys are ignored
    keep = ~np.isin(keys, gone)
    xq = clustered(10, seed=3)
    want_ids, _ = brute(xq, xb[keep], keys[keep], 15)
    assert ids_of(index.search(xq, 15)) == want_ids.tolist()
    assert index.count == keep.sum() and index.tombstones == 0


@pytest.mark.parametrize("kind", [HNSW, IVFPQ])
def test_removed_ids_never_come_back_and_pages_stay_full(kind):
    index, xb, keys = build(1500, kind)
    gone = keys[: 600]
    index.remove(gone)
    assert index.tombstones == 600 and index.count == 900 and index.needs_rebuild
    for h in index.search(xb[:600], 20):  # the removed vectors themselves as queries
        assert len(h) == 20 and not set(h.ids.tolist()) & set(gone.tolist())


def test_add_with_an_existing_id_replaces_its_vector(hnsw):
    index, xb, keys = build(1000, HNSW)
    new = -xb[0]
    index.add(keys[:1], new[None, :])
    assert index.count == 1000
    top = index.search(new, 1)[0]
    assert top.ids.tolist() == [keys[0]] and top.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert keys[0] not in index.search(xb[0], 5)[0].ids.tolist()


@pytest.mark.parametrize("kind", [FLAT, HNSW, IVFPQ, IVF_EXACT])
@pytest.mark.parametrize("exact_filter_max", [0, 20_000])  # selector path, exact-subset path
def test_filtered_search_keeps_pages_full(kind, exact_filter_max, hnsw, ivfpq, ivf_exact):
    index, xb, keys = {FLAT: build(3000, FLAT), HNSW: hnsw, IVFPQ: ivfpq, IVF_EXACT: ivf_exact}[kind]
    index._config = IndexConfig(**{**index.config.to_dict(), "exact_filter_max": exact_filter_max})
    xq = clustered(30, seed=21)
    for allowed in (keys[::50], keys[::3]):  # 60 keys, 1000 keys
        hits = index.search(xq, 40, allow_ids=allowed)
        want_ids, _ = brute(xq, xb[np.isin(keys, allowed)], allowed, 40)
        for h in hits:
            assert len(h) == 40 and set(h.ids.tolist()) <= set(allowed.tolist())
        assert recall_at_k(np.array(ids_of(hits)), want_ids, 40) >= (1.0 if kind == FLAT else 0.9)


def test_filter_smaller_than_page_returns_only_the_allowed():
    index, _, keys = build(300, FLAT)
    hits = index.search(clustered(2, seed=1), 10, allow_ids=np.array([keys[5], keys[7], 10**9]))
    assert [sorted(h) for h in ids_of(hits)] == [sorted([keys[5], keys[7]])] * 2


@pytest.mark.parametrize("kind", [FLAT, HNSW])
def test_deep_pages_are_full_and_agree_with_one_large_search(kind, hnsw):
    index, xb, keys = build(3000, FLAT) if kind == FLAT else hnsw
    xq = clustered(3, seed=8)
    whole = index.search(xq, 1200)
    pages = [index.search(xq, 100, offset=o) for o in range(0, 1200, 100)]
    exact, exact_scores = brute(xq, xb, keys, 1200)
    for q in range(3):
        joined = np.concatenate([p[q].ids for p in pages])
        assert len(whole[q]) == 1200 and all(len(p[q]) == 100 for p in pages)
        assert np.all(np.diff(whole[q].scores) <= 1e-6)  # best first
        if kind == FLAT:  # exact: pages are slices of the one ranking, and that ranking is numpy's
            assert joined.tolist() == whole[q].ids.tolist()
            # up to the order of near-ties (|gap| < 1e-5): FAISS's float32 kernels round differently
            # from numpy's per CPU, so rank by rank the scores agree, and each id's own exact score
            # is the score at its rank
            true = (normalise(xq[q:q + 1]) @ normalise(xb[np.searchsorted(keys, whole[q].ids)]).T)[0]
            np.testing.assert_allclose(whole[q].scores, exact_scores[q], atol=1e-5)
            np.testing.assert_allclose(true, exact_scores[q], atol=1e-5)
            assert len(set(whole[q].ids.tolist()) ^ set(exact[q].tolist())) <= 2  # at most a tie at rank 1200
        else:  # approximate: each page is computed on its own, so only near-agreement
            assert len(set(joined.tolist()) & set(whole[q].ids.tolist())) >= 0.95 * 1200
            assert recall_at_k(whole[q].ids[None, :], exact[q][None, :], 1200) >= 0.95


def test_concurrent_swap_and_writes_while_readers_search_never_raise():
    a, xb, keys = build(800, HNSW, seed=2)
    b, _, _ = build(600, FLAT, seed=3)
    holder, errors, stop = IndexHolder(a), [], threading.Event()
    xq = clustered(4, seed=6)

    def reader():
        try:
            while not stop.is_set():
                index = holder.get()
                for h in index.search(xq, 10, allow_ids=keys[::2]) + index.search(xq, 10):
                    assert -1 not in h.ids.tolist() and len(h) == 10
        except Exception as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(30):
        current = holder.get()
        current.remove(keys[i : i + 5])
        current.add(keys[i : i + 5], xb[i : i + 5])
        holder.swap(b if current is a else a)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert holder.swap(None) in (a, b) and holder.get() is None


def test_normalise_rejects_zero_and_non_finite_vectors():
    with pytest.raises(ValueError):
        normalise(np.zeros((2, DIM)))
    with pytest.raises(ValueError):
        normalise(np.full((1, DIM), np.nan))
    np.testing.assert_allclose(np.linalg.norm(normalise(np.ones((3, DIM)) * 7), axis=1), 1.0, rtol=1e-6)


def test_empty_index_searches_to_empty_pages():
    index = build_index(np.empty((0, DIM), np.float32), np.empty(0, np.int64), model_version_id=MODEL,
                        modality="image")
    assert [len(h) for h in index.search(clustered(2, seed=0), 5)] == [0, 0]
    index.add(keys_for(3), clustered(3, seed=1))
    assert [len(h) for h in index.search(clustered(2, seed=0), 5)] == [3, 3]


def test_live_vectors_rebuild_an_equivalent_index(hnsw):
    index, _, _ = hnsw
    ids, vecs = index.live_vectors()
    again = build_index(vecs, ids, model_version_id=MODEL, modality="image", config=index.config)
    xq = clustered(5, seed=2)
    assert recall_at_k(np.array(ids_of(again.search(xq, 10))), np.array(ids_of(index.search(xq, 10))), 10) >= 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0,
                    reason="needs faiss-gpu and a CUDA device")
def test_gpu_mirror_matches_cpu_flat_search():
    index, xb, keys = build(2000, FLAT)
    xq = clustered(16, seed=7)
    hits = index.search(xq, 10)
    assert index._gpu is not None  # the unfiltered search went through the GPU mirror
    assert recall_at_k(np.array(ids_of(hits)), brute(xq, xb, keys, 10)[0], 10) >= 0.99
