"""Shared input fields and output shapes of the search API (validation -> 400, never 500)."""
from __future__ import annotations

import math
from typing import Any

from django.http import QueryDict
from rest_framework import serializers
from rest_framework.request import Request

from embeddings import services as emb_services
from embeddings.apis.common import FileUrls
from embeddings.models import Image
from project.parsers import JSONTooDeep, loads_bounded
from search.selectors import SearchFilters, boost_keyword
from search.services import CaptionHit, Cutoff, ImageHit, SearchPage
from search.services.queries import MAX_TERMS, MAX_TEXT_CHARS, MAX_WEIGHT, QueryTerm
from search.services.search import MAX_K

# The largest id a database key may hold (BigAutoField: PostgreSQL bigint, SQLite INTEGER). A
# larger one is a 400 here; it reached SQLite as an OverflowError (a 500) before.
DB_ID_MAX = 2**63 - 1
MAX_PAGE = 2**31 - 1  # far past any result set; keeps page * k a small integer


class DbIdField(serializers.IntegerField):
    """A database id given by the client: 1 to DB_ID_MAX."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=DB_ID_MAX, **kwargs)


class FiniteFloatField(serializers.FloatField):
    """A finite number; JSON true/false are refused (float(True) would make them 1 and 0)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class StringListField(serializers.ListField):
    """A list of names, or one name (JSON "collection": "x" or ?collection=x&collection=y)."""

    child = serializers.CharField(max_length=100)

    def to_internal_value(self, data: Any) -> list[str]:
        if isinstance(data, str):
            data = [data]
        return super().to_internal_value(data)


class PageInput(serializers.Serializer):
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=20, help_text="results per page (1-100)")
    page = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=1, help_text="1-based page number")
    model_version = DbIdField(required=False, help_text="embedding model version id (default: the active one)")


class FilterInput(PageInput):
    collection = StringListField(required=False, max_length=50, help_text="collection name(s) to search in")
    split = serializers.ChoiceField(choices=Image.Split.choices, required=False)
    has_caption = serializers.BooleanField(required=False, allow_null=True, default=None,
                                           help_text="only images with (true) / without (false) a human caption")
    owner = serializers.CharField(required=False, max_length=150, help_text="username of the collections' owner")
    keyword = serializers.CharField(required=False, max_length=100, help_text="caption substring (hybrid search)")
    keyword_mode = serializers.ChoiceField(choices=["filter", "boost"], default="filter", help_text=(
        "filter: only images with a caption containing `keyword`; boost: those rank higher (with no "
        "`keyword`, captions containing the query text `q` do)"))
    keyword_boost = FiniteFloatField(min_value=0.0, max_value=1.0, default=0.1)
    margin = FiniteFloatField(min_value=0.0, max_value=2.0, required=False,
                              help_text="adaptive cutoff: drop results scoring below best - margin")
    ratio = FiniteFloatField(min_value=0.0, max_value=1.0, required=False,
                             help_text="adaptive cutoff: drop results scoring below ratio * best (best > 0)")
    min_score = FiniteFloatField(min_value=-1.0, max_value=1.0, required=False,
                                 help_text="drop results scoring below this cosine similarity")


class TermInput(serializers.Serializer):
    text = serializers.CharField(required=False, max_length=MAX_TEXT_CHARS)
    image_id = DbIdField(required=False)
    weight = FiniteFloatField(default=1.0, min_value=-MAX_WEIGHT, max_value=MAX_WEIGHT)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("text" in attrs) == ("image_id" in attrs):
            raise serializers.ValidationError("Each term needs exactly one of text or image_id.")
        return attrs


def parse_terms_json(value: str) -> list[dict[str, Any]]:
    """`terms` sent as a JSON string inside a multipart form."""
    try:
        items = loads_bounded(value)
    except JSONTooDeep as exc:
        raise serializers.ValidationError({"terms": [str(exc)]}) from exc
    except ValueError as exc:
        raise serializers.ValidationError({"terms": ["terms must be a JSON list."]}) from exc
    if not isinstance(items, list) or len(items) > MAX_TERMS:
        raise serializers.ValidationError({"terms": [f"terms must be a JSON list of at most {MAX_TERMS} terms."]})
    checked = TermInput(data=items, many=True)
    checked.is_valid(raise_exception=True)
    return list(checked.validated_data)


def read_upload(upload: Any) -> bytes:
    """An uploaded query image (the `image` field), read through the one upload reader."""
    return emb_services.read_upload(upload, field="image")


