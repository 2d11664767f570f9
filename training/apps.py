from django.apps import AppConfig
from django.conf import settings


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The reaper (resubmits runs whose worker stopped heartbeating, resumes stalled
        # promotions) runs under Celery beat; `make run` starts beat inside the worker (-B).
        schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", None)
        if isinstance(schedule, dict):
            schedule.setdefault("training-reaper", {
                "task": "training.tasks.reap_runs",
                "schedule": float(getattr(settings, "LOUPE_TRAINING_REAP_EVERY_S", 30.0)),
                "options": {"queue": "default"},
            })

    def loupe_setup(self) -> list[str]:
        """`manage.py loupe_setup`: register the models shipped in models/ as active versions."""
        from training.shipped import shipped_models_register

        return shipped_models_register()
