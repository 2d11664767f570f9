"""Collections: names unique per owner, cleaned the same way for every entry point; renamed,
made public or private, and deleted with their images."""
from __future__ import annotations

import unicodedata
from typing import Any

from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from embeddings.models import Collection, Image
from project.exceptions import ApplicationError, Conflict

# Bidirectional formatting characters: they reorder how a name is shown ("photos\u202egpj.exe"),
# so a name carrying one could pass for another.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def collection_name_clean(name: str | None) -> str:
    """NFC-normalised, stripped; 1 to 100 characters without control or bidi-override characters."""
    name = unicodedata.normalize("NFC", str(name or "")).strip()
    if not name or len(name) > 100:
        raise ApplicationError("A collection name of 1 to 100 characters is required.",
                               fields={"name": ["Invalid name."]})
    bad = sorted({f"U+{ord(ch):04X}" for ch in name
                  if ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Zl", "Zp")})
    if bad:
        raise ApplicationError(
            f"A collection name cannot contain control or text-direction characters ({', '.join(bad)}).",
            fields={"name": ["Control or text-direction characters are not allowed."]}, code="invalid_name")
    return name


def collection_create(*, name: str, owner: Any, is_public: bool = False, description: str = "") -> Collection:
    """Names are unique per owner (and among public collections): a name another user keeps
    private is free to take, so the answer never reveals that it exists."""
    name = collection_name_clean(name)
    owner_q = {"owner": owner} if owner is not None else {"owner__isnull": True}
    if Collection.objects.filter(name=name, **owner_q).exists():
        raise Conflict(f"You already have a collection named {name!r}.", fields={"name": ["Already exists."]})
    if is_public and Collection.objects.filter(name=name, is_public=True).exists():
        raise Conflict(f"A public collection named {name!r} already exists.", fields={"name": ["Already exists."]})
    try:
        with transaction.atomic():
            return Collection.objects.create(name=name, owner=owner, is_public=is_public, description=description)
    except IntegrityError as exc:  # created by a parallel request since the checks
        raise Conflict(f"A collection named {name!r} was just created.", fields={"name": ["Already exists."]}) from exc


def collection_get_or_create(*, name: str, owner: Any, is_public: bool = False) -> tuple[Collection, bool]:
    """The owner's collection of that name (owner None: the owner-less one), made if missing."""
    name = collection_name_clean(name)
    owner_q = {"owner": owner} if owner is not None else {"owner__isnull": True}
    existing = Collection.objects.filter(name=name, **owner_q).first()
    if existing:
        return existing, False
    return collection_create(name=name, owner=owner, is_public=is_public), True


def _name_free(name: str, *, collection: Collection, is_public: bool) -> None:
    """Refuse a name the collection's owner already uses, or (public) another public collection's."""
    others = Collection.objects.exclude(pk=collection.pk).filter(name=name)
    owner_q = {"owner_id": collection.owner_id} if collection.owner_id is not None else {"owner__isnull": True}
    if others.filter(**owner_q).exists():
        raise Conflict(f"A collection named {name!r} already exists.", fields={"name": ["Already exists."]})
    if is_public and others.filter(is_public=True).exists():
        raise Conflict(f"A public collection named {name!r} already exists.", fields={"name": ["Already exists."]})


def collection_update(*, collection: Collection, name: str | None = None, is_public: bool | None = None,
                      description: str | None = None) -> Collection:
    """Rename, re-describe, or make public/private; what is not given stays as it is.

    The same uniqueness rules as collection_create hold; a refused change changes nothing."""
    new_name = collection_name_clean(name) if name is not None else collection.name
    new_public = collection.is_public if is_public is None else bool(is_public)
    if description is not None and len(description) > 2000:
        raise ApplicationError("A description is at most 2,000 characters.",
                               fields={"description": ["Too long."]})
    _name_free(new_name, collection=collection, is_public=new_public)
    collection.name, collection.is_public = new_name, new_public
    if description is not None:
        collection.description = description
    try:
        with transaction.atomic():
            collection.save(update_fields=["name", "is_public", "description"])
    except IntegrityError as exc:  # a parallel request took the name since the checks
        collection.refresh_from_db()
        raise Conflict(f"A collection named {new_name!r} was just created.",
                       fields={"name": ["Already exists."]}) from exc
    return collection


def collection_delete(*, collection: Collection) -> int:
    """Delete the collection with its images, captions and vectors; the stored files go after
    commit. The cascade sends post_delete for every image and caption, so the search indexes
    drop their vectors as they do for a single deletion. Returns the number of images deleted."""
    images = Image.objects.filter(collection=collection)
    names = [n for pair in images.values_list("file", "thumbnail") for n in pair if n]
    count = images.count()
    with transaction.atomic():
        collection.delete()
        transaction.on_commit(lambda: [default_storage.delete(n) for n in names])
    return count
