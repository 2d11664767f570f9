"""Paragraph-vector endpoints: GET/POST /api/v1/search/paragraph/ and
GET /api/v1/images/<id>/similar-descriptions/ (search/services/paragraphs.py)."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from embeddings.apis.common import FileUrls
from project.parsers import JSONParser
from project.schema import ERROR, UNAVAILABLE
from search.apis.common import CaptionBrief, StringListField
from search.services.paragraphs import (MAX_PARAGRAPH_CHARS, MAX_PARAGRAPH_K, ParagraphPage, image_similar_descriptions,
                                        paragraph_search)

NO_MODEL = OpenApiResponse(ERROR, description="No paragraph model is active yet (`no_paragraph_model`), or no such "
                                              "image / an image the model has no description of (`not_indexed`).")


class ParagraphResult(serializers.Serializer):
    image_id = serializers.IntegerField()
    score = serializers.FloatField(help_text="cosine similarity in the paragraph-vector space")
    match = serializers.ChoiceField(choices=["description", "image"], help_text=(
        "how the image was placed: by its captions (description) or, having none, by the image map (image)"))
    thumbnail_url = serializers.CharField(allow_null=True)
    image_url = serializers.CharField(allow_null=True)
    collection = serializers.CharField()
    captions = CaptionBrief(many=True)


class ParagraphOutput(serializers.Serializer):
    model_version = serializers.IntegerField(help_text="the paragraph model version that answered")
    words = serializers.IntegerField(help_text="query words (0 for similar descriptions)")
    known_words = serializers.IntegerField(help_text="of them, in the model's vocabulary")
    results = ParagraphResult(many=True)


def _body(request: Request, page: ParagraphPage) -> dict[str, Any]:
    urls = FileUrls(request)
    results = [{"image_id": h.image.pk, "score": h.score, "match": h.match, "thumbnail_url": urls(h.image.thumbnail),
                "image_url": urls(h.image.file), "collection": h.image.collection.name,
                "captions": [{"id": c.id, "text": c.text, "source": c.source} for c in h.captions]}
               for h in page.results]
    return ParagraphOutput({"model_version": page.model_version_id, "words": page.words,
                            "known_words": page.known_words, "results": results}).data


class ParagraphSearchApi(APIView):
    """Images described like a paragraph (paragraph vectors, Le & Mikolov 2014)."""

    permission_classes = [AllowAny]  # a read; results are filtered by visibility
    throttle_scope = "search"
    parser_classes = [JSONParser]

    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(max_length=MAX_PARAGRAPH_CHARS, help_text="the paragraph (up to 5,000 characters)")
        k = serializers.IntegerField(min_value=1, max_value=MAX_PARAGRAPH_K, default=20, help_text="results (1-100)")
        collection = StringListField(required=False, max_length=50, help_text="collection name(s) to search in")

    def _respond(self, request: Request, data: Any) -> Response:
        checked = self.InputSerializer(data=data)
        checked.is_valid(raise_exception=True)
        d = checked.validated_data
        page = paragraph_search(user=request.user, text=d["q"], k=d["k"], collections=d.get("collection") or ())
        return Response(_body(request, page))

    @extend_schema(operation_id="search_paragraph", parameters=[InputSerializer], summary="Paragraph -> image search",
                   responses={200: ParagraphOutput, 404: NO_MODEL, 503: UNAVAILABLE})
    def get(self, request: Request) -> Response:
        return self._respond(request, request.query_params)

    @extend_schema(operation_id="search_paragraph_post", summary="Paragraph -> image search (long text in a body)",
                   request=InputSerializer, responses={200: ParagraphOutput, 404: NO_MODEL, 503: UNAVAILABLE},
                   examples=[OpenApiExample("a description", request_only=True, value={
                       "q": "A brown dog runs along the beach. It carries a stick in its mouth.", "k": 10})])
    def post(self, request: Request) -> Response:
        return self._respond(request, request.data)


class ImageSimilarDescriptionsApi(APIView):
    """Images whose descriptions are nearest to this image's (itself excluded)."""

    permission_classes = [AllowAny]
    throttle_scope = "search"

    class InputSerializer(serializers.Serializer):
        k = serializers.IntegerField(min_value=1, max_value=MAX_PARAGRAPH_K, default=12, help_text="results (1-100)")

    @extend_schema(operation_id="image_similar_descriptions", parameters=[InputSerializer],
                   responses={200: ParagraphOutput, 404: NO_MODEL, 503: UNAVAILABLE})
    def get(self, request: Request, pk: int) -> Response:
        checked = self.InputSerializer(data=request.query_params)
        checked.is_valid(raise_exception=True)
        page = image_similar_descriptions(user=request.user, image_id=pk, k=checked.validated_data["k"])
        return Response(_body(request, page))
