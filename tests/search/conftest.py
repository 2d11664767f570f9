"""Fixtures for the search tests: a small fake embedder (colour space), vectors, indexes.

FakeEmbedder (rclip style: a tiny real model, not mocks of internals) lives in an 8-d space:
dims 0..2 are red, green, blue. An image's features are its 7x7 grid of mean colours
(spatial) and their mean (pooled), so "red" finds red images and the heatmap of "red" over a
half-red image lights the red half. Text words map to fixed vectors: colour words to their
axis, any other word to a seeded random unit vector.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image as PILImage

from embeddings import runtime
from embeddings.models import ImageEmbedding, ModelVersion
from search import registry

DIM = 8
COLOURS = {"red": 0, "green": 1, "blue": 2}


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def word_vector(word: str) -> np.ndarray:
    if word in COLOURS:
        v = np.zeros(DIM, np.float32)
        v[COLOURS[word]] = 1.0
        return v
    seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
    return unit(np.random.default_rng(seed).standard_normal(DIM))


class FakeEmbedder:
    family = "fake"
    dim = DIM

    def encode_texts(self, texts):
        out = []
        for text in texts:
            words = [w for w in text.lower().split() if w.isalpha()] or ["empty"]
            out.append(unit(sum(word_vector(w) for w in words)))
        return np.stack(out)  # (N, 8)

    def encode_features(self, feats):
        return unit(feats["pooled"][:, :DIM] + 1e-3)  # (N, 8)

    def cell_scores(self, spatial, query):
        cells = unit(np.asarray(spatial)[:, :DIM] + 1e-3)  # (49, 8)
        return cells @ unit(query)


def fake_image_features(images, encoder: str = "efficientnet-lite0") -> dict[str, np.ndarray]:
    """pooled (B, 1280), spatial (B, 49, 1280), logits (B, 1000) from 7x7 mean colours."""
    n = len(images)
    spatial = np.zeros((n, 49, 1280), np.float32)
    logits = np.zeros((n, 1000), np.float32)
    for i, img in enumerate(images):
        grid = np.asarray(img.convert("RGB").resize((7, 7), PILImage.BOX), np.float32) / 255.0  # (7, 7, 3)
        spatial[i, :, :3] = grid.reshape(49, 3)
        logits[i, :3] = spatial[i, :, :3].mean(0) * 10  # class 0 "tench" for red, 1 goldfish, 2 shark
    return {"pooled": spatial.mean(1), "spatial": spatial, "logits": logits}


def fake_cached_features(keys, load_image, encoder: str = "efficientnet-lite0"):
    return fake_image_features([load_image(k) for k in keys], encoder)


@dataclass
class FakeCaption:
    text: str
    log_prob: float
    score: float


class FakeGenerator:
    needs_spatial = False

    def __init__(self) -> None:
        self.beam_sizes: list[int | None] = []  # what each call asked for (None: the tuned decoding)

    def caption(self, pooled, spatial=None, *, beam_size=None, n=1, **_):
        self.beam_sizes.append(beam_size)
        out = []
        for row in pooled.numpy():
            colour = ["red", "green", "blue"][int(np.argmax(row[:3]))]
            out.append([FakeCaption(f"a {colour} thing number {j}", -1.0 - j, -0.5 - j) for j in range(n)])
        return out


@pytest.fixture(autouse=True)
def _fresh_registry(settings):
    settings.SEARCH_RELOAD_CHECK_SECONDS = 0
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def fake_version(db, monkeypatch):
    """An active 8-d embedding version served by FakeEmbedder (ConSE v0 retired)."""
    ModelVersion.objects.filter(kind=ModelVersion.Kind.EMBEDDING, status=ModelVersion.Status.ACTIVE).update(
        status=ModelVersion.Status.RETIRED)
    version = ModelVersion.objects.create(kind=ModelVersion.Kind.EMBEDDING, name="fake", family="fake",
                                          status=ModelVersion.Status.ACTIVE, dim=DIM)
    embedder = FakeEmbedder()
    monkeypatch.setattr(runtime, "embedder_for", lambda v: embedder)
    monkeypatch.setattr(runtime, "image_features", fake_image_features)
    monkeypatch.setattr(runtime, "cached_features", fake_cached_features)
    return version


@pytest.fixture
def fake_captioner(db, monkeypatch):
    version = ModelVersion.objects.create(kind=ModelVersion.Kind.CAPTIONER, name="fake-captioner",
                                          family="captioner", status=ModelVersion.Status.ACTIVE)
    generator = FakeGenerator()
    monkeypatch.setattr(runtime, "active_captioner", lambda: (version, generator))
    version.generator = generator
    return version


def store_vector(image, version, vector) -> None:
    ImageEmbedding.objects.update_or_create(image=image, model_version=version,
                                            defaults={"vector": unit(vector).astype("<f4").tobytes()})


def colour_jpeg(rgb, size=(64, 48), split_rgb=None) -> bytes:
    """A flat-colour JPEG; with split_rgb the right half has that colour."""
    img = PILImage.new("RGB", size, rgb)
    if split_rgb is not None:
        img.paste(PILImage.new("RGB", (size[0] // 2, size[1]), split_rgb), (size[0] // 2, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def ingest(collection, data: bytes, caption: str | None = None, **fields):
    from embeddings.models import Image
    from embeddings.services import image_ingest

    result = image_ingest(collection=collection, stream=io.BytesIO(data), filename="x.jpg", caption=caption,
                          user=collection.owner, enqueue=False)
    if fields:
        Image.objects.filter(pk=result.image.pk).update(**fields)
        result.image.refresh_from_db()
    return result.image
