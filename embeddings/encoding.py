"""Encoding and captioning of stored images: the processing steps run by Celery workers.

Vectors are upserted per (image, model version) and per (caption, model version), so a task
that runs twice (redelivery after a worker died) leaves exactly one row each. After the rows
are written, `vectors_stored` tells listeners (the search index) which ids changed.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import django.dispatch
import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image as PILImage

from embeddings import runtime
from embeddings.models import Caption, CaptionEmbedding, Image, ImageEmbedding, ModelVersion

logger = logging.getLogger(__name__)

# sent with model_version_id, image_ids, caption_ids after vectors are committed
vectors_stored = django.dispatch.Signal()


def load_stored_image(image_id: str | int) -> PILImage.Image:
    image = Image.objects.only("file").get(pk=int(image_id))
    with default_storage.open(image.file.name, "rb") as fh:
        img = PILImage.open(fh)
        img.load()
    return img.convert("RGB")


def features_for(image_ids: Sequence[int]) -> dict[str, np.ndarray]:
    return runtime.cached_features([str(i) for i in image_ids], load_stored_image)


def _as_bytes(vecs: np.ndarray) -> list[bytes]:
    return [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in vecs]


def images_encode(*, image_ids: Sequence[int], version: ModelVersion | None = None) -> int:
    """Store vectors of these images (and their captions) for `version` (default: active)."""
    if version is None:
        version = runtime.active_version(ModelVersion.Kind.EMBEDDING)
        if version is None:
            return 0
    embedder = runtime.embedder_for(version)
    image_ids = list(image_ids)
    vecs = embedder.encode_features(features_for(image_ids))
    rows = [ImageEmbedding(image_id=i, model_version=version, vector=b) for i, b in zip(image_ids, _as_bytes(vecs))]
    caption_ids = captions_encode(
        captions=list(Caption.objects.filter(image_id__in=image_ids).exclude(embeddings__model_version=version)),
        version=version, notify=False,
    )
    with transaction.atomic():
        ImageEmbedding.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["image", "model_version"], update_fields=["vector"]
        )
        transaction.on_commit(lambda: vectors_stored.send(
            sender=ModelVersion, model_version_id=version.pk, image_ids=image_ids, caption_ids=caption_ids))
    return len(rows)


def captions_encode(*, captions: Sequence[Caption], version: ModelVersion, notify: bool = True) -> list[int]:
    """Store vectors of these captions' texts for `version`; the ids whose vectors were stored.

    Text and vector never disagree: the vectors are encoded outside any transaction (it is the
    slow part), then written under a lock of the caption rows, and only for captions whose
    committed text is still the text that was encoded. An edit that committed meanwhile wins,
    and that edit's own encode writes its vector; a caption deleted meanwhile is skipped.
    """
    if not captions:
        return []
    texts = {c.pk: c.text for c in captions}
    vecs = runtime.embedder_for(version).encode_texts(list(texts.values()))
    encoded = dict(zip(texts, _as_bytes(vecs)))
    with transaction.atomic():
        committed = dict(Caption.objects.select_for_update().filter(pk__in=list(texts)).order_by("pk")
                         .values_list("pk", "text"))
        ids = [pk for pk, text in texts.items() if committed.get(pk) == text]
        if len(ids) < len(texts):
            logger.info("caption vectors of %d edited or deleted caption(s) discarded as stale", len(texts) - len(ids))
        rows = [CaptionEmbedding(caption_id=pk, model_version=version, vector=encoded[pk]) for pk in ids]
        CaptionEmbedding.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["caption", "model_version"], update_fields=["vector"]
        )
        if notify:
            transaction.on_commit(lambda: vectors_stored.send(
                sender=ModelVersion, model_version_id=version.pk, image_ids=[], caption_ids=ids))
    return ids


def images_caption(*, image_ids: Sequence[int], version: ModelVersion | None = None,
                   beam_size: int | None = None) -> int:
    """Generate one caption per image with the captioner (source=generated, tagged with it).

    ``beam_size`` None: the decoding the checkpoint was tuned with (its stored DecodingConfig:
    beam width, length penalty, no-repeat n-gram, label guidance), so what is served is what was
    measured.
    """
    if version is None:
        version = runtime.active_version(ModelVersion.Kind.CAPTIONER)
        if version is None:
            return 0
    todo = list(Image.objects.filter(pk__in=image_ids).exclude(captions__model_version=version)
                .values_list("pk", flat=True))
    if not todo:
        return 0
    generator = runtime.captioner_for(version)
    feats = features_for(todo)
    import torch

    spatial = torch.from_numpy(feats["spatial"]) if generator.needs_spatial else None
    labels, avoid = (generator.guidance(feats["logits"], beam_size=beam_size)  # label-guided when stored so
                     if hasattr(generator, "guidance") and "logits" in feats else (None, None))
    best = generator.caption(torch.from_numpy(feats["pooled"]), spatial, beam_size=beam_size, n=1,
                             labels=labels, avoid=avoid)
    new = [Caption(image_id=i, text=hyps[0].text, source=Caption.Source.GENERATED, model_version=version,
                   score=float(hyps[0].log_prob)) for i, hyps in zip(todo, best) if hyps and hyps[0].text]
    Caption.objects.bulk_create(new)
    active = runtime.active_version(ModelVersion.Kind.EMBEDDING)
    if active is not None:
        captions_encode(captions=new, version=active)
    return len(new)


def step_encode(images: list[Image]) -> str:
    n = images_encode(image_ids=[i.pk for i in images])
    return f"{n} vectors" if n else "no active embedding model"


def step_caption(images: list[Image]) -> str:
    n = images_caption(image_ids=[i.pk for i in images])
    return f"{n} captions" if runtime.active_version(ModelVersion.Kind.CAPTIONER) else "no active captioner"
