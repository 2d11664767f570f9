"""Coverage: how much of the collection has vectors for a version, and what the indexes hold."""
from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from embeddings.models import Caption, CaptionEmbedding, Image, ImageEmbedding, ModelVersion
from search.models import SearchIndex


def coverage(*, version: ModelVersion) -> dict[str, Any]:
    """How much of the collection has vectors for this version, and what the indexes hold."""
    images = Image.objects.count()
    images_with = ImageEmbedding.objects.filter(model_version=version).count()
    captions = Caption.objects.count()
    captions_with = CaptionEmbedding.objects.filter(model_version=version).count()
    records = {r.modality: r for r in SearchIndex.objects.filter(model_version=version)}
    return {
        "model_version": version.pk,
        "images": images, "images_with_vectors": images_with,
        "image_coverage": images_with / images if images else 1.0,
        "captions": captions, "captions_with_vectors": captions_with,
        "caption_coverage": captions_with / captions if captions else 1.0,
        "indexes": {m: {"count": r.count, "status": r.status, "type": r.index_type, "recall_at_10": r.recall_at_10}
                    for m, r in records.items()},
    }


def images_without_vectors(*, version: ModelVersion) -> QuerySet[Image]:
    return Image.objects.exclude(Q(status=Image.Status.FAILED) | Q(embeddings__model_version=version))


def captions_without_vectors(*, version: ModelVersion) -> QuerySet[Caption]:
    return Caption.objects.exclude(embeddings__model_version=version)
