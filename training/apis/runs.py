"""REST API for training runs (staff only): start, list, follow and cancel; thin views over services/selectors."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from embeddings import selectors as emb_selectors
from embeddings.models import ModelVersion
from project.exceptions import NotFound
from project.parsers import BoundedJSONField
from project.schema import ERROR
from training import selectors, services
from training.models import TrainingRun


class TrainingRunOutput(serializers.ModelSerializer):
    collections = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    progress = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        ref_name = "TrainingRun"
        fields = ["id", "url", "kind", "status", "collections", "config", "created_at", "started_at", "finished_at",
                  "model_version", "progress"]

    def get_url(self, obj: TrainingRun) -> str:
        return reverse("api-training-run-detail", args=[obj.pk], request=self.context.get("request"))

    def get_progress(self, obj: TrainingRun) -> dict:
        data = selectors.run_progress(obj)
        return {k: v for k, v in data.items() if k not in ("id", "kind", "status")}


class CollectionName(serializers.CharField):
    """A collection named as everywhere else (the caller's own first, then the public one, then,
    staff only, another user's by age: embeddings.selectors.collection_get_visible)."""

    default_error_messages = {"does_not_exist": "No collection named {value!r}."}

    def __init__(self, **kwargs):
        super().__init__(max_length=100, **kwargs)  # CharField refuses NUL characters itself

    def run_validation(self, data=serializers.empty):
        name = super().run_validation(data)  # a str, length and NUL checked
        request = self.context.get("request")
        collection = emb_selectors.collection_get_visible(user=getattr(request, "user", None), name=name)
        if collection is None:
            self.fail("does_not_exist", value=name)
        return collection


class TrainingRunListCreateApi(APIView):
    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TrainingRunStart"

        kind = serializers.ChoiceField(choices=ModelVersion.Kind.choices)
        collections = serializers.ListField(child=CollectionName(), allow_empty=False, max_length=100)
        config = BoundedJSONField(required=False, default=dict,
                                  help_text='partial TrainConfig, e.g. {"loop": {"epochs": 10}}')

        def validate_config(self, value):
            if not isinstance(value, dict):
                raise serializers.ValidationError("config must be an object.")
            return value

    @extend_schema(responses={200: TrainingRunOutput(many=True)}, summary="Recent training runs")
    def get(self, request: Request) -> Response:
        runs = selectors.training_run_list()[:50]
        return Response(TrainingRunOutput(runs, many=True, context={"request": request}).data)

    @extend_schema(request=InputSerializer, operation_id="training_runs_start",
                   summary="Start a training run (queued on the gpu queue)",
                   responses={202: TrainingRunOutput, 400: ERROR, 403: ERROR, 409: OpenApiResponse(
                       ERROR, description="A run of this kind is already queued or running.")})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        run = services.training_run_start(kind=data.validated_data["kind"],
                                          collections=data.validated_data["collections"],
                                          config_overrides=data.validated_data["config"], user=request.user)
        body = TrainingRunOutput(run, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: TrainingRunOutput, 404: ERROR}, summary="A training run and its live progress")
    def get(self, request: Request, pk: int) -> Response:
        run = selectors.training_run_get(run_id=pk)
        if run is None:
            raise NotFound("No such training run.")
        return Response(TrainingRunOutput(run, context={"request": request}).data)


class TrainingRunCancelApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={202: TrainingRunOutput, 404: ERROR, 409: ERROR},
                   summary="Cancel a run at its next step (its last checkpoint is kept)")
    def post(self, request: Request, pk: int) -> Response:
        run = selectors.training_run_get(run_id=pk)
        if run is None:
            raise NotFound("No such training run.")
        run = services.training_run_cancel(run=run)
        return Response(TrainingRunOutput(run, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)
