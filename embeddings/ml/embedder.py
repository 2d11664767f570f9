"""What serving needs from an embedding model, for both families (pure; no Django).

An `Embedder` maps texts and cached image features to L2-normalised vectors in one space:

* `ConseEmbedder` (model v0, Norouzi et al. 2014): an image is the probability-weighted mix of
  the MiniLM vectors of its top-k ImageNet class names; text is plain MiniLM (384-d).
* `JointEmbedder`: trained projection heads (embeddings/ml/heads.py) over the frozen
  EfficientNet-Lite0 features and MiniLM sentence vectors (default 512-d).

Both can score each of the 7x7 spatial cells against a query vector, which the search UI shows
as a "why this match" heatmap.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from embeddings.ml.checkpoint import load_checkpoint
from embeddings.ml.conse import DEFAULT_K, DEFAULT_TEMPERATURE, conse_image_vectors
from embeddings.ml.heads import JointEmbedding, embedding_from_state

if TYPE_CHECKING:
    from embeddings.ml.prior_heads import PriorEmbedding

EMBEDDING_KIND = "embedding"
TextEncodeFn = Callable[[list[str]], np.ndarray]  # texts -> (N, 384) unit MiniLM vectors


class Embedder(Protocol):
    dim: int
    family: str

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...  # (N, dim)

    def encode_features(self, feats: Mapping[str, np.ndarray]) -> np.ndarray: ...  # (N, dim)

    def cell_scores(self, spatial: np.ndarray, query: np.ndarray) -> np.ndarray: ...  # (49,)

    def with_text_encoder(self, text_encode: TextEncodeFn) -> Embedder: ...


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ConseEmbedder:
    family = "conse"

    def __init__(self, text_encode: TextEncodeFn, class_vecs: np.ndarray,
                 classifier: Callable[[np.ndarray], np.ndarray], *, k: int = DEFAULT_K,
                 temperature: float = DEFAULT_TEMPERATURE) -> None:
        """classifier maps (M, 1280) features to (M, 1000) ImageNet logits (the encoder's fc)."""
        self._text = text_encode
        self.class_vecs = np.asarray(class_vecs, dtype=np.float32)  # (1000, 384)
        self._classifier = classifier
        self.k, self.temperature = k, temperature
        self.dim = self.class_vecs.shape[1]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(self._text(list(texts)))

    def with_text_encoder(self, text_encode: TextEncodeFn) -> ConseEmbedder:
        """The same model with another MiniLM encoder for texts (the query path's): class vectors
        and classifier are shared, not copied."""
        return ConseEmbedder(text_encode, self.class_vecs, self._classifier, k=self.k, temperature=self.temperature)

    def encode_features(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        return conse_image_vectors(np.asarray(feats["logits"], np.float32), self.class_vecs,
                                   k=self.k, temperature=self.temperature)

    def cell_scores(self, spatial: np.ndarray, query: np.ndarray) -> np.ndarray:
        # The classifier is linear, so the logits of the mean cell equal the mean of cell
        # logits: scoring each cell's own ConSE vector localises the pooled decision.
        cell_logits = self._classifier(np.asarray(spatial, np.float32))  # (49, 1000)
        cells = conse_image_vectors(cell_logits, self.class_vecs, k=self.k, temperature=self.temperature)
        return cells @ _unit(query)


class JointEmbedder:
    family = "joint"

    def __init__(self, text_encode: TextEncodeFn, model: JointEmbedding | PriorEmbedding) -> None:
        self._text = text_encode
        self.model = model.eval()
        self.dim = model.config.dim
        self.image_input = model.config.image_input

    @classmethod
    def from_checkpoint(cls, path: str | Path, text_encode: TextEncodeFn) -> JointEmbedder:
        tensors, config, _meta = load_checkpoint(path, expected_kind=EMBEDDING_KIND)
        return cls(text_encode, embedding_from_state(config, tensors))

    def with_text_encoder(self, text_encode: TextEncodeFn) -> JointEmbedder:
        """The same heads (shared, not copied) with another MiniLM encoder for texts."""
        return JointEmbedder(text_encode, self.model)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        base = torch.from_numpy(np.asarray(self._text(list(texts)), np.float32))  # (N, 384)
        return self.model.encode_text(base).numpy()

    @torch.no_grad()
    def encode_features(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        key = "spatial" if self.image_input == "spatial" else "pooled"
        x = torch.from_numpy(np.asarray(feats[key], np.float32))  # (N, 1280) or (N, 49, 1280)
        return self.model.encode_image(x).numpy()

    @torch.no_grad()
    def cell_scores(self, spatial: np.ndarray, query: np.ndarray) -> np.ndarray:
        cells = self.model.project_spatial(torch.from_numpy(np.asarray(spatial, np.float32))[None])
        return (cells["cell_emb"][0].numpy() @ _unit(query)).astype(np.float32)  # (49,)
