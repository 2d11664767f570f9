"""REST API of the training app (staff only): thin DRF views over its services and selectors."""
from training.apis.runs import TrainingRunCancelApi, TrainingRunDetailApi, TrainingRunListCreateApi
from training.apis.versions import (ModelSwitchDetailApi, ModelVersionListApi, ModelVersionPromoteApi,
                                    ModelVersionReviewApi, ModelVersionRollbackApi)

__all__ = ["ModelSwitchDetailApi", "ModelVersionListApi", "ModelVersionPromoteApi", "ModelVersionReviewApi",
           "ModelVersionRollbackApi",
           "TrainingRunCancelApi", "TrainingRunDetailApi", "TrainingRunListCreateApi"]
