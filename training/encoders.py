"""What training needs from the frozen encoders, behind one small interface.

Training never runs the encoders on raw pixels itself: image features come from the per-image
feature cache (`embeddings.encoding.features_for`, computed once per image and encoder) and
caption sentence vectors from a text cache kept here (MiniLM, once per distinct caption
text). Baselines (the active version's dev metrics, shown beside a finished run) go through
the same object, so a test can swap the whole thing for a small fake with
`settings.LOUPE_TRAINING_ENCODERS = "dotted.path.to.Factory"` (also in worker processes).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from django.conf import settings
from django.utils.module_loading import import_string

from embeddings.ml.image_encoder import MODEL_NAME as LITE0
from embeddings.models import ModelVersion

logger = logging.getLogger(__name__)
IMAGE_CHUNK = 256  # images per features_for call: bounds the float32 spatial block (256x49x1280)


Progress = Callable[[int, int], None]  # (done, total), called as work completes (first with done=0)


class Encoders(Protocol):
    def image_features(self, image_ids: Sequence[int], fields: Sequence[str],
                       progress: Progress | None = None) -> dict[str, np.ndarray]:
        """{field: float16 (N, ...)} for "pooled" (N, 1280), "spatial" (N, 49, 1280), "logits"."""
        ...

    def text_features(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """(M, 384) float32 unit MiniLM sentence vectors."""
        ...

    def identities(self) -> dict[str, str]:
        """{"image": ..., "text": ...}: the exact encoder weights the features came from."""
        ...

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        """The image encoder's frozen ImageNet classifier: weight (1000, F), bias (1000,) float32.

        The "prior" embedding family computes ConSE v0 inside the model from pooled features."""
        ...

    def embed(self, version: ModelVersion, feats: dict[str, np.ndarray],
              texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of images (N, D) and texts (M, D) under an existing embedding version."""
        ...

    def caption(self, version: ModelVersion, feats: dict[str, np.ndarray], *, beam_size: int | None = 1) -> list[str]:
        """One caption per image under an existing captioner version (greedy by default;
        None = the version's own tuned decoding)."""
        ...


class RuntimeEncoders:
    """The real encoders, loaded lazily once per process by `embeddings.runtime`; image
    features come from `image_encoder` (Lite0 unless the run or the version says otherwise)."""

    def __init__(self, image_encoder: str = LITE0) -> None:
        self.image_encoder = image_encoder

    def image_features(self, image_ids: Sequence[int], fields: Sequence[str],
                       progress: Progress | None = None) -> dict[str, np.ndarray]:
        from embeddings.encoding import features_for

        parts: dict[str, list[np.ndarray]] = {f: [] for f in fields}
        ids = list(image_ids)
        if progress is not None:
            progress(0, len(ids))
        for start in range(0, len(ids), IMAGE_CHUNK):
            feats = features_for(ids[start:start + IMAGE_CHUNK], self.image_encoder)
            for f in fields:
                parts[f].append(feats[f].astype(np.float16))
            if progress is not None:
                progress(min(start + IMAGE_CHUNK, len(ids)), len(ids))
        return {f: (np.concatenate(v) if v else np.zeros((0,), np.float16)) for f, v in parts.items()}

    def text_features(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        from embeddings import runtime

        return runtime.cached_text_vectors(texts, progress=progress)[0]

    def identities(self) -> dict[str, str]:
        from embeddings import runtime

        return {"image": runtime.image_encoder(self.image_encoder).identity, "text": runtime.text_encoder().identity}

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        from embeddings import runtime

        fc = runtime.image_encoder(self.image_encoder).backbone._fc
        return (fc.weight.detach().float().cpu().numpy().copy(), fc.bias.detach().float().cpu().numpy().copy())

    def embed(self, version: ModelVersion, feats: dict[str, np.ndarray],
              texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        from embeddings import runtime

        import torch

        from embeddings.ml.embedder import JointEmbedder

        embedder = runtime.embedder_for(version)
        as32 = {k: np.asarray(v, np.float32) for k, v in feats.items()}
        base = self.text_features(texts)  # cached MiniLM vectors: both families start from them
        if isinstance(embedder, JointEmbedder):
            with torch.no_grad():
                txt = embedder.model.encode_text(torch.from_numpy(base)).numpy()
        else:  # ConSE: texts are plain unit MiniLM vectors
            txt = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
        return embedder.encode_features(as32), txt

    def caption(self, version: ModelVersion, feats: dict[str, np.ndarray], *, beam_size: int | None = 1) -> list[str]:
        import torch

        from embeddings import runtime

        generator = runtime.captioner_for(version)
        pooled = torch.from_numpy(np.asarray(feats["pooled"], np.float32))
        spatial = torch.from_numpy(np.asarray(feats["spatial"], np.float32)) if generator.needs_spatial else None
        hyps = []
        for i in range(0, len(pooled), 250):  # bounded beam-search memory
            hyps += generator.caption(pooled[i:i + 250], None if spatial is None else spatial[i:i + 250],
                                      beam_size=beam_size, n=1)
        return [h[0].text if h else "" for h in hyps]


def get_encoders(image_encoder: str = LITE0) -> Encoders:
    """The encoders of a run or an evaluation whose image features come from `image_encoder`."""
    path = settings.LOUPE_TRAINING_ENCODERS
    return import_string(path)(image_encoder=image_encoder) if path else RuntimeEncoders(image_encoder)


def encoders_for_version(version: ModelVersion) -> Encoders:
    """The encoders that feed an existing version the features it was trained on."""
    from embeddings import runtime

    return get_encoders(runtime.image_encoder_name(version))
