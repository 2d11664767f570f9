"""Generated captions: caption an image with the active captioner, save, accept or edit it.

A caption generated for a stored image is saved (source=generated, tagged with the captioner
version) when the user may write to its collection, and encoded with the active embedding
version, so it becomes searchable (vectors_stored -> index add). Accepting or editing it makes
it a human caption.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from django.db import transaction

from embeddings import encoding, runtime
from embeddings import selectors as emb_selectors
from embeddings.models import Caption, ModelVersion
from embeddings.services.images import raster_features, sanitize_bytes
from embeddings.services.text import clean_caption_text
from project.exceptions import ApplicationError, NotFound, PermissionDenied

MAX_BEAM = 10
MAX_N = 5


class CaptionPermissionDenied(PermissionDenied):
    """You may not edit the captions of this collection."""


@dataclass(frozen=True)
class GeneratedCaptions:
    model_version_id: int
    captions: list[dict[str, Any]] = field(default_factory=list)  # {"text","score","log_prob","id"}
    image_id: int | None = None
    saved: Caption | None = None
    beam: int | None = None  # the beam width used (1: greedy)
    asked_n: int | None = None  # set when n was lowered to the beam width (pages only)
    labels: list[str] = field(default_factory=list)  # zero-shot label words the best caption names


def _check_options(beam: int | None, n: int) -> None:
    if beam is not None and not 1 <= beam <= MAX_BEAM:
        raise ApplicationError(f"beam must be between 1 and {MAX_BEAM}.", fields={"beam": ["Out of range."]})
    if not 1 <= n <= MAX_N:
        raise ApplicationError(f"n must be between 1 and {MAX_N}.", fields={"n": ["Out of range."]})


def _encode_for_search(captions: list[Caption]) -> None:
    """Vectors of the active embedding version (the index add follows via vectors_stored)."""
    version = runtime.active_version(ModelVersion.Kind.EMBEDDING)
    if version is not None and captions:
        encoding.captions_encode(captions=captions, version=version)


def caption_generate(*, user: Any, image_id: int | None = None, image_bytes: bytes | None = None,
                     beam: int | None = None, n: int = 1, save: bool = True,
                     at_most_beam: bool = False, labels: bool | None = None) -> GeneratedCaptions:
    """The n best captions of a stored image or an upload; the best one of a stored image is
    saved when `save` and the user may write to its collection. `beam` None: the decoding the
    captioner was tuned with (beam width, length penalty, no-repeat n-gram stored in its checkpoint).
    `labels` None: name the image's confident zero-shot labels when the stored decoding does
    (constrained beam search); True / False: do or don't.

    n best captions need a beam of at least n (greedy gives one): asking for more is a 400, or,
    with `at_most_beam` (the pages), n is lowered to the beam and the answer says so."""
    _check_options(beam, n)
    if (image_id is None) == (image_bytes is None):
        raise ApplicationError("Give exactly one of image_id or an image file.", fields={"image": ["Required."]})
    image = None
    if image_id is not None:
        image = emb_selectors.image_visible(user=user, image_id=image_id)
        if image is None:
            raise NotFound("No such image.")
    clean = sanitize_bytes(image_bytes or b"").content if image is None else b""  # 400 before any model
    version, generator = runtime.active_captioner()  # 503 ModelUnavailable when none is active
    width = beam or int(getattr(getattr(generator, "decoding", None), "beam_size", 0) or n)
    if n > width:
        if not at_most_beam:
            how = "greedy decoding gives one" if width == 1 else f"a beam of {width} gives {width}"
            raise ApplicationError(f"{n} best captions need a beam of at least {n}; {how}.",
                                   fields={"n": [f"At most the beam width ({width})."]}, code="n_exceeds_beam")
        asked_n, n = n, width
    else:
        asked_n = None
    encoder = runtime.image_encoder_name(version)  # the features the captioner was trained on
    feats = encoding.features_for([image.pk], encoder) if image is not None else raster_features(clean, encoder)
    spatial = torch.from_numpy(feats["spatial"]) if generator.needs_spatial else None
    guide, avoid = (generator.guidance(feats["logits"][:1], beam_size=width, n=n, on=labels)
                    if hasattr(generator, "guidance") and "logits" in feats else (None, None))
    hyps = generator.caption(torch.from_numpy(feats["pooled"]), spatial, beam_size=beam, n=n,
                             labels=guide, avoid=avoid)[0]
    kept = [h for h in hyps if h.text]
    out: list[dict[str, Any]] = [
        {"text": h.text, "score": float(h.score), "log_prob": float(h.log_prob), "id": None,
         "labels": list(getattr(h, "labels", ()))} for h in kept
    ]
    saved = None
    writable = image is not None and emb_selectors.collection_can_write(user=user, collection=image.collection)
    if save and writable and out and image is not None:
        saved = _save_generated(image_id=image.pk, text=kept[0].text, log_prob=float(kept[0].log_prob),
                                version=version, user=user)
        out[0]["id"] = saved.pk
    return GeneratedCaptions(version.pk, out, image.pk if image else None, saved, beam=width, asked_n=asked_n,
                             labels=out[0]["labels"] if out else [])


def _save_generated(*, image_id: int, text: str, log_prob: float, version: ModelVersion, user: Any) -> Caption:
    with transaction.atomic():
        existing = Caption.objects.filter(image_id=image_id, text=text).first()
        if existing is not None:
            return existing
        caption = Caption.objects.create(image_id=image_id, text=text, source=Caption.Source.GENERATED,
                                         model_version=version, score=log_prob)
    _encode_for_search([caption])
    return caption


def caption_accept(*, user: Any, caption_id: int, text: str | None = None) -> Caption:
    """Accept (and optionally edit) a caption: it becomes a human caption of its image."""
    caption = emb_selectors.caption_visible(user=user, caption_id=caption_id)
    if caption is None:
        raise NotFound("No such caption.")
    if not emb_selectors.collection_can_write(user=user, collection=caption.image.collection):
        raise CaptionPermissionDenied("You cannot edit captions of this collection.")
    changed = False
    if text is not None:
        cleaned = clean_caption_text(text)
        if not cleaned:
            raise ApplicationError("Caption text is required.", fields={"text": ["This field may not be blank."]})
        changed = cleaned != caption.text
        caption.text = cleaned
    caption.source = Caption.Source.HUMAN
    caption.created_by = user if getattr(user, "is_authenticated", False) else None
    caption.save(update_fields=["text", "source", "created_by"])
    if changed:
        _encode_for_search([caption])  # upsert: the index replaces the old vector
    return caption
