"""Celery app for test worker processes: the project's app with the encoders faked.

`celery -A tests.training.worker_app worker ...` runs the real tasks, but embeddings.runtime
and embeddings.encoding go through tests/training/fakes.py, so a promotion's chunk tasks
run in seconds instead of loading EfficientNet and MiniLM.
"""
from celery import signals

from project.celery import app  # noqa: F401  (the app celery -A finds here)


@signals.worker_init.connect
def _install_fakes(**kwargs) -> None:
    import django

    django.setup()
    from tests.training.fakes import install_fake_runtime

    install_fake_runtime(setattr)
