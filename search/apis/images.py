"""Per-image search endpoints: zero-shot labels, similar images / near-duplicates, explain."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from embeddings import selectors as emb_selectors
from project.exceptions import NotFound
from project.schema import UNAVAILABLE
from search import services
from search.apis.common import (
    DbIdField,
    FilterInput,
    FiniteFloatField,
    SearchOutput,
    cutoff_from,
    filters_from,
    page_body,
    page_links,
)
from search.services.queries import MAX_TEXT_CHARS


class _ImageApi(APIView):
    permission_classes = [AllowAny]
    throttle_scope = "search"

    @staticmethod
    def _visible(request: Request, pk: int) -> None:
        if emb_selectors.image_visible(user=request.user, image_id=pk) is None:
            raise NotFound("No such image.")


class ImageLabelsApi(_ImageApi):
    """Zero-shot labels: top ImageNet classes (ConSE, from cached logits) and nearest caption words."""

    class InputSerializer(serializers.Serializer):
        k = serializers.IntegerField(min_value=1, max_value=50, default=5)
        words = serializers.IntegerField(min_value=1, max_value=50, default=8)
        model_version = DbIdField(required=False)

    class ImageLabelsOutput(serializers.Serializer):
        class Label(serializers.Serializer):
            label = serializers.CharField()
            score = serializers.FloatField()

        class Word(serializers.Serializer):
            word = serializers.CharField()
            score = serializers.FloatField()

        class Neighbour(serializers.Serializer):
            caption_id = serializers.IntegerField()
            text = serializers.CharField()
            image_id = serializers.IntegerField()
            score = serializers.FloatField()

        model_version = serializers.IntegerField()
        imagenet = Label(many=True)
        words = Word(many=True)
        captions = Neighbour(many=True)

    @extend_schema(parameters=[InputSerializer], responses={200: ImageLabelsOutput, 503: UNAVAILABLE})
    def get(self, request: Request, pk: int) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        self._visible(request, pk)
        body = services.image_labels(user=request.user, image_id=pk, k=data.validated_data["k"],
                                     words=data.validated_data["words"],
                                     model_version_id=data.validated_data.get("model_version"))
        return Response(self.ImageLabelsOutput(body).data)


class ImageSimilarApi(_ImageApi):
    """Images most similar to this one (itself excluded); `duplicates=true` keeps near-duplicates only."""

    class InputSerializer(FilterInput):
        duplicates = serializers.BooleanField(required=False, default=False,
                                              help_text="only near-duplicates (score >= threshold)")
        threshold = FiniteFloatField(required=False, min_value=-1.0, max_value=1.0,
                                     help_text="near-duplicate threshold (default SEARCH_DUPLICATE_THRESHOLD)")

    @extend_schema(parameters=[InputSerializer], responses={200: SearchOutput, 503: UNAVAILABLE})
    def get(self, request: Request, pk: int) -> Response:
        checked = self.InputSerializer(data=request.query_params)
        checked.is_valid(raise_exception=True)
        data = checked.validated_data
        self._visible(request, pk)
        asked = {"user": request.user, "image_id": pk, "k": data["k"], "page": data["page"],
                 "filters": filters_from(data), "cutoff": cutoff_from(data),
                 "model_version_id": data.get("model_version")}
        params = dict(data)
        if data["duplicates"]:
            page = services.image_duplicates(threshold=data.get("threshold"), **asked)
            # The links carry no `duplicates`: the next pages ask for similar images above the same floor.
            params["min_score"] = services.duplicate_cutoff(asked["cutoff"], data.get("threshold")).min_score
        else:
            page = services.image_similar(**asked)
        links = page_links(request, page, params, carry_q=True)
        return Response(page_body(request, page, links))


class ImageExplainApi(_ImageApi):
    """A 7x7 heatmap: how well each region of the image matches the text query."""

    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(max_length=MAX_TEXT_CHARS)
        model_version = DbIdField(required=False)

    class ImageExplainOutput(serializers.Serializer):
        model_version = serializers.IntegerField()
        rows = serializers.IntegerField()
        cols = serializers.IntegerField()
        grid = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()),
                                     help_text="rows x cols cosine scores, row 0 at the top")
        min = serializers.FloatField()
        max = serializers.FloatField()
        score = serializers.FloatField(help_text="cosine similarity of the whole image and the query")

    @extend_schema(parameters=[InputSerializer], responses={200: ImageExplainOutput, 503: UNAVAILABLE})
    def get(self, request: Request, pk: int) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        self._visible(request, pk)
        body = services.image_explain(user=request.user, image_id=pk, text=data.validated_data["q"],
                                      model_version_id=data.validated_data.get("model_version"))
        return Response(self.ImageExplainOutput(body).data)
