"""Reads: what a user may see. Every list, detail and search goes through these filters."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import Case, Count, Exists, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from embeddings.models import Caption, Collection, Image, ModelVersion


def _is_admin(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_staff)


def collection_visibility_q(user: Any, prefix: str = "") -> Q:
    """Public collections, the user's own, or everything for staff."""
    if _is_admin(user):
        return Q()
    q = Q(**{f"{prefix}is_public": True})
    if user is not None and user.is_authenticated:
        q |= Q(**{f"{prefix}owner": user})
    return q


def collection_list(*, user: Any) -> QuerySet[Collection]:
    return Collection.objects.filter(collection_visibility_q(user))


def collection_manageable(*, user: Any) -> QuerySet[Collection]:
    """The collections this user may rename or delete (their own; staff: all), with their image
    counts by status and how many images the active embedding has encoded (`n_encoded`): an
    image is searchable once encoded."""
    if not (user is not None and user.is_authenticated):
        return Collection.objects.none()
    qs = Collection.objects.all() if _is_admin(user) else Collection.objects.filter(owner=user)
    active = ModelVersion.objects.active(ModelVersion.Kind.EMBEDDING).values("pk")[:1]
    encoded = Image.objects.filter(collection=OuterRef("pk"), embeddings__model_version=Subquery(active))
    return qs.select_related("owner").annotate(
        n_images=Count("images", distinct=True),
        n_ready=Count("images", filter=Q(images__status=Image.Status.READY), distinct=True),
        n_waiting=Count("images", filter=Q(images__status__in=[Image.Status.PENDING, Image.Status.PROCESSING]),
                        distinct=True),
        n_failed=Count("images", filter=Q(images__status=Image.Status.FAILED), distinct=True),
        n_encoded=Coalesce(Subquery(encoded.values("collection").annotate(n=Count("pk")).values("n")[:1]), 0),
    )


def _named_visible(user: Any, name: str) -> QuerySet[Collection]:
    """The visible collections of that name, the one it resolves to first: the user's own,
    then the public one (public names are unique), then (staff only) others' by age."""
    whens = [When(is_public=True, then=Value(1))]
    if user is not None and user.is_authenticated:
        whens.insert(0, When(owner=user, then=Value(0)))
    rank = Case(*whens, default=Value(2))
    return collection_list(user=user).filter(name=name).annotate(_rank=rank).order_by("_rank", "pk")


def collection_get_visible(*, user: Any, name: str) -> Collection | None:
    return _named_visible(user, name).first()


def collection_named_q(*, user: Any, names: Sequence[str], prefix: str = "") -> Q:
    """Images (`prefix` leads to an image) in the collections these names resolve to for the
    user, as `collection_get_visible` resolves them: subqueries, no query of its own."""
    q = Q(pk__in=[])
    for name in names:
        q |= Q(**{f"{prefix}collection_id": Subquery(_named_visible(user, name).values("pk")[:1])})
    return q


def collection_can_write(*, user: Any, collection: Collection) -> bool:
    return _is_admin(user) or (user is not None and user.is_authenticated and collection.owner_id == user.pk)


def image_list(*, user: Any) -> QuerySet[Image]:
    human = Caption.objects.filter(image=OuterRef("pk"), source__in=[Caption.Source.HUMAN, Caption.Source.IMPORTED])
    return (
        Image.objects.filter(collection_visibility_q(user, "collection__"))
        .select_related("collection")
        .annotate(has_human_caption=Exists(human))
    )


def image_get_visible(*, user: Any, image_id: int) -> Image | None:
    return image_list(user=user).prefetch_related("captions").filter(pk=image_id).first()


def image_visible(*, user: Any, image_id: int) -> Image | None:
    """The image (its collection loaded) if this user may see it; None for missing or hidden alike."""
    return visible_image_ids(user=user).select_related("collection").filter(pk=image_id).first()


_SOURCE_ORDER = {Caption.Source.HUMAN: 0, Caption.Source.IMPORTED: 1, Caption.Source.GENERATED: 2}


def image_captions_ordered(*, image: Image) -> list[Caption]:
    """Every caption of the image once: human, imported, then generated, oldest first in each."""
    return sorted(Caption.objects.filter(image=image).order_by("id"), key=lambda c: _SOURCE_ORDER.get(c.source, 3))


def caption_visible(*, user: Any, caption_id: int) -> Caption | None:
    return Caption.objects.filter(pk=caption_id).filter(
        collection_visibility_q(user, "image__collection__")).select_related(
        "image", "image__collection").first()


def visible_image_ids(*, user: Any) -> QuerySet[Image]:
    return Image.objects.filter(collection_visibility_q(user, "collection__"))


def model_version_active(*, kind: str) -> ModelVersion | None:
    return ModelVersion.objects.active(kind).first()