def terms_from(data: dict[str, Any], image: bytes | None = None) -> list[QueryTerm]:
    terms = [QueryTerm(text=data["q"])] if data.get("q") else []
    terms += [QueryTerm(weight=t["weight"], text=t.get("text"), image_id=t.get("image_id"))
              for t in data.get("terms") or []]
    if data.get("image_id"):
        terms.append(QueryTerm(image_id=data["image_id"], weight=data.get("image_weight", 1.0)))
    if image is not None:
        terms.append(QueryTerm(image_bytes=image, weight=data.get("image_weight", 1.0)))
    return terms


def filters_from(data: dict[str, Any]) -> SearchFilters:
    return SearchFilters(collections=tuple(data.get("collection") or ()), split=data.get("split"),
                         has_human_caption=data.get("has_caption"), owner=data.get("owner") or None,
                         keyword=boost_keyword(keyword=data.get("keyword") or "", query=data.get("q"),
                                               mode=data.get("keyword_mode", "filter")),
                         keyword_mode=data.get("keyword_mode", "filter"),
                         keyword_boost=data.get("keyword_boost", 0.1))


def cutoff_from(data: dict[str, Any]) -> Cutoff:
    return Cutoff(margin=data.get("margin"), ratio=data.get("ratio"), min_score=data.get("min_score"))


_LINK_KEYS = ("k", "model_version", "collection", "split", "has_caption", "owner", "keyword", "keyword_mode",
              "keyword_boost", "margin", "ratio", "min_score")


def page_links(request: Request, page: SearchPage, data: dict[str, Any], path: str | None = None,
               carry_q: bool = False) -> tuple[str | None, str | None]:
    """Absolute GET URLs of the next and previous pages (the query travels as a signed token)."""
    params = QueryDict(mutable=True)
    if carry_q and data.get("q"):
        params["q"] = data["q"]
    elif page.query_token:
        params["query"] = page.query_token
    else:  # nothing to page through (no result was visible, so no query was encoded)
        return None, None
    for key in _LINK_KEYS:
        value = data.get(key)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list):
            params.setlist(key, [str(v) for v in value])
        else:
            params[key] = str(value).lower() if isinstance(value, bool) else str(value)

    def link(number: int) -> str:
        params["page"] = str(number)
        return request.build_absolute_uri(f"{path or request.path}?{params.urlencode()}")

    return (link(page.page + 1) if page.has_next else None,
            link(page.page - 1) if page.has_previous else None)


# --- output shapes --------------------------------------------------------------------------
class CaptionBrief(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    source = serializers.CharField()


class ImageResult(serializers.Serializer):
    image_id = serializers.IntegerField()
    score = serializers.FloatField()
    thumbnail_url = serializers.CharField(allow_null=True)
    image_url = serializers.CharField(allow_null=True)
    collection = serializers.CharField()
    captions = CaptionBrief(many=True)
    keyword_match = serializers.BooleanField(allow_null=True)


class SearchOutput(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = ImageResult(many=True)
    model_version = serializers.IntegerField()
    query = serializers.CharField(help_text="signed query token: GET ?query=TOKEN pages through this query")
    threshold = serializers.FloatField(allow_null=True, help_text="adaptive cutoff applied, if any")


class CaptionResult(serializers.Serializer):
    caption_id = serializers.IntegerField()
    text = serializers.CharField()
    source = serializers.CharField()
    score = serializers.FloatField()
    image_id = serializers.IntegerField()


class CaptionSearchOutput(SearchOutput):
    results = CaptionResult(many=True)


def image_result(urls: FileUrls, hit: ImageHit) -> dict[str, Any]:
    img = hit.image
    return {"image_id": img.pk, "score": hit.score, "thumbnail_url": urls(img.thumbnail),
            "image_url": urls(img.file), "collection": img.collection.name,
            "captions": [{"id": c.id, "text": c.text, "source": c.source} for c in hit.captions],
            "keyword_match": hit.keyword_match}


def caption_result(hit: CaptionHit) -> dict[str, Any]:
    c = hit.caption
    return {"caption_id": c.pk, "text": c.text, "source": c.source, "score": hit.score, "image_id": c.image_id}


def page_body(request: Request, page: SearchPage, links: tuple[str | None, str | None]) -> dict[str, Any]:
    urls = FileUrls(request)
    results = [image_result(urls, h) if isinstance(h, ImageHit) else caption_result(h) for h in page.results]
    return {"count": page.count, "next": links[0], "previous": links[1], "results": results,
            "model_version": page.model_version_id, "query": page.query_token, "threshold": page.threshold}
