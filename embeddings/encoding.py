"""Encoding and captioning of stored images: the processing steps run by Celery workers.

Vectors are upserted per (image, model version) and per (caption, model version), so a task
that runs twice (redelivery after a worker died) leaves exactly one row each. After the rows
are written, `vectors_stored` tells listeners (the search index) which ids changed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import django.dispatch
import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image as PILImage

from embeddings import runtime
from embeddings.ml.image_encoder import MODEL_NAME as LITE0
from embeddings.models import Caption, CaptionEmbedding, Image, ImageEmbedding, ModelVersion

logger = logging.getLogger(__name__)

# sent with model_version_id, image_ids, caption_ids after vectors are committed
vectors_stored = django.dispatch.Signal()


def _decode(fh) -> PILImage.Image:
    img = PILImage.open(fh)
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")  # convert() would copy an RGB image


def load_stored_image(image_id: str | int) -> PILImage.Image:
    """One stored image as RGB (one query for its file name; for many, `stored_image_loader`)."""
    image = Image.objects.only("file").get(pk=int(image_id))
    with default_storage.open(image.file.name, "rb") as fh:
        return _decode(fh)


def stored_image_loader(image_ids: Iterable[int | str]) -> Callable[[str], PILImage.Image]:
    """A loader of these stored images for `runtime.cached_features`: their file names are read
    in ONE query, each file is decoded (to RGB) only when the encoder's batch needs it. The loader
    raises FileNotFoundError for an image without a row or a file (the encoder marks only that
    image unreadable). Encode tasks, `build_index --missing`, `compute_features` and training's
    features all load through it."""
    ids = {int(i) for i in image_ids}
    names = dict(Image.objects.filter(pk__in=ids).values_list("pk", "file"))

    def load(key: str) -> PILImage.Image:
        name = names.get(int(key))
        if not name:
            raise FileNotFoundError(f"image {key} has no stored file")
        with default_storage.open(name, "rb") as fh:
            return _decode(fh)

    return load


def features_for(image_ids: Sequence[int], encoder: str = LITE0) -> dict[str, np.ndarray]:
    """Features of stored images from one image encoder (a version's own:
    `runtime.image_encoder_name(version)`), cached per image and encoder; raises
    `runtime.ImagesUnreadable` (carrying the readable ones' features) if some cannot be read."""
    return runtime.cached_features([str(i) for i in image_ids], stored_image_loader(image_ids), encoder)


def _as_bytes(vecs: np.ndarray) -> list[bytes]:
    return [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in vecs]


def images_encode(*, image_ids: Sequence[int], version: ModelVersion | None = None) -> int:
    """Store vectors of these images (and their captions) for `version` (default: active).

    The images are encoded in forwards of LOUPE_ENCODE_BATCH, their vectors written in one
    upsert (a rerun leaves one row each). Unreadable images get no vector: the others are
    stored, then `runtime.ImagesUnreadable` names the unreadable ones and why."""
    if version is None:
        version = runtime.active_version(ModelVersion.Kind.EMBEDDING)
        if version is None:
            return 0
    embedder = runtime.embedder_for(version)
    unreadable: runtime.ImagesUnreadable | None = None
    try:
        feats = features_for(image_ids, runtime.image_encoder_name(version))
        image_ids = list(image_ids)
    except runtime.ImagesUnreadable as exc:
        unreadable, feats, image_ids = exc, exc.features, [int(k) for k in exc.keys]
    stored = _store_image_vectors(image_ids, embedder.encode_features(feats) if image_ids else None, version)
    if unreadable is not None:
        raise unreadable
    return stored


def _store_image_vectors(image_ids: list[int], vecs: np.ndarray | None, version: ModelVersion) -> int:
    if not image_ids or vecs is None:
        return 0
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
    feats = features_for(todo, runtime.image_encoder_name(version))
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
