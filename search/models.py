"""Records of built FAISS indexes (the files themselves are a cache rebuilt from stored vectors)."""
from __future__ import annotations

from django.db import models

from embeddings.models import ModelVersion


class SearchIndex(models.Model):
    class Modality(models.TextChoices):
        IMAGE = "image"
        CAPTION = "caption"

    class Status(models.TextChoices):
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="indexes")
    modality = models.CharField(max_length=10, choices=Modality.choices)
    path = models.CharField(max_length=255, blank=True)
    index_type = models.CharField(max_length=30, blank=True)
    count = models.PositiveIntegerField(default=0)
    recall_at_10 = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BUILDING)
    error = models.TextField(blank=True)
    built_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "modality"], name="one_index_per_version_modality"),
        ]

    def __str__(self) -> str:
        return f"{self.modality} index of {self.model_version_id} ({self.status})"
