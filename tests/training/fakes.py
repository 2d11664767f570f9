"""Small stand-ins for the frozen encoders (loading EfficientNet and MiniLM takes ~1 min here).

`FakeEncoders` gives every image and text a fixed pseudo-random feature vector, but trains and
scores real heads and decoders on them; worker processes use it through
`settings.LOUPE_TRAINING_ENCODERS` (see worker_settings.py). `fake_image_features` and
`fake_text_vectors` are also patched into `embeddings.encoding` / `embeddings.runtime` for
in-process promotion tests, so vectors stored for search come from the same fakes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from embeddings.models import ModelVersion

CONSE_DIM = 384


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))


def fake_image_features(image_ids: Sequence[int], encoder: str = "efficientnet-lite0") -> dict[str, np.ndarray]:
    """{"pooled": (N, 1280), "spatial": (N, 49, 1280), "logits": (N, 1000)} float32."""
    pooled, spatial, logits = [], [], []
    for i in image_ids:
        rng = _rng(f"image-{int(i)}")
        cells = np.maximum(rng.standard_normal((49, 1280)), 0).astype(np.float32)  # ReLU-like
        spatial.append(cells)
        pooled.append(cells.mean(axis=0))
        logits.append(rng.standard_normal(1000).astype(np.float32))
    return {"pooled": np.stack(pooled), "spatial": np.stack(spatial), "logits": np.stack(logits)}


def fake_text_vectors(texts: Sequence[str]) -> np.ndarray:
    """(M, 384) unit vectors, fixed per text."""
    out = np.stack([_rng(f"text-{t}").standard_normal(384) for t in texts]).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class FakeEncoders:
    def __init__(self, image_encoder: str = "efficientnet-lite0") -> None:
        self.image_encoder = image_encoder  # only named in the identity: the features stay fake

    def image_features(self, image_ids: Sequence[int], fields: Sequence[str], progress=None) -> dict[str, np.ndarray]:
        feats = fake_image_features(image_ids)
        if progress is not None:
            progress(0, len(image_ids))
            progress(len(image_ids), len(image_ids))
        return {f: feats[f].astype(np.float16) for f in fields}

    def text_features(self, texts: Sequence[str], progress=None) -> np.ndarray:
        if progress is not None:
            progress(len(set(texts)), len(set(texts)))
        return fake_text_vectors(texts)

    def identities(self) -> dict[str, str]:
        return {"image": f"{self.image_encoder}|fake-image-encoder", "text": "fake-text-encoder"}

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed random linear classifier over the fake 1280-d features."""
        rng = _rng("classifier")
        return (0.05 * rng.standard_normal((1000, 1280))).astype(np.float32), np.zeros(1000, np.float32)

    def embed(self, version: ModelVersion, feats, texts):
        if version.family == "conse":  # a fixed random projection stands in for ConSE
            proj = _rng("conse").standard_normal((1000, CONSE_DIM)).astype(np.float32)
            return _unit(np.asarray(feats["logits"], np.float32) @ proj), fake_text_vectors(texts)
        embedder = fake_embedder_for(version)
        return embedder.encode_features({k: np.asarray(v, np.float32) for k, v in feats.items()}), \
            embedder.encode_texts(list(texts))

    def caption(self, version: ModelVersion, feats, *, beam_size: int | None = 1) -> list[str]:
        import torch

        from embeddings import runtime
        from embeddings.ml.caption_generator import load_captioner

        gen = load_captioner(runtime.version_path(version))
        spatial = torch.from_numpy(np.asarray(feats["spatial"], np.float32)) if gen.needs_spatial else None
        hyps = gen.caption(torch.from_numpy(np.asarray(feats["pooled"], np.float32)), spatial, beam_size=beam_size)
        return [h[0].text if h else "" for h in hyps]


class FakeConseEmbedder:
    """ConSE's shape (384-d, image vectors from logits) without MiniLM or EfficientNet."""

    family = "conse"
    dim = CONSE_DIM

    def encode_texts(self, texts):
        return fake_text_vectors(list(texts))

    def encode_features(self, feats):
        proj = _rng("conse").standard_normal((1000, CONSE_DIM)).astype(np.float32)
        return _unit(np.asarray(feats["logits"], np.float32) @ proj)

    def cell_scores(self, spatial, query):
        return np.zeros(49, np.float32)


def fake_embedder_for(version: ModelVersion):
    if version.family == "conse":
        return FakeConseEmbedder()
    from embeddings import runtime
    from embeddings.ml.embedder import JointEmbedder

    return JointEmbedder.from_checkpoint(runtime.version_path(version), fake_text_vectors)


def install_fake_runtime(setattr_) -> None:
    """Route embeddings.runtime / encoding through the fakes (setattr_ = monkeypatch.setattr)."""
    from embeddings import encoding, runtime

    setattr_(runtime, "embedder_for", fake_embedder_for)
    setattr_(encoding, "features_for", fake_image_features)
    setattr_(runtime, "encode_texts_base", fake_text_vectors)
