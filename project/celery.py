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


@signals.worker_init.connect
@signals.worker_process_init.connect
def _warm_up_worker(sender=None, **_kwargs) -> None:
    """A worker that runs tasks (solo, or each prefork child; not a prefork parent) loads the
    active models in the background when it starts, so its first task does not wait for them."""
    from django.conf import settings

    pool = getattr(sender, "pool_cls", "")  # worker_init: a name ("solo") or the class; children: no sender
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if not settings.LOUPE_WARM_START or "prefork" in name:
        return
    from search.services.warmup import warm_up_in_background

    warm_up_in_background("worker")


@signals.task_prerun.connect
def _task_log_context(task_id=None, **_kwargs) -> None:
    """Log lines written while a task runs carry its id, as request lines carry the request id."""
    from project.middleware import request_id_var

    request_id_var.set(f"task:{task_id}")
