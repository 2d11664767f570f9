"""VectorIndex.search(deny_ids=...) and the sorted, shared ids() against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from search.index import FLAT, HNSW, IVFPQ
from tests.search.index.vectors import IVF_EXACT, brute, build, clustered


@pytest.mark.parametrize("kind", [FLAT, HNSW, IVFPQ, IVF_EXACT])
def test_deny_list_hides_exactly_those_keys_and_pages_stay_full(kind):
    index, xb, keys = build(600, kind)
    rng = np.random.default_rng(5)
    deny = np.sort(rng.choice(keys, 40, replace=False))
    deny_with_unknown = np.concatenate([deny, [7, 10**12]])  # unknown keys are ignored
    xq = clustered(20, seed=9)
    keep = ~np.isin(keys, deny)
    want_ids, _ = brute(xq, xb[keep], keys[keep], 10)
    for hits, want in zip(index.search(xq, 10, deny_ids=deny_with_unknown), want_ids):
        assert len(hits.ids) == 10 and not set(hits.ids.tolist()) & set(deny.tolist())
        if kind == FLAT:
            assert hits.ids.tolist() == want.tolist()
        else:  # approximate: the same recall as unfiltered, never a denied key
            assert len(set(hits.ids.tolist()) & set(want.tolist())) >= 7
    both = index.search(xq, 10, allow_ids=keys[:100], deny_ids=keys[:50])
    assert all(set(h.ids.tolist()) <= set(keys[50:100].tolist()) for h in both)


def test_deny_list_with_tombstones_and_an_empty_one():
    index, xb, keys = build(300, HNSW)
    index.remove(keys[:10])
    assert index.search(clustered(3, seed=2), 5, deny_ids=np.empty(0, np.int64))[0].ids.size == 5
    hits = index.search(xb[10:13], 5, deny_ids=keys[10:11])
    assert all(not set(h.ids.tolist()) & set(keys[:11].tolist()) for h in hits)
    gone = np.isin(index._labels, keys[:10])
    assert not index._alive[gone].any() and index._alive[~gone].all()  # the deny mask never edits _alive


def test_ids_are_sorted_read_only_and_renewed_by_writes():
    index, xb, keys = build(200, FLAT)
    ids = index.ids()
    assert ids.tolist() == sorted(keys.tolist()) and not ids.flags.writeable and index.ids() is ids
    index.add(np.array([1, 2]), xb[:2])
    assert index.ids() is not ids and index.ids()[:2].tolist() == [1, 2]
