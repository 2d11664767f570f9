"""POST /api/v1/captions/ (generate) and PATCH /api/v1/captions/{id}/ (accept or edit)."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from embeddings.models import Caption
from embeddings.services import captions as caption_services
from embeddings.services.captions import MAX_BEAM, MAX_N
from project.parsers import JSONParser
from project.schema import ERROR, UNAVAILABLE
from search.apis.common import DbIdField, read_upload


class CaptionDetailOutput(serializers.ModelSerializer):
    class Meta:
        model = Caption
        fields = ["id", "image", "text", "source", "model_version", "score", "created_at"]


class CaptionGenerateApi(APIView):
    """Caption an image with the active captioner (503 when none is active).

    With `image_id` the best caption is saved (source=generated) when you may write to the
    image's collection, and becomes searchable; an uploaded file is never stored.
    """

    permission_classes = [AllowAny]
    throttle_scope = "search"
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class CaptionGenerateJsonInput(serializers.Serializer):
        image_id = DbIdField()
        beam = serializers.IntegerField(min_value=1, max_value=MAX_BEAM, required=False,
                                        help_text="beam width; omitted: the captioner's tuned decoding")
        n = serializers.IntegerField(min_value=1, max_value=MAX_N, default=1,
                                     help_text="how many best captions; needs beam >= n (greedy gives one), else 400")
        labels = serializers.BooleanField(required=False, allow_null=True, default=None,
                                          help_text="name the image's confident zero-shot labels (constrained "
                                                    "beam search; never with greedy); omitted: the stored decoding")

    class CaptionGenerateMultipartInput(serializers.Serializer):
        image = serializers.FileField()
        beam = serializers.IntegerField(min_value=1, max_value=MAX_BEAM, required=False,
                                        help_text="beam width; omitted: the captioner's tuned decoding")
        n = serializers.IntegerField(min_value=1, max_value=MAX_N, default=1,
                                     help_text="how many best captions; needs beam >= n (greedy gives one), else 400")
        labels = serializers.BooleanField(required=False, allow_null=True, default=None,
                                          help_text="name the image's confident zero-shot labels (constrained "
                                                    "beam search; never with greedy); omitted: the stored decoding")

    class CaptionGenerateOutput(serializers.Serializer):
        class Generated(serializers.Serializer):
            text = serializers.CharField()
            score = serializers.FloatField(help_text="length-normalised ranking score")
            log_prob = serializers.FloatField()
            id = serializers.IntegerField(allow_null=True, help_text="id of the saved caption, if saved")
            labels = serializers.ListField(child=serializers.CharField(),
                                           help_text="the label words this caption names ([]: unconstrained)")

        captions = Generated(many=True)
        model_version = serializers.IntegerField()
        image_id = serializers.IntegerField(allow_null=True)
        saved = serializers.BooleanField()
        beam = serializers.IntegerField(help_text="the beam width used (1: greedy, one caption)")
        labels = serializers.ListField(child=serializers.CharField(),
                                       help_text="zero-shot label words (ImageNet) the best caption was guided "
                                                 "to name; [] when label-constrained decoding is off, greedy, "
                                                 "no label is confident or no caption could name it")

    @extend_schema(request={"application/json": CaptionGenerateJsonInput,
                            "multipart/form-data": CaptionGenerateMultipartInput},
                   responses={200: CaptionGenerateOutput, 404: ERROR, 503: UNAVAILABLE})
    def post(self, request: Request) -> Response:
        multipart = (request.content_type or "").startswith(("multipart/", "application/x-www-form-urlencoded"))
        serializer = self.CaptionGenerateMultipartInput if multipart else self.CaptionGenerateJsonInput
        checked = serializer(data=request.data)
        checked.is_valid(raise_exception=True)
        data: dict[str, Any] = checked.validated_data
        result = caption_services.caption_generate(
            user=request.user, image_id=data.get("image_id"),
            image_bytes=read_upload(data["image"]) if multipart else None, beam=data.get("beam"), n=data["n"],
            labels=data.get("labels"))
        body = {"captions": result.captions, "model_version": result.model_version_id,
                "image_id": result.image_id, "saved": result.saved is not None, "beam": result.beam,
                "labels": result.labels}
        return Response(self.CaptionGenerateOutput(body).data)


class CaptionAcceptApi(APIView):
    """Accept a (generated) caption, optionally with new text: it then counts as human."""

    permission_classes = [IsAuthenticated]
    throttle_scope = "search"

    class CaptionAcceptInput(serializers.Serializer):
        text = serializers.CharField(required=False, max_length=1000)

    @extend_schema(request=CaptionAcceptInput, responses=CaptionDetailOutput)
    def patch(self, request: Request, pk: int) -> Response:
        data = self.CaptionAcceptInput(data=request.data)
        data.is_valid(raise_exception=True)
        text = data.validated_data.get("text")
        caption = caption_services.caption_accept(user=request.user, caption_id=pk, text=text)
        return Response(CaptionDetailOutput(caption).data)
