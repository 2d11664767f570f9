"""The "paragraph" training kind: its task config and the dev protocol that scores it. Pure.

Two dev scores, both free of leakage (a dev image's captions are never trained on, and a
query never contains the text it is matched against):

- ``p2i`` (paragraph -> image): the query is one dev image's captions joined (all of them,
  inferred); the candidates are the dev images as the image map places them from their pixels'
  features. The target is the query's own image. This is the issue's task.
- ``p2d`` (paragraph -> description): each dev image's document is built from its first
  captions (all but ``held_out``) and inferred; the query is the other ``held_out`` captions
  joined. What "similar descriptions" and long text queries do over captioned images.

Recall@1/5/10 (percent) and the median rank of the target among the dev images, with the tie
rule of training.ml.retrieval_metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embeddings.ml.paragraph import ImageMap, ParagraphConfig, document_text, hubness
from training.ml.config import register_kind
from training.ml.retrieval_metrics import recalls_from_ranks, retrieval_ranks


@dataclass(frozen=True)
class ParagraphTaskConfig:
    """How a paragraph run is scored on dev."""

    held_out: int = 2  # captions per dev image kept out of its document and used as the p2d query

    def __post_init__(self) -> None:
        if self.held_out < 1:
            raise ValueError("held_out must be >= 1")


register_kind("paragraph", ParagraphConfig, ParagraphTaskConfig)

Encode = Callable[[Sequence[str]], np.ndarray]  # texts -> (M, D) unit vectors


def split_held_out(captions: Sequence[Sequence[str]], held_out: int) -> tuple[list[int], list[str], list[str]]:
    """(rows kept, document texts, query texts): images with more than ``held_out`` captions;
    the document is all but the last ``held_out`` captions, the query those last ones."""
    rows, docs, queries = [], [], []
    for i, caps in enumerate(captions):
        caps = [c for c in caps if c and c.strip()]
        if len(caps) > held_out:
            rows.append(i)
            docs.append(document_text(caps[:-held_out]))
            queries.append(document_text(caps[-held_out:]))
    return rows, docs, queries


def ranked_recalls(candidates: np.ndarray, queries: np.ndarray, prefix: str) -> dict[str, float]:
    """Query i's target is candidate i: R@1/5/10 and medr under ``prefix``."""
    _, ranks = retrieval_ranks(candidates, queries, np.arange(len(queries)))
    return recalls_from_ranks(ranks, prefix)


def p2i_metrics(encode: Encode, captions: Sequence[Sequence[str]], image_vecs: np.ndarray) -> dict[str, float]:
    """Paragraph -> image: each image's captions joined vs every image's vector (N, D)."""
    queries = encode([document_text(c) for c in captions])
    return ranked_recalls(np.asarray(image_vecs, np.float32), queries, "p2i")


def p2d_metrics(encode: Encode, captions: Sequence[Sequence[str]], held_out: int) -> dict[str, float]:
    """Paragraph -> description (held-out captions vs the rest, see the module docstring)."""
    rows, docs, queries = split_held_out(captions, held_out)
    if len(rows) < 2:
        return {}
    return ranked_recalls(encode(docs), encode(queries), "p2d")


def paragraph_metrics(encode: Encode, image_map: ImageMap, captions: Sequence[Sequence[str]],
                      pooled: np.ndarray, held_out: int) -> dict[str, float]:
    """Both dev scores; ``pooled`` (N, F) are the dev images' features, ``captions`` theirs."""
    out = p2i_metrics(encode, captions, image_map(pooled))
    out.update(p2d_metrics(encode, captions, held_out))
    return out


def mapped_offset(encode: Encode, image_map: ImageMap, captions: Sequence[Sequence[str]], pooled: np.ndarray,
                  targets: np.ndarray) -> tuple[float, float]:
    """(offset, measured gap): how much closer to the training documents ``targets`` the mapped
    vectors of these images sit than their real documents do (mean CSLS hubness); the offset is
    the gap, or 0 when mapped vectors are not hubs."""
    gap = float(hubness(image_map(pooled), targets).mean()
                - hubness(encode([document_text(c) for c in captions]), targets).mean())
    return max(gap, 0.0), gap


def mixed_index_top1(encode: Encode, image_map: ImageMap, captions: Sequence[Sequence[str]], pooled: np.ndarray,
                     held_out: int, offset: float) -> dict[str, float]:
    """A mixed index as the product holds one: the first half of the images by their documents
    (all but ``held_out`` captions), the second half by the image map only. Queries are the first
    half's held-out captions. Returns the percent of queries whose top hit is their own document
    (``mixed_r1``) and whose top hit is a mapped image (``mixed_mapped_top1``)."""
    half = len(captions) // 2
    rows, docs, queries = split_held_out(captions[:half], held_out)
    candidates = np.vstack([encode(docs), image_map(pooled[half:])])  # (R + N - half, D)
    scores = encode(queries) @ candidates.T
    scores[:, len(rows):] -= offset
    top = scores.argmax(axis=1)
    return {"mixed_r1": float(100 * np.mean(top == np.arange(len(rows)))),
            "mixed_mapped_top1": float(100 * np.mean(top >= len(rows)))}
