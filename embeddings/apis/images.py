"""REST API for images: list, upload, get and delete; thin views over selectors and services."""
from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from embeddings import selectors, services
from embeddings.apis.common import FileUrls
from embeddings.models import Caption, Image
from project.exceptions import ApplicationError, NotFound, PermissionDenied


class CaptionOutput(serializers.ModelSerializer):
    class Meta:
        model = Caption
        fields = ["id", "text", "source", "model_version", "score", "created_at"]


class ImageOutput(serializers.ModelSerializer):
    collection = serializers.CharField(source="collection.name")
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    captions = CaptionOutput(many=True, read_only=True)

    class Meta:
        model = Image
        fields = [
            "id", "collection", "image_url", "thumbnail_url", "width", "height", "format", "split",
            "status", "status_reason", "source_name", "sha256", "captions", "created_at",
        ]

    def _abs(self, f) -> str | None:
        urls = FileUrls.of(self.context)
        if urls is None:
            return f.url if f else None
        return urls(f)

    def get_image_url(self, obj: Image) -> str | None:
        return self._abs(obj.file)

    def get_thumbnail_url(self, obj: Image) -> str | None:
        return self._abs(obj.thumbnail)


class ImageFilter(django_filters.FilterSet):
    collection = django_filters.CharFilter(method="in_collection", max_length=100)
    split = django_filters.ChoiceFilter(choices=Image.Split.choices)
    has_caption = django_filters.BooleanFilter(field_name="has_human_caption")
    status = django_filters.ChoiceFilter(choices=Image.Status.choices)

    class Meta:
        model = Image
        fields = ["collection", "split", "has_caption", "status"]

    def in_collection(self, queryset: QuerySet[Image], name: str, value: str) -> QuerySet[Image]:
        """The collection the name resolves to for this user (their own before a public one)."""
        return queryset.filter(selectors.collection_named_q(user=self.request.user, names=[value]))


class ImageListCreateApi(generics.ListAPIView):
    """GET: images you may see (filters: collection, split, has_caption). POST: upload one image."""

    serializer_class = ImageOutput
    filterset_class = ImageFilter
    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "uploads"

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ImageUpload"  # unique schema component names (drf_spectacular.W001)

        file = serializers.FileField(allow_empty_file=True)
        collection = serializers.CharField(max_length=100)
        caption = serializers.CharField(required=False, allow_blank=True, max_length=1000)

    def get_throttles(self):
        # Uploads are throttled tighter than reads.
        if self.request.method != "POST":
            self.throttle_scope = None
        return super().get_throttles()

    def get_queryset(self) -> QuerySet[Image]:
        return selectors.image_list(user=self.request.user).prefetch_related("captions")

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: ImageOutput, 200: ImageOutput})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        collection = selectors.collection_get_visible(user=request.user, name=data.validated_data["collection"])
        if collection is None:
            raise ApplicationError("No such collection.", fields={"collection": ["No such collection."]})
        if not selectors.collection_can_write(user=request.user, collection=collection):
            raise PermissionDenied("You cannot add images to this collection.")
        upload = data.validated_data["file"]
        result = services.image_ingest(
            collection=collection, stream=upload, filename=upload.name,
            caption=data.validated_data.get("caption"), user=request.user,
        )
        image = selectors.image_get_visible(user=request.user, image_id=result.image.pk)
        body = ImageOutput(image, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class ImageDetailApi(generics.GenericAPIView):
    serializer_class = ImageOutput

    def _get(self, request: Request, pk: int) -> Image:
        image = selectors.image_get_visible(user=request.user, image_id=pk)
        if image is None:
            raise NotFound("No such image.")
        return image

    def get(self, request: Request, pk: int) -> Response:
        return Response(ImageOutput(self._get(request, pk), context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        image = self._get(request, pk)
        if not selectors.collection_can_write(user=request.user, collection=image.collection):
            raise PermissionDenied("You cannot delete images of this collection.")
        services.image_delete(image=image)
        return Response(status=status.HTTP_204_NO_CONTENT)
