"""Training runs: one row per retraining job, with its lease, progress and history."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from embeddings.models import Collection, ModelVersion


NO_LEASE = ""  # TrainingRun.lease_token of a run no worker holds (not a credential)


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(max_length=10, choices=ModelVersion.Kind.choices)
    collections = models.ManyToManyField(Collection, related_name="training_runs")
    config = models.JSONField(default=dict, help_text="validated TrainConfig")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    epoch = models.PositiveIntegerField(default=0)
    step = models.PositiveIntegerField(default=0)
    total_epochs = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    history = models.JSONField(default=list, blank=True, help_text="per-epoch losses and dev metrics")
    last_event = models.JSONField(default=dict, blank=True, help_text="latest step: lr, samples/s, losses")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    device = models.CharField(max_length=50, blank=True)
    lease_token = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    checkpoint_dir = models.CharField(max_length=255, blank=True)
    model_version = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_run"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(status__in=["queued", "running"]),
                name="one_active_run_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"


class ModelSwitch(models.Model):
    """One promotion or roll-back of a model version, with its background progress.

    For an embedding: every image is re-encoded into the target version's vectors (chunked
    tasks), its index is built beside the active one, then the statuses flip in one
    transaction. For a captioner: the statuses flip first, then generated captions are
    regenerated in the background.
    """

    class Action(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"

    class Status(models.TextChoices):
        QUEUED = "queued"
        ENCODING = "encoding"  # embedding: vectors of the target version being written
        INDEXING = "indexing"  # embedding: building the target's index beside the active one
        CAPTIONING = "captioning"  # captioner: switched; regenerating generated captions
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    IN_PROGRESS = (Status.QUEUED, Status.ENCODING, Status.INDEXING)

    kind = models.CharField(max_length=10, choices=ModelVersion.Kind.choices)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.PROMOTE)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="switches_to")
    previous = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="switches_from"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0, help_text="images to encode or caption")
    done = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    max_image_id = models.BigIntegerField(default=0, help_text="images up to this id are planned in chunks")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="last chunk progress")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    switched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(status__in=["queued", "encoding", "indexing"]),
                name="one_switch_in_progress_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.kind} -> v{self.version_id} ({self.status})"
