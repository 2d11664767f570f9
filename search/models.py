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


class RemovedItem(models.Model):
    """An image or caption deleted while an index of `model_version` may still hold its vector.

    Written by database triggers in the deleting transaction (migration 0002: every ORM, bulk
    or raw DELETE is seen, at no per-row Python cost), one row per index record of the
    modality; searches hide these ids at once (exact counts before the removal task ran), and
    an index write drops the rows of ids its index no longer holds (a deleted id never returns).
    """

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    modality = models.CharField(max_length=10, choices=SearchIndex.Modality.choices)
    item_id = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["model_version", "modality"], name="search_removed_version_mod")]

    def __str__(self) -> str:
        return f"removed {self.modality} {self.item_id} (version {self.model_version_id})"


class PendingIndexItem(models.Model):
    """A stored vector waiting to join its index: the batched, debounced flush's queue.

    Encoding writes one row per new or changed vector (after commit, duplicates ignored); the
    `index_flush` task applies every waiting id of (version, modality) in one index write and
    deletes the rows it applied, so a 7,000-image import costs a few hundred index writes, not
    7,000. Rows outlive a lost message: the periodic index sync flushes whatever is left.
    """

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    modality = models.CharField(max_length=10, choices=SearchIndex.Modality.choices)
    item_id = models.BigIntegerField()
    queued_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "modality", "item_id"], name="pending_index_item_once"),
        ]

    def __str__(self) -> str:
        return f"pending {self.modality} {self.item_id} (version {self.model_version_id})"
