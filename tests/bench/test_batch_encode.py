"""Tests for bench/batch_encode.py with a fake mapper and tiny images on disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.batch_encode import encode_images, image_batches
from embeddings.ml.feature_cache import FeatureCache, IdentityMismatch


class FakeEncoder:
    """Mean colour of the image as 'pooled', plus an extra field the cache ignores."""

    identity = "fake-v1"

    def __init__(self) -> None:
        self.seen = 0

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen += len(images)
        mean = images.mean(dim=(2, 3))  # (B, 3)
        return {"pooled": mean, "extra": torch.zeros(len(images), 7)}


@pytest.fixture
def image_paths(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40 + i, 30), (i * 50, 10, 200)).save(path)
        paths.append(path)
    return paths


def _cache(directory, identity="fake-v1"):
    return FeatureCache(directory, encoder_identity=identity, fields={"pooled": (3,)})


def test_encodes_all_images_keyed_by_file_name(tmp_path, image_paths):
    fake, cache = FakeEncoder(), _cache(tmp_path / "c")
    progress = []
    report = encode_images(image_paths, fake.encode, cache, batch_size=2,
                           on_progress=lambda done, total: progress.append((done, total)))
    assert report.encoded == 5 and report.skipped == 0
    assert progress == [(2, 5), (4, 5), (5, 5)]
    red = cache.get(["img3.png"], dtype=np.float32)["pooled"][0, 0]
    assert red == pytest.approx((150 - 127) / 128, abs=1e-2)  # mean of the normalised red channel


def test_rerun_encodes_only_missing_keys(tmp_path, image_paths):
    cache = _cache(tmp_path / "c")
    encode_images(image_paths[:3], FakeEncoder().encode, cache, batch_size=2)
    fake = FakeEncoder()
    report = encode_images(image_paths, fake.encode, cache, batch_size=2, flush_every=1)
    assert (report.encoded, report.skipped, fake.seen) == (2, 3, 2)
    assert sorted(_cache(tmp_path / "c").keys()) == [p.name for p in image_paths]


def test_batches_from_a_loader_skip_cached_rows(tmp_path):
    cache = _cache(tmp_path / "c")
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).reshape(4, 3, 2, 2)
    encode_images([(["a", "b"], images[:2])], FakeEncoder().encode, cache)
    fake = FakeEncoder()
    loader = [(["b", "c"], images[1:3]), (["d"], images[3:])]
    report = encode_images(loader, fake.encode, cache)
    assert (report.encoded, report.skipped, fake.seen) == (2, 1, 2)
    got = cache.get(["c"], dtype=np.float32)["pooled"][0]
    assert np.allclose(got, images[2].mean(dim=(1, 2)).numpy(), atol=0.05)


def test_mapper_of_another_encoder_is_refused(tmp_path, image_paths):
    with pytest.raises(IdentityMismatch):
        encode_images(image_paths, FakeEncoder().encode, _cache(tmp_path / "c", "other"))


def test_image_batches_yield_views_in_order(image_paths):
    batches = list(image_batches(image_paths, view="flip", batch_size=3))
    assert [keys for keys, _ in batches] == [["img0.png", "img1.png", "img2.png"],
                                             ["img3.png", "img4.png"]]
    assert batches[0][1].shape == (3, 3, 224, 224)
