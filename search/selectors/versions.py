"""Which embedding version a request reads: the requested or the active one, and its size."""
from __future__ import annotations

from django.db.models import QuerySet

from embeddings import selectors as emb_selectors
from embeddings.models import CaptionEmbedding, ImageEmbedding, ModelVersion
from embeddings.runtime import ModelUnavailable
from project.exceptions import ApplicationError
from search.models import SearchIndex


def unknown_version(model_version_id: int) -> ApplicationError:
    return ApplicationError(f"Unknown model version {model_version_id}.",
                            fields={"model_version": ["Unknown embedding model version."]})


def version_resolve(*, model_version_id: int | None) -> ModelVersion:
    """The requested embedding version, or the active one; 400 for unknown, 503 for none."""
    if model_version_id is None:
        version = emb_selectors.model_version_active(kind=ModelVersion.Kind.EMBEDDING)
        if version is None:
            raise ModelUnavailable("No active embedding model.")
        return version
    version = ModelVersion.objects.filter(pk=model_version_id, kind=ModelVersion.Kind.EMBEDDING).first()
    if version is None:
        raise unknown_version(model_version_id)
    return version


def version_dim(version: ModelVersion) -> int:
    """Vector size of a version: its recorded dim, else the size of one stored vector."""
    if version.dim:
        return int(version.dim)
    for model in (ImageEmbedding, CaptionEmbedding):
        row = model.objects.filter(model_version=version).values_list("vector", flat=True).first()
        if row is not None:
            return len(bytes(row)) // 4
    raise ModelUnavailable(f"Model version {version.pk} has no recorded dimension and no vectors.")


def index_records(*, modality: str | None = None) -> QuerySet[SearchIndex]:
    qs = SearchIndex.objects.select_related("model_version")
    return qs.filter(modality=modality) if modality else qs
