"""REST API of the training app (staff only): thin DRF views over its services and selectors."""
from training.apis.runs import TrainingRunCancelApi, TrainingRunDetailApi, TrainingRunListCreateApi
from training.apis.versions import (ModelSwitchDetailApi, ModelVersionListApi, ModelVersionPromoteApi,
                                    ModelVersionRollbackApi)

__all__ = ["ModelSwitchDetailApi", "ModelVersionListApi", "ModelVersionPromoteApi", "ModelVersionRollbackApi",
           "TrainingRunCancelApi", "TrainingRunDetailApi", "TrainingRunListCreateApi"]
