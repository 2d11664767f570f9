"""Writes of the training app. Public entry points are re-exported here.

- runs: training_run_start, training_run_cancel, training_runs_reap
- execution: training_run_execute
- promotion: promotion_review, model_version_promote, model_version_rollback (+ the switch_* background steps)
- evaluation: model_evaluate (manage.py evaluate)
"""
from training.services.execution import training_run_execute
from training.services.promotion import model_version_promote, model_version_rollback, promotion_review
from training.services.runs import training_run_cancel, training_run_start, training_runs_reap

__all__ = [
    "model_version_promote",
    "model_version_rollback",
    "promotion_review",
    "training_run_cancel",
    "training_run_execute",
    "training_run_start",
    "training_runs_reap",
]
