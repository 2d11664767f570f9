"""Routes of this app: `page_urls` mount at /, `api_urls` under /api/v1/ (see project/urls.py).
The training pages live in the admin (training/admin.py)."""
from django.urls import path

from training import apis

page_urls: list = []
api_urls = [
    path("training-runs/", apis.TrainingRunListCreateApi.as_view(), name="api-training-runs"),
    path("training-runs/<int:pk>/", apis.TrainingRunDetailApi.as_view(), name="api-training-run-detail"),
    path("training-runs/<int:pk>/cancel/", apis.TrainingRunCancelApi.as_view(), name="api-training-run-cancel"),
    path("models/", apis.ModelVersionListApi.as_view(), name="api-models"),
    path("models/<int:pk>/review/", apis.ModelVersionReviewApi.as_view(), name="api-model-review"),
    path("models/<int:pk>/promote/", apis.ModelVersionPromoteApi.as_view(), name="api-model-promote"),
    path("models/<int:pk>/rollback/", apis.ModelVersionRollbackApi.as_view(), name="api-model-rollback"),
    path("model-switches/<int:pk>/", apis.ModelSwitchDetailApi.as_view(), name="api-model-switch-detail"),
]
