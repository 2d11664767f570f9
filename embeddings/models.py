"""Collections, images, captions, model versions and the stored vectors."""
from __future__ import annotations

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q


class Collection(models.Model):
    """Names are unique per owner, so a name taken by someone else's private collection can be
    used again and its existence is never revealed. Public names are unique among public
    collections (and owner-less ones, made by import_dataset, among themselves), so a name
    resolves to one collection for every user: their own first, then the public one
    (`selectors.collection_get_visible`)."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="collections",
    )
    is_public = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="collection_name_unique_per_owner"),
            models.UniqueConstraint(fields=["name"], condition=Q(owner__isnull=True),
                                    name="collection_name_unique_without_owner"),
            models.UniqueConstraint(fields=["name"], condition=Q(is_public=True),
                                    name="collection_name_unique_among_public"),
        ]

    def __str__(self) -> str:
        return self.name


class Image(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train"
        DEV = "dev"
        TEST = "test"
        NONE = "none"

    class Status(models.TextChoices):
        PENDING = "pending"  # stored; follow-up work not yet done (or broker was down)
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="images")
    # The stored raster is always a re-encode made by the server (metadata stripped, EXIF
    # orientation applied); the client's bytes and file name are never stored as such.
    file = models.FileField(upload_to="images/", max_length=255)
    thumbnail = models.FileField(upload_to="thumbs/", max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, help_text="sha256 of the uploaded bytes")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10)
    size_bytes = models.PositiveIntegerField(default=0)
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.NONE)
    source_name = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="images",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    status_reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "sha256"], name="image_sha256_unique_per_collection"),
        ]
        indexes = [
            models.Index(fields=["collection", "split"]),
            models.Index(fields=["status"]),
        ]

    def __str__(self) -> str:
        return f"Image {self.pk} ({self.source_name or self.sha256[:12]})"


class ModelVersionQuerySet(models.QuerySet):
    def active(self, kind: str) -> ModelVersionQuerySet:
        """The active version of a kind: at most one row (a unique constraint)."""
        return self.filter(kind=kind, status=ModelVersion.Status.ACTIVE)


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        EMBEDDING = "embedding"
        CAPTIONER = "captioner"
        PARAGRAPH = "paragraph"  # paragraph vectors (Doc2Vec): long text queries, similar descriptions

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"

    class Family(models.TextChoices):
        """How the model computes its vectors or captions (what `embeddings.runtime` loads)."""

        CONSE = "conse", "ConSE (zero-shot, no checkpoint)"
        JOINT = "joint", "Joint embedding"
        PRIOR = "prior", "ConSE-prior embedding"
        CAPTIONER = "captioner", "Captioner"
        DOC2VEC = "doc2vec", "Paragraph vectors (Doc2Vec)"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=100)
    family = models.CharField(max_length=30, choices=Family.choices, default=Family.JOINT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    directory = models.CharField(max_length=255, blank=True, help_text="checkpoint folder")
    files = models.JSONField(default=dict, blank=True, help_text="file name -> sha256")
    config = models.JSONField(default=dict, blank=True)
    encoders = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    dim = models.PositiveIntegerField(default=0)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["kind", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(status="active"), name="one_active_version_per_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.pk} {self.name} ({self.status})"


class Caption(models.Model):
    class Source(models.TextChoices):
        HUMAN = "human"
        IMPORTED = "imported"
        GENERATED = "generated"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="captions")
    text = models.TextField(max_length=1000)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.HUMAN)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="captions"
    )
    score = models.FloatField(null=True, blank=True, help_text="log-probability for generated captions")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["image", "source"])]

    def __str__(self) -> str:
        return self.text[:60]


class _VectorMixin(models.Model):
    vector = models.BinaryField(help_text="float32 little-endian, L2-normalised")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    def as_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype="<f4")


class ImageEmbedding(_VectorMixin):
    """One vector per (image, model version): the durable store the FAISS index is built from."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="embeddings")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="image_embeddings")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="one_vector_per_image_version"),
        ]


class CaptionEmbedding(_VectorMixin):
    caption = models.ForeignKey(Caption, on_delete=models.CASCADE, related_name="embeddings")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="caption_embeddings")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["caption", "model_version"], name="one_vector_per_caption_version"),
        ]


class WordVectorsRun(models.Model):
    """One request to learn a collection's word vectors, so the page that asked can say how it
    went (a task that fails in the worker is otherwise never seen by the user)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="word_vector_runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    reason = models.TextField(blank=True, help_text="why it failed, or what it learned")
    vocabulary = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

