"""Image-text retrieval metrics: Recall@K and median rank in both directions.

The standard Flickr8k/30k and COCO protocol (Karpathy splits, VSE++ evaluation code):

- text -> image (t2i): each caption is a query over all images; it is right at K when its
  own image ranks within the top K.
- image -> text (i2t): each image is a query over all captions; its rank is the best rank
  among its own captions, so it is right at K when ANY of its captions ranks within K.

Similarity is the dot product, i.e. cosine similarity for the L2-normalised vectors this
project always stores. Recalls are percentages; ``rsum`` is the sum of the six recalls;
``medr`` is ``floor(median(rank))`` with 1-based ranks, the VSE++ convention.

Ties count AGAINST the right answer: a wrong item whose score equals the right one's ranks
ahead of it, so duplicated or collapsed vectors cannot inflate recall (a model that maps
every image to the same vector gets rank N for every caption, not rank 1). Other right
answers (an image's other captions) never push its rank down. Scores are computed in
float64 and "equal" means within ``tie_atol`` (default 1e-9, far above float64 rounding
for unit vectors and far below any real score gap), so the result does not depend on the
BLAS summation order.

Memory stays bounded: similarities are computed ``chunk_size`` captions at a time, a
(chunk_size, N) float64 block (1024 x 1000 -> 8 MB).
"""

from __future__ import annotations

import numpy as np

__all__ = ["retrieval_metrics", "retrieval_ranks", "recalls_from_ranks"]

RECALL_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_TIE_ATOL = 1e-9
DEFAULT_CHUNK_SIZE = 1024


def _validate(
    image_vecs: np.ndarray, text_vecs: np.ndarray, text_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(image_vecs)
    texts = np.asarray(text_vecs)
    owner = np.asarray(text_image)
    if images.ndim != 2 or texts.ndim != 2:
        raise ValueError(f"expected 2-d vectors, got image {images.shape} and text {texts.shape}")
    if images.shape[0] == 0 or texts.shape[0] == 0:
        raise ValueError("need at least one image and one text")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"dimension mismatch: image D={images.shape[1]}, text D={texts.shape[1]}")
    if owner.shape != (texts.shape[0],):
        raise ValueError(f"text_image must have shape ({texts.shape[0]},), got {owner.shape}")
    if not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(f"text_image must hold integer image indices, got dtype {owner.dtype}")
    n_images = images.shape[0]
    if owner.min() < 0 or owner.max() >= n_images:
        raise ValueError(f"text_image indices must lie in [0, {n_images})")
    if np.bincount(owner, minlength=n_images).min() == 0:
        raise ValueError("every image needs at least one caption for image->text retrieval")
    images = images.astype(np.float64, copy=False)
    texts = texts.astype(np.float64, copy=False)
    if not (np.isfinite(images).all() and np.isfinite(texts).all()):
        raise ValueError("vectors contain NaN or infinity")
    return images, texts, owner.astype(np.int64, copy=False)


def retrieval_ranks(
    image_vecs: np.ndarray,
    text_vecs: np.ndarray,
    text_image: np.ndarray,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    tie_atol: float = DEFAULT_TIE_ATOL,
) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the right answers: ``(i2t_ranks (N,), t2i_ranks (M,))``.

    ``image_vecs`` (N, D), ``text_vecs`` (M, D), ``text_image`` (M,) index of each text's
    image. See the module docstring for the tie rule.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    images, texts, owner = _validate(image_vecs, text_vecs, text_image)
    n_images, n_texts = images.shape[0], texts.shape[0]

    # Pass 1: t2i ranks, each caption's own score, and each image's best own-caption score.
    t2i = np.empty(n_texts, dtype=np.int64)
    own = np.empty(n_texts, dtype=np.float64)
    for start in range(0, n_texts, chunk_size):
        stop = min(start + chunk_size, n_texts)
        sims = texts[start:stop] @ images.T  # (C, N)
        own_c = sims[np.arange(stop - start), owner[start:stop]]  # (C,)
        own[start:stop] = own_c
        # Count includes the own image itself, so a unique best score gives rank 1.
        t2i[start:stop] = (sims >= own_c[:, None] - tie_atol).sum(axis=1)
    best_own = np.full(n_images, -np.inf)
    np.maximum.at(best_own, owner, own)  # (N,)

    # Pass 2: per image, how many captions score >= its best own caption.
    at_or_above = np.zeros(n_images, dtype=np.int64)
    threshold = best_own - tie_atol  # (N,)
    for start in range(0, n_texts, chunk_size):
        stop = min(start + chunk_size, n_texts)
        sims = texts[start:stop] @ images.T  # (C, N)
        at_or_above += (sims >= threshold[None, :]).sum(axis=0)
    # Own captions tied with (or at) the best are right answers, not competitors.
    own_at_best = np.bincount(owner[own >= threshold[owner]], minlength=n_images)
    i2t = 1 + at_or_above - own_at_best
    # Float noise between the two passes could only make this < 1; ranks are >= 1.
    i2t = np.maximum(i2t, 1)
    return i2t, t2i


def recalls_from_ranks(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix_r1, prefix_r5, prefix_r10 (percent), prefix_medr}`` from 1-based ranks."""
    ranks = np.asarray(ranks)
    out = {f"{prefix}_r{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_KS}
    out[f"{prefix}_medr"] = float(np.floor(np.median(ranks)))
    return out


def retrieval_metrics(
    image_vecs: np.ndarray,
    text_vecs: np.ndarray,
    text_image: np.ndarray,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    tie_atol: float = DEFAULT_TIE_ATOL,
) -> dict[str, float]:
    """Recall@1/5/10 (percent) and median rank for i2t and t2i, plus ``rsum``.

    Keys: i2t_r1, i2t_r5, i2t_r10, i2t_medr, t2i_r1, t2i_r5, t2i_r10, t2i_medr, rsum.
    """
    i2t, t2i = retrieval_ranks(
        image_vecs, text_vecs, text_image, chunk_size=chunk_size, tie_atol=tie_atol
    )
    out = recalls_from_ranks(i2t, "i2t")
    out.update(recalls_from_ranks(t2i, "t2i"))
    out["rsum"] = float(sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS))
    return out
