"""Collections: names unique per owner, cleaned the same way for every entry point."""
from __future__ import annotations

import unicodedata
from typing import Any

from django.db import IntegrityError, transaction

from embeddings.models import Collection
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
