"""Tests for bench/cached_features.py on a tiny cache written with the real FeatureCache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embeddings.ml.feature_cache import FeatureCache, MissingKeys
from bench.cached_features import available_views, load_split

IMG_ID, TXT_ID = "img-enc", "txt-enc"


def _write_cache(root: Path, n_train: int = 3, n_dev: int = 2, skip_flip: bool = False) -> dict:
    rng = np.random.default_rng(0)
    files = [f"im{i}.jpg" for i in range(n_train + n_dev)]
    captions = {f: [[f"{f}#{j}", f"caption {j} of {f}"] for j in range(5)] for f in files}
    manifest = {"splits": {"train": files[:n_train], "dev": files[n_train:]}, "captions": captions,
                "image_encoder_identity": IMG_ID, "text_encoder_identity": TXT_ID,
                "image_views": {"orig": ["pooled", "spatial"], "flip": ["pooled", "spatial"], "crop_tl": ["pooled"]}}
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(manifest))
    feats = {}
    for view in ("orig", "flip", "crop_tl"):
        fields = {"pooled": (6,)} if view == "crop_tl" else {"pooled": (6,), "spatial": (4, 6)}
        cache = FeatureCache(root / "image" / view, encoder_identity=IMG_ID, fields=fields)
        arrays = {k: rng.random((len(files), *s)).astype(np.float32) for k, s in fields.items()}
        keys = files[:-1] if (skip_flip and view == "flip") else files
        cache.add(keys, {k: v[: len(keys)] for k, v in arrays.items()})
        feats[view] = arrays
    keys = [k for f in files for k, _ in captions[f]]
    text = rng.random((len(keys), 5)).astype(np.float32)
    sentences = FeatureCache(root / "text" / "sentence", encoder_identity=TXT_ID, fields={"sentence": (5,)})
    sentences.add(keys, {"sentence": text})
    feats["text"] = text
    return feats


def test_load_split_orders_rows_and_maps_captions_to_images(tmp_path: Path) -> None:
    feats = _write_cache(tmp_path / "c")
    split = load_split(tmp_path / "c", "dev", views=("orig", "flip"))
    d = split.data
    assert split.image_keys == ["im3.jpg", "im4.jpg"] and split.views == ("orig", "flip")
    assert d.image_feats.shape == (2, 2, 6) and d.image_feats.dtype == torch.float16
    assert d.text_feats.shape == (10, 5)
    assert d.text_image.tolist() == [0] * 5 + [1] * 5
    assert split.caption_keys[5] == "im4.jpg#0"
    expect = torch.tensor(feats["flip"]["pooled"][4], dtype=torch.float16)
    assert torch.equal(d.image_feats[1, 1], expect)
    assert torch.equal(d.text_feats[5], torch.tensor(feats["text"][20], dtype=torch.float16))


def test_spatial_field_and_available_views(tmp_path: Path) -> None:
    _write_cache(tmp_path / "c")
    assert available_views(tmp_path / "c", "pooled") == ["orig", "crop_tl", "flip"]
    assert available_views(tmp_path / "c", "spatial") == ["orig", "flip"]
    split = load_split(tmp_path / "c", "train", image_field="spatial", views=("orig", "flip"))
    assert split.data.image_feats.shape == (3, 2, 4, 6)


def test_incomplete_cache_and_bad_views_raise(tmp_path: Path) -> None:
    _write_cache(tmp_path / "c", skip_flip=True)
    with pytest.raises(MissingKeys):
        load_split(tmp_path / "c", "dev", views=("orig", "flip"))
    with pytest.raises(ValueError):
        load_split(tmp_path / "c", "dev", views=("flip",))
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "nothing", "dev")
