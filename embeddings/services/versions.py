"""Model versions the install always has."""
from __future__ import annotations

from django.db import transaction

from embeddings.models import ModelVersion


def conse_version_ensure() -> ModelVersion:
    """ConSE v0 exists (migration 0002 creates it); it becomes active only if nothing else is."""
    from embeddings.ml.conse import DEFAULT_K, DEFAULT_PROMPTS, DEFAULT_TEMPERATURE

    existing = ModelVersion.objects.filter(kind=ModelVersion.Kind.EMBEDDING, family=ModelVersion.Family.CONSE).first()
    if existing:
        return existing
    with transaction.atomic():
        active = ModelVersion.objects.select_for_update().filter(
            kind=ModelVersion.Kind.EMBEDDING, status=ModelVersion.Status.ACTIVE).exists()
        return ModelVersion.objects.create(
            kind=ModelVersion.Kind.EMBEDDING, name="conse-v0", family=ModelVersion.Family.CONSE, dim=384,
            status=ModelVersion.Status.RETIRED if active else ModelVersion.Status.ACTIVE,
            config={"k": DEFAULT_K, "temperature": DEFAULT_TEMPERATURE, "prompts": list(DEFAULT_PROMPTS)},
            encoders={"image": "efficientnet-lite0 (ImageNet)", "text": "all-MiniLM-L6-v2"},
        )
