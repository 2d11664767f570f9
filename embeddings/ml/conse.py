"""ConSE zero-shot image-text vectors (Norouzi et al., ICLR 2014).

"Convex combination of semantic embeddings": an ImageNet classifier's top-k class
probabilities, renormalised to sum to 1, weight the text embeddings of those class names;
the result lives in the sentence-embedding space, so captions (plain MiniLM vectors) can be
ranked against images with no training at all. Our v0 baseline.

- ``class_vectors(names, encode, prompts)``: (C, D) unit vectors, one per class: each
  name is put into every prompt (e.g. "a photo of a {}."), encoded, the prompt vectors
  averaged (a prompt ensemble when several) and L2-normalised. Computed once per text
  encoder; cache the array.
- ``conse_image_vectors(logits, class_vecs, k, temperature)``: (N, D) unit vectors from
  (N, C) logits, e.g. read from the feature cache. Pure numpy.

Tune ``k``, ``temperature`` and the prompts on the dev split only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_K",
    "DEFAULT_PROMPTS",
    "DEFAULT_TEMPERATURE",
    "class_vectors",
    "conse_image_vectors",
    "conse_weights",
    "default_class_names_path",
    "load_class_names",
]

# Defaults chosen on Flickr8k dev (bench/conse_flickr8k.py -> bench/results/conse.md):
# the bare class name beat "a photo of a {}." and a 3-prompt ensemble on rsum at most k/T.
DEFAULT_PROMPTS: tuple[str, ...] = ("{}",)
DEFAULT_K = 5  # top classes mixed per image
DEFAULT_TEMPERATURE = 2.0  # softmax temperature on the logits (flattens the top-k weights)


def default_class_names_path() -> Path:
    """The bundled ImageNet-1k class list (see embeddings/ml/data/README.md)."""
    return Path(__file__).resolve().parent / "data" / "imagenet_classes.txt"


def load_class_names(path: str | Path | None = None) -> list[str]:
    """Class names, one per non-empty line, line order = classifier index."""
    path = Path(path) if path is not None else default_class_names_path()
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"no class names in {path}")
    return names


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def class_vectors(
    names: Sequence[str],
    encode: Callable[[list[str]], np.ndarray],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
) -> np.ndarray:
    """(C, D) float32 unit vectors: mean over prompts of the encoded prompted names.

    ``encode`` maps a list of strings to (n, D) vectors, e.g.
    ``lambda t: text_encoder.encode(t).numpy()``.
    """
    if not prompts:
        raise ValueError("need at least one prompt")
    for prompt in prompts:
        if prompt.count("{}") != 1:
            raise ValueError(f"prompt must contain one '{{}}' placeholder: {prompt!r}")
    per_prompt = [_l2_normalize(np.asarray(encode([prompt.format(n) for n in names]), np.float64))
                  for prompt in prompts]
    total = per_prompt[0]
    for vecs in per_prompt[1:]:
        total = total + vecs  # (C, D)
    return _l2_normalize(total).astype(np.float32)


def conse_weights(
    logits: np.ndarray, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE
) -> np.ndarray:
    """(N, C) convex weights: softmax(logits / T) kept on the top k classes, renormalised."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got {logits.shape}")
    n_classes = logits.shape[1]
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must be in [1, {n_classes}], got {k}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    z = logits / temperature
    probs = np.exp(z - z.max(axis=1, keepdims=True))  # (N, C), unnormalised softmax
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]  # (N, k) indices of the k largest
    weights = np.zeros_like(probs)
    rows = np.arange(len(probs))[:, None]
    weights[rows, top] = probs[rows, top]
    return weights / weights.sum(axis=1, keepdims=True)  # rows sum to 1


def conse_image_vectors(
    logits: np.ndarray,
    class_vecs: np.ndarray,
    *,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
) -> np.ndarray:
    """(N, D) float32 unit vectors: L2-normalised ``conse_weights(logits) @ class_vecs``."""
    class_vecs = np.asarray(class_vecs, dtype=np.float64)
    if class_vecs.ndim != 2 or class_vecs.shape[0] != np.shape(logits)[-1]:
        raise ValueError(
            f"class_vecs {class_vecs.shape} do not match logits {np.shape(logits)}"
        )
    mixed = conse_weights(logits, k, temperature) @ class_vecs  # (N, D)
    return _l2_normalize(mixed).astype(np.float32)
