"""GET/POST /api/v1/search/ (images) and /api/v1/search/captions/ (captions)."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project.parsers import JSONParser
from project.schema import UNAVAILABLE
from search import services
from search.apis.common import (
    CaptionSearchOutput,
    DbIdField,
    FilterInput,
    FiniteFloatField,
    SearchOutput,
    TermInput,
    cutoff_from,
    filters_from,
    page_body,
    page_links,
    parse_terms_json,
    read_upload,
    terms_from,
)
from search.services.queries import MAX_TERMS, MAX_TEXT_CHARS, MAX_WEIGHT

_QUERY_HELP = "signed query token from a previous response (`query` / `next`)"


class _SearchBase(APIView):
    """Shared parsing: GET (q or query token), POST JSON (terms) or multipart (an image file)."""

    permission_classes = [AllowAny]  # a query is a read; results are filtered by visibility
    throttle_scope = "search"
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class SearchGetInput(FilterInput):
        q = serializers.CharField(required=False, max_length=MAX_TEXT_CHARS, help_text="query text")
        query = serializers.CharField(required=False, max_length=8000, help_text=_QUERY_HELP)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if not attrs.get("q") and not attrs.get("query"):
                raise serializers.ValidationError({"q": ["Give a query text (q) or a query token."]})
            return attrs

    class SearchJsonInput(FilterInput):
        q = serializers.CharField(required=False, max_length=MAX_TEXT_CHARS, help_text="query text (weight 1)")
        terms = TermInput(many=True, required=False, max_length=MAX_TERMS)
        image_id = DbIdField(required=False, help_text="a stored image as the query")
        image_weight = FiniteFloatField(default=1.0, min_value=-MAX_WEIGHT, max_value=MAX_WEIGHT)
        query = serializers.CharField(required=False, max_length=8000, help_text=_QUERY_HELP)

    class SearchMultipartInput(SearchJsonInput):
        image = serializers.FileField(required=False, help_text="an image file as the query (not stored)")
        terms = serializers.CharField(required=False, max_length=20_000, help_text="JSON list of terms")

    def _input(self, request: Request) -> tuple[dict[str, Any], bytes | None]:
        if request.method == "GET":
            get_input = self.SearchGetInput(data=request.query_params)
            get_input.is_valid(raise_exception=True)
            return dict(get_input.validated_data), None
        multipart = (request.content_type or "").startswith(("multipart/", "application/x-www-form-urlencoded"))
        checked = (self.SearchMultipartInput if multipart else self.SearchJsonInput)(data=request.data)
        checked.is_valid(raise_exception=True)
        data = dict(checked.validated_data)
        if multipart and data.get("terms"):
            data["terms"] = parse_terms_json(data["terms"])
        image = read_upload(data.pop("image")) if data.get("image") else None
        if not data.get("query") and not (data.get("q") or data.get("terms") or data.get("image_id") or image):
            raise serializers.ValidationError({"terms": ["Give q, terms, image_id or an image file."]})
        return data, image

    def _run(self, request: Request, data: dict[str, Any], image: bytes | None) -> Any:
        raise NotImplementedError

    def _respond(self, request: Request) -> Response:
        data, image = self._input(request)
        page = self._run(request, data, image)
        carry_q = request.method == "GET" and not data.get("query")
        return Response(page_body(request, page, page_links(request, page, data, carry_q=carry_q)))


class SearchApi(_SearchBase):
    """Images nearest to a text, an image or a weighted sum of terms (only images you may see)."""

    def _run(self, request: Request, data: dict[str, Any], image: bytes | None) -> services.SearchPage:
        return services.search_images(
            user=request.user, terms=terms_from(data, image), query_token=data.get("query"), k=data["k"],
            page=data["page"], filters=filters_from(data), cutoff=cutoff_from(data),
            model_version_id=data.get("model_version"))

    @extend_schema(operation_id="search_images", parameters=[_SearchBase.SearchGetInput],
                   responses={200: SearchOutput, 503: UNAVAILABLE},
                   summary="Text -> image search")
    def get(self, request: Request) -> Response:
        return self._respond(request)

    @extend_schema(
        operation_id="search_images_post", summary="Image / weighted-terms -> image search",
        request={"application/json": _SearchBase.SearchJsonInput,
                 "multipart/form-data": _SearchBase.SearchMultipartInput},
        responses={200: SearchOutput, 503: UNAVAILABLE},
        examples=[OpenApiExample("query arithmetic", request_only=True, value={
            "terms": [{"text": "a dog on a beach", "weight": 1.0}, {"image_id": 12, "weight": -0.5}],
            "k": 20, "collection": "flickr8k"})])
    def post(self, request: Request) -> Response:
        return self._respond(request)


class CaptionSearchApi(_SearchBase):
    """Captions nearest to an image (image -> text) or a text (text -> text)."""

    def _run(self, request: Request, data: dict[str, Any], image: bytes | None) -> services.SearchPage:
        return services.search_captions(
            user=request.user, terms=terms_from(data, image), query_token=data.get("query"), k=data["k"],
            page=data["page"], filters=filters_from(data), cutoff=cutoff_from(data),
            model_version_id=data.get("model_version"))

    @extend_schema(operation_id="search_captions", parameters=[_SearchBase.SearchGetInput],
                   responses={200: CaptionSearchOutput, 503: UNAVAILABLE},
                   summary="Text -> caption search")
    def get(self, request: Request) -> Response:
        return self._respond(request)

    @extend_schema(
        operation_id="search_captions_post", summary="Image -> caption search (image file or image_id)",
        request={"application/json": _SearchBase.SearchJsonInput,
                 "multipart/form-data": _SearchBase.SearchMultipartInput},
        responses={200: CaptionSearchOutput, 503: UNAVAILABLE})
    def post(self, request: Request) -> Response:
        return self._respond(request)

