"""Per-image extras: zero-shot labels and the "why this match" heatmap of a text query."""
from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from operator import itemgetter
from typing import Any

import numpy as np

from embeddings import encoding, runtime
from embeddings import selectors as emb_selectors
from embeddings.ml.conse import load_class_names
from project.exceptions import NotFound
from search import selectors
from search.services.queries import QueryTerm, clean_text, stored_image_vector
from search.services.search import search_captions

_STOPWORDS = frozenset(
    "a an the and or of in on at to with by for from is are was were be been being its it this that these those "
    "there their his her he she they them some two three one into onto over under near while as up down out "
    "front side next top other another each very have".split())
_WORD = re.compile(r"[a-z][a-z'-]+")


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    return tuple(load_class_names())


def _visible_or_404(user: Any, image_id: int) -> None:
    if emb_selectors.image_visible(user=user, image_id=image_id) is None:
        raise NotFound("No such image.")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64) - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def imagenet_labels(*, image_id: int, k: int = 5) -> list[dict[str, Any]]:
    """Top-k ImageNet classes of a stored image, from its cached classifier logits (ConSE's input)."""
    probs = _softmax(encoding.features_for([image_id])["logits"][0])  # (1000,)
    names = class_names()
    top = np.argsort(-probs, kind="stable")[:k]
    return [{"label": names[i], "score": float(probs[i])} for i in top]


def caption_words(captions: list[tuple[str, float]], limit: int) -> list[dict[str, Any]]:
    """Words of the nearest captions, each weighted by the summed scores of the captions using it."""
    weights: dict[str, float] = defaultdict(float)  # summed float scores (Counter is typed int)
    for text, score in captions:
        for word in dict.fromkeys(_WORD.findall(text.lower())):  # ordered: ties keep rank order
            if word not in _STOPWORDS:
                weights[word] += max(score, 0.0)
    total = sum(weights.values()) or 1.0
    ranked = sorted(weights.items(), key=itemgetter(1), reverse=True)[:limit]  # = Counter.most_common
    return [{"word": w, "score": s / total} for w, s in ranked]


def image_labels(*, user: Any, image_id: int, k: int = 5, words: int = 8, neighbours: int = 20,
                 model_version_id: int | None = None) -> dict[str, Any]:
    """Zero-shot labels: ImageNet classes (ConSE) and words of the nearest visible captions of
    other images (the image's own captions are left out, so the labels are truly zero-shot)."""
    _visible_or_404(user, image_id)
    nearest = search_captions(user=user, terms=[QueryTerm(image_id=image_id)], k=neighbours,
                              model_version_id=model_version_id, exclude_image_ids=[image_id])
    pairs = [(hit.caption.text, hit.score) for hit in nearest.results]
    return {
        "model_version": nearest.model_version_id,
        "imagenet": imagenet_labels(image_id=image_id, k=k),
        "words": caption_words(pairs, words),
        "captions": [{"caption_id": h.caption.pk, "text": h.caption.text, "image_id": h.caption.image_id,
                      "score": h.score} for h in nearest.results[:5]],
    }


def image_explain(*, user: Any, image_id: int, text: str, model_version_id: int | None = None) -> dict[str, Any]:
    """A grid (7x7 for Lite0, 9x9 for Lite2) of how much each image region matches the text (Embedder.cell_scores)."""
    _visible_or_404(user, image_id)
    version = selectors.version_resolve(model_version_id=model_version_id)
    embedder = runtime.query_embedder_for(version)
    query = embedder.encode_texts([clean_text(text)])[0]  # (D,)
    spatial = encoding.features_for([image_id], runtime.image_encoder_name(version))["spatial"][0]  # (cells, 1280)
    side = math.isqrt(len(spatial))  # 7 (Lite0) or 9 (Lite2)
    cells = np.asarray(embedder.cell_scores(spatial, query), np.float64).reshape(side, side)
    image_vec = stored_image_vector(version=version, image_id=image_id)
    score = float(np.dot(image_vec, query) / (np.linalg.norm(image_vec) * np.linalg.norm(query) or 1.0))
    return {"model_version": version.pk, "rows": side, "cols": side, "grid": cells.round(5).tolist(),
            "min": float(cells.min()), "max": float(cells.max()), "score": score}
