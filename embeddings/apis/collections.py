"""REST API for collections: list the ones you may see, create one of your own."""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from embeddings import selectors, services
from embeddings.models import Collection
from project.schema import CONFLICT


class CollectionOutput(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", default=None)

    class Meta:
        model = Collection
        fields = ["id", "name", "description", "is_public", "owner", "created_at"]


class CollectionListCreateApi(generics.ListAPIView):
    serializer_class = CollectionOutput

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CollectionCreate"

        name = serializers.CharField(max_length=100)
        description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
        is_public = serializers.BooleanField(required=False, default=False)

    def get_queryset(self) -> QuerySet[Collection]:
        return selectors.collection_list(user=self.request.user).select_related("owner")

    @extend_schema(request=InputSerializer, responses={201: CollectionOutput, 409: CONFLICT})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        collection = services.collection_create(owner=request.user, **data.validated_data)
        return Response(CollectionOutput(collection).data, status=status.HTTP_201_CREATED)
