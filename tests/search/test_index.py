"""search/index.py against brute force `xq @ xb.T`, on small synthetic clustered vectors."""

from __future__ import annotations

import errno
import os
import threading

import faiss
import numpy as np
import pytest

from embeddings.ml import atomic
from search.index import (
    FLAT,
    HNSW,
    IVFPQ,
    IndexConfig,
    IndexCorrupt,
    IndexHolder,
    IndexMismatch,
    VectorIndex,
    build_index,
    load,
    normalise,
    read_manifest,
)
from search.index import container as index_file
from search.index.build import choose_index_type, ivfpq_shape, recall_at_k

DIM = 32
MODEL = "7"


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    # The test machine is shared: OpenMP spin-waiting on busy cores makes tiny jobs crawl.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


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


@pytest.fixture(scope="module")
def hnsw() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    return build(3000, HNSW)


@pytest.fixture(scope="module")
def ivfpq() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    return build(3000, IVFPQ)


@pytest.fixture(scope="module")
def ivf_exact() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    return build(3000, IVF_EXACT)


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


@pytest.mark.parametrize("kind", [FLAT, HNSW, IVFPQ, IVF_EXACT])
def test_save_load_round_trip(kind, tmp_path):
    index, xb, keys = build(1200, kind)
    index.remove(keys[:7])
    path = tmp_path / "image.idx"
    written = index.save(path)
    loaded = load(path, expected_model_version=MODEL, expected_dim=DIM, expected_modality="image")
    xq = clustered(10, seed=4)
    assert ids_of(loaded.search(xq, 12)) == ids_of(index.search(xq, 12))
    m = read_manifest(path)
    assert (m.count, m.index_type, m.dim, m.modality, m.model_version_id) == (1193, TYPE_OF.get(kind, kind), DIM, "image", MODEL)
    assert m.recall == index.recall and m.params == index.params and m.sha256 == written.sha256
    assert loaded.tombstones == index.tombstones and not list(tmp_path.glob("*.part"))


@pytest.fixture()
def saved(tmp_path) -> tuple[os.PathLike, VectorIndex]:
    index, _, _ = build(300, FLAT)
    path = tmp_path / "text.idx"
    index.save(path)
    return path, index


def load_saved(path) -> VectorIndex:
    return load(path, expected_model_version=MODEL, expected_dim=DIM, expected_modality="image")


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip_payload", "flip_header", "garbage"])
def test_damaged_file_raises_index_corrupt(saved, damage):
    path, _ = saved
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "empty":
        data = bytearray()
    elif damage == "flip_payload":
        data[-5000] ^= 0x10
    elif damage == "flip_header":
        data[60] ^= 0x01
    else:
        data = bytearray(os.urandom(4096))
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt):
        load_saved(path)


@pytest.mark.parametrize("field,value", [("expected_model_version", "8"), ("expected_dim", 64),
                                         ("expected_modality", "text")])
def test_wrong_model_version_dim_or_modality_raises_index_mismatch(saved, field, value):
    path, _ = saved
    kwargs = {"expected_model_version": MODEL, "expected_dim": DIM, "expected_modality": "image", field: value}
    with pytest.raises(IndexMismatch):
        load(path, **kwargs)


def test_other_format_version_raises_index_mismatch(saved, monkeypatch):
    path, index = saved
    monkeypatch.setattr(index_file, "FORMAT_VERSION", 999)
    index.save(path)
    monkeypatch.undo()
    with pytest.raises(IndexMismatch):
        load_saved(path)


class _FailingFile:
    """Wraps a real file; the second write fails like a full disk."""

    def __init__(self, fh):
        self._fh, self._writes = fh, 0

    def write(self, data):
        self._writes += 1
        if self._writes == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


@pytest.mark.parametrize("failure", ["fsync", "write", "replace"])
def test_crash_before_rename_leaves_previous_file_loadable(saved, monkeypatch, failure):
    path, old = saved
    before = path.read_bytes()
    bigger, _, _ = build(500, FLAT, seed=1)
    if failure == "fsync":
        def boom(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(index_file.os, "fsync", boom)
    elif failure == "write":
        monkeypatch.setattr(atomic, "open", lambda p, mode: _FailingFile(open(p, mode)), raising=False)
    else:
        def boom(src, dst):
            raise KeyboardInterrupt  # the process dies between write and rename
        monkeypatch.setattr(index_file.os, "replace", boom)
    with pytest.raises((OSError, KeyboardInterrupt)):
        bigger.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and not list(path.parent.glob("*.part"))
    assert load_saved(path).count == old.count == 300


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


def test_config_from_dict_rejects_unknown_keys():
    assert IndexConfig.from_dict({"flat_max": 10}).flat_max == 10
    with pytest.raises(ValueError):
        IndexConfig.from_dict({"flat_maxx": 10})


def test_build_rejects_duplicate_ids_and_mismatched_lengths():
    with pytest.raises(ValueError):
        build_index(clustered(3, 0), np.array([1, 1, 2]), model_version_id=MODEL, modality="image")
    with pytest.raises(ValueError):
        build_index(clustered(3, 0), np.array([1, 2]), model_version_id=MODEL, modality="image")


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
