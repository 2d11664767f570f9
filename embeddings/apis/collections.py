"""REST API for collections: list the ones you may see, create one of your own, rename, re-describe,
make public/private or delete one you own (staff: any)."""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
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


class CollectionDetailApi(generics.GenericAPIView):
    serializer_class = CollectionOutput

    class UpdateSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CollectionUpdate"

        name = serializers.CharField(required=False, max_length=100)
        description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
        is_public = serializers.BooleanField(required=False)

    def _get(self, request: Request, pk: int, *, write: bool) -> Collection:
        collection = selectors.collection_list(user=request.user).select_related("owner").filter(pk=pk).first()
        if collection is None:
            raise NotFound("No such collection.")
        if write and not selectors.collection_can_write(user=request.user, collection=collection):
            raise PermissionDenied("Only the collection's owner (or staff) can change it.")
        return collection

    def get(self, request: Request, pk: int) -> Response:
        return Response(CollectionOutput(self._get(request, pk, write=False)).data)

    @extend_schema(request=UpdateSerializer, responses={200: CollectionOutput, 409: CONFLICT})
    def patch(self, request: Request, pk: int) -> Response:
        collection = self._get(request, pk, write=True)
        data = self.UpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        collection = services.collection_update(collection=collection, **data.validated_data)
        return Response(CollectionOutput(collection).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.collection_delete(collection=self._get(request, pk, write=True))
        return Response(status=status.HTTP_204_NO_CONTENT)
