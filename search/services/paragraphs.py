"""Paragraph-vector search: long text -> images, and an image's similar descriptions.

Both rank the active paragraph version's image vectors (one per image of the collections it
was trained on, embeddings/ml/paragraph_io.py) by cosine with one query vector:

- `paragraph_search`: the query is a paragraph ("find images described like this"), inferred
  by the version's Doc2Vec models;
- `image_similar_descriptions`: the query is the image's own vector (its trained or inferred
  document; an image added after the run with captions is inferred from them now).

Each hit says how the image got its vector: `"description"` (its captions) or `"image"` (no
captions: the image map placed it from its pixels' features, a weaker signal; its score is the
cosine minus the version's measured hubness gap, so such images do not crowd out descriptions). Only images the
user may see are ranked, before the top k is taken, so a page is never short because of hidden
images. Images added after the version was trained are not ranked until the next run.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embeddings import runtime
from embeddings import selectors as emb_selectors
from embeddings.ml.paragraph import SOURCE_NAMES, document_text, tokenize
from embeddings.models import Caption
from embeddings.services import strip_controls
from project.exceptions import ApplicationError, NotFound
from search import selectors
from search.selectors import CaptionRow

MAX_PARAGRAPH_CHARS = 5000  # a long description; the other text queries stop at 1000
MAX_PARAGRAPH_K = 100
_HUMAN = (Caption.Source.HUMAN, Caption.Source.IMPORTED)


class UnknownWords(ApplicationError):
    """None of the query's words is in the paragraph model's vocabulary: any vector inferred
    from it would be noise, so it is refused (400) rather than ranked."""

    code = "unknown_words"


@dataclass(frozen=True)
class ParagraphHit:
    image: Any  # embeddings.models.Image, collection loaded
    score: float
    match: str  # "description" | "image"
    captions: Sequence[CaptionRow] = ()


@dataclass(frozen=True)
class ParagraphPage:
    model_version_id: int
    results: list[ParagraphHit] = field(default_factory=list)
    words: int = 0  # query tokens
    known_words: int = 0  # of them in the model's vocabulary


def clean_paragraph(text: str | None, field_name: str = "q") -> str:
    """Control characters stripped, white space folded; 400 when empty, too long or NUL."""
    text = text or ""
    if "\x00" in text:
        raise ApplicationError("Text may not contain NUL characters.",
                               fields={field_name: ["Null characters are not allowed."]})
    if len(text) > MAX_PARAGRAPH_CHARS:
        raise ApplicationError(f"Text is longer than {MAX_PARAGRAPH_CHARS} characters.", fields={
            field_name: [f"Ensure this field has no more than {MAX_PARAGRAPH_CHARS} characters."]})
    cleaned = strip_controls(text)
    if not cleaned:
        raise ApplicationError("The query text is empty.", fields={field_name: ["This field may not be blank."]})
    return cleaned


def _allowed(user: Any, index: Any, collections: Sequence[str]) -> np.ndarray:
    """Ids of the index the user may see (in the named collections, if any), sorted."""
    qs = emb_selectors.visible_image_ids(user=user)
    if collections:
        qs = qs.filter(emb_selectors.collection_named_q(user=user, names=list(collections)))
    collection_ids = index.meta.get("collection_ids")
    if collection_ids:
        qs = qs.filter(collection_id__in=collection_ids)
    visible = np.fromiter(qs.values_list("pk", flat=True), dtype=np.int64)
    return np.intersect1d(visible, index.image_ids)


def _page(user: Any, version_id: int, ranked: list[tuple[int, float, int]], **extra: int) -> ParagraphPage:
    rows = {img.pk: (img, caps) for img, caps in selectors.images_in_order(user=user, ids=[i for i, _, _ in ranked])}
    hits = [ParagraphHit(image=rows[i][0], score=s, match=SOURCE_NAMES[src], captions=rows[i][1])
            for i, s, src in ranked if i in rows]
    return ParagraphPage(model_version_id=version_id, results=hits, **extra)


def paragraph_search(*, user: Any, text: str, k: int = 20, collections: Sequence[str] = ()) -> ParagraphPage:
    """Images whose descriptions (or, without captions, whose pixels) are nearest to `text`."""
    text = clean_paragraph(text)
    k = max(1, min(int(k), MAX_PARAGRAPH_K))
    version, index = runtime.active_paragraph()
    words = tokenize(text)
    known = index.vectors_model.knows(words)
    if known == 0:
        raise UnknownWords("None of these words is known to the paragraph model; describe the images with "
                           "words of their captions.", fields={"q": ["No known words."]})
    query = index.encode([text])[0]
    ranked = index.search(query, _allowed(user, index, collections), k)
    return _page(user, version.pk, ranked, words=len(words), known_words=known)


def image_similar_descriptions(*, user: Any, image_id: int, k: int = 12) -> ParagraphPage:
    """Images described most like this one (itself excluded)."""
    image = emb_selectors.image_visible(user=user, image_id=image_id)
    if image is None:
        raise NotFound("No such image.")
    k = max(1, min(int(k), MAX_PARAGRAPH_K))
    version, index = runtime.active_paragraph()
    at = index.position(image_id)
    if at is not None:
        query = index.vectors[at]
    else:
        texts = list(Caption.objects.filter(image_id=image_id, source__in=_HUMAN).exclude(text="")
                     .order_by("pk").values_list("text", flat=True))
        if not texts:
            raise NotFound("This image was added after the paragraph model was trained and has no captions "
                           "to describe it; retrain the paragraph model to include it.", code="not_indexed")
        query = index.encode([document_text(texts)])[0]
    allowed = _allowed(user, index, ())
    allowed = allowed[allowed != image_id]
    return _page(user, version.pk, index.search(query, allowed, k))


SIMILAR_DESCRIPTIONS_ON_PAGE = 8


def similar_descriptions_context(*, user: Any, image_id: int, k: int = SIMILAR_DESCRIPTIONS_ON_PAGE) -> dict[str, Any]:
    """What templates/search/_similar_descriptions.html shows on the image page once loaded: the
    hits, or why there are none (no paragraph model yet is a note, not an error)."""
    context: dict[str, Any] = {"loaded": True}
    try:
        context["page"] = image_similar_descriptions(user=user, image_id=image_id, k=k)
    except runtime.NoParagraphModel as exc:
        context["unavailable"] = exc.message
    except ApplicationError as exc:
        context["error"], context["status"] = exc.message, exc.status_code
    return context
