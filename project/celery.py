"""The Celery application. Configuration comes from Django settings (CELERY_* keys)."""
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("loupe")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.worker_process_init.connect
def _pin_worker_threads(**_kwargs) -> None:
    """Every worker process (solo, or each prefork child) uses the worker thread count."""
    from project import threads

    threads.pin("worker")


@signals.task_prerun.connect
def _task_log_context(task_id=None, **_kwargs) -> None:
    """Log lines written while a task runs carry its id, as request lines carry the request id."""
    from project.middleware import request_id_var

    request_id_var.set(f"task:{task_id}")
