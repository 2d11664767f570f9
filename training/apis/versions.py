"""REST API for model versions and their switches (staff only): list, promote, roll back, follow."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from embeddings.models import ModelVersion
from project.exceptions import NotFound
from project.schema import ERROR
from training import selectors, services
from training.models import ModelSwitch


class ModelVersionOutput(serializers.ModelSerializer):
    # The stored string as it is: choices are not a database constraint, so a row may hold a
    # family this build does not list (the schema keeps it a plain string, not an enum).
    family = serializers.CharField(required=False, max_length=30,
                                   help_text="one of: " + ", ".join(ModelVersion.Family.values))

    class Meta:
        model = ModelVersion
        fields = ["id", "kind", "name", "family", "status", "dim", "metrics", "encoders", "config", "files",
                  "parent", "created_at", "promoted_at"]


class SwitchRate(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True, help_text="images per second since the switch was created")
    eta_s = serializers.FloatField(allow_null=True, help_text="seconds left at that rate (null when finished)")


class ModelSwitchOutput(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()

    class Meta:
        model = ModelSwitch
        fields = ["id", "kind", "action", "version", "previous", "status", "total", "done", "chunks_total",
                  "chunks_done", "error", "created_at", "switched_at", "finished_at", "progress"]

    @extend_schema_field(SwitchRate)
    def get_progress(self, obj: ModelSwitch) -> dict:
        return selectors.switch_progress(obj)


class ModelVersionListApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: ModelVersionOutput(many=True)}, summary="Model versions of both kinds")
    def get(self, request: Request) -> Response:
        return Response(ModelVersionOutput(selectors.model_version_list(), many=True).data)


class _SwitchApi(APIView):
    permission_classes = [IsAdminUser]

    def _version(self, pk: int) -> ModelVersion:
        version = selectors.model_version_get(version_id=pk)
        if version is None:
            raise NotFound("No such model version.")
        return version


class ModelVersionPromoteApi(_SwitchApi):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PromoteInput"

        force = serializers.BooleanField(required=False, default=False, help_text=(
            "promote even though the candidate is worse than the active version on an evaluation set, "
            "was measured on a tiny set, or never measured (otherwise 409 `needs_confirmation`)"))

    @extend_schema(request=InputSerializer, responses={
        202: ModelSwitchOutput, 400: ERROR, 404: ERROR,
        409: OpenApiResponse(ERROR, description=(
            "Already active, a switch in progress, or `needs_confirmation`: the candidate is worse, "
            "unmeasured or measured on a tiny set (`fields.force` lists why; see GET .../review/)."))},
        summary="Promote a version: re-encode, build its index, then switch atomically")
    def post(self, request: Request, pk: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        switch = services.model_version_promote(version=self._version(pk), user=request.user,
                                                force=data.validated_data["force"])
        return Response(ModelSwitchOutput(switch).data, status=status.HTTP_202_ACCEPTED)


class PromotionReviewOutput(serializers.Serializer):
    class SetRow(serializers.Serializer):
        set = serializers.CharField()
        label = serializers.CharField()
        candidate = serializers.FloatField(allow_null=True)
        active = serializers.FloatField(allow_null=True)
        images = serializers.IntegerField(allow_null=True)
        captions = serializers.IntegerField(allow_null=True)

    class Warning(serializers.Serializer):
        code = serializers.ChoiceField(choices=["worse", "tiny", "unmeasured"])
        message = serializers.CharField()

    active = serializers.DictField(allow_null=True)
    metric = serializers.CharField()
    sets = SetRow(many=True)
    warnings = Warning(many=True)


class ModelVersionReviewApi(_SwitchApi):
    @extend_schema(responses={200: PromotionReviewOutput, 404: ERROR},
                   summary="Candidate against the active version on each evaluation set, and why to ask")
    def get(self, request: Request, pk: int) -> Response:
        return Response(PromotionReviewOutput(services.promotion_review(self._version(pk))).data)


class ModelVersionRollbackApi(_SwitchApi):
    @extend_schema(request=None, responses={202: ModelSwitchOutput, 400: ERROR, 404: ERROR, 409: ERROR},
                   summary="Roll back the active version {id} to the version active before it")
    def post(self, request: Request, pk: int) -> Response:
        switch = services.model_version_rollback(version=self._version(pk), user=request.user)
        return Response(ModelSwitchOutput(switch).data, status=status.HTTP_202_ACCEPTED)


class ModelSwitchDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: ModelSwitchOutput, 404: ERROR}, summary="Progress of a promotion or roll-back")
    def get(self, request: Request, pk: int) -> Response:
        switch = selectors.switch_get(switch_id=pk)
        if switch is None:
            raise NotFound("No such promotion.")
        return Response(ModelSwitchOutput(switch).data)
