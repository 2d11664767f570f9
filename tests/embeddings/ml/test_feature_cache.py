"""Tests for embeddings/ml/feature_cache.py on small synthetic arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings.ml.feature_cache import (
    CorruptShard,
    FeatureCache,
    IdentityMismatch,
    IncompatibleCache,
    MissingKeys,
)

FIELDS = {"pooled": (4,), "spatial": (3, 2)}


def _arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pooled": rng.normal(size=(n, 4)), "spatial": rng.normal(size=(n, 3, 2))}


def test_round_trip_over_several_shards_in_requested_order(tmp_path):
    cache = FeatureCache(tmp_path, encoder_identity="enc-a", fields=FIELDS)
    a, b = _arrays(3, 0), _arrays(2, 1)
    cache.add(["k0", "k1", "k2"], a)
    cache.add(["k3", "k4"], b)
    got = cache.get(["k4", "k0", "k2"])
    assert got["pooled"].dtype == np.float16 and got["spatial"].shape == (3, 3, 2)
    expected = np.stack([b["pooled"][1], a["pooled"][0], a["pooled"][2]]).astype(np.float16)
    assert np.array_equal(got["pooled"], expected)
    assert cache.keys() == ["k0", "k1", "k2", "k3", "k4"] and len(cache) == 5
    only = cache.get(["k1"], fields=["spatial"], dtype=np.float32)
    assert set(only) == {"spatial"} and only["spatial"].dtype == np.float32


def test_reopening_sees_the_added_shards_and_leaves_no_part_files(tmp_path):
    cache = FeatureCache(tmp_path, encoder_identity="enc-a", fields=FIELDS, meta={"view": "flip"})
    cache.add(["x", "y"], _arrays(2))
    again = FeatureCache(tmp_path, encoder_identity="enc-a")
    assert again.keys() == ["x", "y"] and again.meta == {"view": "flip"}
    assert np.array_equal(again.get(["y"])["pooled"], cache.get(["y"])["pooled"])
    assert not list(tmp_path.glob("*.part"))
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["format_version"] == 1 and index["fields"]["spatial"] == [3, 2]


def test_missing_keys_are_reported_and_raise_a_typed_error(tmp_path):
    cache = FeatureCache(tmp_path, encoder_identity="enc-a", fields=FIELDS)
    cache.add(["a"], _arrays(1))
    assert cache.missing(["a", "b", "c"]) == ["b", "c"]
    assert "a" in cache and "b" not in cache
    with pytest.raises(MissingKeys) as err:
        cache.get(["a", "b"])
    assert err.value.keys == ["b"]
    assert isinstance(err.value, KeyError)


def test_another_encoder_identity_is_refused(tmp_path):
    FeatureCache(tmp_path, encoder_identity="enc-a", fields=FIELDS).add(["a"], _arrays(1))
    with pytest.raises(IdentityMismatch):
        FeatureCache(tmp_path, encoder_identity="enc-b")


def test_other_fields_or_format_version_are_refused(tmp_path):
    FeatureCache(tmp_path, encoder_identity="enc-a", fields=FIELDS)
    with pytest.raises(IncompatibleCache):
        FeatureCache(tmp_path, encoder_identity="enc-a", fields={"pooled": (5,)})
    index = json.loads((tmp_path / "index.json").read_text())
    index["format_version"] = 99
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(IncompatibleCache, match="format_version"):
        FeatureCache(tmp_path, encoder_identity="enc-a")


def test_corrupt_or_missing_shard_is_detected(tmp_path):
    cache = FeatureCache(tmp_path, encoder_identity="enc-a", fields=FIELDS)
    cache.add(["a", "b"], _arrays(2))
    shard = tmp_path / "pooled-00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    fresh = FeatureCache(tmp_path, encoder_identity="enc-a")
    with pytest.raises(CorruptShard, match="sha256"):
        fresh.get(["a"])
    (tmp_path / "spatial-00000.npy").unlink()
    with pytest.raises(CorruptShard, match="missing"):
        FeatureCache(tmp_path, encoder_identity="enc-a").verify()


def test_ragged_fields_store_variable_length_rows(tmp_path):
    cache = FeatureCache(tmp_path, encoder_identity="enc-t", fields={"states": (None, 3)})
    rows = [np.arange(6).reshape(2, 3), np.ones((1, 3)), np.full((4, 3), 2.5)]
    cache.add(["a", "b", "c"], {"states": rows})
    cache.add(["d"], {"states": [np.zeros((5, 3))]})
    got = FeatureCache(tmp_path, encoder_identity="enc-t").get(["c", "a", "d"], dtype=np.float32)
    assert [g.shape for g in got["states"]] == [(4, 3), (2, 3), (5, 3)]
    assert np.array_equal(got["states"][1], rows[0])
    with pytest.raises(ValueError):
        cache.add(["e"], {"states": [np.zeros((2, 4))]})


def test_bad_batches_are_rejected_without_writing(tmp_path):
    cache = FeatureCache(tmp_path, encoder_identity="enc-a", fields=FIELDS)
    cache.add(["a"], _arrays(1))
    with pytest.raises(ValueError, match="already cached"):
        cache.add(["a"], _arrays(1))
    with pytest.raises(ValueError, match="duplicate"):
        cache.add(["b", "b"], _arrays(2))
    with pytest.raises(ValueError, match="shape"):
        cache.add(["b"], {"pooled": np.zeros((1, 5)), "spatial": np.zeros((1, 3, 2))})
    with pytest.raises(ValueError, match="fields"):
        cache.add(["b"], {"pooled": np.zeros((1, 4))})
    with pytest.raises(ValueError, match="non-finite"):
        cache.add(["b"], {"pooled": np.full((1, 4), 1e6), "spatial": np.zeros((1, 3, 2))})
    assert FeatureCache(tmp_path, encoder_identity="enc-a").keys() == ["a"]


def test_opening_a_missing_cache_without_fields_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        FeatureCache(tmp_path / "nope", encoder_identity="enc-a")


def test_for_encoder_separates_identities_and_views(tmp_path):
    a = FeatureCache.for_encoder(tmp_path, encoder_identity="enc-a", view="flip", fields=FIELDS)
    b = FeatureCache.for_encoder(tmp_path, encoder_identity="enc-b", view="flip", fields=FIELDS)
    c = FeatureCache.for_encoder(tmp_path, encoder_identity="enc-a", view="orig", fields=FIELDS)
    assert len({a.directory, b.directory, c.directory}) == 3
    a.add(["k"], _arrays(1))
    again = FeatureCache.for_encoder(tmp_path, encoder_identity="enc-a", view="flip")
    assert again.keys() == ["k"] and again.meta == {"view": "flip"}
    with pytest.raises(ValueError):
        FeatureCache.for_encoder(tmp_path, encoder_identity="enc-a", view="../x", fields=FIELDS)
